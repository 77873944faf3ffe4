"""Results as text: the table printed at the end of a run and by ``longtail eval``."""

from __future__ import annotations

import json
from numbers import Number
from pathlib import Path

from longtail.data.longtail import shot_groups
from longtail.errors import ConfigError
from longtail.files import read_text


#: What ``metrics.json`` holds that ``report`` and ``compare`` read: key path -> type.
METRICS_SCHEMA = {
    ("method",): str, ("dataset",): str, ("classes",): list, ("train_counts",): list, ("shot_groups",): list,
    ("many",): Number, ("few",): Number, ("epochs",): Number, ("steps",): Number, ("wall_s",): Number,
    ("test",): dict, ("test", "per_class"): list, ("test", "calibration"): dict,
    ("test", "calibration", "ece"): Number, ("test", "calibration", "nll"): Number,
    ("test", "calibration", "brier"): Number, ("test", "agnostic"): dict,
}


def read_metrics(run_dir: Path) -> dict:
    """A finished run's ``metrics.json``; a missing, damaged or foreign file is named in a
    one-line ``ConfigError`` with the key it lacks."""
    path = Path(run_dir) / "metrics.json"
    try:
        metrics = json.loads(read_text(path))
    except (OSError, UnicodeDecodeError, ValueError) as error:
        raise ConfigError(f"{path}: cannot read a finished run's metrics ({getattr(error, 'strerror', None) or error})") from None
    for keys, kind in METRICS_SCHEMA.items():
        value = metrics
        for key in keys:
            value = value.get(key) if isinstance(value, dict) else None
        if not isinstance(value, kind):
            raise ConfigError(f"{path}: not a finished run's metrics ('{'.'.join(keys)}' is missing or not "
                              f"a {kind.__name__.lower()})")
    for key in ("overall", "many", "medium", "few", "agnostic_mean"):
        if not isinstance(metrics["test"].get(key), (Number, type(None))):
            raise ConfigError(f"{path}: not a finished run's metrics ('test.{key}' is not a number)")
    classes = len(metrics["classes"])
    for keys in (("train_counts",), ("shot_groups",), ("test", "per_class")):
        values = metrics[keys[0]] if len(keys) == 1 else metrics["test"][keys[1]]
        kinds = (str,) if keys == ("shot_groups",) else (Number, type(None))
        if len(values) != classes or not all(isinstance(v, kinds) for v in values):
            raise ConfigError(f"{path}: not a finished run's metrics ('{'.'.join(keys)}' does not "
                              f"hold one value per class of {classes})")
    return metrics


def run_names(run_dirs: list[Path]) -> list[str]:
    """A row name per run: its folder's name, or the path as given where two names agree
    (numbered where a path is given twice)."""
    names = [Path(d).name for d in run_dirs]
    if len(set(names)) < len(names):
        names = [str(d) for d in run_dirs]
    return [name if names.count(name) == 1 else f"{name} ({names[:i].count(name) + 1})"
            for i, name in enumerate(names)]


def percent(value: float | None, width: int = 5) -> str:
    return "-".rjust(width) if value is None else f"{value:{width}.1f}"


def format_results(results: dict, classes: list[str], train_counts: list[int], many: int, few: int) -> str:
    """Shot-split accuracy, calibration, test-agnostic accuracy, then each class's
    training count and accuracy."""
    groups = shot_groups(train_counts, many, few)
    sizes = {g: groups.count(g) for g in ("many", "medium", "few")}
    lines = [
        f"{'overall':>8} {'many':>6} {'medium':>6} {'few':>6}   (many: >{many} images, few: <{few})",
        f"{percent(results['overall']):>8} {percent(results['many']):>6} "
        f"{percent(results['medium']):>6} {percent(results['few']):>6}   "
        f"classes: {sizes['many']} / {sizes['medium']} / {sizes['few']}",
    ]
    if "calibration" in results:
        c = results["calibration"]
        lines += ["", f"calibration: ECE {c['ece']:.2f}%  NLL {c['nll']:.3f}  Brier {c['brier']:.3f}"]
    if "agnostic" in results:
        names = [n.replace("forward-", "fw").replace("backward-", "bw").replace("uniform", "unif")
                 for n in results["agnostic"]]
        lines += [
            "test-agnostic accuracy (forward long-tailed, uniform, backward long-tailed test sets):",
            "  " + " ".join(f"{n:>5}" for n in names) + "   mean",
            "  " + " ".join(percent(v) for v in results["agnostic"].values())
            + f"  {percent(results['agnostic_mean'])}",
        ]
    lines += ["", f"{'class':<20} {'train':>7} {'shot':>7} {'accuracy':>9}"]
    for name, count, group, accuracy in zip(classes, train_counts, groups, results["per_class"]):
        lines.append(f"{name[:20]:<20} {count:>7} {group:>7} {percent(accuracy, 9)}")
    return "\n".join(lines)


#: Columns of ``compare``: (header, key path in metrics.json, whether higher is better).
COMPARE_COLUMNS = [
    ("overall", ("test", "overall"), True),
    ("many", ("test", "many"), True),
    ("medium", ("test", "medium"), True),
    ("few", ("test", "few"), True),
    ("ECE", ("test", "calibration", "ece"), False),
    ("agnostic mean", ("test", "agnostic_mean"), True),
]


def compare_table(runs: dict[str, dict], fmt: str = "md") -> str:
    """One table of runs (name -> metrics.json), the best value of each column marked:
    bold in Markdown and HTML, a trailing ``*`` in CSV."""
    import csv
    import html
    import io

    def value(metrics: dict, path: tuple[str, ...]) -> float | None:
        for key in path:
            metrics = metrics.get(key) if isinstance(metrics, dict) else None
        return metrics

    values = {name: [value(m, path) for _, path, _ in COMPARE_COLUMNS] for name, m in runs.items()}
    best = []
    for i, (_, _, higher) in enumerate(COMPARE_COLUMNS):
        present = [v[i] for v in values.values() if v[i] is not None]
        best.append((max if higher else min)(present) if present else None)
    header = ["run", "method", *[h for h, _, _ in COMPARE_COLUMNS]]
    marks = {"md": ("**", "**"), "html": ("<strong>", "</strong>"), "csv": ("", "*")}[fmt]
    rows = []
    for name, metrics in runs.items():
        cells = [name, metrics["method"]]
        for i, v in enumerate(values[name]):
            text = "-" if v is None else f"{v:.2f}"
            if fmt == "html":
                text = html.escape(text)
            cells.append(f"{marks[0]}{text}{marks[1]}" if v is not None and v == best[i] else text)
        rows.append(cells)
    if fmt == "csv":
        buffer = io.StringIO()
        csv.writer(buffer).writerows([header, *rows])
        return buffer.getvalue()
    if fmt == "html":
        head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
        body = "".join("<tr>" + "".join(
            f"<td>{c if j >= 2 else html.escape(c)}</td>" for j, c in enumerate(row)) + "</tr>" for row in rows)
        return f"<table>\n<thead><tr>{head}</tr></thead>\n<tbody>{body}</tbody>\n</table>\n"
    lines = ["| " + " | ".join(header) + " |", "|---|---|" + "---:|" * len(COMPARE_COLUMNS)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines) + "\n"
