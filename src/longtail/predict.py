"""``longtail predict``: top-k classes of images, optionally for another label prior."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset

from longtail.checkpoints import load_checkpoint, load_into, weights_file
from longtail.config import from_dict
from longtail.data.module import default_num_workers
from longtail.data.images import read_image
from longtail.data.readers import IMAGE_SUFFIXES
from longtail.data.transforms import view_transform
from longtail.errors import ConfigError
from longtail.files import read_text
from longtail.evaluation.posthoc import adjust_logits, prior
from longtail.methods import ClassifierMethod
from longtail.run import build_method


def load_model(path: str | Path) -> tuple[ClassifierMethod, dict]:
    """The trained method and its run information, from a checkpoint, a weights file or
    a run directory (its ``model.safetensors``, else its last checkpoint). A pre-training,
    whose classifier is untrained, is refused."""
    path = weights_file(path)
    checkpoint = load_checkpoint(path)
    info = checkpoint["longtail"]
    method = build_method(from_dict(info["config"], check_paths=False), info["class_counts"], initialise=False)
    if not method.trains_classifier:
        raise ConfigError(f"{path}: a self-supervised pre-training, whose classifier is untrained; predict with the "
                          f"run of its linear probe or fine-tuning (model.init_from=RUN_DIR)")
    load_into(method, checkpoint["state_dict"], path)
    return method.eval(), info


def image_files(paths: Sequence[str | Path]) -> list[Path]:
    """The images named, and the regular image files under the folders named (sorted)."""
    files = []
    for path in map(Path, paths):
        if path.is_dir():
            files += sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        elif path.exists():
            files.append(path)  # a FIFO or device named here is reported and skipped, never read
        else:
            raise ConfigError(f"{path}: no such file or folder")
    return files


def deployment_prior(name: str, info: dict) -> torch.Tensor:
    """``uniform``, ``train`` (the training counts) or a JSON file: a list of one weight
    per class, or a mapping from class name to weight."""
    counts = info["class_counts"]
    if name == "uniform":
        return prior([1.0] * len(counts))
    if name == "train":
        return prior(counts)
    try:
        weights = json.loads(read_text(name))
    except (OSError, ValueError) as error:
        raise ConfigError(f"--prior {name}: not uniform, train or a readable JSON file ({error})") from None
    if not isinstance(weights, (dict, list)):
        raise ConfigError(f"{name}: a prior is a list of weights or a mapping of class to weight")
    if isinstance(weights, dict):
        unknown = sorted(set(weights) - set(info["classes"]))
        if unknown:
            raise ConfigError(f"{name}: unknown class {unknown[0]!r}")
        weights = [weights.get(c, 0.0) for c in info["classes"]]
    if len(weights) != len(counts):
        raise ConfigError(f"{name}: {len(weights)} weights for {len(counts)} classes")
    try:
        return prior(weights)
    except ValueError as error:
        raise ConfigError(f"{name}: {error}") from None


class DecodedImages(Dataset):
    """Each file with its evaluation-view tensor, or the reason it could not be read."""

    def __init__(self, files: Sequence[Path], view) -> None:
        self.files, self.view = files, view

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> tuple[Path, torch.Tensor | str]:
        path = self.files[index]
        try:
            pixels = read_image(path)
        except OSError as error:
            return path, f"cannot read image ({error})"
        image = torch.from_numpy(pixels.copy()).permute(2, 0, 1)
        return path, image if self.view.image is None else self.view.image(image)


def predict(
    method: ClassifierMethod, info: dict, files: Sequence[Path], top_k: int = 5,
    target_prior: torch.Tensor | None = None, batch_size: int = 64, num_workers: int | None = None,
) -> Iterator[tuple[Path, list[tuple[str, float]] | str]]:
    """For each file, in order, its top-k ``(class, probability)``, or the reason it was
    unreadable. Files are decoded in ``num_workers`` loader processes (``None`` sizes them
    to the machine; none when one batch holds every file)."""
    view = view_transform("none", info["image_size"], info["mean"], info["std"])  # as evaluated
    counts = info["class_counts"]
    source = prior([1.0] * len(counts)) if method.logits_prior == "uniform" else prior(counts)
    top_k = min(top_k, len(counts))
    if num_workers is None:
        num_workers = default_num_workers() if len(files) > batch_size else 0
    loader = DataLoader(DecodedImages(files, view), batch_size=batch_size, num_workers=num_workers,
                        collate_fn=list)
    for decoded in loader:
        images = [image for _, image in decoded if not isinstance(image, str)]
        if images:
            with torch.no_grad():
                logits = method.inference_logits(method(view.batch(torch.stack(images)))).double()
            if target_prior is not None:
                logits = adjust_logits(logits, source, target_prior)
            probabilities, indices = logits.softmax(dim=1).topk(top_k, dim=1)
            ranked = iter([[(info["classes"][c], q) for c, q in zip(i, p)]
                           for p, i in zip(probabilities.tolist(), indices.tolist())])
        for path, outcome in decoded:
            yield path, outcome if isinstance(outcome, str) else next(ranked)
