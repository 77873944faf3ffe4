"""ImageNet-LT scale: the cache build, the loader and the model, measured in one run.

A synthetic stand-in is made on the fly (once; kept in --work): JPEGs of mixed sizes (200
to 500 pixels a side) in ``train/<class>/`` folders, 1,000 classes with a long tail. In
one run it measures:

- the cache build at ``data.resize=256``: images/s, the peak anonymous resident memory
  of the process tree (``longtail.hardware.PeakMemory``, sampled) and the cache's size;
- the per-epoch loader, images/s through the training loader and its batch stage, for
  ResNet-50's 224-pixel ImageNet view (``standard``: random resized crop and flip) and for
  BCL's ImageNet-LT views (``rand, sim, sim``), from the cache and from the files (the
  per-epoch path, no cache), with a loader process per core;
- the model-only bound of ResNet-50 (cross-entropy, one view) and of BCL's ImageNet-LT
  recipe (ResNet-50, three views) on this machine, in fp32 and, where the CPU has native
  bfloat16, bf16-mixed;

and projects from them the wall time of one ImageNet-LT epoch (115,846 training images)
and of the BCL recipe (90 epochs). Writes benchmarks/results/imagenet_scale.json and .md.

    python benchmarks/imagenet_scale.py [--images 50000] [--work /tmp/longtail-imagenet-standin]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

from longtail.config import from_dict, load_yaml, merge, nested_overrides
from longtail.data import LongTailDataModule, longtail_counts
from longtail.data.cache import human_bytes
from longtail.data.decoding import ImageSource
from longtail.data.images import DataSplits
from longtail.data.readers import _class_folder_files
from longtail.data.storage import decoded, read_when_used
from longtail.files import atomic_write_text
from longtail.hardware import PeakMemory, machine_info, native_bf16
from longtail.progress import ModelOnlyStep
from longtail.run import build_method

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
IMAGENET_LT_TRAIN = 115_846
RECIPE_EPOCHS = 90
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def standin_counts(images: int, classes: int, imbalance_factor: float = 256) -> list[int]:
    """Images per class of an exponential profile over ``classes`` at ImageNet-LT's ratio
    (1,280 to 5), summing to ``images``: the rounding's remainder goes to the head."""
    share = sum(imbalance_factor ** (-i / (classes - 1)) for i in range(classes))
    counts = [max(1, n) for n in longtail_counts(round(images / share), classes, imbalance_factor)]
    for c in range(images - sum(counts)):
        counts[c % classes] += 1
    return counts


def _write_jpeg(job: tuple[Path, int]) -> None:
    path, seed = job
    rng = np.random.default_rng(seed)
    width, height = (int(side) for side in rng.integers(200, 501, size=2))
    coarse = Image.fromarray(rng.integers(0, 256, (6, 6, 3), dtype=np.uint8)).resize((width, height), Image.BICUBIC)
    detail = rng.normal(0, 12, (height, width, 3))
    pixels = np.clip(np.asarray(coarse, dtype=np.float64) + detail, 0, 255).astype(np.uint8)
    Image.fromarray(pixels).save(path, quality=90)


def make_standin(root: Path, counts: list[int]) -> None:
    """The JPEGs of ``counts`` in ``root/train/<class>/`` (kept: made again only when the
    counts differ)."""
    marker = root / "counts.json"
    if marker.exists() and json.loads(marker.read_text()) == counts:
        return
    shutil.rmtree(root, ignore_errors=True)
    jobs = []
    for c, n in enumerate(counts):
        folder = root / "train" / f"n{c:04d}"
        folder.mkdir(parents=True)
        jobs += [(folder / f"{i:05d}.jpg", c * 100_000 + i) for i in range(n)]
    start = time.perf_counter()
    with multiprocessing.Pool() as pool:
        for done, _ in enumerate(pool.imap_unordered(_write_jpeg, jobs, chunksize=64), 1):
            if done % 5000 == 0:
                print(f"stand-in: {done}/{len(jobs)} JPEGs, {time.perf_counter() - start:.0f} s", file=sys.stderr)
    atomic_write_text(marker, json.dumps(counts))


def measure_cache(source: ImageSource, cache_dir: Path) -> tuple[dict, object]:
    shutil.rmtree(cache_dir, ignore_errors=True)
    start = time.perf_counter()
    with PeakMemory() as memory:
        images = decoded(source, {"reader": "folder", "classes": source.classes}, cache_dir)
    seconds = time.perf_counter() - start
    cache_bytes = sum(p.stat().st_size for p in cache_dir.glob("*.npy"))
    return {
        "images": len(source.files), "seconds": round(seconds, 1),
        "images_per_s": round(len(source.files) / seconds, 1),
        "peak_anonymous_bytes": memory.peak - memory.start, "cache_bytes": cache_bytes,
        "decoded_bytes": int(np.asarray(images.images.shape).prod()),
    }, images


def loader_rate(train, views: list[str], batch_size: int, images: int) -> float:
    """Images per second through the training loader and its batch stage (on this CPU),
    with a loader process per core, timed from the second batch (the processes started)."""
    splits = DataSplits(train, train.subset(np.arange(8)))
    module = LongTailDataModule(splits, views, batch_size, num_workers=os.cpu_count(), image_size=224,
                                mean=IMAGENET_MEAN, std=IMAGENET_STD)
    seen, start = 0, None
    for batch in module.train_dataloader():
        module.finish(batch)
        if start is None:
            start = time.perf_counter()
            continue
        seen += len(batch.labels)
        if seen >= images:
            break
    return seen / (time.perf_counter() - start)


def model_rate(config_overrides: list[str], batch_size: int, precision: str, steps: int) -> float:
    """The model-only bound of the ImageNet-LT recipe with ``config_overrides`` (its data
    need not be here)."""
    recipe = load_yaml(ROOT / "configs" / "imagenet_lt" / "bcl.yaml")
    config = from_dict(merge(recipe, nested_overrides(config_overrides)), check_paths=False)
    method = build_method(config, [5] * 1000, initialise=False)
    return ModelOnlyStep(method, batch_size, 224, 1000, bf16=precision.startswith("bf16")).rate(steps)


def hours(seconds: float) -> str:
    return f"{seconds / 3600:.1f} h" if seconds < 100 * 3600 else f"{seconds / 86400:.0f} days"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=50_000)
    parser.add_argument("--classes", type=int, default=1000)
    parser.add_argument("--work", type=Path, default=Path("/tmp/longtail-imagenet-standin"))
    parser.add_argument("--loader-images", type=int, default=1536, help="images timed per loader measurement")
    parser.add_argument("--model-steps", type=int, default=3)
    parser.add_argument("--results", type=Path, default=RESULTS)
    args = parser.parse_args()

    counts = standin_counts(args.images, args.classes)
    make_standin(args.work / "standin", counts)
    classes, files, labels = _class_folder_files(args.work / "standin" / "train")
    source = ImageSource("standin-train", files, np.asarray(labels, dtype=np.int64), classes, resize=256)
    tenth = len(files) // 10
    print(f"caching {tenth} JPEGs, then {len(files)}", file=sys.stderr)
    small, _ = measure_cache(ImageSource("standin-tenth", files[:tenth], source.labels[:tenth], classes, resize=256),
                             args.work / "cache-tenth")
    cache, cached_train = measure_cache(source, args.work / "cache")
    cache["tenth"] = small
    # the per-epoch path of the recipe as shipped (no data.resize): each file decoded whole, every epoch
    uncached_train = read_when_used(ImageSource(source.name, files, source.labels, classes), "files")

    loaders = {}
    for name, views in (("resnet50", ["standard"]), ("bcl", ["rand", "sim", "sim"])):
        for path, train in (("cached", cached_train), ("files", uncached_train)):
            print(f"loader: {name} views from the {path}", file=sys.stderr)
            loaders[f"{name}_{path}"] = round(loader_rate(train, views, 64, args.loader_images), 1)

    precisions = ["32"] + (["bf16-mixed"] if native_bf16() else [])
    bounds = {}
    for precision in precisions:
        print(f"model-only bounds, {precision}", file=sys.stderr)
        bounds[f"resnet50_{precision}"] = round(model_rate(
            ["method.name=ce", "model.classifier=linear", "data.views=[standard]"], 32, precision, args.model_steps), 2)
        bounds[f"bcl_{precision}"] = round(model_rate([], 16, precision, args.model_steps), 2)

    projections = []
    for precision in precisions:
        for name, epochs in (("resnet50", 1), ("bcl", RECIPE_EPOCHS)):
            loader = loaders[f"{name}_cached"]
            bound = bounds[f"{name}_{precision}"]
            seconds = IMAGENET_LT_TRAIN * epochs / min(loader, bound)
            projections.append({"model": name, "precision": precision, "epochs": epochs,
                                "limited_by": "loader" if loader < bound else "model", "seconds": round(seconds)})

    result = {
        "machine": machine_info(),
        "command": "python benchmarks/imagenet_scale.py " + " ".join(sys.argv[1:]),
        "commit": subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                                 text=True).stdout.strip(),
        "standin": {"images": len(files), "classes": len(classes), "largest": max(counts), "smallest": min(counts)},
        "cache": cache, "loader_images_per_s": loaders, "model_only_images_per_s": bounds,
        "projections": projections,
    }
    args.results.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.results / "imagenet_scale.json", json.dumps(result, indent=2) + "\n")
    atomic_write_text(args.results / "imagenet_scale.md", table(result))
    print(f"wrote {args.results / 'imagenet_scale.md'}", file=sys.stderr)


def table(result: dict) -> str:
    machine, cache, loaders, bounds = (result[k] for k in ("machine", "cache", "loader_images_per_s",
                                                           "model_only_images_per_s"))
    cores = machine["cores"]
    lines = [
        "# ImageNet-LT scale: cache, loader and model on one machine",
        "",
        f"Machine: {machine['cpu']}, {cores} cores, capability {machine['capability']}, native bf16 "
        f"{machine['native_bf16']}, GPU {machine['gpu']}; torch {machine['torch']}. Commit {result['commit']}.",
        f"Command: `{result['command']}`.",
        "",
        f"Stand-in: {result['standin']['images']} JPEGs of 200 to 500 pixels a side in "
        f"{result['standin']['classes']} class folders, {result['standin']['largest']} to "
        f"{result['standin']['smallest']} per class, made on the fly.",
        "",
        "## Cache build (data.resize=256)",
        "",
        "| images | seconds | images/s | peak anonymous memory | cache size | in memory it would take |",
        "|---:|---:|---:|---:|---:|---:|",
        *[f"| {c['images']} | {c['seconds']} | {c['images_per_s']} | {human_bytes(c['peak_anonymous_bytes'])} "
          f"| {human_bytes(c['cache_bytes'])} | {human_bytes(c['decoded_bytes'])} |" for c in (cache["tenth"], cache)],
        "",
        "Peak anonymous memory: the highest Pss_Anon of the process tree (the builder and its loader "
        "processes, pages shared after fork counted once) above its level before the build, sampled "
        "every 20 ms (a level held for two samples): the loader processes' own memory and the chunks "
        "in flight. The pixels go to the file as they are decoded: from a tenth of the set to the whole, "
        f"{human_bytes(cache['decoded_bytes'] - cache['tenth']['decoded_bytes'])} more pixels took "
        f"{human_bytes(cache['peak_anonymous_bytes'] - cache['tenth']['peak_anonymous_bytes'])} more memory "
        "(the list of the files' paths grows with the set, the pixels do not stay); an in-memory build "
        "holds the whole array.",
        "",
        "## Loader and model, images per second",
        "",
        "| pipeline | loader, cached | loader, from the files | " +
        " | ".join(f"model-only, {p}" for p in ("32", "bf16-mixed") if f"bcl_{p}" in bounds) + " |",
        "|---|---:|---:|" + "---:|" * sum(f"bcl_{p}" in bounds for p in ("32", "bf16-mixed")),
    ]
    for name, label in (("resnet50", "ResNet-50, `standard` view (224)"), ("bcl", "BCL, `rand, sim, sim` (224)")):
        row = [label, loaders[f"{name}_cached"], loaders[f"{name}_files"]]
        row += [bounds[f"{name}_{p}"] for p in ("32", "bf16-mixed") if f"{name}_{p}" in bounds]
        lines.append("| " + " | ".join(str(v) for v in row) + " |")
    lines += [
        "",
        f"Loader: source images per second through the training loader ({cores} loader processes, one "
        "per core) and its batch stage, run on this CPU; nothing trains meanwhile. Model-only: "
        "forward, backward and SGD step on random tensors of the batch's shape (32 images for "
        "ResNet-50, 16 for BCL's three views), no loading.",
        "",
        "## Projected wall time on ImageNet-LT (115,846 training images)",
        "",
        "| model | precision | epochs | limited by | here | on one GPU |",
        "|---|---|---:|---|---:|---|",
    ]
    for p in result["projections"]:
        lines.append(f"| {p['model']} | {p['precision']} | {p['epochs']} | {p['limited_by']} | "
                     f"{hours(p['seconds'])} | not measured |")
    lines += [
        "",
        "Here: the images over the slower of the cached loader and the model-only bound, so a lower bound "
        "on the real time (the loader and the model share the cores). On one GPU: not measured: no GPU "
        "was lent to the session that ran this. The loader's rate per core here "
        f"({loaders['bcl_cached'] / cores:.0f} images/s for BCL's views, cached) is what a GPU machine's "
        "cores would each add.",
    ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
