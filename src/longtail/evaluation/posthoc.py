"""Post-hoc corrections of a trained model's logits, no retraining: logit adjustment to another
label prior, NorCal, tau-normalisation, and the choice of their strength on held-out data."""

from __future__ import annotations

from collections.abc import Callable, Sequence

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


def normalized_calibration(logits: Tensor, counts: Sequence[float] | Tensor, gamma: float = 1.0) -> Tensor:
    """NorCal: each class's probability divided by its training count to the ``gamma``,
    then normalised again.

    - [0] Pan et al., "On Model Calibration for Long-Tailed Object Detection and Instance
      Segmentation", NeurIPS 2021, https://arxiv.org/abs/2107.02170 (the NorCal score)

    ``p_c ~ softmax(z)_c / n_c^gamma``: in logits, ``z_c - gamma log n_c``. (The paper's
    detector keeps its background class out of the division; a classifier has none, and
    NorCal is then post-hoc logit adjustment to the uniform prior with ``tau = gamma``.)
    """
    return adjust_logits(logits, prior(counts), prior([1.0] * len(counts)), gamma)


def tau_normalized_logits(features: Tensor, weight: Tensor, bias: Tensor | None, tau: float = 1.0) -> Tensor:
    """The logits of a linear classifier whose class weights are tau-normalised.

    - [0] Kang et al., "Decoupling Representation and Classifier for Long-Tailed
      Recognition", ICLR 2020, https://arxiv.org/abs/1910.09217 (Sec. 4, tau-normalised
      classifier)

    ``w_j <- w_j / |w_j|^tau``: the head's weights, grown large on its many images, are
    brought to the tail's norm (``tau = 1``: unit norms; ``tau = 0``: unchanged). A bias
    is the weight of a constant feature 1 and is normalised with its class's weights,
    ``(w_j, b_j) <- (w_j, b_j) / |(w_j, b_j)|^tau``: ``tau = 0`` gives the classifier's own
    logits, and the bias a long-tailed training gives the head shrinks with its weights
    (kept as it is, it would hold much of the head's advantage).
    """
    weight = weight.to(features.dtype)
    if bias is not None:
        weight = torch.cat([weight, bias.to(features.dtype)[:, None]], dim=1)
        features = torch.cat([features, features.new_ones(len(features), 1)], dim=1)
    return features @ (weight / weight.norm(dim=1, keepdim=True).pow(tau)).T


def balanced_accuracy(logits: Tensor, targets: Tensor) -> float:
    """The mean over the classes present of each class's accuracy (percent)."""
    targets = torch.as_tensor(targets).long()
    predictions = logits.argmax(dim=1)
    present = torch.unique(targets)
    return float(torch.stack([(predictions[targets == c] == c).double().mean() for c in present]).mean() * 100)


def choose_tau(logits_at: Callable[[float], Tensor], targets: Tensor,
               candidates: Sequence[float] = tuple(i / 10 for i in range(21))) -> float:
    """The ``tau`` of ``candidates`` (0 to 2 by 0.1) whose logits ``logits_at(tau)`` have
    the best balanced accuracy on ``targets``: a validation split's, never the test's.
    Ties go to the smaller ``tau``."""
    scores = [balanced_accuracy(logits_at(tau), targets) for tau in candidates]
    return candidates[max(range(len(candidates)), key=lambda i: (scores[i], -i))]
