"""CIFAR-LT benchmark: each method trained at one budget, with its throughput.

For each method (and precision) it trains on the long-tailed training set, evaluates on
the whole test set, and measures in the same run the model-only bound: forward, backward
and optimiser step of the same model on random tensors of the same batch shape, no data
loading. Each finished row is written at once to benchmarks/results/<name>.json and .md;
a later call with the same settings skips the rows already there, and continues a row
that was stopped from its last checkpoint (every 100 steps, in --runs), so a long
benchmark runs in parts, across machines when --runs travels with it.

    python benchmarks/cifar_lt.py --data ../shared/data/cifar10 --epochs 30 \\
        --methods ce,logit_adjustment,balanced_softmax,bcl

The recipe is the BCL paper's (configs/cifar*_lt/bcl.yaml), compressed to the budget:
warm-up and the step milestones (160 and 180 of 200) scale with the epochs, and the
learning rate scales linearly with the batch size (0.15 at 256). Single-branch methods
train on the classifier view of BCL (AutoAugment and Cutout).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import torch

from longtail.config import Config, load_config
from longtail.files import atomic_write_text
from longtail.hardware import machine_info, native_bf16
from longtail.run import RUN_DIR_VARIABLE, build_method, environment, train

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
RECIPE_EPOCHS, RECIPE_WARMUP, RECIPE_MILESTONES, RECIPE_LR, RECIPE_BATCH = 200, 5, (160, 180), 0.15, 256


def recipe(data: str, method: str, epochs: int, batch_size: int, imbalance_factor: float,
           seed: int, precision: str, out_dir: Path) -> Config:
    """The config of the compressed recipe for one row."""
    if data == "digits":
        files, base = [], ["data.format=digits"]
    else:
        recipe_dir = "cifar100_lt" if "100" in Path(data).name else "cifar10_lt"
        files, base = [ROOT / "configs" / recipe_dir / "bcl.yaml"], [f"data.root={data}"]
    scale = epochs / RECIPE_EPOCHS
    overrides = base + [
        f"data.imbalance_factor={imbalance_factor}",
        f"method.name={method}",
        f"optim.epochs={epochs}",
        f"optim.warmup_epochs={max(1, round(RECIPE_WARMUP * scale))}",
        "optim.schedule=step",
        f"optim.milestones=[{','.join(str(max(1, round(m * scale))) for m in RECIPE_MILESTONES)}]",
        f"optim.lr={RECIPE_LR * batch_size / RECIPE_BATCH:g}",
        f"data.batch_size={batch_size}",
        f"seed={seed}",
        f"trainer.precision={precision}",
        f"out_dir={out_dir}",
        "trainer.checkpoint_every=100",
    ]
    if method != "bcl":
        overrides += ["data.views=[auto+cutout]", "model.classifier=linear"]
    return load_config(files, overrides)


def model_bound(method, views: int, batch_size: int, size: int, precision: str, steps: int = 10,
                repeats: int = 5) -> float:
    """Source images per second of forward, backward and step on random tensors: the median
    of ``repeats`` timings of ``steps`` steps, after 3 warm-up steps (the pipeline's rate is
    a median of epochs too: on a shared machine both then see its usual speed)."""
    method.train()
    optimizer = torch.optim.SGD(method.parameters(), lr=1e-3, momentum=0.9)
    inputs = torch.randn(batch_size, views, 3, size, size)
    targets = torch.randint(0, len(method.class_counts), (batch_size,))
    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision.startswith("bf16"))

    def step() -> None:
        with autocast:
            loss = torch.stack(list(method.training_losses(inputs, targets).values())).sum()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    for _ in range(3):
        step()
    timings = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(steps):
            step()
        timings.append(time.perf_counter() - start)
    return batch_size * steps / sorted(timings)[len(timings) // 2]


def train_row(config: Config, run_dir: Path) -> dict:
    """The metrics of the row's run in ``run_dir``: read when it finished, continued from
    its last checkpoint when it was stopped, else trained from the start."""
    if (run_dir / "metrics.json").is_file():
        return json.loads((run_dir / "metrics.json").read_text())
    if (run_dir / "checkpoints" / "last.ckpt").is_file():
        print(f"continuing {run_dir}", file=sys.stderr)
        return train(config, progress=True, resume=run_dir)[1]
    with environment(RUN_DIR_VARIABLE, str(run_dir)):
        return train(config, progress=True)[1]


def write_tables(results: Path, name: str, result: dict) -> None:
    atomic_write_text(results / f"{name}.json", json.dumps(result, indent=2) + "\n")
    machine = result["machine"]
    lines = [
        f"# {result['dataset']}: {result['epochs']} epochs, batch {result['batch_size']}",
        "",
        f"Machine: {machine['cpu']}, {machine['cores']} cores, capability {machine['capability']}, "
        f"native bf16 {machine['native_bf16']}, GPU {machine['gpu']}; torch {machine['torch']}. "
        f"Commit {result['commit']}.",
        "",
        f"Command: `{result['command']}`",
        "",
        "| method | precision | overall | many | medium | few | wall s | images/s | bound images/s | fraction |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]

    def percent(value):
        return "-" if value is None else f"{value:.1f}"

    for row in result["rows"]:
        lines.append(
            f"| {row['method']} | {row['precision']} | {percent(row['overall'])} | {percent(row['many'])} "
            f"| {percent(row['medium'])} | {percent(row['few'])} | {row['wall_s']:.0f} | {row['images_per_s']:.0f} "
            f"| {row['bound_images_per_s']:.0f} | {row['images_per_s'] / row['bound_images_per_s']:.2f} |"
        )
    lines += ["", *[f"- {note}" for note in result.get("notes", [])]]
    atomic_write_text(results / f"{name}.md", "\n".join(lines) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="a CIFAR folder (pickles or image folders), or 'digits'")
    parser.add_argument("--methods", default="ce,logit_adjustment,balanced_softmax,bcl")
    parser.add_argument("--precisions", default="32", help="comma-separated, e.g. 32,bf16-mixed")
    parser.add_argument("--imbalance-factor", type=float, default=100)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--name", help="results name (default: from the data and the factor)")
    parser.add_argument("--runs", type=Path, default=ROOT / "benchmarks" / "runs",
                        help="where the runs go, one folder per row (resumed from there)")
    parser.add_argument("--results", type=Path, default=RESULTS, help="where the tables go")
    args = parser.parse_args()

    dataset = "digits" if args.data == "digits" else Path(args.data).name
    name = args.name or f"{dataset.replace('-python', '')}_lt{args.imbalance_factor:g}"
    path = args.results / f"{name}.json"
    settings = {"epochs": args.epochs, "batch_size": args.batch_size, "seed": args.seed,
                "imbalance_factor": args.imbalance_factor, "dataset": dataset}
    result = json.loads(path.read_text()) if path.exists() else {}
    if any(result.get(key) != value for key, value in settings.items()):
        result = {**settings, "rows": [], "notes": []}
    result.update(
        machine=machine_info(),
        command="python benchmarks/cifar_lt.py " + " ".join(sys.argv[1:]),
        commit=subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                              capture_output=True, text=True).stdout.strip(),
    )
    args.results.mkdir(parents=True, exist_ok=True)
    for precision in args.precisions.split(","):
        if precision.startswith("bf16") and not native_bf16() and not torch.cuda.is_available():
            note = (f"no {precision} rows: this CPU ({result['machine']['capability']}) has no native "
                    "bfloat16, where it is emulated and many times slower than fp32")
            if note not in result["notes"]:
                result["notes"].append(note)
            continue
        for method_name in args.methods.split(","):
            if any(r["method"] == method_name and r["precision"] == precision for r in result["rows"]):
                print(f"{method_name} {precision}: already measured", file=sys.stderr)
                continue
            run_dir = args.runs / name / f"{method_name}-{precision}-e{args.epochs}-b{args.batch_size}-s{args.seed}"
            config = recipe(args.data, method_name, args.epochs, args.batch_size,
                            args.imbalance_factor, args.seed, precision, args.runs)
            print(f"{method_name} {precision}: training", file=sys.stderr)
            metrics = train_row(config, run_dir)
            method = build_method(config, metrics["train_counts"])
            size = 8 if dataset == "digits" else 32
            views = type(method).num_views
            bound = model_bound(method, views, args.batch_size, size, precision)
            test = metrics["test"]
            result["rows"].append({
                "method": method_name, "precision": precision, "epochs": args.epochs,
                "batch_size": args.batch_size, "overall": test["overall"], "many": test["many"],
                "medium": test["medium"], "few": test["few"], "per_class": test["per_class"],
                "wall_s": metrics["wall_s"], "images_per_s": metrics["images_per_s"],
                "bound_images_per_s": round(bound, 1), "run_dir": str(run_dir),
            })
            write_tables(args.results, name, result)
            print(f"{method_name} {precision}: {test['overall']:.1f}% overall; wrote {path}", file=sys.stderr)
    write_tables(args.results, name, result)


if __name__ == "__main__":
    main()
