"""Reading and writing what a run keeps: checkpoints, weights, test outputs.

Nothing here unpickles arbitrary objects: Lightning checkpoints are read with
``torch.load(weights_only=True)``, weights and outputs are safetensors files.
"""

from __future__ import annotations

import json
import math
import pickle
import warnings
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, safe_open, save_file
from torch import Tensor

from longtail.errors import ConfigError
from longtail.files import atomic_path


def _reason(error: Exception) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def run_checkpoint(run_dir: Path) -> Path:
    """The checkpoint a run tested: ``best.ckpt`` (chosen on a validation split) when it
    has one, else ``last.ckpt``."""
    best = run_dir / "checkpoints" / "best.ckpt"
    return best if best.is_file() else run_dir / "checkpoints" / "last.ckpt"


def load_checkpoint(path: str | Path) -> dict:
    """A checkpoint written by a run: a ``.ckpt`` file, a run directory (the checkpoint it
    tested, see ``run_checkpoint``) or weights in ``.safetensors``. Returns a dict with
    ``state_dict`` and ``longtail`` (what evaluation needs besides the weights)."""
    path = Path(path)
    if path.is_dir():
        path = run_checkpoint(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such checkpoint")
    if path.suffix == ".safetensors":
        state_dict, info = load_weights(path)
        return {"state_dict": state_dict, "longtail": info, "global_step": None}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch's notes on the pickle protocol
            checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        if "Weights only load failed" in str(error):
            raise ConfigError(f"{path}: refused: the file holds code or objects other than tensors "
                              "and plain values, which longtail never loads") from None
        raise ConfigError(f"{path}: cannot load checkpoint ({_reason(error)})") from None
    except Exception as error:  # torch raises many types for a broken file
        raise ConfigError(f"{path}: cannot load checkpoint ({_reason(error)})") from None
    if not isinstance(checkpoint, dict) or not isinstance(checkpoint.get("state_dict"), dict):
        raise ConfigError(f"{path}: not a longtail checkpoint (no state_dict)")
    check_run_info(checkpoint.get("longtail"), path)
    return checkpoint


#: What a checkpoint or weights file keeps besides the weights, and the type of each.
RUN_INFO = {"config": dict, "classes": list, "class_counts": list, "mean": list, "std": list, "image_size": int}


def check_run_info(info, path: Path) -> None:
    """Raise a one-line ``ConfigError`` naming ``path`` unless ``info`` is a run's information."""
    if not isinstance(info, dict):
        raise ConfigError(f"{path}: not a longtail checkpoint (its run information is "
                          f"{type(info).__name__ if info is not None else 'missing'}, not a mapping)")
    for key, kind in RUN_INFO.items():
        if not isinstance(info.get(key), kind):
            raise ConfigError(f"{path}: not a longtail checkpoint (its run information lacks '{key}')")
    problems = {
        "classes": not info["classes"] or not all(isinstance(c, str) for c in info["classes"]),
        "class_counts": len(info["class_counts"]) != len(info["classes"])
        or not all(isinstance(n, int) and n >= 0 for n in info["class_counts"]),
        "mean": not _finite_triple(info["mean"], 0),
        "std": not _finite_triple(info["std"], 1e-12),
        "image_size": not 1 <= info["image_size"] <= 65536,
    }
    for key, bad in problems.items():
        if bad:
            raise ConfigError(f"{path}: not a longtail checkpoint (its run information's '{key}' is "
                              f"{str(info[key])[:60]})")


def _finite_triple(values: list, minimum: float) -> bool:
    """Three finite numbers of at least ``minimum``: a per-channel statistic."""
    return len(values) == 3 and all(isinstance(v, (int, float)) and math.isfinite(v) and v >= minimum
                                    for v in values)


def save_weights(path: Path, state_dict: dict[str, Tensor], info: dict) -> None:
    """Weights as safetensors, with the run information as metadata; atomically."""
    tensors = {key: value.detach().cpu().contiguous() for key, value in state_dict.items()}
    with atomic_path(path) as temporary:
        save_file(tensors, str(temporary), metadata={"longtail": json.dumps(info)})


def load_weights(path: Path) -> tuple[dict[str, Tensor], dict]:
    """The weights and run information of ``save_weights``; a damaged file is named."""
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
        state_dict = load_file(str(path))
    except (SafetensorError, OSError) as error:
        raise ConfigError(f"{path}: cannot load weights ({_reason(error)})") from None
    if "longtail" not in metadata:
        raise ConfigError(f"{path}: not a longtail weights file (its metadata lacks 'longtail')")
    try:
        info = json.loads(metadata["longtail"])
    except ValueError as error:
        raise ConfigError(f"{path}: not a longtail weights file (its metadata is not JSON: {error})") from None
    check_run_info(info, path)
    return state_dict, info


def weights_file(path: str | Path) -> Path:
    """The file of a model's weights: a run directory's ``model.safetensors``, else the
    checkpoint it tested (``run_checkpoint``); a file as it is."""
    path = Path(path)
    if not path.is_dir():
        return path
    return path / "model.safetensors" if (path / "model.safetensors").is_file() else run_checkpoint(path)


def load_model_weights(path: str | Path) -> tuple[dict[str, Tensor], Path]:
    """The weights of a run directory, a ``.safetensors`` (any: its metadata is not read)
    or a ``.ckpt`` file (``weights_file``), and the file they came from."""
    path = weights_file(path)
    if path.suffix != ".safetensors":
        return load_checkpoint(path)["state_dict"], path
    try:
        return load_file(str(path)), path
    except (SafetensorError, OSError) as error:
        raise ConfigError(f"{path}: cannot load weights ({_reason(error)})") from None


def load_into(module: torch.nn.Module, state_dict: dict[str, Tensor], source: Path, prefix: str = "",
              check_only: bool = False) -> None:
    """Load the tensors of ``state_dict`` under ``prefix`` into ``module`` (with
    ``check_only``, only check that they fit); a tensor that is missing, left over or of
    another shape is named in a one-line ``ConfigError``."""
    given = {key[len(prefix):]: value for key, value in state_dict.items() if key.startswith(prefix)}
    wanted = module.state_dict()
    missing = [key for key in wanted if key not in given]
    if missing:
        raise ConfigError(f"{source}: no tensor '{prefix}{missing[0]}' for the model "
                          f"({len(missing)} of {len(wanted)} missing): the weights do not fit the config")
    extra = [key for key in given if key not in wanted]
    if extra:
        raise ConfigError(f"{source}: tensor '{prefix}{extra[0]}' has no place in the model "
                          f"({len(extra)} such): the weights do not fit the config")
    for key, value in given.items():
        if not isinstance(value, Tensor):
            raise ConfigError(f"{source}: '{prefix}{key}' is a {type(value).__name__}, not a tensor")
        if value.shape != wanted[key].shape:
            raise ConfigError(f"{source}: tensor '{prefix}{key}' has shape {list(value.shape)}, "
                              f"the model's is {list(wanted[key].shape)}: the weights do not fit the config")
    if not check_only:
        module.load_state_dict(given)


def save_outputs(path: Path, logits: Tensor, targets: Tensor) -> None:
    """The test logits ``[N, C]`` and targets ``[N]``, for reports and post-hoc analysis."""
    with atomic_path(path) as temporary:
        save_file({"logits": logits.contiguous(), "targets": targets.contiguous()}, str(temporary))


def load_outputs(path: Path, num_classes: int) -> tuple[Tensor, Tensor]:
    """The test logits ``[N, C]`` and targets ``[N]`` of ``save_outputs``, checked to be
    of ``num_classes`` classes; a damaged or foreign file is named."""
    try:
        outputs = load_file(str(path))
        logits, targets = outputs["logits"], outputs["targets"]
    except (SafetensorError, OSError, KeyError) as error:
        raise ConfigError(f"{path}: cannot load test outputs ({_reason(error)})") from None
    fits = (logits.dim() == 2 and logits.shape[1] == num_classes and logits.is_floating_point()
            and targets.shape == logits.shape[:1] and not targets.is_floating_point()
            and (len(targets) == 0 or 0 <= int(targets.min()) <= int(targets.max()) < num_classes))
    if not fits:
        raise ConfigError(f"{path}: not the test outputs of a run of {num_classes} classes "
                          f"(logits {list(logits.shape)}, targets {list(targets.shape)})")
    return logits, targets.long()
