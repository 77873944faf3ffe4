"""``longtail report``: one self-contained HTML page per run, its plots embedded."""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from longtail.checkpoints import load_outputs  # noqa: E402
from longtail.curves import read_curves  # noqa: E402
from longtail.errors import ConfigError  # noqa: E402
from longtail.evaluation.calibration import reliability  # noqa: E402
from longtail.evaluation.tables import read_metrics  # noqa: E402
from longtail.files import atomic_write_text, read_text  # noqa: E402

SHOT_COLOURS = {"many": "#4c72b0", "medium": "#dd8452", "few": "#c44e52"}


def _png(figure) -> str:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    plt.close(figure)
    return base64.b64encode(buffer.getvalue()).decode()


def per_class_plot(metrics: dict) -> str:
    counts = np.asarray(metrics["train_counts"])
    accuracy = np.asarray([np.nan if a is None else a for a in metrics["test"]["per_class"]])
    figure, axis = plt.subplots(figsize=(10, 4))
    axis.axvspan(max(counts.min() * 0.8, 0.5), metrics["few"], color=SHOT_COLOURS["few"], alpha=0.08)
    axis.axvspan(metrics["many"], counts.max() * 1.25, color=SHOT_COLOURS["many"], alpha=0.08)
    for group, colour in SHOT_COLOURS.items():
        chosen = np.asarray(metrics["shot_groups"]) == group
        axis.scatter(counts[chosen], accuracy[chosen], color=colour, label=f"{group}-shot", s=24)
    axis.set(xscale="log", xlabel="training images of the class (log)", ylabel="test accuracy (%)",
             ylim=(-2, 102), title="Per-class accuracy against training count")
    axis.legend(loc="lower right")
    return _png(figure)


def shot_plot(metrics: dict) -> str:
    test = metrics["test"]
    groups = [g for g in ("many", "medium", "few") if test[g] is not None]
    figure, axis = plt.subplots(figsize=(5, 3.5))
    bars = axis.bar(groups, [test[g] for g in groups], color=[SHOT_COLOURS[g] for g in groups])
    axis.bar_label(bars, fmt="%.1f")
    axis.axhline(test["overall"], color="black", linestyle="--", label=f"overall {test['overall']:.1f}")
    axis.set(ylabel="accuracy (%)", ylim=(0, 105), title="Accuracy by shot group")
    axis.legend(loc="lower left")
    return _png(figure)


def confusion(logits: torch.Tensor, targets: torch.Tensor, num_classes: int) -> np.ndarray:
    """Row-normalised confusion matrix: row = true class, column = prediction."""
    matrix = np.zeros((num_classes, num_classes))
    np.add.at(matrix, (targets.numpy(), logits.argmax(dim=1).numpy()), 1)
    return matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)


def confusion_plot(matrix: np.ndarray, classes: list[str]) -> str:
    size = min(10, 3 + 0.3 * len(classes))
    figure, axis = plt.subplots(figsize=(size + 1.5, size))
    image = axis.imshow(matrix, cmap="viridis", vmin=0, vmax=1)
    if len(classes) <= 30:
        axis.set_xticks(range(len(classes)), classes, rotation=90)
        axis.set_yticks(range(len(classes)), classes)
    axis.set(xlabel="predicted class", ylabel="true class (head first)", title="Confusion matrix (rows sum to 1)")
    figure.colorbar(image, ax=axis, fraction=0.046)
    return _png(figure)


def reliability_plot(logits: torch.Tensor, targets: torch.Tensor, ece: float) -> str:
    table = reliability(logits.double().softmax(dim=1), targets)
    edges = np.asarray(table["edges"])
    accuracy = np.nan_to_num(np.asarray(table["accuracy"]))
    figure, axis = plt.subplots(figsize=(5, 4.5))
    axis.bar(edges[:-1], accuracy, width=np.diff(edges), align="edge", edgecolor="black",
             color="#4c72b0", label="accuracy in the bin")
    axis.plot([0, 1], [0, 1], "k--", label="perfect calibration")
    axis.set(xlabel="confidence", ylabel="accuracy", xlim=(0, 1), ylim=(0, 1),
             title=f"Reliability diagram (ECE {ece:.2f}%)")
    axis.legend(loc="upper left")
    return _png(figure)


def agnostic_plot(agnostic: dict[str, float]) -> str:
    figure, axis = plt.subplots(figsize=(8, 3.5))
    names = list(agnostic)
    axis.plot(range(len(names)), list(agnostic.values()), marker="o")
    axis.set_xticks(range(len(names)), names, rotation=45)
    axis.set(ylabel="accuracy (%)", title="Test-agnostic accuracy: forward LT, uniform, backward LT")
    axis.grid(alpha=0.3)
    return _png(figure)


def curves_plot(rows: list[dict]) -> str | None:
    if not rows:
        return None
    probes = sorted({k for row in rows for k in row if k.startswith("knn/")})
    figure, (losses, rates, *knn) = plt.subplots(1, 3 if probes else 2, figsize=(15 if probes else 10, 3.5))
    for key in probes:
        points = [(int(r["step"]), float(r[key])) for r in rows if r.get(key)]
        if points:
            knn[0].plot(*zip(*points), marker="o", label=key.removeprefix("knn/"))
    if probes:
        knn[0].set(xlabel="step", ylabel="accuracy (%)", title="k-NN probe of the features")
        knn[0].legend()
    for key in sorted({k for row in rows for k in row if k.startswith("train/")}):
        points = [(int(r["step"]), float(r[key])) for r in rows if r.get(key)]
        if points:
            losses.plot(*zip(*points), label=key.removeprefix("train/"))
    losses.set(xlabel="step", ylabel="loss", title="Training loss", yscale="log")
    losses.legend()
    points = [(int(r["step"]), float(r["lr"])) for r in rows if r.get("lr")]
    if points:
        rates.plot(*zip(*points))
    rates.set(xlabel="step", ylabel="learning rate", title="Learning rate")
    return _png(figure)


def top_tail_confusions(matrix: np.ndarray, metrics: dict, limit: int = 10) -> list[tuple[str, str, float]]:
    """The largest off-diagonal confusions of the rarest classes (few-shot, or the rarest
    third when no class is few-shot): (true class, predicted class, share)."""
    groups, classes = metrics["shot_groups"], metrics["classes"]
    tail = [c for c, g in enumerate(groups) if g == "few"]
    if not tail:
        tail = list(np.argsort(metrics["train_counts"])[: max(1, len(classes) // 3)])
    pairs = [(matrix[t, p], t, p) for t in tail for p in range(len(classes)) if p != t and matrix[t, p] > 0]
    return [(classes[t], classes[p], share) for share, t, p in sorted(pairs, reverse=True)[:limit]]


PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body {{ font-family: system-ui, sans-serif; margin: 0; background: #fafafa; color: #222; }}
main {{ max-width: 1200px; margin: 0 auto; padding: 1.5rem; }}
section {{ background: white; border: 1px solid #ddd; border-radius: 6px; padding: 1rem; margin: 1rem 0; }}
img {{ max-width: 100%; height: auto; }}
table {{ border-collapse: collapse; }} td, th {{ padding: 0.25rem 0.75rem; border-bottom: 1px solid #eee; text-align: right; }}
th:first-child, td:first-child {{ text-align: left; }}
pre {{ background: #f3f3f3; padding: 0.75rem; overflow-x: auto; }}
.row {{ display: flex; flex-wrap: wrap; gap: 1rem; align-items: flex-start; }}
</style></head><body><main>
{body}
</main></body></html>
"""


def _image(data: str, alt: str) -> str:
    return f'<img src="data:image/png;base64,{data}" alt="{html.escape(alt)}">'


def _table(header: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def build_report(run_dir: str | Path) -> Path:
    """Write ``report.html`` in ``run_dir`` (atomically) and return its path."""
    run_dir = Path(run_dir)
    metrics = read_metrics(run_dir)
    try:
        config = read_text(run_dir / "config.yaml")
    except (OSError, ValueError) as error:
        raise ConfigError(f"{run_dir}: not a finished run ({error})") from None
    test, classes = metrics["test"], metrics["classes"]
    logits, targets = load_outputs(run_dir / "test_outputs.safetensors", len(classes))
    matrix = confusion(logits, targets, len(classes))

    def fmt(value):
        return "-" if value is None else f"{value:.1f}"

    summary = _table(
        ["overall", "many", "medium", "few", "ECE %", "NLL", "Brier", "test-agnostic mean"],
        [[fmt(test["overall"]), fmt(test["many"]), fmt(test["medium"]), fmt(test["few"]),
          f"{test['calibration']['ece']:.2f}", f"{test['calibration']['nll']:.3f}",
          f"{test['calibration']['brier']:.3f}", fmt(test["agnostic_mean"])]],
    )
    confusions = top_tail_confusions(matrix, metrics)
    probe = metrics.get("probe")  # a pre-training's: its classifier is untrained
    probed = (f"<p>A self-supervised pre-training: the results, confusions and calibration are those of the "
              f"{html.escape(probe)}, its votes read as a classifier's probabilities.</p>" if probe else "")
    sections = [
        f"<h1>{html.escape(metrics['method'])} on {html.escape(metrics['dataset'])}</h1>"
        f"<p>{metrics['epochs']} epochs, {metrics['steps']} steps, {metrics['wall_s']:.0f} s; "
        f"run directory <code>{html.escape(str(run_dir))}</code></p>{probed}",
        f"<section><h2>Results{' of the k-NN probe' if probe else ''}</h2>{summary}</section>",
        "<section><h2>Accuracy by class and shot group</h2><div class='row'>"
        + _image(per_class_plot(metrics), "per-class accuracy against training count")
        + _image(shot_plot(metrics), "many, medium and few-shot accuracy") + "</div></section>",
        "<section><h2>Confusions</h2><div class='row'>"
        + _image(confusion_plot(matrix, classes), "confusion matrix")
        + "<div><h3>Top confusions of the tail classes</h3>"
        + _table(["true class", "predicted as", "share"], [[t, p, f"{100 * s:.1f}%"] for t, p, s in confusions])
        + "</div></div></section>",
        "<section><h2>Calibration and shifted test distributions</h2><div class='row'>"
        + _image(reliability_plot(logits, targets, test["calibration"]["ece"]), "reliability diagram")
        + _image(agnostic_plot(test["agnostic"]), "test-agnostic accuracy") + "</div></section>",
    ]
    curves = curves_plot(read_curves(run_dir / "metrics.csv"))
    if curves:
        sections.append(f"<section><h2>Training</h2>{_image(curves, 'training curves')}</section>")
    sections.append(f"<section><h2>Configuration</h2><pre>{html.escape(config)}</pre></section>")
    path = run_dir / "report.html"
    title = f"longtail: {metrics['method']} on {metrics['dataset']}"
    atomic_write_text(path, PAGE.format(title=html.escape(title), body="\n".join(sections)))
    return path
