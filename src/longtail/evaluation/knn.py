"""k-nearest-neighbour classification of a backbone's features: the probe of a
representation that trains nothing."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import Callback
from torch import Tensor

from longtail.evaluation.metrics import shot_accuracy
from longtail.evaluation.summary import summarize


#: The weighted k-NN's neighbours and temperature: the self-supervised literature's protocol.
KNN_K, KNN_TEMPERATURE = 200, 0.1


def knn_scores(train_features: Tensor, train_labels: Tensor, features: Tensor, num_classes: int, k: int = KNN_K,
               temperature: float = KNN_TEMPERATURE, chunk: int = 256) -> Tensor:
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
    labels = torch.as_tensor(train_labels, device=train.device).long()
    k = min(k, len(train))
    scores = []
    for start in range(0, len(features), chunk):
        similarity = F.normalize(features[start:start + chunk].double(), dim=1) @ train.T
        top, index = similarity.topk(k, dim=1)
        votes = torch.zeros(len(top), num_classes, dtype=torch.float64, device=train.device)
        scores.append(votes.scatter_add_(1, labels[index], (top / temperature).exp()))
    return torch.cat(scores) if scores else torch.zeros(0, num_classes, dtype=torch.float64, device=train.device)


def vote_logits(scores: Tensor) -> Tensor:
    """k-NN scores as logits: the log of each class's share of the votes, whose softmax
    (for calibration and prediction) is that share."""
    votes = scores / scores.sum(dim=1, keepdim=True).clamp(min=1e-300)
    return votes.clamp(min=1e-12).log()


def knn_logits(train_features: Tensor, train_labels: Tensor, features: Tensor, num_classes: int, k: int = KNN_K,
               temperature: float = KNN_TEMPERATURE) -> Tensor:
    """The weighted k-NN's votes for ``features`` as logits ``[N, C]`` on the CPU
    (``vote_logits`` of ``knn_scores``): a representation's predictions, as a classifier's."""
    return vote_logits(knn_scores(train_features, train_labels, features, num_classes, k, temperature)).cpu()


def knn_summary(train_features: Tensor, train_labels: Tensor, features: Tensor, labels: Tensor,
                train_counts: Sequence[int], many: int = 100, few: int = 20, k: int = KNN_K,
                temperature: float = KNN_TEMPERATURE, resamples: int = 0) -> dict:
    """``summarize`` of the weighted k-NN's votes (``knn_logits``) for ``features`` with
    true ``labels``: the report of a representation, as of a classifier."""
    logits = knn_logits(train_features, train_labels, features, len(train_counts), k, temperature)
    return summarize(logits, labels.cpu(), train_counts, many, few, resamples=resamples)


@torch.no_grad()
def features_of(method, datamodule, split: str) -> tuple[Tensor, Tensor]:
    """The backbone features ``[N, F]`` (in eval mode) and labels ``[N]`` of the
    un-augmented ``split`` (``train``, ``val`` or ``test``) of a Lightning data module."""
    training = method.training
    method.eval()
    features, targets = [], []
    try:
        for batch in datamodule.evaluation_dataloader(split):
            images, labels = datamodule.finish(method.transfer_batch_to_device(batch, method.device, 0))
            features.append(method.features(images).float())
            targets.append(labels)
    finally:
        method.train(training)
    return torch.cat(features), torch.cat(targets)


class KNNMonitor(Callback):
    """The weighted k-NN accuracy of the backbone's features every ``every`` epochs,
    logged as ``knn/overall``, ``knn/many``, ``knn/medium``, ``knn/few`` into the run's
    curves: how a representation grows, for a method whose classifier is not trained yet
    (contrastive or self-supervised pre-training).

    The neighbours are the un-augmented training set, the queries the test set; the
    features come from the backbone in eval mode. Each process computes the same numbers
    (every process evaluates the whole sets).

    The features of the latest probe stay in ``probed``, with the training step they were
    taken at, so that the run's final k-NN test need not compute them again.

    Args:
        every: epochs between two probes (the last epoch is always probed).
        k, temperature: those of ``knn_scores``.
        many, few: the shot-split thresholds.
    """

    def __init__(self, every: int, k: int = KNN_K, temperature: float = KNN_TEMPERATURE, many: int = 100,
                 few: int = 20) -> None:
        self.every, self.k, self.temperature, self.many, self.few = every, k, temperature, many, few
        self.probed: tuple[int, tuple[Tensor, Tensor], tuple[Tensor, Tensor]] | None = None

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        epoch = trainer.current_epoch + 1
        if epoch % self.every and epoch != trainer.max_epochs:
            return
        train, test = (features_of(pl_module, trainer.datamodule, split) for split in ("train", "test"))
        self.probed = trainer.global_step, train, test
        (train_features, train_labels), (test_features, test_labels) = train, test
        counts = trainer.datamodule.class_counts
        scores = knn_scores(train_features, train_labels, test_features, len(counts), self.k, self.temperature)
        accuracy = shot_accuracy(scores.argmax(dim=1).cpu(), test_labels.cpu(), counts, self.many, self.few)
        for group in ("overall", "many", "medium", "few"):
            if accuracy[group] is not None:
                pl_module.log(f"knn/{group}", float(accuracy[group]), on_epoch=True, rank_zero_only=True)
