"""Optimiser and per-step learning-rate schedule: linear warm-up, then cosine or step decay."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field

import torch

OPTIMIZERS = ("sgd", "adamw")
SCHEDULES = ("cosine", "step", "constant")


@dataclass
class OptimConfig:
    """The optimiser and its schedule; epochs count passes over the training set.

    ``step`` multiplies the rate by ``gamma`` at each epoch of ``milestones``;
    ``cosine`` decays it to 0 at the last epoch. Both follow ``warmup_epochs`` of
    linear warm-up, applied per step (Goyal et al., 2017, https://arxiv.org/abs/1706.02677).
    """

    name: str = "sgd"
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    epochs: int = 40
    warmup_epochs: int = 5
    schedule: str = "cosine"
    milestones: list[int] = field(default_factory=list)
    gamma: float = 0.1

    def validate(self) -> None:
        if self.name not in OPTIMIZERS:
            raise ValueError(f"optim.name must be one of {', '.join(OPTIMIZERS)}, got {self.name!r}")
        if self.schedule not in SCHEDULES:
            raise ValueError(
                f"optim.schedule must be one of {', '.join(SCHEDULES)}, got {self.schedule!r}"
            )
        if not self.lr > 0:
            raise ValueError(f"optim.lr must be positive, got {self.lr}")
        if self.epochs < 1:
            raise ValueError(f"optim.epochs must be at least 1, got {self.epochs}")
        if self.warmup_epochs < 0:
            raise ValueError(f"optim.warmup_epochs must be non-negative, got {self.warmup_epochs}")
        if self.weight_decay < 0:
            raise ValueError(f"optim.weight_decay must be non-negative, got {self.weight_decay}")

    def lr_factor(self, step: int, steps_per_epoch: int) -> float:
        """The multiple of ``lr`` used at optimiser step ``step`` (0-based).

        A run shorter than its warm-up warms up over the whole run.
        """
        epoch = step / steps_per_epoch
        warmup = min(self.warmup_epochs, self.epochs)
        if epoch < warmup:
            return (step + 1) / (warmup * steps_per_epoch)
        if self.schedule == "cosine":
            progress = (epoch - warmup) / max(self.epochs - warmup, 1)
            return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
        if self.schedule == "step":
            return self.gamma ** sum(epoch >= milestone for milestone in self.milestones)
        return 1.0

    def build(
        self, parameters: Iterable[torch.nn.Parameter], steps_per_epoch: int
    ) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
        """The optimiser and a scheduler to step after every optimiser step."""
        if self.name == "sgd":
            optimizer = torch.optim.SGD(
                parameters, lr=self.lr, momentum=self.momentum, weight_decay=self.weight_decay
            )
        else:
            optimizer = torch.optim.AdamW(parameters, lr=self.lr, weight_decay=self.weight_decay)
        steps_per_epoch = max(1, steps_per_epoch)
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: self.lr_factor(step, steps_per_epoch)
        )
        return optimizer, scheduler
