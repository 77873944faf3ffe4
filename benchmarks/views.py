"""The cost of making views: two stages (per image in a loader process, then per batch in
the training process) against every step image by image.

The per-image baseline applies the same policies with torchvision's transforms v2 alone:
the padded crop, the flip, AutoAugment, SimAugment's crop, flip, colour jitter and
grayscale, normalisation and Cutout run on each image instead of once on the batch. All run in this process, one thread, on the same
images; the two stages are timed apart, since only the first takes a loader's time.

    python benchmarks/views.py --size 32 --views auto+cutout,sim,sim
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torchvision.transforms import v2

from longtail.data.readers import LabeledImages
from longtail.data.module import TransformedImages
from longtail.data.transforms import MultiView, image_steps, padding, parse_view, view_transform
from longtail.files import atomic_write_text
from longtail.hardware import machine_info

ROOT = Path(__file__).resolve().parents[1]
MEAN, STD = [0.49, 0.48, 0.45], [0.25, 0.24, 0.26]


def per_image_view(name: str, size: int) -> v2.Transform:
    """The view ``name`` with every step on each image (torchvision v2 only)."""
    policy, cutout = parse_view(name)
    crop = [v2.RandomCrop(size, padding=padding(size)), v2.RandomHorizontalFlip()]
    steps = {
        "none": [],
        "standard": crop,
        "auto": crop + [v2.AutoAugment(v2.AutoAugmentPolicy.CIFAR10)],
        "rand": image_steps("rand", size, size),
        "sim": [v2.RandomResizedCrop(size, scale=(0.08, 1.0), antialias=True), v2.RandomHorizontalFlip(),
                v2.RandomApply([v2.ColorJitter(0.4, 0.4, 0.4, 0.1)], p=0.8), v2.RandomGrayscale(p=0.2)],
    }[policy]
    steps += [v2.ToDtype(torch.float32, scale=True), v2.Normalize(MEAN, STD)]
    if cutout:
        steps.append(v2.RandomErasing(p=1.0, scale=(0.25, 0.25), ratio=(1.0, 1.0), value=0))
    return v2.Compose(steps)


def milliseconds_per_image(make_batch, batch_size: int, repeats: int) -> float:
    make_batch()
    timings = []
    for _ in range(repeats):
        start = time.perf_counter()
        make_batch()
        timings.append(time.perf_counter() - start)
    return 1000 * sorted(timings)[len(timings) // 2] / batch_size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--views", default="auto+cutout,sim,sim")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--results", type=Path, default=ROOT / "benchmarks" / "results")
    args = parser.parse_args()
    torch.set_num_threads(1)  # as in a loader process
    names = args.views.split(",")
    images = np.random.default_rng(0).integers(0, 256, (args.batch_size, args.size, args.size, 3), dtype=np.uint8)
    data = LabeledImages(images, np.zeros(args.batch_size, dtype=np.int64), ["all"])
    keys = [(i, 1000 + i) for i in range(args.batch_size)]
    two_stage = TransformedImages(data, MultiView([view_transform(n, args.size, MEAN, STD, args.size) for n in names]))
    baseline = [per_image_view(n, args.size) for n in names]
    pixels = torch.from_numpy(images).permute(0, 3, 1, 2)

    def per_image() -> torch.Tensor:
        return torch.stack([torch.stack([view(image) for view in baseline]) for image in pixels])

    batch = two_stage.__getitems__(keys)
    stages = {"stage 1 (loader)": milliseconds_per_image(lambda: two_stage.__getitems__(keys), args.batch_size, args.repeats),
              "stage 2 (training process)": milliseconds_per_image(
                  lambda: two_stage.transform.batch(batch.images, batch.seed), args.batch_size, args.repeats)}
    rows = {**stages, "two stages": sum(stages.values()),
            "per image": milliseconds_per_image(per_image, args.batch_size, args.repeats)}
    result = {
        "machine": machine_info(),
        "command": "python benchmarks/views.py " + " ".join(sys.argv[1:]),
        "commit": subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                                 capture_output=True, text=True).stdout.strip(),
        "size": args.size, "views": names, "batch_size": args.batch_size,
        "ms_per_image": {name: round(value, 3) for name, value in rows.items()},
        "speedup": round(rows["per image"] / rows["two stages"], 2),
    }
    name = f"views_{args.size}"
    args.results.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.results / f"{name}.json", json.dumps(result, indent=2) + "\n")
    machine = result["machine"]
    lines = [
        f"# Views of {args.size}-pixel images: {', '.join(names)}, batches of {args.batch_size}",
        "",
        f"Machine: {machine['cpu']}, capability {machine['capability']}; torch {machine['torch']}; one thread, "
        f"as in a loader process. Commit {result['commit']}.",
        "",
        f"Command: `{result['command']}`",
        "",
        "| how | ms per source image (all views) |",
        "|---|---:|",
        *[f"| {how} | {value:.2f} |" for how, value in rows.items()],
        "",
        f"Two stages are {result['speedup']:.1f}x faster, and leave the loader "
        f"{rows['per image'] / rows['stage 1 (loader)']:.1f}x less work: the median of {args.repeats} batches each.",
    ]
    atomic_write_text(args.results / f"{name}.md", "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
