"""Reading and writing what a run keeps: checkpoints, weights, test outputs.

Nothing here unpickles arbitrary objects: Lightning checkpoints are read with
``torch.load(weights_only=True)``, weights and outputs are safetensors files.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, safe_open, save_file
from torch import Tensor

from longtail.config import ConfigError
from longtail.files import atomic_path


def _reason(error: Exception) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def load_checkpoint(path: str | Path) -> dict:
    """A checkpoint written by a run: a ``.ckpt`` file, a run directory (its last
    checkpoint) or weights in ``.safetensors``. Returns a dict with ``state_dict`` and
    ``longtail`` (what evaluation needs besides the weights)."""
    path = Path(path)
    if path.is_dir():
        path = path / "checkpoints" / "last.ckpt"
    if not path.is_file():
        raise ConfigError(f"{path}: no such checkpoint")
    if path.suffix == ".safetensors":
        state_dict, info = load_weights(path)
        return {"state_dict": state_dict, "longtail": info, "global_step": None}
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises many types for a broken or unsafe file
        raise ConfigError(f"{path}: cannot load checkpoint ({_reason(error)})") from None
    if not isinstance(checkpoint, dict) or "longtail" not in checkpoint or "state_dict" not in checkpoint:
        raise ConfigError(f"{path}: not a longtail checkpoint")
    return checkpoint


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
        info = json.loads(metadata["longtail"])
    except (SafetensorError, OSError, KeyError, ValueError) as error:
        raise ConfigError(f"{path}: cannot load weights ({_reason(error)})") from None
    return state_dict, info


def save_outputs(path: Path, logits: Tensor, targets: Tensor) -> None:
    """The test logits ``[N, C]`` and targets ``[N]``, for reports and post-hoc analysis."""
    with atomic_path(path) as temporary:
        save_file({"logits": logits.contiguous(), "targets": targets.contiguous()}, str(temporary))


def load_outputs(path: Path) -> tuple[Tensor, Tensor]:
    try:
        outputs = load_file(str(path))
        return outputs["logits"], outputs["targets"]
    except (SafetensorError, OSError, KeyError) as error:
        raise ConfigError(f"{path}: cannot load test outputs ({_reason(error)})") from None
