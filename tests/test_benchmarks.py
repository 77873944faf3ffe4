"""The benchmark scripts run end to end on the embedded digits (their tables' format)."""

import json
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).parents[1] / "benchmarks" / "cifar_lt.py"


def bench(tmp_path, *args):
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--data", "digits", "--epochs", "1", "--batch-size", "64",
         "--imbalance-factor", "10", "--results", str(tmp_path / "results"),
         "--runs", str(tmp_path / "runs"), *args],
        capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr
    return result


def test_cifar_lt_writes_rows_and_resumes_without_redoing_them(tmp_path):
    bench(tmp_path, "--methods", "ce")
    table = json.loads((tmp_path / "results/digits_lt10.json").read_text())
    assert [row["method"] for row in table["rows"]] == ["ce"]
    row = table["rows"][0]
    for key in ("overall", "many", "medium", "few", "per_class", "wall_s", "images_per_s",
                "bound_images_per_s", "fraction", "precision", "epochs", "batch_size"):
        assert key in row
    assert row["bound_images_per_s"] > 0 and len(row["per_class"]) == 10
    assert row["bound_epochs"] == 1 and 0 < row["fraction"]  # a bound timed after the one epoch
    for key in ("cpu", "cores", "capability", "native_bf16", "gpu", "torch"):
        assert key in table["machine"]

    second = bench(tmp_path, "--methods", "ce,balanced_softmax")
    assert "ce 32: already measured" in second.stderr
    table = json.loads((tmp_path / "results/digits_lt10.json").read_text())
    assert [row["method"] for row in table["rows"]] == ["ce", "balanced_softmax"]
    assert "| balanced_softmax | 32 |" in (tmp_path / "results/digits_lt10.md").read_text()


def test_a_stopped_row_continues_from_its_checkpoint(tmp_path):
    bench(tmp_path, "--methods", "ce")
    run_dir = tmp_path / "runs/digits_lt10/ce-32-e1-b64-s0"
    first = json.loads((run_dir / "metrics.json").read_text())
    first_row = json.loads((tmp_path / "results/digits_lt10.json").read_text())["rows"][0]
    # as if stopped before the end: no row, no final metrics, the last checkpoint kept
    (run_dir / "metrics.json").unlink()
    (tmp_path / "results/digits_lt10.json").unlink()
    again = bench(tmp_path, "--methods", "ce")
    assert f"continuing {run_dir}" in again.stderr
    row = json.loads((tmp_path / "results/digits_lt10.json").read_text())["rows"][0]
    assert row["overall"] == first["test"]["overall"] and row["per_class"] == first["test"]["per_class"]
    assert row["images_per_s"] == first["images_per_s"]  # the rate measured before the stop
    # and the bound timed before the stop, kept in the checkpoint
    assert (row["bound_images_per_s"], row["fraction"]) == (first_row["bound_images_per_s"], first_row["fraction"])


def test_the_views_benchmark_writes_its_table(tmp_path):
    script = Path(__file__).parents[1] / "benchmarks" / "views.py"
    result = subprocess.run(
        [sys.executable, str(script), "--size", "8", "--batch-size", "4", "--repeats", "1",
         "--results", str(tmp_path)], capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr
    table = json.loads((tmp_path / "views_8.json").read_text())
    assert set(table["ms_per_image"]) == {"stage 1 (loader)", "stage 2 (training process)", "two stages", "per image"}
    assert all(value > 0 for value in table["ms_per_image"].values())
    assert table["machine"]["capability"] and "| per image |" in (tmp_path / "views_8.md").read_text()
