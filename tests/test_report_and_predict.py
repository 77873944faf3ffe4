"""report, compare, predict and checkpoint safety, on short real runs of the CLI."""

import json
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

SHORT = ["optim.epochs=2", "optim.warmup_epochs=1", "data.num_workers=0", "--no-progress"]
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def longtail(*args, cwd):
    return subprocess.run([sys.executable, "-m", "longtail", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    cwd = tmp_path_factory.mktemp("runs")
    for method in ("ce", "logit_adjustment"):
        result = longtail("train", f"method.name={method}", *SHORT, cwd=cwd)
        assert result.returncode == 0, result.stderr
    return cwd, sorted((cwd / "runs").iterdir())


def test_report_embeds_every_plot(runs):
    cwd, (run_dir, _) = runs
    result = longtail("report", str(run_dir), cwd=cwd)
    assert result.returncode == 0, result.stderr
    page = (run_dir / "report.html").read_text()
    images = re.findall(r'<img src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    assert len(images) == 6  # per class, shots, confusion, reliability, agnostic, curves
    assert "http" not in page.replace("http-equiv", "")  # readable offline
    for word in ("Top confusions of the tail classes", "Configuration", "name: ce"):
        assert word in page


@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (.ci/run installs it)")
def test_report_renders_in_headless_chromium_with_every_image_loaded(runs, tmp_path):
    cwd, (run_dir, _) = runs
    assert longtail("report", str(run_dir), cwd=cwd).returncode == 0
    probe = tmp_path / "probe.html"
    probe.write_text((run_dir / "report.html").read_text().replace(
        "</body>",
        "<script>addEventListener('load', () => { const all = [...document.images];"
        " document.title = 'loaded ' + all.filter(i => i.complete && i.naturalWidth > 0).length"
        " + ' of ' + all.length + ' width ' + document.body.scrollWidth; });</script></body>"))
    result = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1280,2000",
         "--virtual-time-budget=5000", "--dump-dom", probe.as_uri()],
        capture_output=True, text=True, timeout=120,
    )
    title = re.search(r"<title>(.*?)</title>", result.stdout)
    assert title, result.stderr[-2000:]
    loaded, total, width = map(int, re.match(r"loaded (\d+) of (\d+) width (\d+)", title.group(1)).groups())
    assert total == 6 and loaded == total
    assert width <= 1280  # no horizontal scrolling at 1280 px


def test_compare_marks_the_best_of_each_column(runs):
    cwd, run_dirs = runs
    result = longtail("compare", *map(str, run_dirs), "--format", "csv", cwd=cwd)
    assert result.returncode == 0, result.stderr
    header, *rows = [line.split(",") for line in result.stdout.strip().splitlines()]
    assert header == ["run", "method", "overall", "many", "medium", "few", "ECE", "agnostic mean"]
    metrics = [json.loads((d / "metrics.json").read_text()) for d in run_dirs]
    overall = [m["test"]["overall"] for m in metrics]
    best = int(np.argmax(overall))
    assert rows[best][2].endswith("*")
    if overall[0] != overall[1]:
        assert not rows[1 - best][2].endswith("*")
    ece = [m["test"]["calibration"]["ece"] for m in metrics]
    assert rows[int(np.argmin(ece))][6].endswith("*")
    markdown = longtail("compare", *map(str, run_dirs), cwd=cwd).stdout
    assert markdown.count("**") >= 2 * 6


def test_predict_reports_a_corrupt_file_and_goes_on(runs, tmp_path):
    cwd, (run_dir, _) = runs
    folder = tmp_path / "images"
    folder.mkdir()
    for i in range(3):
        Image.fromarray(np.full((8, 8, 3), 40 * i, dtype=np.uint8)).save(folder / f"{i}.png")
    (folder / "1-broken.png").write_bytes(b"not an image")
    result = longtail("predict", str(run_dir), str(folder), "--top-k", "3", cwd=cwd)
    assert result.returncode == 0, result.stderr
    assert "1-broken.png" in result.stderr and "Traceback" not in result.stderr
    lines = result.stdout.strip().splitlines()
    assert lines[0] == "path,rank,class,probability" and len(lines) == 1 + 3 * 3
    probabilities = [float(line.split(",")[3]) for line in lines[1:4]]
    assert probabilities == sorted(probabilities, reverse=True) and 0 < sum(probabilities) <= 1.0001


def test_predict_decoded_in_workers_keeps_file_order_and_matches_one_by_one(runs, tmp_path):
    from longtail.predict import load_model, predict

    _, (run_dir, _) = runs
    files = []
    for i in range(7):
        files.append(tmp_path / f"{i}.png")
        Image.fromarray(np.random.default_rng(i).integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(files[-1])
    files[3].write_bytes(b"not an image")
    method, info = load_model(run_dir)
    alone = [outcome for path in files for _, outcome in predict(method, info, [path], top_k=3, num_workers=0)]
    batched = list(predict(method, info, files, top_k=3, batch_size=3, num_workers=2))
    assert [path for path, _ in batched] == files
    assert [isinstance(outcome, str) for _, outcome in batched] == [i == 3 for i in range(7)]
    for (_, outcome), expected in zip(batched, alone):
        if isinstance(expected, str):
            assert outcome == expected
            continue
        assert [name for name, _ in outcome] == [name for name, _ in expected]
        assert [p for _, p in outcome] == pytest.approx([p for _, p in expected], abs=1e-6)


def test_predict_prior_moves_probability_toward_the_deployment_prior(runs, tmp_path):
    from sklearn.datasets import load_digits

    from longtail.checkpoints import load_weights, save_weights

    cwd, (run_dir, _) = runs
    # a two-epoch run's logits on these images are thousands apart, where every probability
    # reads 0 or 1; its classifier, shrunk, gives logits that a prior visibly moves
    state_dict, info = load_weights(run_dir / "model.safetensors")
    for key in ("classifier.weight", "classifier.bias"):
        state_dict[key] = state_dict[key] * 1e-3
    shrunk = tmp_path / "shrunk.safetensors"
    save_weights(shrunk, state_dict, info)
    images = tmp_path / "images"
    images.mkdir()
    for index, digit in enumerate(load_digits().images[:30]):  # as the embedded data renders them
        grey = np.round(digit * (255 / 16)).astype(np.uint8)
        Image.fromarray(np.repeat(grey[..., None], 3, axis=-1)).save(images / f"{index:02d}.png")
    heavy_on_9 = tmp_path / "prior.json"
    heavy_on_9.write_text(json.dumps({"9": 1000, **{str(c): 1 for c in range(9)}}))

    def probabilities_of_9(*extra):
        result = longtail("predict", str(shrunk), str(images), "--top-k", "10", "--format", "json", *extra, cwd=cwd)
        assert result.returncode == 0, result.stderr
        return {record["path"]: next(p["probability"] for p in record["predictions"] if p["class"] == "9")
                for record in json.loads(result.stdout)}

    heavy, uniform = probabilities_of_9("--prior", str(heavy_on_9)), probabilities_of_9("--prior", "uniform")
    assert heavy.keys() == uniform.keys() and len(heavy) == 30
    # the prior multiplies 9's odds against every class by 1000, so 9's probability rises
    assert all(heavy[path] > uniform[path] for path in heavy if 0 < uniform[path] < 1)
    assert sum(0 < p < 1 for p in uniform.values()) >= 10


def test_a_tampered_checkpoint_gets_a_clear_error_and_runs_no_code(runs, tmp_path):
    cwd, _ = runs
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    import pickle

    evil = tmp_path / "evil.ckpt"
    evil.write_bytes(pickle.dumps({"state_dict": Payload(), "longtail": {}}))
    for command in (["eval", str(evil)], ["predict", str(evil), str(tmp_path)]):
        result = longtail(*command, cwd=cwd)
        assert result.returncode == 2
        assert "evil.ckpt" in result.stderr and "Traceback" not in result.stderr
        assert "refused: the file holds code" in result.stderr and "weights_only" not in result.stderr
    assert not marker.exists()


def test_a_damaged_weights_file_is_named(runs, tmp_path):
    cwd, (run_dir, _) = runs
    damaged = tmp_path / "model.safetensors"
    damaged.write_bytes((run_dir / "model.safetensors").read_bytes()[:100])
    result = longtail("predict", str(damaged), str(tmp_path), cwd=cwd)
    assert result.returncode == 2
    assert "model.safetensors" in result.stderr and "Traceback" not in result.stderr


def test_eval_posthoc_adjusts_a_cross_entropy_model_only(runs):
    cwd, (ce_run, la_run) = runs
    ce = longtail("eval", str(ce_run), "--posthoc", "--no-progress", cwd=cwd)
    assert ce.returncode == 0, ce.stderr
    assert ce.stdout.count("overall") == 2  # the plain table and the adjusted one
    la = longtail("eval", str(la_run), "--posthoc", "--no-progress", cwd=cwd)
    assert "nothing to adjust" in la.stdout


def test_eval_resample_reports_sampled_test_agnostic_accuracy_near_the_exact_one(runs):
    cwd, (ce_run, _) = runs
    exact = json.loads((ce_run / "metrics.json").read_text())["test"]["agnostic_mean"]
    result = longtail("eval", str(ce_run), "--resample", "200", "--no-progress", cwd=cwd)
    assert result.returncode == 0, result.stderr
    assert "mean over 200 random test subsets" in result.stdout
    values = result.stdout.split("mean\n", 1)[1].splitlines()[0].split()
    assert abs(float(values[-1]) - exact) < 2.0
