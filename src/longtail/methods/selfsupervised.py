"""Self-supervised pre-training: a backbone learned from images alone, labels unused."""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

from longtail.losses import LabelledQueue, contrastive_loss
from longtail.losses.contrastive import similarities
from longtail.losses.distributed import gather, own_positions
from longtail.losses.selfsupervised import TwinDistributionLoss
from longtail.methods.base import ClassifierMethod, view_major
from longtail.models import MomentumEncoder, Projected


class SelfSupervised(ClassifierMethod):
    """The base of the self-supervised methods: two views of each image, no label read in
    training. The classifier is frozen and untrained (a run is tested by the k-NN probe of
    its features; a linear probe or fine-tuning follows with ``model.init_from``)."""

    num_views = 2

    @property
    def trains_classifier(self) -> bool:
        return False

    def frozen(self) -> list[nn.Module]:
        return [self.classifier]


class SimCLR(SelfSupervised):
    """SimCLR, and its decoupled forms DCL and DCLW.

    - [0] Chen et al., "A Simple Framework for Contrastive Learning of Visual
      Representations", ICML 2020, https://arxiv.org/abs/2002.05709 (Sec. 2.1, NT-Xent)
    - [1] Yeh et al., "Decoupled Contrastive Learning", ECCV 2022,
      https://arxiv.org/abs/2110.06848 (eq. 6, DCL; Sec. 4, DCLW's weighting)

    Both views go through the backbone and lightly's SimCLR projection head (Linear,
    BatchNorm, ReLU, Linear); each view's embedding is contrasted with the other view of
    its image against every other embedding of the batch (of every process): NT-Xent
    (``objective=ntxent``), or with the positive left out of the denominator (``dcl``), the
    positive pair weighted by how hard it is (``dclw``, sigma 0.5; the weights are constants
    of the step, no gradient runs through them). The losses are lightly's, computed in
    float32 whatever the autocast dtype.

    Args:
        objective: ``ntxent``, ``dcl`` or ``dclw``.
        temperature: the softmax temperature.
        feat_dim: the projected embedding's dimension.
        hidden_dim: the projection head's hidden width.
        parts: those of ``ClassifierMethod``.
    """

    def __init__(self, *, objective: str = "ntxent", temperature: float = 0.5, feat_dim: int = 128,
                 hidden_dim: int = 512, **parts) -> None:
        from lightly.loss import DCLLoss, DCLWLoss, NTXentLoss
        from lightly.models.modules import SimCLRProjectionHead

        super().__init__(**parts)
        losses = {"ntxent": NTXentLoss, "dcl": DCLLoss, "dclw": DCLWLoss}
        if objective not in losses:
            raise ValueError(f"objective must be one of {', '.join(losses)}, got {objective!r}")
        if not temperature > 0:
            raise ValueError(f"temperature must be positive, got {temperature}")
        self.temperature = temperature
        self.projection = SimCLRProjectionHead(self.backbone.num_features, hidden_dim, feat_dim)
        self.contrastive_loss = losses[objective](temperature=temperature, gather_distributed=True)

    def embeddings(self, views: Tensor) -> tuple[Tensor, Tensor]:
        """The two views' projected embeddings, ``[B, D]`` each."""
        batch = len(views)
        embeddings = self.projection(self.features(view_major(views[:, :2])))
        return embeddings[:batch], embeddings[batch:]

    def training_losses(self, views: Tensor, targets: Tensor) -> dict[str, Tensor]:
        first, second = self.embeddings(views)
        # lightly's losses compute the similarities in their inputs' dtype; bf16 would round
        # a cosine over T = 0.2 to steps of 0.03
        with torch.autocast(first.device.type, enabled=False):
            return {"contrastive": self.contrastive_loss(first.float(), second.float())}


class MoCoV2(SelfSupervised):
    """MoCo v2: a query encoder, a momentum key encoder and a queue of keys.

    - [0] He et al., "Momentum Contrast for Unsupervised Visual Representation Learning",
      CVPR 2020, https://arxiv.org/abs/1911.05722 (eq. 1, InfoNCE; eq. 2, the momentum)
    - [1] Chen et al., "Improved Baselines with Momentum Contrastive Learning", 2020,
      https://arxiv.org/abs/2003.04297 (the MLP head, temperature 0.2, stronger views)

    The first view's query (backbone, MoCo's MLP head, L2-normalised) is contrasted with
    its key, the second view through the momentum encoder, against the keys of the batch
    (of every process) and the queue: ``-log exp(q.k+/T) / sum_k exp(q.k/T)``
    (``contrastive_loss`` with the key as the own positive, every key unlabelled). After
    each step the keys join the queue and the encoder moves toward the online weights.

    The keys are encoded in groups of at most ``key_group`` images, each normalised by its
    own batch statistics, while the queries are normalised over the whole batch: Shuffling
    BN on one process (``MomentumEncoder``'s ``group``).

    Args:
        temperature: T.
        queue_size: the keys kept (65,536 on ImageNet; a few thousand for CIFAR's
            12,406 long-tailed images).
        momentum: m of the key encoder.
        key_group: the images of the key batch normalised together (32 per GPU in [0]).
        feat_dim: the embedding's dimension.
        hidden_dim: the head's hidden width.
        parts: those of ``ClassifierMethod``.
    """

    def __init__(self, *, temperature: float = 0.2, queue_size: int = 4096, momentum: float = 0.99,
                 key_group: int = 32, feat_dim: int = 128, hidden_dim: int = 512, **parts) -> None:
        from lightly.models.modules import MoCoProjectionHead

        super().__init__(**parts)
        if not temperature > 0:
            raise ValueError(f"temperature must be positive, got {temperature}")
        self.temperature = temperature
        self.projection = MoCoProjectionHead(self.backbone.num_features, hidden_dim, feat_dim)
        self.queue = LabelledQueue(queue_size, feat_dim)
        self.key_encoder = MomentumEncoder(Projected(self.backbone, self.projection), momentum, group=key_group)

    def training_losses(self, views: Tensor, targets: Tensor) -> dict[str, Tensor]:
        queries = F.normalize(self.projection(self.features(views[:, 0])).float(), dim=1)
        keys = F.normalize(self.key_encoder(views[:, 1]).float(), dim=1)
        self.queue.hold(keys)
        queue_keys, _ = self.queue()
        references = torch.cat([gather(keys), queue_keys.float()])
        unlabelled = torch.full((len(references),), -1, device=keys.device)
        loss = contrastive_loss(queries, unlabelled[: len(queries)], references, unlabelled, self.temperature,
                                own=own_positions(len(queries), queries.device), own_is_positive=True)
        return {"contrastive": loss}

    def after_step(self) -> None:
        self.queue.push_held()
        self.key_encoder.update(Projected(self.backbone, self.projection))


class BYOL(SelfSupervised):
    """BYOL: an online network predicts a slowly moving target network's projection.

    - [0] Grill et al., "Bootstrap Your Own Latent", NeurIPS 2020,
      https://arxiv.org/abs/2006.07733 (eq. 2, the loss; Sec. 3.2, the EMA schedule)

    The online network (backbone, projection, predictor: lightly's BYOL heads) predicts,
    from each view, the target network's projection of the other view; the loss is
    ``2 - 2 cos(p, z')`` averaged over both directions, with no negatives (in float32
    whatever the autocast dtype). The target is a
    moving average of the online backbone and projection whose momentum rises from
    ``momentum`` to 1 along a cosine over training (``MomentumEncoder``), updated after
    each step.

    Args:
        momentum: the target's momentum at the start (0.996 in the paper).
        feat_dim: the projection's and prediction's dimension.
        hidden_dim: the heads' hidden width.
        parts: those of ``ClassifierMethod``.
    """

    def __init__(self, *, momentum: float = 0.99, feat_dim: int = 128, hidden_dim: int = 512, **parts) -> None:
        from lightly.models.modules import BYOLPredictionHead, BYOLProjectionHead

        super().__init__(**parts)
        self.projection = BYOLProjectionHead(self.backbone.num_features, hidden_dim, feat_dim)
        self.predictor = BYOLPredictionHead(feat_dim, hidden_dim, feat_dim)
        self.target = MomentumEncoder(Projected(self.backbone, self.projection), momentum, final_momentum=1.0)

    def training_losses(self, views: Tensor, targets: Tensor) -> dict[str, Tensor]:
        batch = len(views)
        both = view_major(views[:, :2])
        predictions = F.normalize(self.predictor(self.projection(self.features(both))).float(), dim=1)
        projected = F.normalize(self.target(both).float(), dim=1)  # the target takes no gradient
        swapped = torch.cat([projected[batch:], projected[:batch]])  # each view predicts the other's
        return {"bootstrap": (2 - 2 * (predictions * swapped).sum(dim=1)).mean()}

    def after_step(self) -> None:
        progress = self.trainer.global_step / max(1, self.trainer.estimated_stepping_batches)
        self.target.update(Projected(self.backbone, self.projection), progress)


class SwAV(SelfSupervised):
    """SwAV: each view predicts the other's assignment to learned prototypes.

    - [0] Caron et al., "Unsupervised Learning of Visual Features by Contrasting Cluster
      Assignments", NeurIPS 2020, https://arxiv.org/abs/2006.09882 (eq. 2-3, the swapped
      prediction; eq. 5, Sinkhorn-Knopp; Sec. 3.2, multi-crop)

    The views are projected (lightly's SwAV head), L2-normalised and scored by their
    cosines to the prototypes (unit vectors, normalised before each step). The codes of the
    two global views are the equipartitioned assignments that Sinkhorn-Knopp finds
    (``epsilon``, ``iterations``; across every process in a distributed run), and every
    view predicts the codes of the other global views with a softmax at ``temperature``
    (lightly's loss).
    Multi-crop: the views after the first two are shrunk to ``small_scale`` of the side,
    the small crops the paper adds at little cost (its recipe crops them from a small part
    of the image, the ``sim_local`` view, and the global ones with ``sim_global``). The
    prototypes stay as drawn (and normalised) for the first ``frozen_epochs`` (the paper
    freezes them for the first epoch, Appendix A, so that the early codes have fixed
    targets): their gradient is dropped, and no weight decay or momentum moves them.

    Args:
        prototypes: K, the number of prototypes.
        temperature, epsilon, iterations: those of the loss and of Sinkhorn-Knopp.
        small_crops: the small views after the two global ones.
        small_scale: their side, as a fraction of the input side.
        frozen_epochs: the epochs at the start whose steps leave the prototypes as they are.
        feat_dim, hidden_dim: the head's output and hidden widths.
        parts: those of ``ClassifierMethod``.
    """

    def __init__(self, *, prototypes: int = 100, temperature: float = 0.1, epsilon: float = 0.05,
                 iterations: int = 3, small_crops: int = 2, small_scale: float = 0.5, frozen_epochs: int = 1,
                 feat_dim: int = 128, hidden_dim: int = 512, **parts) -> None:
        from lightly.loss import SwaVLoss
        from lightly.models.modules import SwaVProjectionHead

        super().__init__(**parts)
        if prototypes < 1 or small_crops < 0 or not 0 < small_scale <= 1 or frozen_epochs < 0:
            raise ValueError(f"prototypes must be at least 1, small_crops and frozen_epochs non-negative and "
                             f"small_scale in (0, 1], got {prototypes}, {small_crops}, {frozen_epochs} and "
                             f"{small_scale}")
        self.frozen_epochs = frozen_epochs
        self.num_views, self.small_scale = self.views_needed({"small_crops": small_crops}), small_scale
        self.projection = SwaVProjectionHead(self.backbone.num_features, hidden_dim, feat_dim)
        self.prototypes = nn.Linear(feat_dim, prototypes, bias=False)  # eq. 2's z^T c_k: no bias
        # lightly asks at each step whether a process group is running
        self.swapped_loss = SwaVLoss(temperature, iterations, epsilon,
                                     sinkhorn_gather_distributed=torch.distributed.is_available())

    @classmethod
    def views_needed(cls, arguments: dict) -> int:
        """Two global views and the small crops."""
        return 2 + arguments.get("small_crops", 2)

    def _scores(self, images: Tensor) -> Tensor:
        """The images' cosines to the prototypes, in float32 whatever the autocast dtype:
        Sinkhorn-Knopp exponentiates them over epsilon = 0.05, where bf16's 8 bits would
        move a code by percents."""
        return similarities(F.normalize(self.projection(self.features(images)).float(), dim=1), self.prototypes.weight)

    def training_losses(self, views: Tensor, targets: Tensor) -> dict[str, Tensor]:
        with torch.no_grad():
            self.prototypes.weight.copy_(F.normalize(self.prototypes.weight, dim=1))
        views = views[:, : self.num_views]
        global_scores = self._scores(view_major(views[:, :2])).chunk(2)
        small = view_major(views[:, 2:])
        small_scores = []
        if len(small):
            side = max(1, round(views.shape[-1] * self.small_scale))
            small = F.interpolate(small.float(), size=(side, side), mode="bilinear", antialias=True,
                                  align_corners=False).to(small.dtype)  # no bf16 kernel for antialiasing
            small_scores = list(self._scores(small).chunk(self.num_views - 2))
        return {"swapped": self.swapped_loss(list(global_scores), small_scores)}

    def on_train_start(self) -> None:
        super().on_train_start()
        if self.frozen_epochs >= self.trainer.max_epochs:
            rank_zero_warn(f"method.frozen_epochs={self.frozen_epochs} spans all {self.trainer.max_epochs} epochs "
                           "of the run: SwAV's prototypes stay as drawn")

    def on_after_backward(self) -> None:
        if self.current_epoch < self.frozen_epochs:
            for parameter in self.prototypes.parameters():
                parameter.grad = None


class TWIST(SelfSupervised):
    """TWIST: twin class distributions (``TwinDistributionLoss``) of two views.

    - [0] Wang et al., "Self-Supervised Learning by Estimating Twin Class Distributions",
      IEEE TIP 2023, https://arxiv.org/abs/2110.07402

    A head (an MLP, then batch normalisation without affine parameters, as in the paper)
    maps each view's features to ``classes`` logits; their softmaxes are the twin
    distributions, trained to agree, each sharp, and together spread over the classes.

    Args:
        classes: C, the pseudo-classes (the paper uses about the data's class count or more).
        hidden_dim: the head's hidden width.
        parts: those of ``ClassifierMethod``.
    """

    def __init__(self, *, classes: int = 100, hidden_dim: int = 512, **parts) -> None:
        from longtail.models import ProjectionMLP

        super().__init__(**parts)
        if classes < 2:
            raise ValueError(f"classes must be at least 2, got {classes}")
        self.head = nn.Sequential(ProjectionMLP(self.backbone.num_features, hidden_dim, classes),
                                  nn.BatchNorm1d(classes, affine=False))
        self.twin_loss = TwinDistributionLoss()

    def training_losses(self, views: Tensor, targets: Tensor) -> dict[str, Tensor]:
        batch = len(views)
        logits = self.head(self.features(view_major(views[:, :2])))
        probabilities = logits.float().softmax(dim=1)  # bf16 would round every probability to 8 bits
        return {"twin": self.twin_loss(probabilities[:batch], probabilities[batch:])}


class SDCLR(SimCLR):
    """SDCLR: SimCLR between a network and its own pruned self.

    - [0] Jiang et al., "Self-Damaging Contrastive Learning", ICML 2021,
      https://arxiv.org/abs/2106.02990 (Sec. 3, the self-competitor)

    The second view goes through the same backbone with the ``prune_ratio`` of the weights
    of its convolution and linear layers smallest in magnitude set to 0: of them all
    together (``prune_scope=global``, as the authors' release prunes) or of each layer
    (``layer``). The masks are drawn again from the weights at the start of every epoch
    (buffers, so a resumed run has them). The pruned branch normalises with batch norms of
    its own, in the backbone and the projection head: its statistics differ from the dense
    network's, which the features are read from and which it must not move. The pruned
    network forgets the rare samples first, so contrasting the two branches stresses what
    the tail needs. The loss is ``SimCLR``'s (NT-Xent by default) between the dense
    branch's first view and the pruned branch's second.

    Args:
        prune_ratio: the fraction of the weights pruned (0.9 in the paper for CIFAR).
        prune_scope: ``global``, one magnitude threshold for every layer, or ``layer``, the
            ratio in each.
        objective, temperature, feat_dim, hidden_dim, parts: as ``SimCLR``.
    """

    def __init__(self, *, prune_ratio: float = 0.9, prune_scope: str = "global", objective: str = "ntxent",
                 temperature: float = 0.5, feat_dim: int = 128, hidden_dim: int = 512, **parts) -> None:
        super().__init__(objective=objective, temperature=temperature, feat_dim=feat_dim, hidden_dim=hidden_dim,
                         **parts)
        if not 0 <= prune_ratio < 1 or prune_scope not in ("global", "layer"):
            raise ValueError(f"prune_ratio must be in [0, 1) and prune_scope global or layer, got {prune_ratio} "
                             f"and {prune_scope!r}")
        self.prune_ratio, self.prune_scope = prune_ratio, prune_scope
        self.pruned = [name for name, module in self.backbone.named_modules()
                       if isinstance(module, (nn.Conv2d, nn.Linear))]
        for index, name in enumerate(self.pruned):
            weight = self.backbone.get_submodule(name).weight
            self.register_buffer(f"mask_{index}", torch.ones_like(weight, dtype=torch.bool))
        self.norm_names = [(part, name) for part in ("backbone", "projection")
                           for name, module in getattr(self, part).named_modules() if isinstance(module, _BatchNorm)]
        self.pruned_norms = nn.ModuleDict({_norm_key(part, name): copy.deepcopy(getattr(self, part).get_submodule(name))
                                           for part, name in self.norm_names})

    @torch.no_grad()
    def prune(self) -> None:
        """Each layer's mask: its weights at or above the ``prune_ratio`` quantile of
        magnitude, of all the layers' weights or of its own."""
        magnitudes = [self.backbone.get_submodule(name).weight.abs() for name in self.pruned]
        if self.prune_scope == "global":
            thresholds = [self._threshold(torch.cat([m.flatten() for m in magnitudes]))] * len(magnitudes)
        else:
            thresholds = [self._threshold(m.flatten()) for m in magnitudes]
        for index, (magnitude, threshold) in enumerate(zip(magnitudes, thresholds)):
            getattr(self, f"mask_{index}").copy_(magnitude >= threshold)

    def _threshold(self, magnitudes: Tensor) -> Tensor:
        """The smallest of the ``1 - prune_ratio`` largest ``magnitudes`` (at least one kept)."""
        kept = max(1, round(magnitudes.numel() * (1 - self.prune_ratio)))
        return magnitudes.kthvalue(magnitudes.numel() - kept + 1).values

    def on_train_epoch_start(self) -> None:
        super().on_train_epoch_start()
        self.prune()

    def _own_norms(self, part: str) -> dict[str, Tensor]:
        """The pruned branch's batch-norm parameters and statistics for ``part``, by the
        names of the dense network's."""
        return {f"{name}.{tensor_name}": tensor for norm_part, name in self.norm_names if norm_part == part
                for tensor_name, tensor in self.pruned_norms[_norm_key(part, name)].state_dict(keep_vars=True).items()}

    def pruned_features(self, images: Tensor) -> Tensor:
        """Backbone features with every pruned layer's weights masked (the same weights,
        so the gradient reaches them through the mask) and the branch's own batch norms."""
        state = {f"{name}.weight": self.backbone.get_submodule(name).weight * getattr(self, f"mask_{index}")
                 for index, name in enumerate(self.pruned)}
        images = images.contiguous(memory_format=torch.channels_last)
        return torch.func.functional_call(self.backbone, {**state, **self._own_norms("backbone")}, (images,),
                                          strict=False)

    def pruned_embeddings(self, images: Tensor) -> Tensor:
        """The pruned branch's projections: its features through the head with its own batch norms."""
        return torch.func.functional_call(self.projection, self._own_norms("projection"),
                                          (self.pruned_features(images),), strict=False)

    def embeddings(self, views: Tensor) -> tuple[Tensor, Tensor]:
        """The dense branch's embedding of the first view and the pruned branch's of the second."""
        return self.projection(self.features(views[:, 0])), self.pruned_embeddings(views[:, 1])


def _norm_key(part: str, name: str) -> str:
    """A key of ``SDCLR.pruned_norms``: the part and the dense batch norm's name."""
    return f"{part}__{name.replace('.', '__')}"
