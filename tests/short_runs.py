"""Short runs on Digits-LT for the tests: their overrides, and the two runs of a resume
test, one uninterrupted and one stopped as a killed run stops (its last checkpoint kept),
then resumed from that checkpoint."""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import pytest
import torch
from lightning.pytorch.callbacks import Callback

from longtail.config import load_config
from longtail.run import train

#: Two epochs of 9 steps on Digits-LT, deterministic, with a small projection.
SHORT = ["data.format=digits", "data.batch_size=64", "data.num_workers=0", "optim.epochs=2", "optim.warmup_epochs=0",
         "trainer.deterministic=true", "model.feat_dim=16", "model.hidden_dim=32"]


class StopAt(Callback):
    """Raises once step ``step`` has been trained, as a killed run stops."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step == self.step:
            raise RuntimeError("stopped")


class Runs(NamedTuple):
    full_dir: Path  #: the uninterrupted run's directory
    full: dict  #: and its metrics
    resumed_dir: Path  #: the stopped and resumed run's directory
    resumed: dict  #: and its metrics
    stopped_at: dict  #: the checkpoint the resumed run started from


def uninterrupted_and_resumed(tmp_path: Path, overrides: list[str], stop_after: int, callbacks=()) -> Runs:
    """Train ``overrides`` into ``tmp_path/full`` (with ``callbacks``), and into
    ``tmp_path/stopped`` stopped after step ``stop_after``, then resumed."""
    full_dir, full = train(load_config([], [*overrides, f"out_dir={tmp_path / 'full'}"]), progress=False,
                           callbacks=list(callbacks))
    with pytest.raises(RuntimeError, match="stopped"):
        train(load_config([], [*overrides, f"out_dir={tmp_path / 'stopped'}"]), progress=False,
              callbacks=[StopAt(stop_after)])
    (stopped,) = (tmp_path / "stopped").iterdir()
    stopped_at = torch.load(stopped / "checkpoints" / "last.ckpt", weights_only=True)
    resumed_dir, resumed = train(None, progress=False, resume=stopped)
    return Runs(full_dir, full, resumed_dir, resumed, stopped_at)


def last_states(*run_dirs: Path) -> list[dict]:
    """The state dicts of the runs' last checkpoints."""
    return [torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"] for run in run_dirs]
