"""The run configuration: a schema of dataclasses, YAML files, ``key=value`` overrides.

Several YAML files merge in order, then the overrides. Every key is checked: an unknown
one is named with the nearest valid key, a value of the wrong type or out of range is
named with the key. Errors are ``ConfigError``, one line each.
"""

from __future__ import annotations

import dataclasses
import difflib
import inspect
import math
import types
import typing
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import yaml

from longtail.data.longtail import PROFILES
from longtail.data.samplers import SAMPLERS
from longtail.data.transforms import parse_view
from longtail.errors import ConfigError
from longtail.files import read_text
from longtail.losses import CLASSIFICATION_LOSSES
from longtail.methods import METHODS, ClassifierMethod
from longtail.models.backbones import check_backbone_name
from longtail.models.heads import CLASSIFIERS
from longtail.optim import OptimConfig

FORMATS = ("folder", "list", "cifar", "digits")
ACCELERATORS = ("auto", "cpu", "gpu", "cuda", "mps", "tpu")
PRECISIONS = ("32", "32-true", "64", "64-true", "16-mixed", "bf16-mixed", "bf16-true", "16-true")


@dataclass
class DataConfig:
    """Where the images come from, how the training set is made long-tailed, the views."""

    format: str | None = None
    root: str | None = None
    train_list: str | None = None
    test_list: str | None = None
    val_list: str | None = None
    imbalance_factor: float | None = None
    profile: str = "exp"
    seed: int = 0
    sampler: str = "random"
    views: list[str] = field(default_factory=lambda: ["standard", "standard", "standard"])
    image_size: int | None = None
    resize: int | None = None
    batch_size: int = 64
    num_workers: int | None = None
    on_corrupt: str = "error"
    cache: bool = True
    cache_dir: str | None = None
    val_per_class: int | None = None


@dataclass
class ModelConfig:
    """The backbone and the heads: ``feat_dim`` is the projected embedding's size.
    ``init_from`` (a run directory or weights file) starts the backbone, and with
    ``init_classifier`` the classifier, from an earlier run's weights."""

    backbone: str = "resnet32"
    feat_dim: int = 128
    hidden_dim: int = 512
    classifier: str | None = None
    init_from: str | None = None
    init_classifier: bool = False


@dataclass
class TrainerConfig:
    """Passed to Lightning's Trainer."""

    accelerator: str = "auto"
    devices: str | int = "auto"
    num_nodes: int = 1
    precision: str = "32"
    deterministic: bool = False
    checkpoint_every: int | None = None
    skip_nonfinite: int = 0


@dataclass
class EvalConfig:
    """Shot-split thresholds: many-shot above ``many`` training images, few below ``few``;
    ``knn_every``: epochs between two k-NN probes of the backbone's features during
    training (0: none), with ``knn_k`` neighbours."""

    many: int = 100
    few: int = 20
    knn_every: int = 0
    knn_k: int = 200


@dataclass
class Config:
    """A whole run. ``method`` holds ``name`` and that method's own arguments; ``loss``
    holds ``name`` and that loss's own arguments."""

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    method: dict[str, Any] = field(default_factory=lambda: {"name": "bcl"})
    loss: dict[str, Any] = field(default_factory=dict)
    optim: OptimConfig = field(default_factory=OptimConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    seed: int = 0
    out_dir: str = "runs"

    @property
    def dataset_name(self) -> str:
        return "digits" if self.data.format == "digits" else Path(self.data.root or "data").name

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


#: Arguments of a loss that are not ``loss.*`` keys: the run supplies the class counts;
#: per-class weights are set by a method (deferred re-weighting) or a user of the Python API.
SUPPLIED_LOSS_ARGUMENTS = {"class_counts", "weight"}
#: Arguments of a method that come from the ``model`` section.
MODEL_ARGUMENTS = {"feat_dim", "hidden_dim"}
#: Arguments of a method that the run supplies: the training set's images per class.
SUPPLIED_METHOD_ARGUMENTS = {"class_counts"}


@cache
def own_arguments(cls: type, base: type | None = None) -> dict[str, inspect.Parameter]:
    """The named arguments of ``cls``'s constructor that ``base``'s has not: the only
    place where a signature is read."""
    inherited = set(inspect.signature(base).parameters) if base is not None else set()
    parameters = inspect.signature(cls, eval_str=True).parameters
    return {
        key: p for key, p in parameters.items()
        if key not in inherited and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
    }


def method_class(name: str) -> type[ClassifierMethod]:
    """The LightningModule class behind the method ``name``."""
    return METHODS[name].method


def method_options(name: str) -> dict[str, inspect.Parameter]:
    """The arguments of method ``name`` that its config section may set."""
    arguments = own_arguments(method_class(name), ClassifierMethod)
    return {key: p for key, p in arguments.items() if key not in MODEL_ARGUMENTS | SUPPLIED_METHOD_ARGUMENTS}


def loss_options(name: str) -> dict[str, inspect.Parameter]:
    """The arguments of loss ``name`` that the ``loss`` section may set."""
    arguments = own_arguments(CLASSIFICATION_LOSSES[name])
    return {key: p for key, p in arguments.items() if key not in SUPPLIED_LOSS_ARGUMENTS}


def method_arguments(config: Config) -> dict[str, Any]:
    """The method's own arguments: its section's, and the ``model`` keys it takes."""
    arguments = own_arguments(method_class(config.method["name"]), ClassifierMethod)
    model = {key: getattr(config.model, key) for key in MODEL_ARGUMENTS if key in arguments}
    return {**{k: v for k, v in config.method.items() if k != "name"}, **model}


def loss_arguments(config: Config) -> dict[str, Any]:
    """The loss's own arguments, from its section."""
    return {k: v for k, v in config.loss.items() if k != "name"}


def _suggest(key: str, valid: list[str]) -> str:
    close = difflib.get_close_matches(key, valid, n=1, cutoff=0.5)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _coerce(value: Any, annotation: Any, key: str) -> Any:
    """``value`` as the type ``annotation``, or ``ConfigError`` naming ``key``."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for option in (a for a in args if a is not type(None)):
            try:
                return _coerce(value, option, key)
            except ConfigError as error:
                errors.append(str(error))
        raise ConfigError(errors[-1])
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        return [_coerce(item, args[0], f"{key}[{i}]") for i, item in enumerate(value)]
    if annotation is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
        raise ConfigError(f"{key}: expected true or false, got {value!r}")
    if annotation in (int, float):
        if isinstance(value, bool):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{key}: expected a number, got {value!r}") from None
        if not math.isfinite(number):
            raise ConfigError(f"{key}: expected a finite number, got {value!r}")
        if annotation is int:
            if not number.is_integer():
                raise ConfigError(f"{key}: expected an integer, got {value!r}")
            return int(number)
        return number
    if annotation is str:
        if isinstance(value, (dict, list)):
            raise ConfigError(f"{key}: expected a string, got {value!r}")
        return str(value)
    if annotation is Any:
        return value
    raise TypeError(f"no coercion to {annotation} for {key}")


def _build_section(cls: type, values: dict, prefix: str) -> Any:
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for key, value in values.items():
        if key not in hints:
            valid = [f"{prefix}.{name}" for name in hints]
            raise ConfigError(f"unknown key '{prefix}.{key}'{_suggest(f'{prefix}.{key}', valid)}")
        kwargs[key] = _coerce(value, hints[key], f"{prefix}.{key}")
    return cls(**kwargs)


def _build_named(section: str, values: dict, registry: dict, default: str,
                 options_of) -> dict:
    """A ``method`` or ``loss`` section: ``name`` from ``registry`` and that entry's own
    arguments (``options_of(name)``), each checked and coerced, the rest defaulted."""
    name = default if values.get("name") is None else values["name"]
    if not isinstance(name, str):
        raise ConfigError(f"{section}.name: expected a name, got {name!r}")
    if name not in registry:
        raise ConfigError(
            f"{section}.name: unknown {section} {name!r}{_suggest(name, list(registry))}; "
            f"choose one of {', '.join(registry)}"
        )
    options = options_of(name)
    built = {"name": name}
    for key, value in values.items():
        if key == "name":
            continue
        if key not in options:
            elsewhere = _elsewhere(section, key)
            hint = (f" (did you mean '{elsewhere[0]}'?)" if elsewhere
                    else _suggest(f"{section}.{key}", [f"{section}.{option}" for option in options]))
            raise ConfigError(
                f"unknown key '{section}.{key}' for {section} {name!r}{hint}; "
                f"its keys: {', '.join(options) or 'none'}"
            )
        built[key] = _coerce(value, options[key].annotation, f"{section}.{key}")
    for key, parameter in options.items():
        built.setdefault(key, parameter.default)
    return built


def _elsewhere(section: str, key: str) -> list[str]:
    """``key`` in the other named section, when a method or loss there takes it."""
    if section == "method":
        takes = any(key in loss_options(name) for name in CLASSIFICATION_LOSSES)
        return [f"loss.{key}"] if takes else []
    takes = any(key in method_options(name) for name in METHODS)
    return [f"method.{key}"] if takes else []


def _section(values: Any, key: str) -> dict:
    if values is None:
        return {}
    if isinstance(values, str):
        return {"name": values}
    if not isinstance(values, dict):
        raise ConfigError(f"{key}: expected a section of keys or a name, got {values!r}")
    return values


def _check(key: str, ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(f"{key}: {message}")


def validate(config: Config, check_paths: bool = True) -> None:
    """Check values beyond their types; infer ``data.format`` from ``data.root``.
    Without ``check_paths``, the data need not be on this machine (to predict)."""
    data = config.data
    if data.format is None:
        data.format = infer_format(data.root, data.train_list)
    _check("data.format", data.format in FORMATS, f"must be one of {', '.join(FORMATS)}, got {data.format!r}")
    if data.format == "list":
        for key in ("train_list", "test_list"):
            _check(f"data.{key}", getattr(data, key) is not None, "is required for data.format=list")
        for key in ("train_list", "test_list", "val_list"):
            value = getattr(data, key)
            _check(f"data.{key}", value is None or not check_paths or Path(value).is_file(),
                   f"no such file: {value}")
    if data.format != "digits":
        _check("data.root", data.root is not None, f"is required for data.format={data.format}")
        _check("data.root", not check_paths or Path(data.root).exists(), f"no such file or folder: {data.root}")
    _check("data.imbalance_factor", data.imbalance_factor is None or data.imbalance_factor >= 1,
           f"must be at least 1, got {data.imbalance_factor}")
    _check("data.profile", data.profile in PROFILES, f"must be one of {', '.join(PROFILES)}, got {data.profile!r}")
    _check("data.sampler", data.sampler in SAMPLERS, f"must be one of {', '.join(SAMPLERS)}, got {data.sampler!r}")
    _check("data.batch_size", data.batch_size >= 1, f"must be at least 1, got {data.batch_size}")
    _check("data.num_workers", data.num_workers is None or data.num_workers >= 0,
           f"must be 0 or more (empty: sized to the machine), got {data.num_workers}")
    for key, seed in (("seed", config.seed), ("data.seed", data.seed)):
        _check(key, 0 <= seed < 2**32, f"must be between 0 and 2**32 - 1, got {seed}")
    for key in ("image_size", "resize"):
        value = getattr(data, key)
        _check(f"data.{key}", value is None or value >= 1, f"must be at least 1, got {value}")
    _check("data.resize", data.resize is None or data.format in ("folder", "list"),
           f"resizes image files (data.format folder or list), not data.format={data.format}")
    _check("data.on_corrupt", data.on_corrupt in ("error", "skip"), f"must be error or skip, got {data.on_corrupt!r}")
    _check("data.val_per_class", data.val_per_class is None or data.val_per_class >= 1,
           f"must be at least 1 (empty: no split held out), got {data.val_per_class}")
    _check("data.sampler", data.sampler != "class_difficulty" or config.method.get("cdb_tau") is not None,
           "class_difficulty draws the classes by their difficulty on held-out data: set method.cdb_tau "
           "(and data.val_per_class=N where the data has no validation split)")
    _check("data.views", len(data.views) >= 1, "needs at least one view")
    for i, view in enumerate(data.views):
        try:
            parse_view(view)
        except ValueError as error:
            raise ConfigError(f"data.views[{i}]: {error}") from None
    method = method_class(config.method["name"])
    needed = method.views_needed(config.method)
    _check(
        "data.views",
        len(data.views) >= needed,
        f"method {config.method['name']!r} needs {needed} views, got {len(data.views)}",
    )
    try:
        check_backbone_name(config.model.backbone)
    except ValueError as error:
        raise ConfigError(f"model.backbone: {error}") from None
    classifier = config.model.classifier
    _check("model.classifier", classifier is None or classifier in CLASSIFIERS,
           f"must be one of {', '.join(CLASSIFIERS)}, got {classifier!r}")
    _check("model.classifier", not (classifier == "cosine"
                                    and getattr(CLASSIFICATION_LOSSES[config.loss["name"]], "scales_logits", False)),
           f"loss {config.loss['name']!r} scales the logits itself (loss.scale), and the cosine classifier "
           "scales them again: use model.classifier=normalized (unit-norm cosine, the paper's) or linear")
    for key in ("feat_dim", "hidden_dim"):
        value = getattr(config.model, key)
        _check(f"model.{key}", value >= 1, f"must be at least 1, got {value}")
    init_from = config.model.init_from
    _check("model.init_from", init_from is not None or not method.needs_init_from,
           f"method {config.method['name']!r} starts from a trained backbone: "
           "set model.init_from=RUN_DIR (an earlier run) or a .safetensors file")
    _check("model.init_classifier", config.model.init_classifier or not method.needs_init_classifier,
           f"method {config.method['name']!r} starts from the trained classifier too: set model.init_classifier=true")
    try:
        config.optim.validate()
    except ValueError as error:
        raise ConfigError(str(error)) from None
    _check("trainer.precision", config.trainer.precision in PRECISIONS,
           f"must be one of {', '.join(PRECISIONS)}, got {config.trainer.precision!r}")
    _check("trainer.skip_nonfinite", config.trainer.skip_nonfinite >= 0,
           f"must be non-negative, got {config.trainer.skip_nonfinite}")
    trainer = config.trainer
    _check("trainer.accelerator", trainer.accelerator in ACCELERATORS,
           f"must be one of {', '.join(ACCELERATORS)}, got {trainer.accelerator!r}")
    _check("trainer.devices", _valid_devices(trainer.devices),
           f"must be auto, a number of devices (-1: all) or device indices as '0,1', got {trainer.devices!r}")
    _check("trainer.num_nodes", trainer.num_nodes >= 1, f"must be at least 1, got {trainer.num_nodes}")
    _check("trainer.checkpoint_every", trainer.checkpoint_every is None or trainer.checkpoint_every >= 1,
           f"must be at least 1 step (empty: every epoch), got {trainer.checkpoint_every}")
    _check("eval.few", 0 <= config.eval.few <= config.eval.many, "must be between 0 and eval.many")
    _check("eval.knn_every", config.eval.knn_every >= 0, f"must be 0 (no probe) or more epochs, got {config.eval.knn_every}")
    _check("eval.knn_k", config.eval.knn_k >= 1, f"must be at least 1, got {config.eval.knn_k}")


def _valid_devices(devices: str | int) -> bool:
    if isinstance(devices, int):
        return devices >= 1 or devices == -1
    indices = devices.strip().rstrip(",").split(",")
    return devices in ("auto", "-1") or all(index.strip().isdigit() for index in indices)


def infer_format(root: str | None, train_list: str | None = None) -> str:
    """``list`` with a training list; ``digits`` without a root; ``cifar`` for a folder of
    CIFAR pickles; ``folder`` otherwise."""
    if train_list is not None:
        return "list"
    if root is None:
        return "digits"
    path = Path(root)
    if (path / "meta").exists() or (path / "batches.meta").exists():
        return "cifar"
    return "folder"


def load_yaml(path: str | Path) -> dict:
    """A YAML mapping from ``path``; errors name the file and line."""
    path = Path(path)
    try:
        text = read_text(path)
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(f"{path}: cannot read config ({getattr(error, 'strerror', None) or error})") from None
    try:
        values = yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        raise ConfigError(f"{where}: invalid YAML ({getattr(error, 'problem', error)})") from None
    if values is None:
        return {}
    if not isinstance(values, dict):
        raise ConfigError(f"{path}: a config must be a mapping of sections, got {type(values).__name__}")
    return values


def parse_override(text: str) -> tuple[list[str], Any]:
    """``"optim.lr=0.1"`` -> ``(["optim", "lr"], 0.1)``; the value is read as YAML."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"override {text!r} is not key=value")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        value = raw
    return key.strip().split("."), value


def merge(base: dict, update: dict) -> dict:
    """A copy of ``base`` with ``update`` merged into it, mapping by mapping.

    A ``method`` or ``loss`` section naming another method or loss replaces the earlier
    one: its keys were that one's own arguments. Naming another method also drops the
    earlier ``loss`` section, which was chosen for that method (the update's own ``loss``
    keys stay).
    """
    base, update = _named(base), _named(update)
    merged = dict(base)
    if _switches("method", base, update):
        merged.pop("loss", None)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict) and not _switches(key, merged, update):
            merged[key] = merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _named(values: dict) -> dict:
    """``method: ce`` (or ``loss: ce``) as the section it stands for, ``{name: ce}``."""
    return {key: {"name": value} if key in ("method", "loss") and isinstance(value, str) else value
            for key, value in values.items()}


def _switches(key: str, base: dict, update: dict) -> bool:
    """Whether ``update`` names another method or loss than ``base`` under ``key``."""
    old, new = base.get(key), update.get(key)
    return (key in ("method", "loss") and isinstance(old, dict) and isinstance(new, dict)
            and "name" in new and new["name"] != old.get("name", new["name"]))


def from_dict(values: dict, check_paths: bool = True) -> Config:
    """A validated ``Config`` from nested mappings (see ``validate`` for ``check_paths``)."""
    sections = {f.name: f for f in dataclasses.fields(Config)}
    kwargs: dict[str, Any] = {}
    for key, value in values.items():
        if key not in sections:
            valid = list(sections) + [f"{s}.{k}" for s in ("data", "model", "optim", "trainer", "eval")
                                      for k in typing.get_type_hints(typing.get_type_hints(Config)[s])]
            raise ConfigError(f"unknown key '{key}'{_suggest(key, valid)}")
        if key in ("method", "loss"):
            continue
        if key in ("seed", "out_dir"):
            kwargs[key] = _coerce(value, typing.get_type_hints(Config)[key], key)
        else:
            if not isinstance(value, dict):
                raise ConfigError(f"{key}: expected a section of keys, got {value!r}")
            kwargs[key] = _build_section(typing.get_type_hints(Config)[key], value, key)
    method = _build_named("method", _section(values.get("method"), "method"), METHODS, "bcl", method_options)
    entry = METHODS[method["name"]]
    loss = _build_named("loss", _section(values.get("loss"), "loss"), CLASSIFICATION_LOSSES, entry.loss, loss_options)
    if entry.loss_is_the_method and loss["name"] != entry.loss:
        raise ConfigError(f"loss.name: method {method['name']!r} is one branch trained with loss {entry.loss!r}; "
                          f"for loss {loss['name']!r} use method.name=supervised loss.name={loss['name']}")
    config = Config(**kwargs, method=method, loss=loss)
    if config.model.classifier is None:
        config.model.classifier = method_class(method["name"]).default_classifier
    validate(config, check_paths)
    return config


def load_config(files: list[str | Path] = (), overrides: list[str] = (), base: dict | None = None) -> Config:
    """Merge the YAML ``files`` in order over ``base`` (a command's own defaults), then the
    ``key=value`` ``overrides``; validate."""
    values: dict = base or {}
    for path in files:
        values = merge(values, load_yaml(path))
    return from_dict(merge(values, nested_overrides(overrides)))


def nested_overrides(overrides: list[str], sections: tuple[str, ...] | None = None) -> dict:
    """``key=value`` overrides as one nested mapping; with ``sections``, only keys of
    those sections are taken."""
    nested: dict = {}
    for text in overrides:
        keys, value = parse_override(text)
        if sections is not None and keys[0] not in sections:
            raise ConfigError(f"{text}: only {', '.join(f'{s}.*' for s in sections)} keys can be given here")
        for key in reversed(keys[1:]):
            value = {key: value}
        nested = merge(nested, {keys[0]: value})
    return nested
