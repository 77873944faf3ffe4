"""The weighted k-NN probe: against its definition, and from the CLI on a trained run."""

import math

import pytest
import torch

from longtail.cli import main
from longtail.evaluation.knn import knn_scores


def reference(train, labels, queries, num_classes, k, temperature):
    """Wu et al.'s weighted k-NN, one query at a time: cosine similarities sorted, the k
    largest voting exp(s / T) for their labels."""
    out = []
    for query in queries.tolist():
        similarity = []
        for row, label in zip(train.tolist(), labels.tolist()):
            dot = sum(a * b for a, b in zip(query, row))
            norms = math.sqrt(sum(a * a for a in query)) * math.sqrt(sum(b * b for b in row))
            similarity.append((dot / norms, label))
        similarity.sort(key=lambda pair: -pair[0])
        votes = [0.0] * num_classes
        for s, label in similarity[:k]:
            votes[label] += math.exp(s / temperature)
        out.append(votes)
    return torch.tensor(out, dtype=torch.float64)


@pytest.mark.parametrize("k, temperature", [(1, 0.1), (5, 0.1), (7, 0.5), (100, 0.07)])
def test_knn_scores_are_the_weighted_votes_of_the_nearest_neighbours(k, temperature):
    generator = torch.Generator().manual_seed(k)
    train = torch.randn(40, 6, generator=generator)
    labels = torch.randint(0, 4, (40,), generator=generator)
    queries = torch.randn(9, 6, generator=generator)
    expected = reference(train, labels, queries, 4, k, temperature)
    torch.testing.assert_close(knn_scores(train, labels, queries, 4, k, temperature), expected)
    torch.testing.assert_close(knn_scores(train, labels, queries, 4, k, temperature, chunk=2), expected)


def test_one_neighbour_is_the_nearest_ones_label():
    train = torch.eye(3) * torch.tensor([[2.0], [1.0], [5.0]])  # the scale does not matter: cosine
    queries = torch.tensor([[0.9, 0.1, 0.0], [0.0, 0.2, 0.8]])
    assert knn_scores(train, torch.tensor([2, 0, 1]), queries, 3, k=1).argmax(1).tolist() == [2, 1]


def test_eval_knn_probes_a_trained_backbone(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["train", "method.name=ce", "optim.epochs=3", "optim.warmup_epochs=0", "data.num_workers=0",
                 "out_dir=runs", "--no-progress"]) == 0
    run = next((tmp_path / "runs").iterdir())
    capsys.readouterr()
    assert main(["eval", str(run), "--knn", "5", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "k-NN on the backbone's features (k 5, temperature 0.1" in out
    knn_overall = float(out.split("k-NN on the backbone")[1].split("overall", 1)[1].splitlines()[1].split()[0])
    assert knn_overall > 30  # well above chance (10) after three epochs


def test_a_run_probes_its_features_every_few_epochs_into_its_curves_and_report(tmp_path):
    from longtail.config import load_config
    from longtail.curves import read_curves
    from longtail.evaluation.report import curves_plot
    from longtail.run import train

    config = load_config([], ["method.name=supcon", "method.alpha=0", "data.views=[standard, standard, standard]",
                              "optim.epochs=3", "optim.warmup_epochs=0", "data.num_workers=0", "eval.knn_every=2",
                              "eval.knn_k=5", "model.feat_dim=16", "model.hidden_dim=32", f"out_dir={tmp_path}"])
    run_dir, _ = train(config, progress=False)
    rows = read_curves(run_dir / "metrics.csv")
    probed = [row for row in rows if row.get("knn/overall")]
    assert [int(row["epoch"]) for row in probed] == [1, 2]  # after the second epoch, and the last
    assert all(10 < float(row["knn/overall"]) <= 100 for row in probed)  # above chance
    assert {"knn/many", "knn/medium", "knn/few"} <= set(probed[0])
    assert curves_plot(rows) is not None


@pytest.mark.parametrize("every, probes", [(2, 2), (0, 0)])
def test_a_pretraining_tests_the_features_of_its_last_probe_without_computing_them_again(tmp_path, monkeypatch,
                                                                                          every, probes):
    import json

    import longtail.evaluation.knn as knn
    import longtail.run as run
    from longtail.curves import read_curves

    features_of, splits = knn.features_of, []

    def counted(method, datamodule, split):
        splits.append(split)
        return features_of(method, datamodule, split)

    monkeypatch.setattr(knn, "features_of", counted)
    monkeypatch.setattr(run, "features_of", counted)
    monkeypatch.chdir(tmp_path)
    assert main(["pretrain", "optim.epochs=3", "optim.warmup_epochs=0", "data.num_workers=0", f"eval.knn_every={every}",
                 "model.feat_dim=16", "model.hidden_dim=32", "out_dir=runs", "--no-progress"]) == 0
    # a probe after epoch 2 and the last; without probes, the test computes them once
    assert splits == ["train", "test"] * max(probes, 1)
    run_dir = next((tmp_path / "runs").iterdir())
    tested = json.loads((run_dir / "metrics.json").read_text())["test"]["overall"]
    probed = [float(row["knn/overall"]) for row in read_curves(run_dir / "metrics.csv") if row.get("knn/overall")]
    assert len(probed) == probes
    if probes:
        assert tested == pytest.approx(probed[-1], abs=1e-3)
