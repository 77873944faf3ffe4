"""Progress of a run: Lightning's bar on a terminal, one line per epoch in a log."""

from __future__ import annotations

import sys
import time

from lightning.pytorch.callbacks import Callback, TQDMProgressBar


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
