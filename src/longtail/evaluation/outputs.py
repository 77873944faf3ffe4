"""What evaluation collects from a method: logits, targets and, on demand, features."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from lightning.pytorch.callbacks import Callback
from torch import Tensor

from longtail.evaluation.metrics import SHOT_GROUPS, shot_accuracy


@dataclass
class Outputs:
    """The outputs of one evaluation pass, in the loader's order: logits ``[N, C]``,
    targets ``[N]`` and, when asked for, backbone features ``[N, F]`` (float32, on the CPU)."""

    logits: Tensor
    targets: Tensor
    features: Tensor | None = None


class EvaluationOutputs(Callback):
    """Collects what a method's validation and test steps return (``evaluation_outputs``
    with the targets), logs the validation accuracy (``val/overall``, ``val/many``, ...)
    and keeps the test pass's ``Outputs`` in ``test``.

    Args:
        class_counts: training images per class, for the shot split of the validation.
        many, few: the shot-split thresholds.
        features: keep the backbone features of the test pass too.
    """

    def __init__(self, class_counts: Sequence[int], many: int = 100, few: int = 20,
                 features: bool = False) -> None:
        self.class_counts, self.many, self.few = list(class_counts), many, few
        self.features = features
        self.test: Outputs | None = None
        self._batches: list[dict[str, Tensor]] = []

    def _keep(self, outputs: dict[str, Tensor], features: bool) -> None:
        names = ("logits", "targets", "features") if features else ("logits", "targets")
        self._batches.append({name: outputs[name].detach().float().cpu() for name in names})

    def _gather(self, features: bool) -> Outputs:
        batches, self._batches = self._batches, []
        joined = {name: torch.cat([b[name] for b in batches]) for name in batches[0]}
        return Outputs(joined["logits"], joined["targets"].long(), joined.get("features") if features else None)

    def on_validation_epoch_start(self, trainer, pl_module) -> None:
        self._batches = []

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        self._keep(outputs, features=False)

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        if not self._batches:
            return
        outputs = self._gather(features=False)
        results = shot_accuracy(outputs.logits.argmax(dim=1), outputs.targets, self.class_counts,
                                self.many, self.few)
        for key in ("overall", *SHOT_GROUPS):
            if results[key] is not None:
                pl_module.log(f"val/{key}", results[key], prog_bar=key == "overall")
        validated = getattr(pl_module, "validated", None)
        if validated is not None and not trainer.sanity_checking:
            validated(results["per_class"])

    on_test_epoch_start = on_validation_epoch_start

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        self._keep(outputs, self.features)

    def on_test_epoch_end(self, trainer, pl_module) -> None:
        self.test = self._gather(self.features)
