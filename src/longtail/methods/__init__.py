"""Methods: small LightningModules that compose a backbone, heads and losses."""

from typing import NamedTuple

from longtail.errors import NonFiniteLossError
from longtail.methods.base import ClassifierMethod, OptimizerFactory
from longtail.methods.bcl import BCL
from longtail.methods.boosted import BoostedSDCLR, BoostedSimCLR
from longtail.methods.contrastive import TSC, SupCon
from longtail.methods.decoupled import (
    ClassifierRetraining,
    LearnableWeightScaling,
    MarginCalibration,
    NearestClassMean,
)
from longtail.methods.parametric import GPaCo, PaCo
from longtail.methods.rescom import ResCom
from longtail.methods.selfsupervised import BYOL, SDCLR, TWIST, MoCoV2, SelfSupervised, SimCLR, SwAV
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
    "supcon": MethodEntry(
        SupCon,
        "supervised contrastive learning: joint with a classifier, or with method.alpha=0 pre-training for a "
        "linear classifier (Khosla et al., NeurIPS 2020)",
        "ce",
    ),
    "paco": MethodEntry(
        PaCo,
        "parametric contrastive learning: class centres in the contrast set, momentum encoder and queue "
        "(Cui et al., ICCV 2021)",
        "balanced_softmax",
        True,
    ),
    "gpaco": MethodEntry(
        GPaCo, "generalized parametric contrastive learning: PaCo without the momentum encoder (Cui et al., "
        "TPAMI 2023)", "balanced_softmax", True,
    ),
    "tsc": MethodEntry(
        TSC,
        "targeted supervised contrastive learning: classes pulled to targets spread on the sphere, pre-training "
        "for a linear classifier (Li et al., CVPR 2022)",
        "ce",
    ),
    "rescom": MethodEntry(
        ResCom,
        "rebalanced siamese contrastive mining: siamese balanced softmax and hard mining on a class-balanced queue "
        "(Zhong et al., 2022)",
        "balanced_softmax",
    ),
    "simclr": MethodEntry(
        SimCLR,
        "self-supervised: SimCLR's NT-Xent, or DCL / DCLW with method.objective=dcl|dclw (Chen et al., ICML 2020; "
        "Yeh et al., ECCV 2022); longtail pretrain",
        "ce",
    ),
    "moco_v2": MethodEntry(
        MoCoV2, "self-supervised: MoCo v2, momentum encoder and queue (He et al., CVPR 2020; Chen et al., 2020); "
        "longtail pretrain", "ce",
    ),
    "byol": MethodEntry(
        BYOL, "self-supervised: BYOL, an online predictor of a moving-average target (Grill et al., NeurIPS 2020); "
        "longtail pretrain", "ce",
    ),
    "swav": MethodEntry(
        SwAV, "self-supervised: SwAV, swapped predictions of Sinkhorn-Knopp codes on prototypes, multi-crop (Caron "
        "et al., NeurIPS 2020); longtail pretrain", "ce",
    ),
    "twist": MethodEntry(
        TWIST, "self-supervised: TWIST, twin class distributions, consistent, sharp and diverse (Wang et al., "
        "TIP 2023); longtail pretrain", "ce",
    ),
    "sdclr": MethodEntry(
        SDCLR, "self-supervised: SDCLR, SimCLR between the network and its magnitude-pruned self (Jiang et al., "
        "ICML 2021); longtail pretrain", "ce",
    ),
    "boosted_simclr": MethodEntry(
        BoostedSimCLR, "self-supervised: boosted contrastive learning on SimCLR, each image's views augmented by its "
        "momentum loss (Zhou et al., ICML 2022, BCL-I); longtail pretrain", "ce",
    ),
    "boosted_sdclr": MethodEntry(
        BoostedSDCLR, "self-supervised: boosted contrastive learning on SDCLR (Zhou et al., ICML 2022, BCL-D); "
        "longtail pretrain", "ce",
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
    "BYOL",
    "BoostedSDCLR",
    "BoostedSimCLR",
    "METHODS",
    "ClassifierMethod",
    "ClassifierRetraining",
    "GPaCo",
    "LearnableWeightScaling",
    "MarginCalibration",
    "MethodEntry",
    "MoCoV2",
    "NearestClassMean",
    "NonFiniteLossError",
    "OptimizerFactory",
    "PaCo",
    "ResCom",
    "SDCLR",
    "SelfSupervised",
    "SimCLR",
    "SupCon",
    "SwAV",
    "Supervised",
    "TSC",
    "TWIST",
]
