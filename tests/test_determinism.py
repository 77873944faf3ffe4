"""The same seed in deterministic mode gives bit-identical results on one machine."""

import json

from longtail.config import load_config
from longtail.run import train


def run(tmp_path, *overrides):
    config = load_config([], [f"out_dir={tmp_path}", "optim.epochs=2", "optim.warmup_epochs=1",
                              "trainer.deterministic=true", "data.num_workers=1", *overrides])
    run_dir, _ = train(config, progress=False)
    return json.loads((run_dir / "metrics.json").read_text())["test"], (run_dir / "metrics.csv").read_text()


def test_same_seed_same_metrics_and_curves(tmp_path):
    first = run(tmp_path)
    second = run(tmp_path)
    assert first == second


def test_another_seed_changes_the_training_curve(tmp_path):
    _, curve = run(tmp_path)
    _, other = run(tmp_path, "seed=1")
    assert curve != other
