"""Post-hoc logit adjustment: move a model's predictions to another label prior."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor


def prior(counts: Sequence[float] | Tensor) -> Tensor:
    """A label prior from counts or weights (normalised to sum 1)."""
    try:
        counts = torch.as_tensor(counts, dtype=torch.float64)
    except (TypeError, ValueError, RuntimeError):
        raise ValueError("a prior needs one positive number per class") from None
    if counts.dim() != 1 or not (torch.isfinite(counts) & (counts > 0)).all() or not torch.isfinite(counts.sum()):
        raise ValueError("a prior needs one positive, finite weight per class")
    return counts / counts.sum()


def adjust_logits(logits: Tensor, source: Tensor, target: Tensor, tau: float = 1.0) -> Tensor:
    """Logits for the label prior ``target`` from logits that model the prior ``source``:
    ``f(x) - tau log source + tau log target``.

    - [0] Menon et al., "Long-tail learning via logit adjustment", ICLR 2021,
      https://arxiv.org/abs/2007.07314 (eq. 9, post-hoc correction)

    A model trained with plain cross-entropy models the training prior; one trained with
    a logit-adjusted or balanced softmax loss models the uniform prior.
    """
    shift = tau * (torch.log(target) - torch.log(source))
    return logits + shift.to(logits.dtype).to(logits.device)
