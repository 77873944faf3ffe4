"""Methods: small LightningModules that compose a backbone, heads and losses."""

from functools import partial

from longtail.methods.base import ClassifierMethod, NonFiniteLossError
from longtail.methods.bcl import BCL
from longtail.methods.supervised import Supervised

#: Methods by name: (builder, one-line description with its paper).
METHODS = {
    "bcl": (
        BCL,
        "Balanced Contrastive Learning: logit-adjusted cosine classifier + balanced "
        "contrastive branch (Zhu et al., CVPR 2022)",
    ),
    "ce": (partial(Supervised, loss="ce"), "cross-entropy baseline, one branch"),
    "logit_adjustment": (
        partial(Supervised, loss="logit_adjusted"),
        "logit-adjusted cross-entropy, one branch (Menon et al., ICLR 2021)",
    ),
    "balanced_softmax": (
        partial(Supervised, loss="balanced_softmax"),
        "balanced softmax cross-entropy, one branch (Ren et al., NeurIPS 2020)",
    ),
    "supervised": (Supervised, "one branch with any classification loss: method.loss=<name>"),
}

__all__ = ["BCL", "METHODS", "ClassifierMethod", "NonFiniteLossError", "Supervised"]
