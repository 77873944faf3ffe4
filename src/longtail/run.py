"""One training run, end to end, and re-evaluation from a checkpoint.

config -> data -> method -> Lightning Trainer -> test -> run directory.
"""

from __future__ import annotations

import csv
import inspect
import io
import json
import os
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

import lightning as L
import torch
from lightning.fabric.utilities.rank_zero import rank_zero_only
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

from longtail.config import (
    MODEL_ARGUMENTS,
    Config,
    ConfigError,
    from_dict,
    load_config,
    method_class,
)
from longtail.checkpoints import load_checkpoint, save_outputs, save_weights
from longtail.data import LongTailDataModule, read_splits, shot_groups
from longtail.data.cache import default_cache_dir
from longtail.files import AtomicCheckpointIO, atomic_write_text
from longtail.hardware import warn_if_slow_precision
from longtail.methods import METHODS, ClassifierMethod
from longtail.progress import Throughput, progress_callback


def read_data(config: Config):
    """The run's data splits, the training set made long-tailed as the config asks."""
    data = config.data
    cache_dir = (data.cache_dir or default_cache_dir()) if data.cache else None
    return read_splits(data.format, data.root, data.imbalance_factor, data.profile, data.seed,
                       cache_dir, data.on_corrupt, (data.train_list, data.test_list, data.val_list),
                       data.resize)


def build_method(config: Config, class_counts: list[int]) -> ClassifierMethod:
    """The method of ``config``, for a training set with ``class_counts``."""
    name = config.method["name"]
    parameters = inspect.signature(method_class(name)).parameters
    options = {key: value for key, value in config.method.items() if key != "name"}
    options.update({key: getattr(config.model, key) for key in MODEL_ARGUMENTS if key in parameters})
    return METHODS[name][0](
        num_classes=len(class_counts),
        class_counts=class_counts,
        backbone=config.model.backbone,
        classifier=config.model.classifier or parameters["classifier"].default,
        optim=config.optim,
        many=config.eval.many,
        few=config.eval.few,
        **options,
    )


def resolve(config: Config) -> Config:
    """Fill in the defaults that depend on the method (its classifier)."""
    if config.model.classifier is None:
        parameters = inspect.signature(method_class(config.method["name"])).parameters
        config.model.classifier = parameters["classifier"].default
    return config


#: Names the run directory for every process of a distributed run.
RUN_DIR_VARIABLE = "LONGTAIL_RUN_DIR"


def is_rank_zero() -> bool:
    """True in the process that writes the run's files (the only one, without DDP)."""
    return rank_zero_only.rank == 0


@contextmanager
def environment(name: str, value: str) -> Iterator[None]:
    """Set an environment variable for the duration of a block."""
    previous = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if previous is None:
            del os.environ[name]
        else:
            os.environ[name] = previous


def shared_run_dir(config: Config) -> Path:
    """The run directory: ``$LONGTAIL_RUN_DIR`` when set (by the first process of a
    distributed run for the others, or by a user launching every process with torchrun
    or SLURM), else a new one made by ``new_run_dir``."""
    shared = os.environ.get(RUN_DIR_VARIABLE)
    if shared:
        Path(shared).mkdir(parents=True, exist_ok=True)
        return Path(shared)
    return new_run_dir(config)


def new_run_dir(config: Config) -> Path:
    """``<out_dir>/<date>-<time>-<dataset>-<method>``, made unique."""
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    base = Path(config.out_dir) / f"{stamp}-{config.dataset_name}-{config.method['name']}"
    run_dir, n = base, 1
    while run_dir.exists():
        n += 1
        run_dir = base.with_name(f"{base.name}-{n}")
    run_dir.mkdir(parents=True)
    return run_dir


class RunInfo(Callback):
    """Stores in every checkpoint what evaluation needs besides the weights."""

    def __init__(self, info: dict) -> None:
        self.info = info

    def on_save_checkpoint(self, trainer, pl_module, checkpoint: dict) -> None:
        checkpoint["longtail"] = self.info


class StepSeeds(Callback):
    """Seeds torch's generator from (seed, step) before every training step, so that what a
    model draws (dropout, stochastic depth) does not depend on where a run was resumed."""

    def __init__(self, seed: int) -> None:
        self.seed = seed

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        torch.manual_seed(self.seed * 1_000_003 + trainer.global_step)


def _trainer(config: Config, progress: bool, callbacks: list[Callback] = (), **kwargs) -> L.Trainer:
    warn_if_slow_precision(config.trainer.precision, config.trainer.accelerator)
    return L.Trainer(
        callbacks=[*callbacks, *progress_callback(progress)],
        enable_progress_bar=progress and sys.stderr.isatty(),
        accelerator=config.trainer.accelerator,
        devices=config.trainer.devices,
        num_nodes=config.trainer.num_nodes,
        precision=config.trainer.precision,
        deterministic=config.trainer.deterministic,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        use_distributed_sampler=False,  # the samplers shard themselves; evaluation sees all
        **kwargs,
    )


def train(
    config: Config,
    progress: bool = True,
    resume: str | Path | None = None,
    callbacks: Sequence[Callback] = (),
) -> tuple[Path, dict]:
    """Train ``config``; return the run directory and the metrics written there.

    ``callbacks`` are Lightning callbacks added to the run's own.

    With ``resume``, a run directory, ``config`` is ignored: the run continues from its
    last checkpoint with its own config, and ends as it would have without the break.
    """
    if resume is not None:
        run_dir = Path(resume)
        resume_from = run_dir / "checkpoints" / "last.ckpt"
        if not resume_from.is_file():
            raise ConfigError(f"{run_dir}: no checkpoints/last.ckpt to resume from")
        config = load_config([run_dir / "config.yaml"])
    config = resolve(config)
    L.seed_everything(config.seed, workers=True, verbose=False)
    data = config.data
    splits = read_data(config)
    method = build_method(config, splits.train.counts())
    method.max_skipped_steps = config.trainer.skip_nonfinite
    datamodule = LongTailDataModule(
        splits,
        views=data.views[: method.num_views],
        batch_size=data.batch_size,
        num_workers=data.num_workers,
        sampler=data.sampler,
        seed=config.seed,
        image_size=data.image_size,
    )
    earlier_curves = []
    if resume is None:
        run_dir, resume_from = shared_run_dir(config), None
        if is_rank_zero():
            atomic_write_text(run_dir / "config.yaml", config.to_yaml())
    else:
        resumed_step = load_checkpoint(resume_from)["global_step"]
        datamodule.resume_at(resumed_step)
        earlier_curves = read_curves(run_dir / "metrics.csv", until_step=resumed_step)
    info = {
        "config": config.to_dict(),
        "classes": datamodule.classes,
        "class_counts": datamodule.class_counts,
        "mean": datamodule.mean,
        "std": datamodule.std,
        "image_size": datamodule.size,
    }
    checkpoints = run_dir / "checkpoints"
    throughput = Throughput()
    callbacks = [
        *callbacks,
        throughput,
        RunInfo(info),
        StepSeeds(config.seed),
        ModelCheckpoint(
            dirpath=checkpoints,
            save_last=True,
            save_top_k=0,
            every_n_train_steps=config.trainer.checkpoint_every,
            enable_version_counter=False,  # the run directory is the run's own: always last.ckpt
        ),
    ]
    if splits.val is not None:
        callbacks.append(
            ModelCheckpoint(dirpath=checkpoints, filename="best", monitor="val/overall", mode="max",
                            enable_version_counter=False)
        )
    trainer = _trainer(
        config,
        progress,
        callbacks,
        max_epochs=config.optim.epochs,
        limit_val_batches=None if splits.val is not None else 0,
        logger=[
            TensorBoardLogger(run_dir, name="tensorboard", version=""),
            curves_logger(run_dir, earlier_curves),
        ],
        plugins=[AtomicCheckpointIO()],
        log_every_n_steps=min(50, datamodule.steps_per_epoch),
    )
    with environment(RUN_DIR_VARIABLE, str(run_dir)):  # for the processes DDP starts
        trainer.fit(method, datamodule=datamodule, ckpt_path=resume_from)
        wall_s = throughput.wall_s
        trainer.save_checkpoint(checkpoints / "last.ckpt")
        trainer.test(method, datamodule=datamodule, verbose=False)
    if trainer.is_global_zero:
        save_weights(run_dir / "model.safetensors", method.state_dict(), info)
        save_outputs(run_dir / "test_outputs.safetensors", method.test_logits, method.test_targets)
    metrics = {
        "method": config.method["name"],
        "dataset": config.dataset_name,
        "classes": datamodule.classes,
        "train_counts": datamodule.class_counts,
        "many": config.eval.many,
        "few": config.eval.few,
        "shot_groups": shot_groups(datamodule.class_counts, config.eval.many, config.eval.few),
        "epochs": trainer.current_epoch,
        "steps": trainer.global_step,
        "wall_s": round(wall_s, 2),
        "images_per_s": round(throughput.images_per_s * trainer.world_size, 1),
        "skipped_steps": method.skipped_steps,
        "skipped_files": len(splits.train.skipped) + len(splits.test.skipped)
        + (len(splits.val.skipped) if splits.val is not None else 0),
        "test": method.test_results,
        "checkpoint": str(checkpoints / "last.ckpt"),
        "logits_prior": method.logits_prior,
        "processes": trainer.world_size,
    }
    if trainer.is_global_zero:
        atomic_write_text(run_dir / "metrics.json", json.dumps(metrics, indent=2) + "\n")
    return run_dir, metrics


def curves_logger(run_dir: Path, earlier_curves: list[dict]) -> CSVLogger:
    """Lightning's CSV logger for ``run_dir/metrics.csv``, continuing ``earlier_curves``.

    Lightning's writer deletes an existing ``metrics.csv`` when it starts. The rows from before a
    break go back at once, under the writer's own header, so that the file holds the whole curve
    however many times the run is stopped and resumed.
    """
    logger = CSVLogger(run_dir, name="", version="")
    if earlier_curves and is_rank_zero():
        writer = logger.experiment  # starting, it deletes metrics.csv
        write_curves(run_dir / "metrics.csv", earlier_curves)
        writer.metrics_keys = list(earlier_curves[0])  # it appends under this header
    return logger


def read_curves(path: Path, until_step: int | None = None) -> list[dict]:
    """The rows of a ``metrics.csv`` (up to ``until_step``, when given)."""
    if not path.is_file():
        return []
    text = path.read_text()
    if not text.endswith("\n"):  # Lightning appends to this file: a kill can cut its last row
        text = text[: text.rfind("\n") + 1]
    rows = [row for row in csv.DictReader(io.StringIO(text)) if None not in row.values()]
    return [row for row in rows if until_step is None or int(row["step"]) <= until_step]


def write_curves(path: Path, rows: list[dict]) -> None:
    columns = list(dict.fromkeys(key for row in rows for key in row))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns)
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(path, buffer.getvalue())


def evaluate(path: str | Path, progress: bool = True) -> tuple[dict, ClassifierMethod]:
    """Test the checkpoint at ``path`` (or a run directory's last checkpoint).

    Returns the checkpoint's run information and the tested method, whose
    ``test_results``, ``test_logits`` and ``test_targets`` hold the outcome.
    """
    checkpoint = load_checkpoint(path)
    info = checkpoint["longtail"]
    config = from_dict(info["config"])
    data = config.data
    splits = read_data(config)
    method = build_method(config, info["class_counts"])
    method.load_state_dict(checkpoint["state_dict"])
    datamodule = LongTailDataModule(
        splits, views=["none"], batch_size=data.batch_size, num_workers=data.num_workers,
        mean=info["mean"], std=info["std"], image_size=info["image_size"],
    )
    trainer = _trainer(config, progress, logger=False, enable_checkpointing=False)
    trainer.test(method, datamodule=datamodule, verbose=False)
    return info, method
