"""The benchmark scripts run end to end on the embedded digits (their tables' format)."""

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

SCRIPT = Path(__file__).parents[1] / "benchmarks" / "cifar_lt.py"


@pytest.fixture(scope="module")
def cifar_lt():
    spec = importlib.util.spec_from_file_location("cifar_lt", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["cifar_lt"] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    yield module
    del sys.modules["cifar_lt"]


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
                "bound_images_per_s", "fraction", "precision", "epochs", "batch_size", "commit", "capability", "cpu"):
        assert key in row
    assert row["bound_images_per_s"] > 0 and len(row["per_class"]) == 10
    tail = [accuracy for accuracy, count in zip(row["per_class"], row["train_counts"]) if count <= 100]
    assert tail and row["tail"] == pytest.approx(sum(tail) / len(tail))
    assert row["bound_epochs"] == 1 and 0 < row["fraction"]  # a bound timed after the one epoch
    for key in ("cpu", "cores", "capability", "native_bf16", "gpu", "torch"):
        assert key in table["machine"]

    second = bench(tmp_path, "--methods", "ce,balanced_softmax")
    assert "ce 32: already measured" in second.stderr
    table = json.loads((tmp_path / "results/digits_lt10.json").read_text())
    assert [row["method"] for row in table["rows"]] == ["ce", "balanced_softmax"]
    assert "| balanced_softmax | auto+cutout | 32 |" in (tmp_path / "results/digits_lt10.md").read_text()


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


def test_rows_made_before_a_commit_are_measured_again_in_their_place(tmp_path):
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=SCRIPT.parent, capture_output=True,
                          text=True).stdout.strip()
    first_commit = subprocess.run(["git", "rev-list", "--max-parents=0", "HEAD"], cwd=SCRIPT.parent,
                                  capture_output=True, text=True).stdout.split()[0]
    bench(tmp_path, "--methods", "ce,balanced_softmax")
    path = tmp_path / "results/digits_lt10.json"
    table = json.loads(path.read_text())
    table["rows"][0]["commit"] = first_commit[:7]  # as if made long ago
    table["rows"][0]["overall"] = -1.0
    path.write_text(json.dumps(table))
    (tmp_path / "runs/digits_lt10/ce-32-e1-b64-s0/commit").write_text(first_commit + "\n")
    kept = bench(tmp_path, "--methods", "ce,balanced_softmax", "--since", first_commit)
    assert "ce 32: already measured" in kept.stderr
    again = bench(tmp_path, "--methods", "ce,balanced_softmax", "--since", head)
    assert "discarding" in again.stderr and "ce 32: training" in again.stderr
    assert "balanced_softmax 32: already measured" in again.stderr
    rows = json.loads(path.read_text())["rows"]
    assert [row["method"] for row in rows] == ["ce", "balanced_softmax"]
    assert rows[0]["commit"] == head and rows[0]["overall"] >= 0


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


def test_the_ordering_is_checked_overall_and_on_the_tail_per_precision(cifar_lt):
    def row(method, precision, overall, tail):
        return {"method": method, "precision": precision, "overall": overall, "tail": tail}

    rows = [row("ce", "32", 40.0, 10.0), row("logit_adjustment", "32", 45.0, 30.0), row("bcl", "32", 50.0, 25.0),
            row("ce", "bf16-mixed", 40.0, 10.0)]  # no ordering without all three methods
    lines = cifar_lt.ordering(rows)
    assert len(lines) == 2
    assert lines[0].startswith("overall at 32: bcl > logit_adjustment > ce holds")
    assert lines[1].startswith("tail at 32: bcl > logit_adjustment > ce does not hold")
    assert "bcl 25.0, logit_adjustment 30.0, ce 10.0" in lines[1] and "mixed" not in lines[1]
    rows[2].update(stale=True)  # a row from before the change, or from another CPU, is no comparison
    assert "mixed rows, not yet a comparison: " in cifar_lt.ordering(rows)[0]
    assert "bcl on - before the change" in cifar_lt.ordering(rows)[0]
    rows[2].update(stale=False, capability="AVX2")
    assert "bcl on AVX2, logit_adjustment on -" in cifar_lt.ordering(rows)[0]
    for row_, cpu in zip(rows[:3], ("AMD EPYC", "Intel Xeon", "AMD EPYC")):  # one capability, two CPUs
        row_.update(capability="AVX512", cpu=cpu)
    assert "bcl on AMD EPYC, AVX512, logit_adjustment on Intel Xeon, AVX512" in cifar_lt.ordering(rows)[0]
    rows[1].update(cpu="AMD EPYC")
    assert "mixed" not in cifar_lt.ordering(rows)[0]


def test_the_tail_is_the_classes_outside_the_many_shot_group(cifar_lt):
    assert cifar_lt.tail_accuracy([90.0, 60.0, 20.0, 0.0], ["many", "many", "medium", "few"]) == 10.0
    assert cifar_lt.tail_accuracy([90.0, 60.0], ["many", "many"]) is None


def test_the_legend_states_the_shot_thresholds_of_the_run(cifar_lt, tmp_path):
    machine = {"cpu": "cpu", "cores": 2, "capability": "AVX2", "native_bf16": False, "gpu": None, "torch": "2"}
    result = {"dataset": "digits", "imbalance_factor": 10, "epochs": 1, "batch_size": 64, "machine": machine,
              "commit": "abc", "command": "python benchmarks/cifar_lt.py", "shots": {"many": 50, "few": 5},
              "rows": [], "notes": []}
    cifar_lt.write_tables(tmp_path, "table", result)
    legend = (tmp_path / "table.md").read_text()
    assert "classes with over 50, 5 to 50, under 5 training images" in legend
    assert "the classes with 50 or fewer" in legend


def test_second_stage_and_post_hoc_rows_start_from_the_cross_entropy_row(tmp_path):
    early = bench(tmp_path, "--methods", "crt")
    assert "crt 32: needs the ce row at 32 first" in early.stderr
    bench(tmp_path, "--methods", "ce,crt,ce+la,ncm")
    table = json.loads((tmp_path / "results/digits_lt10.json").read_text())
    rows = {row["method"]: row for row in table["rows"]}
    assert set(rows) == {"ce", "crt", "ce+la", "ncm"}
    assert rows["crt"]["after"] == "ce" and rows["crt"]["fraction"] > 0
    assert rows["ncm"]["fraction"] is None  # it trains nothing: no bound
    assert rows["ce+la"]["images_per_s"] is None and rows["ce+la"]["run_dir"] == rows["ce"]["run_dir"]
    markdown = (tmp_path / "results/digits_lt10.md").read_text()
    assert "| crt | auto+cutout on ce's backbone | 32 |" in markdown
    assert "| ce+la | ce's logits, post hoc | 32 |" in markdown
    assert "crt > ce" in markdown  # the paper's ordering, checked


def test_an_unknown_row_is_named():
    result = subprocess.run([sys.executable, str(SCRIPT), "--data", "digits", "--methods", "cee"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "unknown row 'cee'" in result.stderr


def test_the_contrastive_rows_train_their_own_views_and_two_stage_rows_their_linear_classifier(tmp_path):
    bench(tmp_path, "--methods", "supcon_pretrain,supcon_linear,paco,rescom")
    markdown = (tmp_path / "results/digits_lt10.md").read_text()
    assert "(k-NN probe) | 32 |" in markdown.split("| supcon_pretrain |")[1].splitlines()[0]
    rows = {row["method"]: row for row in json.loads((tmp_path / "results/digits_lt10.json").read_text())["rows"]}
    assert set(rows) == {"supcon_pretrain", "supcon_linear", "paco", "rescom"}
    assert rows["paco"]["views"] == "auto+cutout, sim" and rows["rescom"]["views"] == "auto+cutout, auto+cutout"
    assert rows["supcon_linear"]["after"] == "supcon_pretrain"
    assert all(rows[name]["fraction"] > 0 for name in rows)


def test_the_self_supervised_rows_are_probed_by_k_nn_and_a_linear_classifier_above_an_untrained_floor(tmp_path):
    bench(tmp_path, "--methods", "random,random_linear,byol,byol_linear", "--name", "digits_pretrain", "--epochs", "2")
    rows = {row["method"]: row for row in json.loads((tmp_path / "results/digits_pretrain.json").read_text())["rows"]}
    assert rows["random"]["epochs"] == 1 and rows["byol"]["epochs"] == 2 and rows["byol_linear"]["after"] == "byol"
    markdown = (tmp_path / "results/digits_pretrain.md").read_text()
    assert "| byol | sim, sim (k-NN probe) |" in markdown and "| random | sim, sim (k-NN probe) |" in markdown


def test_each_row_compresses_its_own_paper_recipe_to_the_budget(cifar_lt, tmp_path):
    configs = Path(__file__).parents[1] / "configs" / "cifar10_lt"
    data = tmp_path / "cifar10"
    data.mkdir()

    def row(name, first_stage=None):
        return cifar_lt.recipe(str(data), name, 30, 128, 100, 0, "32", tmp_path / "runs", first_stage)

    supervised = row("ce")  # BCL's: steps at 160 and 180 of 200, 0.15 at 256
    assert (supervised.optim.schedule, supervised.optim.milestones) == ("step", [24, 27])
    assert supervised.optim.lr == pytest.approx(0.15 * 128 / 256)
    pretrain = yaml.safe_load((configs / "pretrain.yaml").read_text())
    simclr = row("simclr")  # the long-tailed SimCLR recipe: cosine, its rate at its batch, its temperature
    assert (simclr.optim.schedule, simclr.optim.epochs) == ("cosine", 30)
    assert simclr.optim.lr == pytest.approx(pretrain["optim"]["lr"] * 128 / pretrain["data"]["batch_size"])
    assert simclr.method["temperature"] == pretrain["method"]["temperature"]
    dcl = row("dcl")  # SimCLR's recipe with the positive out of the denominator
    assert (dcl.method["name"], dcl.method["objective"], dcl.optim.lr) == ("simclr", "dcl", simclr.optim.lr)
    sdclr = yaml.safe_load((configs / "pretrain" / "sdclr.yaml").read_text())
    assert row("sdclr").optim.weight_decay == sdclr["optim"]["weight_decay"]  # its own file over the recipe
    first_stage = tmp_path / "first"
    first_stage.mkdir()
    probe = row("simclr_linear", first_stage)  # linear.yaml's: 20 epochs, crop and flip, no weight decay
    linear = yaml.safe_load((configs / "linear.yaml").read_text())
    assert (probe.optim.epochs, probe.optim.weight_decay) == (linear["optim"]["epochs"], 0.0)
    assert probe.optim.lr == pytest.approx(linear["optim"]["lr"] * 128 / linear["data"]["batch_size"])
    assert probe.data.views == ["standard"] and probe.model.init_from == str(first_stage)
