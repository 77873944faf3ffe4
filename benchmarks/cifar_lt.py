"""CIFAR-LT benchmark: each method trained at one budget, with its throughput.

For each method (and precision) it trains on the long-tailed training set, evaluates on
the whole test set, and measures in the same run the model-only bound: forward, backward
and optimiser step of the same model on random tensors of the same batch shape, no data
loading, timed after every epoch (``ModelBound``). The row's fraction is the median over
the epochs of the epoch's rate over the bound timed just after it. Each finished row is
written at once to benchmarks/results/<name>.json and .md; a later call with the same
settings skips the rows already there, and continues a row that was stopped from its
last checkpoint (every 100 steps, in --runs), so a long benchmark runs in parts, across
machines when --runs travels with it.

    python benchmarks/cifar_lt.py --data ../shared/data/cifar10 --epochs 30 \\
        --methods ce,logit_adjustment,balanced_softmax,bcl

Each row reads its paper recipe from configs/cifar*_lt/ and compresses it to the budget:
its warm-up and step milestones scale with the epochs, and its learning rate scales
linearly with the batch size. The single-branch rows take BCL's (bcl.yaml: 200 epochs, steps
at 160 and 180, 0.15 at 256), the supervised contrastive ones their own (supcon.yaml,
paco.yaml, ...), the self-supervised pre-trainings the long-tailed SimCLR
recipe (pretrain.yaml, cosine, 0.5 at 512) with their method's file over it, and the
linear probes linear.yaml's (20 epochs, 0.5 at 256, no weight decay). Single-branch methods
train on the classifier view of BCL (AutoAugment and Cutout), or with ``standard`` views
(random crop and flip) where the row's name says so. The re-balancing family's rows
(``ROWS``): losses and samplers train the whole budget; second stages (cRT, LWS, MARC, NCM)
train a few epochs on the cross-entropy row's backbone; post-hoc rows correct its test
logits. The contrastive family's rows train BCL's budget with their own views; the
two-stage ones (SupCon's and TSC's pre-training) are followed by a linear classifier on
the frozen backbone (``*_linear``). The table says which of the papers' orderings hold
at this budget.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from lightning.pytorch.callbacks import Callback

from longtail.checkpoints import load_checkpoint
from longtail.config import Config, load_config, load_yaml, merge, method_class
from longtail.data import shot_groups
from longtail.evaluation import summarize
from longtail.files import atomic_write_text
from longtail.hardware import machine_info, native_bf16
from longtail.progress import ModelOnlyStep, Throughput, quiet_lightning
from longtail.run import RUN_DIR_VARIABLE, build_method, environment, evaluate, posthoc_logits, train

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"


@dataclass(frozen=True)
class Row:
    """A row of the table: the overrides of its method (``{drw_epoch}`` is 0.8 of the epochs,
    as Cao et al.'s 160 of 200), the classifier's views, and where it starts: a second stage
    trains ``stage_epochs`` on the backbone of row ``after``'s run; a post-hoc row corrects
    that run's test logits (``posthoc``), training nothing. A pre-training, whose classifier
    is not trained, is scored as its run is: by the k-NN probe of its features. ``epochs``
    fixes a row's epochs whatever the budget (the untrained floor). ``files``: its recipe,
    under configs/cifar*_lt/."""

    overrides: tuple[str, ...] = ()
    views: str = "auto+cutout"
    after: str | None = None
    stage_epochs: int = 3
    posthoc: str | None = None
    epochs: int | None = None
    files: tuple[str, ...] = ("bcl.yaml",)


def linear_probe(after: str, *overrides: str) -> Row:
    """The linear classifier on ``after``'s frozen backbone, in linear.yaml's recipe
    (Khosla et al., NeurIPS 2020, Sec. 4): crop-and-flip views, 20 epochs, no weight decay."""
    return Row(("method.name=crt", *overrides), views="standard", after=after, stage_epochs=20,
               files=("linear.yaml",))


SUPERVISED = ("method.name=supervised",)
#: Self-supervised pre-training on the long-tailed images, labels unused, scored by the k-NN
#: probe; each has a linear probe on its frozen backbone (``<name>_linear``), and ``random``
#: is the floor (a backbone that did not learn). Best measured in a table of their own:
#: ``--name cifar10_lt100_pretrain``.
SWAV_VIEWS = "sim_global, sim_global, sim_local, sim_local"  # multi-crop: two global views, two small ones
#: pretrain.yaml is SimCLR's recipe, each other method's file goes over it; the overrides
#: repeat the method for the digits runs of the tests, which read no file.
SELF_SUPERVISED_ROWS = {
    name: Row((f"method.name={name}",), views=SWAV_VIEWS if name == "swav" else "sim, sim",
              files=("pretrain.yaml",) + ((f"pretrain/{name}.yaml",) if name != "simclr" else ()))
    for name in ("simclr", "moco_v2", "byol", "sdclr", "twist", "swav", "boosted_simclr", "boosted_sdclr")
} | {  # SimCLR's decoupled forms (Yeh et al., ECCV 2022)
    objective: Row(("method.name=simclr", f"method.objective={objective}"), views="sim, sim",
                   files=("pretrain.yaml", f"pretrain/{objective}.yaml"))
    for objective in ("dcl", "dclw")
}
#: The rows by name (``--methods``). The single-view rows train on BCL's classifier view
#: unless they say ``standard`` (random crop and flip).
ROWS = {
    "ce": Row(("method.name=ce",)),
    "logit_adjustment": Row(("method.name=logit_adjustment",)),
    "balanced_softmax": Row(("method.name=balanced_softmax",)),
    "bcl": Row(("method.name=bcl",), views="auto+cutout, sim, sim"),
    "ce_standard": Row(("method.name=ce",), views="standard"),
    "logit_adjustment_standard": Row(("method.name=logit_adjustment",), views="standard"),
    "label_smoothing": Row((*SUPERVISED, "loss.name=ce", "loss.label_smoothing=0.1")),
    "focal": Row((*SUPERVISED, "loss.name=focal", "loss.gamma=1.0")),
    "class_balanced_softmax": Row((*SUPERVISED, "loss.name=class_balanced", "loss.beta=0.9999")),
    "class_balanced_sigmoid": Row((*SUPERVISED, "loss.name=class_balanced", "loss.base=sigmoid", "loss.beta=0.9999")),
    "class_balanced_focal": Row((*SUPERVISED, "loss.name=class_balanced", "loss.base=focal", "loss.beta=0.9999",
                                 "loss.gamma=1.0")),
    "ldam_drw": Row((*SUPERVISED, "loss.name=ldam", "model.classifier=normalized", "method.drw_epoch={drw_epoch}")),
    "ce_drw": Row(("method.name=ce", "method.drw_epoch={drw_epoch}")),
    "iif": Row((*SUPERVISED, "loss.name=iif")),
    "bal_bce": Row((*SUPERVISED, "loss.name=bal_bce")),
    "eql": Row((*SUPERVISED, "loss.name=eql")),
    "efl": Row((*SUPERVISED, "loss.name=efl")),
    "gol": Row((*SUPERVISED, "loss.name=gol")),
    "ce_held_out": Row(("method.name=ce", "data.val_per_class=25")),  # CDB's data: 25 per class held out
    "cdb_w": Row(("method.name=ce", "method.cdb_tau=1.5", "data.val_per_class=25")),
    "class_balanced_sampler": Row(("method.name=ce", "data.sampler=class_balanced")),
    "square_root": Row(("method.name=ce", "data.sampler=square_root")),
    "progressive": Row(("method.name=ce", "data.sampler=progressive")),
    "cdb_s": Row(("method.name=ce", "method.cdb_tau=1.5", "data.sampler=class_difficulty", "data.val_per_class=25")),
    "supcon": Row(("method.name=supcon",), views="auto+cutout, sim, sim", files=("supcon.yaml",)),
    "supcon_pretrain": Row(("method.name=supcon", "method.alpha=0"), views="sim, sim", files=("supcon_pretrain.yaml",)),
    "supcon_linear": linear_probe("supcon_pretrain"),
    "tsc_pretrain": Row(("method.name=tsc",), views="sim, sim", files=("tsc.yaml",)),
    "tsc_linear": linear_probe("tsc_pretrain", "data.sampler=class_balanced"),  # TSC's second stage
    # the key encoder's 0.999 (a 1000-step average) is a third of these 2,900 steps; 0.99 keeps its lag
    # near the paper's share of its 400 epochs
    "paco": Row(("method.name=paco", "method.momentum=0.99"), views="auto+cutout, sim", files=("paco.yaml",)),
    "gpaco": Row(("method.name=gpaco",), views="auto+cutout, sim", files=("gpaco.yaml",)),
    "rescom": Row(("method.name=rescom",), views="auto+cutout, auto+cutout", files=("rescom.yaml",)),
    **SELF_SUPERVISED_ROWS,
    "random": Row(("method.name=simclr", "optim.lr=1e-12"), views="sim, sim", epochs=1,  # the floor
                  files=("pretrain.yaml",)),
    # a class-balanced probe, so that it measures the features of every class, not the head's prior
    **{f"{name}_linear": linear_probe(name, "data.sampler=class_balanced")
       for name in (*SELF_SUPERVISED_ROWS, "random")},
    "crt": Row(("method.name=crt", "data.sampler=class_balanced"), after="ce"),
    "lws": Row(("method.name=lws", "model.init_classifier=true", "data.sampler=class_balanced"), after="ce"),
    "marc": Row(("method.name=marc", "model.init_classifier=true"), after="ce"),
    "ncm": Row(("method.name=ncm",), after="ce", stage_epochs=1),
    "ce+la": Row(after="ce", posthoc="la"),
    "ce+tau_norm": Row(after="ce", posthoc="tau_norm"),
}


def recipe(data: str, row: str, epochs: int, batch_size: int, imbalance_factor: float,
           seed: int, precision: str, out_dir: Path, first_stage: Path | None = None) -> Config:
    """The config of the row's recipe compressed to the budget (a second stage: its own
    epochs on ``first_stage``'s backbone, the rate decaying to 0)."""
    spec = ROWS[row]
    recipe_dir = ROOT / "configs" / ("cifar100_lt" if "100" in Path(data).name else "cifar10_lt")
    paper: dict = {}
    for name in spec.files:
        paper = merge(paper, load_yaml(recipe_dir / name))
    optim = paper["optim"]
    if data == "digits":  # the recipe's schedule on the toy data
        files, base = [], ["data.format=digits"]
    else:
        files, base = [recipe_dir / name for name in spec.files], [f"data.root={data}"]
    if first_stage is not None:
        schedule = [f"optim.epochs={spec.stage_epochs}", "optim.warmup_epochs=0", "optim.schedule=cosine",
                    f"model.init_from={first_stage}"]
    else:
        epochs = spec.epochs or epochs
        scale = epochs / optim["epochs"]
        schedule = [f"optim.epochs={epochs}", f"optim.warmup_epochs={max(1, round(optim['warmup_epochs'] * scale))}",
                    f"optim.schedule={optim['schedule']}"]
        if optim["schedule"] == "step":
            milestones = ",".join(str(max(1, round(m * scale))) for m in optim["milestones"])
            schedule.append(f"optim.milestones=[{milestones}]")
    overrides = base + schedule + [
        f"data.imbalance_factor={imbalance_factor}",
        f"optim.lr={optim['lr'] * batch_size / paper['data']['batch_size']:g}",
        f"data.batch_size={batch_size}",
        f"seed={seed}",
        f"trainer.precision={precision}",
        f"out_dir={out_dir}",
        "trainer.checkpoint_every=100",
    ] + [o.format(drw_epoch=round(0.8 * epochs)) for o in spec.overrides]
    if spec.views != "auto+cutout, sim, sim":
        views = "auto+cutout" if spec.views == "auto+cutout" else spec.views
        overrides += [f"data.views=[{views}]"]
        if not any(o.startswith("model.classifier=") for o in spec.overrides):
            overrides += ["model.classifier=linear"]
    return load_config(files, overrides)


class ModelBound(Callback):
    """The model-only bound, timed at the end of every training epoch beside that epoch's
    own rate, so that both see the machine in the same state (a shared host's speed drifts
    by 10% over hours).

    The bound is source images per second of forward, backward and optimiser step of a
    second instance of the row's method, on random tensors of the batch's shape, no data
    loading: ``steps`` steps timed after 2 warm-up steps. Its state is kept in the run's
    checkpoints, so a row continued in parts keeps the pairs of every part.
    """

    def __init__(self, config: Config, steps: int = 5) -> None:
        self.config, self.steps = config, steps
        self.epochs: dict[int, tuple[float, float]] = {}  # epoch -> (pipeline, bound) images/s
        self.seconds = 0.0  # spent timing the bound, left out of the row's wall time

    def on_fit_start(self, trainer, pl_module) -> None:
        config, counts = self.config, trainer.datamodule.class_counts
        method = build_method(config, counts, initialise=False)
        trains = any(p.requires_grad for p in method.trainable_parameters())
        self.model_only = ModelOnlyStep(method, config.data.batch_size, trainer.datamodule.size, len(counts),
                                        bf16=config.trainer.precision.startswith("bf16")) if trains else None

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if self.model_only is None:  # a method that trains nothing (NCM) has no bound
            return
        throughput = next(c for c in trainer.callbacks if isinstance(c, Throughput))
        images, seconds, _ = throughput.epochs[trainer.current_epoch]
        start = time.perf_counter()
        bound = self.model_only.rate(self.steps)
        self.epochs[trainer.current_epoch] = (images / seconds, bound)
        self.seconds += time.perf_counter() - start

    def state_dict(self) -> dict:
        return {"epochs": {str(e): list(v) for e, v in self.epochs.items()}, "seconds": self.seconds}

    def load_state_dict(self, state_dict: dict) -> None:
        self.epochs = {int(e): tuple(v) for e, v in state_dict["epochs"].items()}
        self.seconds = state_dict["seconds"]


def made_since(commit: str | None, since: str | None) -> bool:
    """Whether ``commit`` is ``since`` or comes after it (always, without ``since``; never
    for an unknown commit)."""
    if since is None:
        return True
    if not commit:
        return False
    check = subprocess.run(["git", "merge-base", "--is-ancestor", since, commit], cwd=ROOT, capture_output=True)
    return check.returncode == 0


def train_row(config: Config, run_dir: Path, bound: ModelBound, since: str | None, commit: str) -> dict:
    """The metrics of the row's run in ``run_dir``, with ``bound`` holding its pairs of
    rates: read when it finished, continued from its last checkpoint when it was stopped,
    else trained from the start. A run started before ``since`` (its ``commit`` file)
    is discarded and trained again."""
    started, last = run_dir / "commit", run_dir / "checkpoints" / "last.ckpt"
    if run_dir.exists() and not made_since(started.read_text().strip() if started.is_file() else None, since):
        print(f"discarding {run_dir}: started before {since}", file=sys.stderr)
        shutil.rmtree(run_dir)
    elif run_dir.exists() and not last.is_file():  # stopped before its first checkpoint
        shutil.rmtree(run_dir)
    if (run_dir / "metrics.json").is_file():
        bound.load_state_dict(load_checkpoint(last)["callbacks"][bound.state_key])
        return json.loads((run_dir / "metrics.json").read_text())
    if last.is_file():
        print(f"continuing {run_dir}", file=sys.stderr)
        return train(config, progress=True, resume=run_dir, callbacks=[bound])[1]
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(started, commit + "\n")
    with environment(RUN_DIR_VARIABLE, str(run_dir)):
        return train(config, progress=True, callbacks=[bound])[1]


def row_dir(args: argparse.Namespace, name: str, row: str, precision: str) -> Path:
    return args.runs / name / f"{row}-{precision}-e{args.epochs}-b{args.batch_size}-s{args.seed}"


def measure_row(args: argparse.Namespace, name: str, row: str, precision: str, result: dict) -> dict | None:
    """Train (or continue) the row's run, or correct its first stage's logits post hoc, and
    return its table row; ``None`` when the first stage it needs is not measured yet."""
    spec = ROWS[row]
    first_stage = row_dir(args, name, spec.after, precision) if spec.after else None
    if first_stage is not None and not (first_stage / "metrics.json").is_file():
        print(f"{row} {precision}: needs the {spec.after} row at {precision} first", file=sys.stderr)
        return None
    run_dir = row_dir(args, name, row, precision)
    views = spec.views
    if spec.posthoc is not None:
        print(f"{row} {precision}: correcting the logits of {first_stage}", file=sys.stderr)
        start = time.perf_counter()
        evaluation = evaluate(first_stage, progress=False, features=True)
        logits = posthoc_logits(spec.posthoc, evaluation, 1.0)  # no validation split to choose tau on
        test = summarize(logits, evaluation.outputs.targets, evaluation.info["class_counts"],
                         evaluation.config.eval.many, evaluation.config.eval.few)
        metrics = {"test": test, "shot_groups": shot_groups(evaluation.info["class_counts"],
                                                            evaluation.config.eval.many, evaluation.config.eval.few),
                   "train_counts": evaluation.info["class_counts"], "wall_s": time.perf_counter() - start}
        throughput = {"images_per_s": None, "bound_images_per_s": None, "fraction": None, "bound_epochs": 0}
    else:
        config = recipe(args.data, row, args.epochs, args.batch_size, args.imbalance_factor, args.seed,
                        precision, args.runs, first_stage)
        views = ", ".join(config.data.views[: method_class(config.method["name"]).views_needed(config.method)])
        print(f"{row} {precision}: training", file=sys.stderr)
        bound = ModelBound(config)
        metrics = train_row(config, run_dir, bound, args.since, result["commit"])
        if metrics.get("probe"):  # a pre-training, its classifier untrained
            views += " (k-NN probe)"
        pairs = list(bound.epochs.values())
        throughput = {
            "images_per_s": metrics["images_per_s"] if pairs else None,
            "bound_images_per_s": round(statistics.median(b for _, b in pairs), 1) if pairs else None,
            "fraction": round(statistics.median(p / b for p, b in pairs), 3) if pairs else None,
            "bound_epochs": len(pairs),
        }
        metrics["wall_s"] -= bound.seconds
    test = metrics["test"]
    return {
        "method": row, "precision": precision, "epochs": spec.epochs or args.epochs, "batch_size": args.batch_size,
        "views": views, "after": spec.after, "posthoc": spec.posthoc,
        "overall": test["overall"], "many": test["many"], "medium": test["medium"], "few": test["few"],
        "tail": tail_accuracy(test["per_class"], metrics["shot_groups"]),
        "per_class": test["per_class"], "train_counts": metrics["train_counts"],
        "wall_s": round(metrics["wall_s"], 1), **throughput, "run_dir": str(run_dir if spec.posthoc is None
                                                                              else first_stage),
        "commit": result["commit"], "capability": result["machine"]["capability"], "cpu": result["machine"]["cpu"],
        "stale": False,
    }


def tail_accuracy(per_class: list[float], shot_groups: list[str]) -> float | None:
    """Mean accuracy of the classes outside the many-shot group (``eval.many`` training
    images or fewer), None when there are none: CIFAR-10-LT at factor 100 has no few-shot class, so
    the tail is this."""
    tail = [accuracy for accuracy, group in zip(per_class, shot_groups) if group != "many"]
    return statistics.mean(tail) if tail else None


#: The orderings the papers report, best first: each is checked, overall and on the tail,
#: at every precision that has all its rows.
ORDERINGS = (
    ("bcl", "logit_adjustment", "ce"),  # Zhu et al., CVPR 2022
    ("ldam_drw", "ce"),  # Cao et al., NeurIPS 2019
    ("class_balanced_focal", "focal"),  # Cui et al., CVPR 2019
    ("crt", "ce"),  # Kang et al., ICLR 2020
    ("lws", "ce"),  # Kang et al., ICLR 2020
    ("cdb_w", "ce_held_out"),  # Sinha et al., IJCV 2022, on the same held-out data
    ("cdb_s", "ce_held_out"),  # Sinha et al., IJCV 2022
    ("bcl", "supcon"),  # Zhu et al., CVPR 2022
    ("paco", "supcon"),  # Cui et al., ICCV 2021
    ("rescom", "supcon"),  # Zhong et al., 2022
    # the self-supervised ones by both probes: k-NN on the long-tailed neighbours and the linear classifier
    *((f"{better}{probe}", f"{baseline}{probe}") for better, baseline in (
        ("sdclr", "simclr"),  # Jiang et al., ICML 2021
        ("boosted_simclr", "simclr"),  # Zhou et al., ICML 2022
        ("boosted_sdclr", "sdclr"),  # Zhou et al., ICML 2022
        ("dcl", "simclr"),  # Yeh et al., ECCV 2022
        ("dclw", "dcl"),  # Yeh et al., ECCV 2022: the weighting adds to DCL
    ) for probe in ("", "_linear")),
)


def ordering(rows: list[dict]) -> list[str]:
    """Which of the papers' orderings hold at this budget, overall and on the tail."""
    lines = []
    for order in ORDERINGS:
        for precision in dict.fromkeys(row["precision"] for row in rows):
            by_method = {row["method"]: row for row in rows if row["precision"] == precision}
            if not all(method in by_method for method in order):
                continue
            for metric in ("overall", "tail"):
                values = [by_method[method][metric] for method in order]
                if None in values:
                    continue
                holds = all(better > worse for better, worse in zip(values, values[1:]))
                measured = ", ".join(f"{method} {value:.1f}" for method, value in zip(order, values))
                lines.append(f"{metric} at {precision}: {' > '.join(order)} "
                             f"{'holds' if holds else 'does not hold'} ({measured}){mixed(by_method, order)}")
    return lines


def mixed(by_method: dict[str, dict], order: tuple[str, ...]) -> str:
    """A warning when the rows compared were measured on different CPUs, or some before the
    change that ``--since`` names (``stale``)."""
    made = {method: (cpu_of(by_method[method]), by_method[method].get("stale", False)) for method in order}
    if len(set(made.values())) < 2:
        return ""
    return "; mixed rows, not yet a comparison: " + ", ".join(
        f"{method} on {cpu}{' before the change' if stale else ''}" for method, (cpu, stale) in made.items())


def cpu_of(row: dict, earlier_capability: str = "-") -> str:
    """The machine that measured a row: its CPU model and capability (rows made before the
    model was recorded: the capability alone)."""
    capability = row.get("capability") or earlier_capability
    return f"{row['cpu']}, {capability}" if row.get("cpu") else capability


def write_tables(results: Path, name: str, result: dict) -> None:
    atomic_write_text(results / f"{name}.json", json.dumps(result, indent=2) + "\n")
    machine, many, few = result["machine"], result["shots"]["many"], result["shots"]["few"]
    earlier_capability = result.get("earlier_capability", machine["capability"])  # rows before it was recorded
    lines = [
        f"# {result['dataset']}, imbalance factor {result['imbalance_factor']:g}: "
        f"{result['epochs']} epochs, batch {result['batch_size']}",
        "",
        f"Machine of the latest rows: {machine['cpu']}, {machine['cores']} cores, capability "
        f"{machine['capability']}, native bf16 {machine['native_bf16']}, GPU {machine['gpu']}; torch {machine['torch']}. "
        f"Tables written at commit {result['commit']}.",
        "",
        f"Command: `{result['command']}`",
        "",
        "| method | views | precision | overall | many | medium | few | tail | wall s | images/s | bound images/s "
        "| fraction | commit | CPU |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|",
    ]

    def percent(value):
        return "-" if value is None else f"{value:.1f}"

    def number(value, digits=0):
        return "-" if value is None else f"{value:.{digits}f}"

    def views(row):
        if row.get("posthoc"):
            return f"{row['after']}'s logits, post hoc"
        named = row.get("views") or ("auto+cutout, sim, sim" if row["method"] == "bcl" else "auto+cutout")
        return f"{named} on {row['after']}'s backbone" if row.get("after") else named

    for row in result["rows"]:
        lines.append(
            f"| {row['method']} | {views(row)} | {row['precision']} | {percent(row['overall'])} "
            f"| {percent(row['many'])} | {percent(row['medium'])} | {percent(row['few'])} | {percent(row['tail'])} "
            f"| {row['wall_s']:.0f} | {number(row['images_per_s'])} "
            f"| {number(row['bound_images_per_s'])} | {number(row['fraction'], 2)} | {row.get('commit') or '-'} "
            f"| {cpu_of(row, earlier_capability)} |"
        )
    lines += [
        "",
        f"many, medium, few: classes with over {many}, {few} to {many}, under {few} training images; "
        f"tail: the classes with {many} or fewer (medium and few). "
        "images/s: source images per second of training, the median of the epochs' rates "
        "(loading included, evaluation not). bound: the model-only bound (forward, backward "
        "and step on random tensors, no loading) timed after each epoch, their median. "
        "fraction: the median over the epochs of the epoch's rate over the bound timed after it. "
        "wall s: training time, the bound's timings left out (a second stage: its own epochs; post hoc: "
        "the evaluation). views: the classifier's training views (BCL: and its contrastive ones); a second "
        "stage trains on the named row's backbone (cRT, LWS, MARC: a few epochs; a linear probe, *_linear: "
        "20 epochs on the frozen backbone), a post-hoc row corrects its test logits "
        "at tau 1 (no validation split to choose it on). k-NN probe: a pre-training, its classifier "
        "untrained, is tested by a weighted k-NN on its features (k 200, temperature 0.1, the un-augmented "
        "training images as neighbours). commit: the commit the row was "
        "measured at (-: before rows recorded it). CPU: the model and capability of the CPU that measured "
        "the row (its capability alone for rows made before the model was recorded); rows from different "
        "CPUs compare by their fraction, not their images/s.",
        "",
        *[f"- {line}" for line in ordering(result["rows"]) + result.get("notes", [])],
    ]
    atomic_write_text(results / f"{name}.md", "\n".join(lines) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="a CIFAR folder (pickles or image folders), or 'digits'")
    parser.add_argument("--methods", default="ce,logit_adjustment,balanced_softmax,bcl",
                        help="comma-separated rows: " + ", ".join(ROWS))
    parser.add_argument("--precisions", default="32", help="comma-separated, e.g. 32,bf16-mixed")
    parser.add_argument("--imbalance-factor", type=float, default=100)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--name", help="results name (default: from the data and the factor)")
    parser.add_argument("--runs", type=Path, default=ROOT / "benchmarks" / "runs",
                        help="where the runs go, one folder per row (resumed from there)")
    parser.add_argument("--results", type=Path, default=RESULTS, help="where the tables go")
    parser.add_argument("--since", metavar="COMMIT",
                        help="measure again the rows made before COMMIT, a change that moves the results "
                             "(rows without a commit count as older)")
    args = parser.parse_args()
    quiet_lightning()

    dataset = "digits" if args.data == "digits" else Path(args.data).name
    name = args.name or f"{dataset.replace('-python', '').replace('-', '')}_lt{args.imbalance_factor:g}"
    path = args.results / f"{name}.json"
    settings = {"epochs": args.epochs, "batch_size": args.batch_size, "seed": args.seed,
                "imbalance_factor": args.imbalance_factor, "dataset": dataset}
    result = json.loads(path.read_text()) if path.exists() else {}
    if any(result.get(key) != value for key, value in settings.items()):
        result = {**settings, "rows": [], "notes": []}
    thresholds = recipe(args.data, "ce", args.epochs, args.batch_size, args.imbalance_factor,
                        args.seed, "32", args.runs).eval
    if result.get("machine") and "earlier_capability" not in result:  # the CPU of the rows made so far
        result["earlier_capability"] = result["machine"]["capability"]
    for row in result.get("rows", []):
        row.setdefault("capability", result.get("earlier_capability"))
    result.update(
        shots={"many": thresholds.many, "few": thresholds.few},
        machine=machine_info(),
        command="python benchmarks/cifar_lt.py " + " ".join(sys.argv[1:]),
        commit=subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                              capture_output=True, text=True).stdout.strip(),
    )
    if args.since:  # rows made before it wait to be measured again
        for row in result["rows"]:
            row["stale"] = not made_since(row.get("commit"), args.since)
    args.results.mkdir(parents=True, exist_ok=True)
    for precision in args.precisions.split(","):
        if precision.startswith("bf16") and not native_bf16() and not torch.cuda.is_available():
            note = (f"no {precision} rows: this CPU ({result['machine']['capability']}) has no native "
                    "bfloat16, where it is emulated and many times slower than fp32")
            if note not in result["notes"]:
                result["notes"].append(note)
            continue
        result["notes"] = [n for n in result["notes"] if not n.startswith(f"no {precision} rows")]
        for method_name in args.methods.split(","):
            if method_name not in ROWS:
                parser.error(f"unknown row {method_name!r}; the rows: {', '.join(ROWS)}")
            measured = [r for r in result["rows"] if r["method"] == method_name and r["precision"] == precision]
            if measured and made_since(measured[0].get("commit"), args.since):
                print(f"{method_name} {precision}: already measured", file=sys.stderr)
                continue
            row = measure_row(args, name, method_name, precision, result)
            if row is None:
                continue
            if measured:  # the new row takes the older one's place
                result["rows"][result["rows"].index(measured[0])] = row
            else:
                result["rows"].append(row)
            write_tables(args.results, name, result)
            print(f"{method_name} {precision}: {row['overall']:.1f}% overall; wrote {path}", file=sys.stderr)
    write_tables(args.results, name, result)


if __name__ == "__main__":
    main()
