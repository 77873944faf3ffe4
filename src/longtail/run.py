"""A run in stages, each a function: build, fit, test, write the run directory; and
evaluation from a checkpoint.

    config -> data -> parts (backbone, classifier, loss) -> method -> fit -> test -> run directory

A second stage (classifier re-training, a linear probe, fine-tuning after pre-training) is
another run whose config points ``model.init_from`` at the first's run directory.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import lightning as L
import torch
from lightning.fabric.utilities.rank_zero import rank_zero_only
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from torch import Tensor, nn

from longtail.checkpoints import (
    load_checkpoint,
    load_into,
    load_model_weights,
    run_checkpoint,
    save_outputs,
    save_weights,
)
from longtail.config import (
    Config,
    from_dict,
    load_config,
    loss_arguments,
    merge,
    method_arguments,
    method_class,
    nested_overrides,
    own_arguments,
)
from longtail.curves import read_curves, write_curves
from longtail.data import DataSplits, LongTailDataModule, read_splits, shot_groups
from longtail.data.cache import default_cache_dir
from longtail.errors import ConfigError
from longtail.evaluation import EvaluationOutputs, Outputs, summarize
from longtail.evaluation.knn import KNN_K, KNN_TEMPERATURE, KNNMonitor, features_of, knn_logits, knn_summary
from longtail.evaluation.posthoc import normalized_calibration, tau_normalized_logits
from longtail.files import AtomicCheckpointIO, atomic_write_text
from longtail.hardware import warn_if_slow_precision
from longtail.losses import CLASSIFICATION_LOSSES
from longtail.methods import ClassifierMethod
from longtail.models import build_backbone, build_classifier
from longtail.progress import Throughput, progress_callback


def read_data(config: Config, decode: bool = True) -> DataSplits:
    """The run's data splits, the training set made long-tailed as the config asks
    (``decode=False``: see ``read_splits``)."""
    data = config.data
    cache_dir = (data.cache_dir or default_cache_dir()) if data.cache else None
    return read_splits(data.format, data.root, data.imbalance_factor, data.profile, data.seed,
                       cache_dir, data.on_corrupt, (data.train_list, data.test_list, data.val_list),
                       data.resize, data.num_workers, decode, data.val_per_class)


def build_parts(config: Config, class_counts: Sequence[int]) -> dict[str, nn.Module]:
    """The backbone, the classifier and the loss that ``config`` names, for a training set
    with ``class_counts``."""
    backbone = build_backbone(config.model.backbone)
    classifier = build_classifier(config.model.classifier, backbone.num_features, len(class_counts))
    try:
        loss = CLASSIFICATION_LOSSES[config.loss["name"]](class_counts, **loss_arguments(config))
    except ValueError as error:
        raise ConfigError(f"loss {config.loss['name']!r}: {error}") from None
    return {"backbone": backbone, "classifier": classifier, "loss": loss}


def initialise_from(parts: dict[str, nn.Module], path: str | Path, classifier: bool = False) -> None:
    """Load the backbone (and with ``classifier`` the classifier) of ``parts`` from an
    earlier run's weights: a run directory, a ``.safetensors`` or a ``.ckpt`` file. Only
    training reads it: evaluation and ``--resume`` take the weights from the checkpoint."""
    if not Path(path).exists():
        raise ConfigError(f"model.init_from: no such run directory or file: {path}")
    state_dict, source = load_model_weights(path)
    for name in ("backbone", "classifier") if classifier else ("backbone",):
        load_into(parts[name], state_dict, source, prefix=f"{name}.")


def build_method(config: Config, class_counts: Sequence[int], initialise: bool = True) -> ClassifierMethod:
    """The method of ``config`` for a training set with ``class_counts``; its parts start
    from ``model.init_from`` when the config names one and ``initialise`` is true (not
    when a checkpoint's weights follow)."""
    parts = build_parts(config, class_counts)
    if initialise and config.model.init_from is not None:
        initialise_from(parts, config.model.init_from, config.model.init_classifier)
    cls = method_class(config.method["name"])
    supplied = {"class_counts": list(class_counts)} if "class_counts" in own_arguments(cls, ClassifierMethod) else {}
    try:
        return cls(
            **parts,
            optimizer=config.optim.build,
            skip_nonfinite=config.trainer.skip_nonfinite,
            **method_arguments(config),
            **supplied,
        )
    except ValueError as error:
        raise ConfigError(f"method {config.method['name']!r}: {error}") from None


@dataclass
class Built:
    """What the build stage hands on: the config, the data, the data module, the method."""

    config: Config
    splits: DataSplits
    datamodule: LongTailDataModule
    method: ClassifierMethod

    @property
    def info(self) -> dict:
        """What evaluation needs besides the weights; kept in every checkpoint."""
        return {
            "config": self.config.to_dict(),
            "classes": self.datamodule.classes,
            "class_counts": self.datamodule.class_counts,
            "mean": self.datamodule.mean,
            "std": self.datamodule.std,
            "image_size": self.datamodule.size,
        }


def build(config: Config, initialise: bool = True) -> Built:
    """Seed, read the data, build the method and the data module of ``config`` (its
    parts from ``model.init_from`` with ``initialise``)."""
    L.seed_everything(config.seed, workers=True, verbose=False)
    data = config.data
    splits = read_data(config)
    if config.method.get("cdb_tau") is not None and splits.val is None:
        raise ConfigError("method.cdb_tau: the class difficulties are measured on held-out data, and the data has "
                          "no validation split: set data.val_per_class=N (N images of every class held out)")
    method = build_method(config, splits.train.counts(), initialise)
    datamodule = LongTailDataModule(
        splits,
        views=data.views[: method.num_views],
        batch_size=data.batch_size,
        num_workers=data.num_workers,
        sampler=data.sampler,
        seed=config.seed,
        image_size=data.image_size,
        epochs=config.optim.epochs,
    )
    return Built(config, splits, datamodule, method)


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
    or SLURM), else a new one made by ``new_run_dir``.

    Only the processes of one launch share a directory: the first process (rank 0)
    refuses one that already holds a run, which a variable left set in the shell would
    otherwise overwrite."""
    shared = os.environ.get(RUN_DIR_VARIABLE)
    if not shared:
        return new_run_dir(config)
    run_dir = Path(shared)
    if first_process() and (run_dir / "config.yaml").exists():
        raise ConfigError(
            f"{RUN_DIR_VARIABLE}={shared} already holds a run: unset {RUN_DIR_VARIABLE} (it names the "
            f"directory of one launch's processes), point it at a new directory, or --resume {shared}"
        )
    run_dir.mkdir(parents=True, exist_ok=True)
    return run_dir


def first_process() -> bool:
    """True in the first process of a launch: rank 0 on node 0 by every launcher's
    variables (torchrun, SLURM, Lightning's own), or the only process."""
    variables = ("RANK", "LOCAL_RANK", "NODE_RANK", "GROUP_RANK", "SLURM_PROCID")
    return all(os.environ.get(name, "0") == "0" for name in variables)


def new_run_dir(config: Config) -> Path:
    """``<out_dir>/<date>-<time>-<dataset>-<method>``, made unique: the directory is
    created in one step that fails when it exists, so two runs started at once never
    share one."""
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    base = Path(config.out_dir) / f"{stamp}-{config.dataset_name}-{config.method['name']}"
    base.parent.mkdir(parents=True, exist_ok=True)
    run_dir, n = base, 1
    while True:
        try:
            run_dir.mkdir()
            return run_dir
        except FileExistsError:
            n += 1
            run_dir = base.with_name(f"{base.name}-{n}")


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


def _trainer(config: Config, progress: bool, callbacks: Sequence[Callback] = (), **kwargs) -> L.Trainer:
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
        inference_mode=False,  # evaluation's features may then train a probe
        **kwargs,
    )


@dataclass
class Fitted:
    """What the fit stage hands on: the trainer, its throughput and evaluation callbacks,
    and the training time."""

    trainer: L.Trainer
    throughput: Throughput
    evaluation: EvaluationOutputs
    wall_s: float


def fit(
    built: Built,
    run_dir: Path,
    resume_from: tuple[Path, int] | None = None,
    progress: bool = True,
    callbacks: Sequence[Callback] = (),
) -> Fitted:
    """Train ``built.method`` with its checkpoints, curves and TensorBoard events in
    ``run_dir``, from the start or from ``resume_from``: a checkpoint and its step."""
    config, datamodule = built.config, built.datamodule
    earlier_curves, checkpoint = [], None
    if resume_from is not None:
        checkpoint, resumed_step = resume_from
        datamodule.resume_at(resumed_step)
        earlier_curves = read_curves(run_dir / "metrics.csv", until_step=resumed_step)
    checkpoints = run_dir / "checkpoints"
    throughput = Throughput()
    evaluation = EvaluationOutputs(datamodule.class_counts, config.eval.many, config.eval.few)
    every = [
        *callbacks,
        throughput,
        evaluation,
        RunInfo(built.info),
        StepSeeds(config.seed),
        ModelCheckpoint(
            dirpath=checkpoints,
            save_last=True,
            save_top_k=0,
            every_n_train_steps=config.trainer.checkpoint_every,
            enable_version_counter=False,  # the run directory is the run's own: always last.ckpt
        ),
    ]
    if config.eval.knn_every:
        every.append(KNNMonitor(config.eval.knn_every, config.eval.knn_k, many=config.eval.many, few=config.eval.few))
    if built.splits.val is not None and built.method.trains_classifier:
        every.append(ModelCheckpoint(dirpath=checkpoints, filename="best", monitor="val/overall", mode="max",
                                     enable_version_counter=False))
    trainer = _trainer(
        config,
        progress,
        every,
        max_epochs=config.optim.epochs,
        limit_val_batches=None if built.splits.val is not None else 0,
        logger=[
            TensorBoardLogger(run_dir, name="tensorboard", version=""),
            curves_logger(run_dir, earlier_curves),
        ],
        plugins=[AtomicCheckpointIO()],
        log_every_n_steps=min(50, datamodule.steps_per_epoch),
    )
    with environment(RUN_DIR_VARIABLE, str(run_dir)):  # for the processes DDP starts
        trainer.fit(built.method, datamodule=datamodule, ckpt_path=checkpoint, weights_only=True)
        wall_s = throughput.wall_s
        trainer.save_checkpoint(checkpoints / "last.ckpt")
    return Fitted(trainer, throughput, evaluation, wall_s)


def test(built: Built, fitted: Fitted, run_dir: Path) -> tuple[Outputs, Path]:
    """Test the fitted method: the checkpoint chosen on the validation split when the data
    has one, else the last. Returns the test outputs and the checkpoint tested."""
    tested = run_checkpoint(run_dir)  # best.ckpt exists with a validation split only
    with environment(RUN_DIR_VARIABLE, str(run_dir)):
        fitted.trainer.test(built.method, datamodule=built.datamodule, verbose=False, weights_only=True,
                            ckpt_path=str(tested) if tested.name == "best.ckpt" else None)
    return fitted.evaluation.test, tested


def write_run(built: Built, fitted: Fitted, outputs: Outputs, tested: Path, run_dir: Path) -> dict:
    """Write the weights, the test outputs and ``metrics.json`` into ``run_dir`` (from the
    first process only); return the metrics (in a distributed run, the first process's are
    those written: the others' lack the k-NN test of a run that trains no classifier).

    A run that trains no classifier (a pre-training) is tested by the k-NN probe of its
    features: its test outputs are the k-NN's votes as logits (``knn_logits``), which the
    metrics and the report read, not its untrained classifier's."""
    config, datamodule, trainer, method = built.config, built.datamodule, fitted.trainer, built.method
    counts = datamodule.class_counts
    splits = built.splits
    metrics = {
        "method": config.method["name"],
        "dataset": config.dataset_name,
        "classes": datamodule.classes,
        "train_counts": counts,
        "many": config.eval.many,
        "few": config.eval.few,
        "shot_groups": shot_groups(counts, config.eval.many, config.eval.few),
        "epochs": trainer.current_epoch,
        "steps": trainer.global_step,
        "wall_s": round(fitted.wall_s, 2),
        "images_per_s": round(fitted.throughput.images_per_s * trainer.world_size, 1),
        "skipped_steps": method.skipped_steps,
        "skipped_files": sum(len(split.skipped) for split in (splits.train, splits.test, splits.val)
                             if split is not None),
        "test": summarize(outputs.logits, outputs.targets, counts, config.eval.many, config.eval.few),
        "probe": None,
        "checkpoint": str(tested),
        "logits_prior": method.logits_prior,
        "processes": trainer.world_size,
    }
    if trainer.is_global_zero:
        if not method.trains_classifier:  # a pre-training: its representation is what the test measures
            (train_features, train_labels), (test_features, test_labels) = final_features(trainer, method, datamodule)
            logits = knn_logits(train_features, train_labels, test_features, len(counts), config.eval.knn_k)
            outputs = Outputs(logits, test_labels.cpu())
            metrics["test"] = summarize(outputs.logits, outputs.targets, counts, config.eval.many, config.eval.few)
            metrics["probe"] = (f"k-NN on the backbone's features (k {config.eval.knn_k}, "
                                f"temperature {KNN_TEMPERATURE:g})")
        save_weights(run_dir / "model.safetensors", method.state_dict(), built.info)
        save_outputs(run_dir / "test_outputs.safetensors", outputs.logits, outputs.targets)
        atomic_write_text(run_dir / "metrics.json", json.dumps(metrics, indent=2) + "\n")
    return metrics


def final_features(trainer: L.Trainer, method, datamodule) -> tuple[tuple[Tensor, Tensor], tuple[Tensor, Tensor]]:
    """The un-augmented training and test features and labels of the fitted ``method``: the
    k-NN monitor's when it probed the last step, else computed."""
    for callback in trainer.callbacks:
        if isinstance(callback, KNNMonitor) and callback.probed and callback.probed[0] == trainer.global_step:
            return callback.probed[1:]
    train, test = (features_of(method, datamodule, split) for split in ("train", "test"))
    return train, test


def train(
    config: Config | None,
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
        config, checkpoint = resumable(run_dir)
        built = build(config, initialise=False)  # the checkpoint holds the weights
        load_into(built.method, checkpoint["state_dict"], run_dir / LAST, check_only=True)
        resume_from = (run_dir / LAST, checkpoint["global_step"])
    else:
        built = build(config)
        named = os.environ.get(RUN_DIR_VARIABLE)
        new = not named or not Path(named).exists()
        run_dir, resume_from = shared_run_dir(config), None
        if is_rank_zero():
            atomic_write_text(run_dir / "config.yaml", config.to_yaml())
    try:
        fitted = fit(built, run_dir, resume_from, progress, callbacks)
    except BaseException:
        if resume is None and is_rank_zero():
            remove_unstarted(run_dir, whole=new)
        raise
    outputs, tested = test(built, fitted, run_dir)
    return run_dir, write_run(built, fitted, outputs, tested, run_dir)


def remove_unstarted(run_dir: Path, whole: bool) -> None:
    """Remove what a run that stopped before its first checkpoint wrote: nothing of it can
    be resumed or reported. ``whole``: the run made the directory, which goes too; else
    (a directory the user named) only the run's own files go."""
    if (run_dir / "checkpoints").exists():
        return
    if whole:
        shutil.rmtree(run_dir, ignore_errors=True)
        return
    for name in ("config.yaml", "metrics.csv", "hparams.yaml"):
        (run_dir / name).unlink(missing_ok=True)
    shutil.rmtree(run_dir / "tensorboard", ignore_errors=True)


#: Keys that a resumed run may change: they shape neither the data nor the training.
RESUME_MAY_CHANGE = {"data.num_workers", "data.cache", "data.cache_dir", "trainer.checkpoint_every", "out_dir"}


#: A run's last checkpoint, in its directory.
LAST = Path("checkpoints") / "last.ckpt"


def resumable(run_dir: Path) -> tuple[Config, dict]:
    """The config and last checkpoint of a run to resume. A config edited since the
    checkpoint is refused, naming a changed key: the run would not continue as it began.
    Temporary files left by a kill during a write are removed."""
    if not (run_dir / LAST).is_file():
        raise ConfigError(f"{run_dir}: no {LAST} to resume from")
    config = load_config([run_dir / "config.yaml"])
    checkpoint = load_checkpoint(run_dir / LAST)
    stored = _flatten(checkpoint["longtail"]["config"])
    current = _flatten(config.to_dict())
    for key in sorted((set(stored) | set(current)) - RESUME_MAY_CHANGE):
        if stored.get(key) != current.get(key):
            raise ConfigError(
                f"{run_dir / 'config.yaml'}: {key} changed since the checkpoint ({stored.get(key)!r} -> "
                f"{current.get(key)!r}); resuming would not continue the same run: restore it, or start a new run"
            )
    if is_rank_zero():  # another process may be writing one
        for leftover in run_dir.rglob(".*.tmp"):
            leftover.unlink(missing_ok=True)
    return config, checkpoint


def _flatten(values: dict, prefix: str = "") -> dict:
    """``{"optim": {"lr": 0.1}}`` -> ``{"optim.lr": 0.1}``."""
    flat = {}
    for key, value in values.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


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


@dataclass
class Evaluation:
    """A checkpoint evaluated: its run information, the method, the outputs of the split
    and their summary (``longtail.evaluation.summarize``)."""

    info: dict
    config: Config
    method: ClassifierMethod
    outputs: Outputs
    results: dict
    has_validation: bool = False


def evaluate(path: str | Path, progress: bool = True, features: bool = False, split: str = "test",
             overrides: Sequence[str] = ()) -> Evaluation:
    """Evaluate the checkpoint at ``path`` (a ``.ckpt`` or ``.safetensors`` file, or a run
    directory: the checkpoint it tested) on the un-augmented ``split`` (``test``, or
    ``train`` and ``val``), keeping the backbone features with ``features``.

    The data are those the checkpoint's config names, unless ``overrides`` (``data.*``
    keys only, e.g. ``data.root=...``) name others. The features of a method that trains
    no classifier (a pre-training) are always kept: they are what it is tested by."""
    data = nested_overrides(list(overrides), sections=("data",))
    checkpoint = load_checkpoint(path)
    info = checkpoint["longtail"]
    config = from_dict(merge(info["config"], data))
    splits = read_data(config)
    method = build_method(config, info["class_counts"], initialise=False)
    load_into(method, checkpoint["state_dict"], Path(path))
    datamodule = LongTailDataModule(
        splits, views=["none"], batch_size=config.data.batch_size, num_workers=config.data.num_workers,
        mean=info["mean"], std=info["std"], image_size=info["image_size"], test_split=split,
    )
    collector = EvaluationOutputs(info["class_counts"], config.eval.many, config.eval.few,
                                  features or not method.trains_classifier)
    trainer = _trainer(config, progress, [collector], logger=False, enable_checkpointing=False)
    trainer.test(method, datamodule=datamodule, verbose=False)
    outputs = collector.test
    results = summarize(outputs.logits, outputs.targets, info["class_counts"], config.eval.many, config.eval.few)
    return Evaluation(info, config, method, outputs, results, splits.val is not None)


def knn_results(path: str | Path, evaluation: Evaluation, k: int = KNN_K, temperature: float = KNN_TEMPERATURE,
                overrides: Sequence[str] = (), resamples: int = 0) -> dict:
    """The summary of a weighted k-NN on the features of ``evaluation`` (the test split of
    the checkpoint at ``path``, evaluated with its features), the checkpoint's un-augmented
    training set as the neighbours (``longtail.evaluation.knn.knn_scores``)."""
    train = evaluate(path, progress=False, features=True, split="train", overrides=overrides)
    return knn_summary(train.outputs.features, train.outputs.targets, evaluation.outputs.features,
                       evaluation.outputs.targets, evaluation.info["class_counts"], evaluation.config.eval.many,
                       evaluation.config.eval.few, k, temperature, resamples)


def posthoc_logits(name: str, evaluation: Evaluation, tau: float) -> torch.Tensor:
    """The logits of ``evaluation`` after the post-hoc correction ``name`` at ``tau``:
    ``la`` and ``norcal`` (alike for a classifier: ``longtail.evaluation.posthoc``) on the
    logits, ``tau_norm`` on the features and the weights of a linear classifier that the
    method reads as it is (not LWS, MARC, NCM, nor a loss that reads its logits its own way)."""
    method = evaluation.method
    if name != "tau_norm":
        return normalized_calibration(evaluation.outputs.logits, evaluation.info["class_counts"], tau)
    classifier = method.classifier
    if (not isinstance(classifier, nn.Linear) or type(method).logits is not ClassifierMethod.logits
            or hasattr(method.classifier_loss, "inference_logits")):
        raise ValueError(f"--posthoc tau_norm rescales the weights of a linear classifier whose logits are read as "
                         f"they are; this run's method {evaluation.config.method['name']!r} with a "
                         f"{type(classifier).__name__} and loss {evaluation.config.loss['name']!r} has none")
    bias = None if classifier.bias is None else classifier.bias.detach()
    return tau_normalized_logits(evaluation.outputs.features, classifier.weight.detach(), bias, tau)


def rebalanced_in_training(config: Config) -> str | None:
    """What, besides the loss, moved the run's logits away from the training prior
    (a sampler, DRW, class-difficulty weights), in words; ``None`` for nothing."""
    moved = [f"data.sampler={config.data.sampler}"] if config.data.sampler != "random" else []
    moved += [f"method.{key}={config.method[key]}" for key in ("drw_epoch", "cdb_tau")
              if config.method.get(key) is not None]
    return ", ".join(moved) or None
