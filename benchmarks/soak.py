"""Soak: train for many steps and record the memory (RSS) every 100 steps.

A long run must hold steady: the resident memory of the training process and its
loader processes should stop growing after the first epochs. Writes
benchmarks/results/soak.json and soak.md.

    python benchmarks/soak.py [--steps 2000] [key=value ...]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

from lightning.pytorch.callbacks import Callback

from longtail.config import load_config
from longtail.files import atomic_write_text
from longtail.hardware import machine_info, tree_memory
from longtail.run import train

RESULTS = Path(__file__).parent / "results"


class RecordMemory(Callback):
    def __init__(self, every: int) -> None:
        self.every = every
        self.rows: list[dict] = []
        self.start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        step = trainer.global_step
        if step % self.every == 0:
            self.rows.append({"step": step, "epoch": trainer.current_epoch,
                              "rss_mib": round(tree_memory(os.getpid(), "Rss") / 2**20, 1),
                              "elapsed_s": round(time.perf_counter() - self.start, 1)})
            print(f"step {step}: {self.rows[-1]['rss_mib']:.0f} MiB", file=sys.stderr, flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--every", type=int, default=100)
    parser.add_argument("overrides", nargs="*", metavar="key=value")
    args = parser.parse_args()
    config = load_config([], ["out_dir=/tmp/longtail-soak", *args.overrides])
    steps_per_epoch = 585 // config.data.batch_size if config.data.format == "digits" else None
    if steps_per_epoch:
        config.optim.epochs = math.ceil(args.steps / steps_per_epoch)
    recorder = RecordMemory(args.every)
    _, metrics = train(config, progress=False, callbacks=[recorder])
    rows = recorder.rows
    settled = [r["rss_mib"] for r in rows if r["step"] >= rows[-1]["step"] // 4]
    result = {
        "machine": machine_info(),
        "command": "python benchmarks/soak.py " + " ".join(sys.argv[1:]),
        "commit": subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                                 text=True).stdout.strip(),
        "dataset": metrics["dataset"],
        "method": metrics["method"],
        "steps": metrics["steps"],
        "rows": rows,
        "growth_after_first_quarter_mib": round(max(settled) - min(settled), 1),
    }
    RESULTS.mkdir(exist_ok=True)
    atomic_write_text(RESULTS / "soak.json", json.dumps(result, indent=2) + "\n")
    lines = [
        f"# Soak: {result['method']} on {result['dataset']}, {result['steps']} steps",
        "",
        f"Machine: {result['machine']['cpu']}, {result['machine']['cores']} cores, "
        f"{result['machine']['capability']}; torch {result['machine']['torch']}. "
        f"Commit {result['commit']}. Command: `{result['command']}`.",
        "",
        f"RSS (training process and its loader processes) varied by "
        f"{result['growth_after_first_quarter_mib']} MiB over the last three quarters of the run.",
        "",
        "| step | epoch | RSS MiB | elapsed s |",
        "|---:|---:|---:|---:|",
        *[f"| {r['step']} | {r['epoch']} | {r['rss_mib']} | {r['elapsed_s']} |" for r in rows],
    ]
    atomic_write_text(RESULTS / "soak.md", "\n".join(lines) + "\n")
    print(f"wrote {RESULTS / 'soak.md'}")


if __name__ == "__main__":
    main()
