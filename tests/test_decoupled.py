"""The decoupled second stage (Kang et al., ICLR 2020) on a first stage's frozen backbone:
LWS learns one scale per class, NCM the class means; neither moves the backbone."""

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from longtail.cli import main
from longtail.run import evaluate

QUICK = ["optim.epochs=1", "optim.warmup_epochs=0", "data.num_workers=0", "--no-progress"]


def only(folder):
    (path,) = folder.iterdir()
    return path


@pytest.fixture(scope="module")
def first_stage(tmp_path_factory):
    cwd = tmp_path_factory.mktemp("first")
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(cwd)
        assert main(["train", "method.name=ce", "optim.epochs=2", *QUICK[1:]]) == 0
    return only(cwd / "runs")


def second_stage(first_stage, tmp_path, monkeypatch, *args):
    monkeypatch.chdir(tmp_path)
    assert main(["train", f"model.init_from={first_stage}", *args, *QUICK]) == 0
    run = only(tmp_path / "runs")
    return run, load_file(first_stage / "model.safetensors"), load_file(run / "model.safetensors")


def test_lws_learns_only_the_class_scales(first_stage, tmp_path, monkeypatch):
    run, first, second = second_stage(first_stage, tmp_path, monkeypatch, "method.name=lws",
                                      "model.init_classifier=true", "data.sampler=class_balanced")
    kept = [key for key in first if key.startswith(("backbone.", "classifier."))]
    assert any(k.startswith("classifier.") for k in kept)
    assert all(torch.equal(first[key], second[key]) for key in kept)  # batch-norm statistics too
    assert second["scales"].shape == (10,) and not torch.equal(second["scales"], torch.ones(10))
    evaluation = evaluate(run, progress=False, features=True)
    linear = evaluation.outputs.features.double() @ first["classifier.weight"].double().T + first["classifier.bias"].double()
    torch.testing.assert_close(evaluation.outputs.logits.double(), second["scales"].double() * linear,
                               rtol=1e-4, atol=1e-4)


def test_lws_without_the_first_stages_classifier_is_refused(first_stage, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["train", "method.name=lws", f"model.init_from={first_stage}", *QUICK]) == 2
    assert "model.init_classifier=true" in capsys.readouterr().err


def test_ncm_classifies_by_the_nearest_mean_of_the_training_features(first_stage, tmp_path, monkeypatch):
    run, first, second = second_stage(first_stage, tmp_path, monkeypatch, "method.name=ncm")
    backbone = [key for key in first if key.startswith("backbone.")]
    assert all(torch.equal(first[key], second[key]) for key in backbone)
    train = evaluate(run, progress=False, features=True, split="train")
    features, targets = train.outputs.features.double(), train.outputs.targets
    means = torch.stack([features[targets == c].mean(0) for c in range(10)])
    torch.testing.assert_close(second["class_means"].double(), means, rtol=1e-4, atol=1e-5)
    test = evaluate(run, progress=False, features=True)
    cosine = F.normalize(test.outputs.features.double(), dim=1) @ F.normalize(means, dim=1).T
    torch.testing.assert_close(test.outputs.logits.double(), 16.0 * cosine, rtol=1e-4, atol=1e-4)
    # a two-epoch backbone's features share one large direction, so many images sit within
    # float32's resolution of two means; the decision is checked where the means differ beyond it
    top_two = cosine.topk(2, dim=1).values
    decided = top_two[:, 0] - top_two[:, 1] > 1e-5
    predicted = test.outputs.logits.argmax(1)
    assert decided.any() and torch.equal(predicted[decided], cosine.argmax(1)[decided])
    assert test.results["overall"] == pytest.approx(100 * (predicted == test.outputs.targets).double().mean().item())


def test_marc_learns_a_scale_and_a_margin_per_class_on_the_frozen_classifier(first_stage, tmp_path, monkeypatch):
    run, first, second = second_stage(first_stage, tmp_path, monkeypatch, "method.name=marc",
                                      "model.init_classifier=true")
    kept = [key for key in first if key.startswith(("backbone.", "classifier."))]
    assert all(torch.equal(first[key], second[key]) for key in kept)
    assert not torch.equal(second["omega"], torch.ones(10)) and not torch.equal(second["beta"], torch.zeros(10))
    evaluation = evaluate(run, progress=False, features=True)
    weight, bias = first["classifier.weight"].double(), first["classifier.bias"].double()
    linear = evaluation.outputs.features.double() @ weight.T + bias
    expected = second["omega"].double() * linear + second["beta"].double() * weight.norm(dim=1)
    torch.testing.assert_close(evaluation.outputs.logits.double(), expected, rtol=1e-4, atol=1e-4)
