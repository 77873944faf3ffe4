"""Post-hoc corrections on a trained model's logits and weights, against their papers'
definitions computed here one class at a time; the strength chosen on validation data."""

import math

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.metrics import balanced_accuracy_score

from longtail.cli import main
from longtail.evaluation.posthoc import (
    adjust_logits,
    choose_tau,
    normalized_calibration,
    prior,
    tau_normalized_logits,
)

COUNTS = [300, 60, 12, 3]


def test_tau_normalisation_follows_the_definition_and_tau_zero_changes_nothing():
    generator = torch.Generator().manual_seed(0)
    features = torch.randn(6, 5, generator=generator, dtype=torch.float64)
    weight = torch.randn(4, 5, generator=generator, dtype=torch.float64) * torch.tensor([[3.0], [1.0], [0.5], [0.2]])
    bias = torch.randn(4, generator=generator, dtype=torch.float64)
    torch.testing.assert_close(tau_normalized_logits(features, weight, bias, 0.0), features @ weight.T + bias)
    for tau in (0.5, 1.0, 1.7):  # the bias normalised with its class's weights: (w_j, b_j) / |(w_j, b_j)|^tau
        expected = torch.empty(6, 4, dtype=torch.float64)
        plain = torch.empty(6, 4, dtype=torch.float64)
        for j in range(4):
            norm = math.sqrt(sum(v * v for v in weight[j].tolist()) + bias[j].item() ** 2)
            plain_norm = math.sqrt(sum(v * v for v in weight[j].tolist()))
            for i in range(6):
                dot = sum(f * w for f, w in zip(features[i].tolist(), weight[j].tolist()))
                expected[i, j] = (dot + bias[j]) / norm**tau
                plain[i, j] = dot / plain_norm**tau
        torch.testing.assert_close(tau_normalized_logits(features, weight, bias, tau), expected)
        torch.testing.assert_close(tau_normalized_logits(features, weight, None, tau), plain)


def test_norcal_divides_the_probabilities_by_the_counts_to_the_gamma():
    logits = torch.randn(5, 4, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    for gamma in (0.0, 0.6, 1.0):
        divided = logits.softmax(1) / torch.tensor(COUNTS, dtype=torch.float64) ** gamma
        expected = divided / divided.sum(1, keepdim=True)
        torch.testing.assert_close(normalized_calibration(logits, COUNTS, gamma).softmax(1), expected)
    torch.testing.assert_close(normalized_calibration(logits, COUNTS, 0.0), logits)
    torch.testing.assert_close(adjust_logits(logits, prior(COUNTS), prior([1] * 4), 0.0), logits)


def test_the_chosen_tau_has_the_best_balanced_accuracy_on_the_data_it_was_given():
    generator = torch.Generator().manual_seed(2)
    targets = torch.arange(4).repeat_interleave(25)
    # a model biased to the head: its logits carry the training prior
    logits = torch.randn(100, 4, generator=generator, dtype=torch.float64) + 3 * torch.nn.functional.one_hot(targets)
    logits = logits + torch.log(prior(COUNTS))
    candidates = [i / 10 for i in range(21)]
    scores = [balanced_accuracy_score(targets.numpy(), normalized_calibration(logits, COUNTS, t).argmax(1).numpy())
              for t in candidates]
    tau = choose_tau(lambda t: normalized_calibration(logits, COUNTS, t), targets)
    assert scores[candidates.index(tau)] == max(scores)
    assert tau == candidates[scores.index(max(scores))]  # the smallest of the best
    assert tau > 0  # the head's bias is worth removing


def write_folder(root, counts, seed=0):
    rng = np.random.default_rng(seed)
    for split, per_class in (("train", counts), ("val", [6] * len(counts)), ("test", [6] * len(counts))):
        for c, n in enumerate(per_class):
            folder = root / split / f"class{c}"
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                pixels = np.clip(rng.normal(60 * c + 40, 30, (8, 8, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(pixels).save(folder / f"{i}.png")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    cwd = tmp_path_factory.mktemp("posthoc")
    write_folder(cwd / "data", [40, 15, 6, 3])
    common = ["method.name=ce", "optim.epochs=2", "optim.warmup_epochs=0", "data.num_workers=0", "data.batch_size=16",
              "--no-progress", f"data.cache_dir={cwd / 'cache'}"]
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(cwd)
        assert main(["train", "data.root=data", "out_dir=with_val", *common]) == 0
        assert main(["train", "out_dir=digits", *common]) == 0  # Digits-LT: no validation split
    return cwd, next((cwd / "with_val").iterdir()), next((cwd / "digits").iterdir())


@pytest.mark.parametrize("name", ["la", "norcal", "tau_norm"])
def test_eval_posthoc_chooses_tau_on_the_validation_split(runs, name, capsys, monkeypatch):
    cwd, with_val, _ = runs
    monkeypatch.chdir(cwd)
    assert main(["eval", str(with_val), "--posthoc", name, "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "chosen on the validation split" in out and out.count("overall") == 2
    assert main(["eval", str(with_val), "--posthoc", name, "--tau", "0", "--no-progress"]) == 0
    plain, corrected = capsys.readouterr().out.split(", tau 0:")
    assert plain.split("overall", 1)[1].splitlines()[1] == corrected.split("overall", 1)[1].splitlines()[1]


def test_eval_posthoc_without_a_validation_split_uses_tau_one(runs, capsys, monkeypatch):
    cwd, _, digits = runs
    monkeypatch.chdir(cwd)
    assert main(["eval", str(digits), "--posthoc", "tau_norm", "--no-progress"]) == 0
    assert "tau 1: the data has no validation split" in capsys.readouterr().out


def test_tau_norm_is_refused_where_the_method_reads_its_logits_its_own_way(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["train", "method.name=supervised", "loss.name=iif", "optim.epochs=1", "data.num_workers=0",
                 "--no-progress"]) == 0
    (run,) = (tmp_path / "runs").iterdir()
    capsys.readouterr()
    assert main(["eval", str(run), "--posthoc", "tau_norm", "--no-progress"]) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and "tau_norm" in error and "'iif'" in error


def test_the_earlier_posthoc_tau_form_still_means_la(runs, capsys, monkeypatch):
    cwd, _, digits = runs
    monkeypatch.chdir(cwd)
    assert main(["eval", str(digits), "--posthoc", "0.5", "--no-progress"]) == 0
    assert "logit adjustment to the uniform prior (Menon et al., ICLR 2021), tau 0.5:" in capsys.readouterr().out
