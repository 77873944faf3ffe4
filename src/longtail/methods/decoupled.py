"""Decoupled training's second stage: a new classifier on a trained, frozen backbone."""

from __future__ import annotations

from torch import nn

from longtail.methods.supervised import Supervised


class ClassifierRetraining(Supervised):
    """Classifier re-training (cRT).

    - [0] Kang et al., "Decoupling Representation and Classifier for Long-Tailed
      Recognition", ICLR 2020, https://arxiv.org/abs/1910.09217 (Sec. 4, cRT)

    The backbone comes from a first stage (``model.init_from=RUN_DIR``) and is frozen: it
    takes no gradient and its batch-norm statistics stay fixed. The classifier starts
    anew and is trained alone, in the paper with class-balanced sampling
    (``data.sampler=class_balanced``) for a few epochs. The same shape, with the loss of
    one's choice, is a linear probe of a pre-trained backbone.

    Args: those of ``ClassifierMethod``.
    """

    needs_init_from = True

    def frozen(self) -> list[nn.Module]:
        return [self.backbone]
