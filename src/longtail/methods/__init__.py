"""Methods: small LightningModules that compose a backbone, heads and losses."""

from typing import NamedTuple

from longtail.errors import NonFiniteLossError
from longtail.methods.base import ClassifierMethod, OptimizerFactory
from longtail.methods.bcl import BCL
from longtail.methods.decoupled import (
    ClassifierRetraining,
    LearnableWeightScaling,
    MarginCalibration,
    NearestClassMean,
)
from longtail.methods.supervised import Supervised


class MethodEntry(NamedTuple):
    """A method by name: its class, a line with its paper, its ``loss.name`` when the config
    names none, and whether that loss is the method itself (a baseline named by its loss)."""

    method: type[ClassifierMethod]
    description: str
    loss: str
    loss_is_the_method: bool = False


#: Methods by the name ``method.name`` gives.
METHODS = {
    "bcl": MethodEntry(
        BCL,
        "Balanced Contrastive Learning: logit-adjusted cosine classifier + balanced "
        "contrastive branch (Zhu et al., CVPR 2022)",
        "logit_adjusted",
    ),
    "ce": MethodEntry(Supervised, "cross-entropy baseline, one branch", "ce", True),
    "logit_adjustment": MethodEntry(
        Supervised, "logit-adjusted cross-entropy, one branch (Menon et al., ICLR 2021)", "logit_adjusted", True
    ),
    "balanced_softmax": MethodEntry(
        Supervised, "balanced softmax cross-entropy, one branch (Ren et al., NeurIPS 2020)", "balanced_softmax",
        True,
    ),
    "supervised": MethodEntry(Supervised, "one branch with any classification loss: loss.name=<name>", "ce"),
    "crt": MethodEntry(
        ClassifierRetraining,
        "classifier re-training on a frozen backbone from model.init_from (Kang et al., ICLR 2020)",
        "ce",
    ),
    "lws": MethodEntry(
        LearnableWeightScaling,
        "learnable weight scaling of a frozen classifier from model.init_from (Kang et al., ICLR 2020)",
        "ce",
    ),
    "marc": MethodEntry(
        MarginCalibration,
        "margin calibration of a frozen classifier from model.init_from (Wang et al., ACML 2022)",
        "class_balanced",
    ),
    "ncm": MethodEntry(
        NearestClassMean,
        "nearest class mean on a frozen backbone from model.init_from, no training (Kang et al., ICLR 2020)",
        "ce",
    ),
}

__all__ = [
    "BCL",
    "METHODS",
    "ClassifierMethod",
    "ClassifierRetraining",
    "LearnableWeightScaling",
    "MarginCalibration",
    "MethodEntry",
    "NearestClassMean",
    "NonFiniteLossError",
    "OptimizerFactory",
    "Supervised",
]
