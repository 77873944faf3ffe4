"""Progress of a run: Lightning's bar on a terminal, one line per epoch in a log."""

from __future__ import annotations

import logging
import sys
import time
import warnings

import torch
from lightning.pytorch.callbacks import Callback, TQDMProgressBar


def quiet_lightning() -> None:
    """Keep Lightning's start-up notes and tips out of the user's way; warnings stay."""
    for name in ("lightning.pytorch", "lightning.fabric"):
        for logger in (logging.getLogger(name), logging.getLogger(f"{name}.utilities.rank_zero")):
            logger.setLevel(logging.WARNING)
    for message in (
        ".*does not have many workers.*",
        ".*is smaller than the logging interval.*",
        ".*exists and is not empty.*",
        ".*LeafSpec.*",
        ".*across ranks is zero.*",
        ".*your dataloader is not resumable.*",  # longtail's sampler resumes mid-epoch itself
    ):
        warnings.filterwarnings("ignore", message=message)


class EpochLog(Callback):
    """Prints one line per training epoch: loss, learning rate, elapsed time."""

    def on_train_start(self, trainer, pl_module) -> None:
        self.start = time.perf_counter()

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        metrics = trainer.callback_metrics
        parts = [f"epoch {trainer.current_epoch + 1}/{trainer.max_epochs}"]
        for key in ("train/loss", "lr", "val/overall"):
            if key in metrics:
                parts.append(f"{key.split('/')[-1]} {metrics[key].item():.4g}")
        parts.append(f"{time.perf_counter() - self.start:.0f} s")
        print("  ".join(parts), file=sys.stderr, flush=True)


def progress_callback(enabled: bool) -> list[Callback]:
    """The progress display: none, a bar on a terminal, or a line per epoch."""
    if not enabled:
        return []
    return [TQDMProgressBar() if sys.stderr.isatty() else EpochLog()]


class Throughput(Callback):
    """Training throughput in source images per second, kept in every checkpoint so that a
    resumed run reports the whole run.

    Each epoch's rate is its images over the time from the epoch's start to its last
    batch's end (loading waits included, validation not). ``images_per_s`` is the median
    rate of the completed epochs, steady against a passing load on the machine; ``wall_s``
    the time in ``fit`` of every part of the run.
    """

    def __init__(self) -> None:
        self.epochs: dict[int, list] = {}  # epoch -> [images, seconds, completed]
        self.earlier_wall_s = 0.0

    def on_fit_start(self, trainer, pl_module) -> None:
        self.start = self.mark = time.perf_counter()  # a finished run resumed trains no batch

    def on_train_start(self, trainer, pl_module) -> None:
        self.mark = time.perf_counter()

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self.mark = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        now = time.perf_counter()
        epoch = self.epochs.setdefault(trainer.current_epoch, [0, 0.0, False])
        epoch[0] += len(batch[1])
        epoch[1] += now - self.mark
        self.mark = now

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self.epochs.setdefault(trainer.current_epoch, [0, 0.0, False])[2] = True

    @property
    def wall_s(self) -> float:
        return self.earlier_wall_s + time.perf_counter() - self.start

    @property
    def images_per_s(self) -> float:
        rates = sorted(images / seconds for images, seconds, done in self.epochs.values() if done and seconds)
        if rates:
            middle = len(rates) // 2
            return rates[middle] if len(rates) % 2 else (rates[middle - 1] + rates[middle]) / 2
        images = sum(images for images, _, _ in self.epochs.values())
        return images / max(1e-9, sum(seconds for _, seconds, _ in self.epochs.values()))

    def state_dict(self) -> dict:
        return {"epochs": {str(e): v for e, v in self.epochs.items()}, "wall_s": self.wall_s}

    def load_state_dict(self, state_dict: dict) -> None:
        self.epochs = {int(e): list(v) for e, v in state_dict["epochs"].items()}
        self.earlier_wall_s = state_dict["wall_s"]


class ModelOnlyStep:
    """The model-only bound of a method: source images per second of its forward,
    backward and optimiser step on random tensors ``[B, V, 3, S, S]`` already in place, no
    data loading; the rate a perfect loader would let it reach. The method's weights do
    not matter (an SGD step with a small rate)."""

    def __init__(self, method, batch_size: int, size: int, num_classes: int, bf16: bool = False) -> None:
        self.method, self.bf16 = method, bf16
        for part in method.frozen():  # as training freezes them: no gradient through them
            part.requires_grad_(False)
        self.optimizer = torch.optim.SGD(method.trainable_parameters(), lr=1e-3, momentum=0.9)
        self.inputs = torch.randn(batch_size, method.num_views, 3, size, size)
        self.targets = torch.randint(0, num_classes, (batch_size,))

    def step(self) -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.bf16):
            losses = self.method.training_losses(self.inputs, self.targets)
        self.optimizer.zero_grad(set_to_none=True)
        torch.stack(list(losses.values())).sum().backward()
        self.optimizer.step()

    def rate(self, steps: int, warmup: int = 2) -> float:
        """Images per second over ``steps`` steps timed after ``warmup`` untimed ones."""
        self.method.train()
        for _ in range(warmup):
            self.step()
        start = time.perf_counter()
        for _ in range(steps):
            self.step()
        return len(self.targets) * steps / (time.perf_counter() - start)
