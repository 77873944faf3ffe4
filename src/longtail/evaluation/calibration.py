"""Calibration: do the model's confidences match its accuracy?"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def reliability(probabilities: Tensor, targets: Tensor, bins: int = 15) -> dict[str, list[float]]:
    """Accuracy and mean confidence of the predictions in each of ``bins`` equal-width
    confidence bins over (0, 1] (the reliability diagram of Guo et al., ICML 2017).

    Returns lists ``count``, ``accuracy``, ``confidence`` (NaN for an empty bin) and ``edges``.
    """
    confidence, predictions = probabilities.max(dim=1)
    right = (predictions == targets).double()
    index = torch.clamp((confidence.double() * bins).ceil().long() - 1, 0, bins - 1)
    count = torch.bincount(index, minlength=bins).double()
    accuracy = torch.bincount(index, weights=right, minlength=bins) / count
    mean_confidence = torch.bincount(index, weights=confidence.double(), minlength=bins) / count
    return {
        "count": count.tolist(),
        "accuracy": accuracy.tolist(),
        "confidence": mean_confidence.tolist(),
        "edges": torch.linspace(0, 1, bins + 1).tolist(),
    }


def expected_calibration_error(probabilities: Tensor, targets: Tensor, bins: int = 15) -> float:
    """ECE: ``sum_m |B_m| / n * |acc(B_m) - conf(B_m)|`` over equal-width confidence bins.

    - [0] Naeini et al., "Obtaining Well Calibrated Probabilities Using Bayesian
      Binning", AAAI 2015; Guo et al., "On Calibration of Modern Neural Networks",
      ICML 2017, https://arxiv.org/abs/1706.04599 (eq. 3)
    """
    table = reliability(probabilities, targets, bins)
    count = torch.tensor(table["count"])
    gap = (torch.tensor(table["accuracy"]) - torch.tensor(table["confidence"])).abs()
    return float((count * torch.nan_to_num(gap)).sum() / count.sum())


def calibration(logits: Tensor, targets: Tensor, bins: int = 15) -> dict[str, float]:
    """ECE (percent), negative log-likelihood and Brier score of softmax predictions.

    The Brier score is ``mean_i sum_c (p_ic - [y_i = c])^2`` (Brier, 1950).
    """
    logits, targets = logits.double(), targets.long()
    probabilities = logits.softmax(dim=1)
    one_hot = F.one_hot(targets, logits.shape[1]).double()
    return {
        "ece": 100.0 * expected_calibration_error(probabilities, targets, bins),
        "nll": float(F.cross_entropy(logits, targets)),
        "brier": float(((probabilities - one_hot) ** 2).sum(dim=1).mean()),
    }
