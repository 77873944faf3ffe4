"""k-nearest-neighbour classification of a backbone's features: the probe of a
representation that trains nothing."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def knn_scores(train_features: Tensor, train_labels: Tensor, features: Tensor, num_classes: int, k: int = 200,
               temperature: float = 0.1, chunk: int = 1024) -> Tensor:
    """Weighted k-NN class scores ``[M, C]`` of ``features`` ``[M, D]`` among the labelled
    ``train_features`` ``[N, D]``.

    - [0] Wu et al., "Unsupervised Feature Learning via Non-Parametric Instance
      Discrimination", CVPR 2018, https://arxiv.org/abs/1805.01978 (Sec. 3.4, weighted
      k-NN)

    Each feature's ``k`` most cosine-similar training features vote for their labels with
    weight ``exp(s / temperature)``; a class's score is the sum of its votes (k = 200 and
    temperature 0.1, the protocol of the self-supervised literature). The similarities are
    computed ``chunk`` rows at a time, so memory holds ``chunk x N`` of them.
    """
    if k < 1 or not temperature > 0:
        raise ValueError(f"k must be at least 1 and temperature positive, got {k} and {temperature}")
    train = F.normalize(train_features.double(), dim=1)
    labels = torch.as_tensor(train_labels).long()
    k = min(k, len(train))
    scores = []
    for start in range(0, len(features), chunk):
        similarity = F.normalize(features[start:start + chunk].double(), dim=1) @ train.T
        top, index = similarity.topk(k, dim=1)
        votes = torch.zeros(len(top), num_classes, dtype=torch.float64)
        scores.append(votes.scatter_add_(1, labels[index], (top / temperature).exp()))
    return torch.cat(scores) if scores else torch.zeros(0, num_classes, dtype=torch.float64)
