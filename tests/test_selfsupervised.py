"""Self-supervised pre-training: its losses against their equations, its state updates,
and the pretrain command, whose probe shows what the pre-training bought."""

import json
import math
import warnings
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from short_runs import SHORT, last_states, uninterrupted_and_resumed

from longtail.cli import main
from longtail.config import load_config
from longtail.curves import read_curves
from longtail.run import build_method


def nt_xent_reference(first, second, temperature):
    """NT-Xent (Chen et al., ICML 2020, eq. 1), one anchor at a time: each of the 2N
    normalised embeddings against its pair, over the 2N - 1 others; the mean."""
    z = F.normalize(torch.cat([first, second]).double(), dim=1)
    n = len(first)
    total = 0.0
    for i in range(2 * n):
        pair = (i + n) % (2 * n)
        others = [math.exp(float(z[i] @ z[k]) / temperature) for k in range(2 * n) if k != i]
        total += -math.log(math.exp(float(z[i] @ z[pair]) / temperature) / sum(others))
    return total / (2 * n)


def method(*overrides):
    config = load_config([], ["data.format=digits", "model.feat_dim=8", "model.hidden_dim=16",
                              "data.views=[sim, sim]", *overrides])
    return build_method(config, [50] * 10)


def test_simclr_is_nt_xent_of_the_projected_views():
    simclr = method("method.name=simclr", "method.temperature=0.3")
    simclr.eval()  # batch-norm statistics fixed, so the projection below is the same function
    views = torch.randn(5, 2, 3, 8, 8)
    loss = simclr.training_losses(views, torch.zeros(5, dtype=torch.long))["contrastive"]
    with torch.no_grad():
        embeddings = simclr.projection(simclr.features(views.transpose(0, 1).flatten(0, 1)))
    assert loss.item() == pytest.approx(nt_xent_reference(embeddings[:5], embeddings[5:], 0.3), rel=1e-5)


@pytest.mark.parametrize("name", ["simclr", "sdclr"])
def test_simclr_computes_its_similarities_in_float32_under_bf16_autocast(name):
    simclr = method(f"method.name={name}", "method.temperature=0.2")
    generator = torch.Generator().manual_seed(0)
    first, second = (torch.randn(16, 8, generator=generator).bfloat16() for _ in range(2))
    simclr.embeddings = lambda views: (first, second)  # bf16, as autocast hands them over
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = simclr.training_losses(torch.zeros(16, 2, 3, 8, 8), torch.zeros(16, dtype=torch.long))["contrastive"]
    # bf16 similarities miss it by about 2e-3
    assert loss.item() == pytest.approx(nt_xent_reference(first, second, 0.2), rel=1e-5)


def test_moco_v2_is_info_nce_over_the_keys_and_the_queue_then_queues_the_keys_and_moves_the_encoder():
    moco = method("method.name=moco_v2", "method.queue_size=6", "method.momentum=0.9", "method.temperature=0.2")
    moco.eval()
    moco.queue.push(F.normalize(torch.randn(3, 8), dim=1), torch.full((3,), -1))
    views = torch.randn(4, 2, 3, 8, 8)
    loss = moco.training_losses(views, torch.zeros(4, dtype=torch.long))["contrastive"]
    with torch.no_grad():
        queries = F.normalize(moco.projection(moco.features(views[:, 0])), dim=1).double()
        keys = F.normalize(moco.key_encoder(views[:, 1]), dim=1).double()
        queue, _ = moco.queue()
        references = torch.cat([keys, queue.double()])
    expected = sum(-math.log(math.exp(float(q @ keys[i]) / 0.2)
                             / sum(math.exp(float(q @ r) / 0.2) for r in references))
                   for i, q in enumerate(queries)) / 4
    assert loss.item() == pytest.approx(expected, rel=1e-5)

    online = {k: v.clone() for k, v in moco.backbone.state_dict().items()}
    with torch.no_grad():  # as if a step had moved the online weights
        for parameter in moco.backbone.parameters():
            parameter.add_(0.1)
    before = {k: v.clone() for k, v in moco.key_encoder.encoder.backbone.state_dict().items()}
    moco.after_step()
    queue, labels = moco.queue()
    assert torch.equal(queue[-4:], keys.float()) and len(queue) == 6 and (labels == -1).all()  # oldest dropped
    for name, parameter in moco.backbone.named_parameters():
        expected = 0.9 * before[name] + 0.1 * (online[name] + 0.1)
        torch.testing.assert_close(moco.key_encoder.encoder.backbone.state_dict()[name], expected)


@pytest.mark.parametrize("name", ["moco_v2", "paco"])
def test_the_keys_of_a_training_step_are_normalised_in_groups_apart_from_the_queries(name):
    model = method(f"method.name={name}", "method.key_group=2")
    model.train()
    views = torch.randn(4, 2, 3, 8, 8)
    model.training_losses(views, torch.tensor([0, 1, 0, 2]))
    model.queue.push_held()
    queued, _ = model.queue()
    with torch.no_grad():  # MoCo's Shuffling BN on one process: the 4 keys in two groups of 2
        grouped = torch.cat([model.key_encoder.encoder(views[:2, 1]), model.key_encoder.encoder(views[2:, 1])])
        whole = model.key_encoder.encoder(views[:, 1])
    torch.testing.assert_close(queued[-4:], F.normalize(grouped, dim=1))
    assert (queued[-4:] - F.normalize(whole, dim=1)).abs().max() > 1e-3  # the batch's statistics would differ


def test_pretrain_raises_the_k_nn_accuracy_of_a_random_backbone_and_refuses_a_supervised_method(tmp_path, capsys,
                                                                                             monkeypatch):
    monkeypatch.chdir(tmp_path)
    common = ["optim.warmup_epochs=0", "data.num_workers=0", "--no-progress", "model.feat_dim=32",
              "model.hidden_dim=64"]
    assert main(["pretrain", "optim.epochs=6", "out_dir=trained", *common]) == 0
    assert main(["pretrain", "optim.epochs=1", "optim.lr=1e-12", "out_dir=random", *common]) == 0
    trained, untouched = (json.loads((next((tmp_path / d).iterdir()) / "metrics.json").read_text())
                          for d in ("trained", "random"))
    assert trained["probe"].startswith("k-NN") and trained["method"] == "simclr"
    assert trained["test"]["overall"] > untouched["test"]["overall"] + 5
    curves = (next((tmp_path / "trained").iterdir()) / "metrics.csv").read_text()
    assert "knn/overall" in curves  # probed during pre-training, every 5 epochs and at the last
    capsys.readouterr()
    assert main(["pretrain", "method.name=ce", "out_dir=refused"]) == 2
    assert "longtail pretrain trains a self-supervised method" in capsys.readouterr().err


def test_byol_is_two_minus_twice_the_cosine_of_each_prediction_and_the_other_views_target():
    byol = method("method.name=byol", "method.momentum=0.9")
    byol.eval()
    views = torch.randn(3, 2, 3, 8, 8)
    loss = byol.training_losses(views, torch.zeros(3, dtype=torch.long))["bootstrap"]
    with torch.no_grad():
        p = [byol.predictor(byol.projection(byol.features(views[:, v]))) for v in (0, 1)]
        z = [byol.target(views[:, v]) for v in (0, 1)]
    terms = [2 - 2 * F.cosine_similarity(p[a][i], z[1 - a][i], dim=0).item() for a in (0, 1) for i in range(3)]
    assert loss.item() == pytest.approx(sum(terms) / len(terms), rel=1e-5)
    assert not any(p.requires_grad for p in byol.target.parameters())  # the target takes no gradient


def test_byols_target_follows_the_online_network_at_a_momentum_rising_along_a_cosine_step_by_step():
    byol = method("method.name=byol", "method.momentum=0.9")
    steps = 4
    online = {**{f"backbone.{k}": v for k, v in byol.backbone.named_parameters()},
              **{f"projection.{k}": v for k, v in byol.projection.named_parameters()}}
    target = dict(byol.target.encoder.named_parameters())
    assert set(target) == set(online)
    for step in range(steps + 1):
        with torch.no_grad():  # as if the optimiser had moved the online weights
            for parameter in online.values():
                parameter.add_(torch.randn_like(parameter))
        before = {k: v.detach().clone() for k, v in target.items()}
        byol._trainer = SimpleNamespace(global_step=step, estimated_stepping_batches=steps)  # only what it reads
        byol.after_step()
        tau = 1 - (1 - 0.9) * (math.cos(math.pi * step / steps) + 1) / 2  # Grill et al., Sec. 3.2
        for k, parameter in target.items():
            torch.testing.assert_close(parameter, tau * before[k] + (1 - tau) * online[k].detach())
    assert all(torch.equal(target[k], before[k]) for k in target)  # tau is 1 at the last step


def sinkhorn_reference(scores, epsilon, iterations):
    """Sinkhorn-Knopp (Caron et al., eq. 5 and its appendix): Q = exp(scores / eps),
    normalised to sum 1, then alternately each prototype's row to 1/K and each sample's
    column to 1/B; returned per sample (columns summing to 1)."""
    q = torch.exp(scores.double() / epsilon).T
    q /= q.sum()
    prototypes, samples = q.shape
    for _ in range(iterations):
        q /= q.sum(dim=1, keepdim=True) * prototypes
        q /= q.sum(dim=0, keepdim=True) * samples
    return (q * samples).T


def test_sinkhorn_gives_every_sample_one_code_and_every_prototype_an_equal_share():
    from lightly.loss.swav_loss import sinkhorn

    scores = torch.randn(12, 5, generator=torch.Generator().manual_seed(0))
    codes = sinkhorn(scores, iterations=50, epsilon=0.5)
    torch.testing.assert_close(codes.double(), sinkhorn_reference(scores, 0.5, 50), rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(codes.sum(dim=1), torch.ones(12))  # each sample's code is a distribution
    torch.testing.assert_close(codes.sum(dim=0), torch.full((5,), 12 / 5), rtol=1e-3, atol=1e-3)  # equipartition


def test_swav_is_the_swapped_prediction_of_the_global_views_codes_small_crops_included():
    swav = method("method.name=swav", "method.prototypes=6", "method.small_crops=1", "method.temperature=0.2",
                  "data.views=[sim, sim, sim]")
    swav.eval()
    views = torch.randn(4, 3, 3, 8, 8)
    loss = swav.training_losses(views, torch.zeros(4, dtype=torch.long))["swapped"]
    with torch.no_grad():
        scores = [swav._scores(views[:, 0]), swav._scores(views[:, 1]),
                  swav._scores(F.interpolate(views[:, 2], size=(4, 4), mode="bilinear", antialias=True))]
    codes = [sinkhorn_reference(s, 0.05, 3) for s in scores[:2]]
    terms = []
    for g, code in enumerate(codes):  # each global view's code, predicted by every other view
        for v, s in enumerate(scores):
            if v != g:
                terms.append(-(code * torch.log_softmax(s.double() / 0.2, dim=1)).sum(dim=1).mean())
    assert loss.item() == pytest.approx(float(sum(terms) / len(terms)), rel=1e-4)


@pytest.mark.parametrize("frozen_epochs", [0, 1])
def test_swav_leaves_its_prototypes_as_drawn_in_the_first_epoch(frozen_epochs):
    swav = method("method.name=swav", "method.prototypes=6", "method.small_crops=0", "data.views=[sim, sim]",
                  f"method.frozen_epochs={frozen_epochs}")
    swav.training_losses(torch.randn(8, 2, 3, 8, 8), torch.zeros(8, dtype=torch.long))["swapped"].backward()
    swav.on_after_backward()  # epoch 0
    assert all((p.grad is None) == (frozen_epochs == 1) for p in swav.prototypes.parameters())
    assert swav.projection.parameters().__next__().grad.abs().max() > 0  # the rest still learns


@pytest.mark.parametrize("max_epochs, warns", [(1, True), (2, False)])
def test_swav_warns_when_its_prototypes_would_stay_frozen_for_the_whole_run(max_epochs, warns):
    swav = method("method.name=swav", "method.prototypes=6", "method.small_crops=0", "data.views=[sim, sim]")
    swav._trainer = SimpleNamespace(max_epochs=max_epochs)  # only what the check reads
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        swav.on_train_start()
    assert any("prototypes stay as drawn" in str(w.message) for w in caught) == warns


def test_twist_is_symmetric_kl_plus_sample_entropy_minus_batch_entropy():
    from longtail.losses.selfsupervised import TwinDistributionLoss

    generator = torch.Generator().manual_seed(1)
    p1 = torch.randn(5, 4, generator=generator, dtype=torch.float64).softmax(dim=1)
    p2 = torch.randn(5, 4, generator=generator, dtype=torch.float64).softmax(dim=1)

    def entropy(p):
        return -sum(x * math.log(x) for x in p)

    kl = sum(sum(a * math.log(a / b) for a, b in zip(x, y)) + sum(b * math.log(b / a) for a, b in zip(x, y))
             for x, y in zip(p1.tolist(), p2.tolist())) / 5 / 2
    sharp = (sum(entropy(x) for x in p1.tolist()) + sum(entropy(x) for x in p2.tolist())) / 5 / 2
    diverse = (entropy(p1.mean(0).tolist()) + entropy(p2.mean(0).tolist())) / 2
    assert TwinDistributionLoss()(p1, p2).item() == pytest.approx(kl + sharp - diverse, rel=1e-5)
    same = p1.mean(0, keepdim=True).expand(5, 4)  # identical, spread twins: no disagreement, entropy terms cancel
    assert TwinDistributionLoss()(same, same).item() == pytest.approx(0.0, abs=1e-6)


class Fixed(torch.nn.Module):
    """A head that hands back the same output whatever its input."""

    def __init__(self, output):
        super().__init__()
        self.output = output

    def forward(self, *inputs):
        return self.output


def bf16(*shape, seed):
    """A head's output as bf16 autocast hands it over."""
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed)).bfloat16()


AUTOCAST_BATCH = torch.zeros(3, 2, 3, 8, 8), torch.zeros(3, dtype=torch.long)  # three images, two views


def test_byol_computes_its_cosines_in_float32_under_bf16_autocast():
    byol = method("method.name=byol")
    predictions, targets = bf16(6, 16, seed=1), bf16(6, 16, seed=2)
    byol.features = lambda images: images
    byol.projection, byol.predictor, byol.target = torch.nn.Identity(), Fixed(predictions), Fixed(targets)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = byol.training_losses(*AUTOCAST_BATCH)["bootstrap"]
    swapped = torch.cat([targets[3:], targets[:3]]).double()
    expected = (2 - 2 * F.cosine_similarity(predictions.double(), swapped, dim=1)).mean()
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)  # bf16 cosines miss it by about 1e-3


def test_twist_computes_its_distributions_in_float32_under_bf16_autocast():
    from longtail.losses.selfsupervised import TwinDistributionLoss

    twist = method("method.name=twist", "method.classes=5")
    logits = bf16(6, 5, seed=3)
    twist.features, twist.head = (lambda images: images), Fixed(logits)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = twist.training_losses(*AUTOCAST_BATCH)["twin"]
    probabilities = logits.double().softmax(dim=1)
    expected = TwinDistributionLoss()(probabilities[:3], probabilities[3:])
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5, abs=1e-6)


def test_swav_scores_are_float32_cosines_to_the_prototypes_under_bf16_autocast():
    swav = method("method.name=swav", "method.prototypes=6", "method.small_crops=0", "data.views=[sim, sim]")
    embeddings = bf16(4, 8, seed=4)
    swav.features, swav.projection = (lambda images: images), Fixed(embeddings)
    swav.training_losses(torch.zeros(2, 2, 3, 8, 8), torch.zeros(2, dtype=torch.long))  # normalises the prototypes
    with torch.autocast("cpu", dtype=torch.bfloat16):
        scores = swav._scores(torch.zeros(4, 3, 8, 8))
    expected = F.normalize(embeddings.double(), dim=1) @ F.normalize(swav.prototypes.weight.double(), dim=1).T
    assert scores.dtype == torch.float32
    torch.testing.assert_close(scores.double(), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", ["simclr", "moco_v2", "byol", "swav", "twist", "sdclr"])
def test_a_pretraining_step_runs_on_a_model_cast_to_bf16(name):  # precision=bf16-true
    views = "[sim_global, sim_global, sim_local, sim_local]" if name == "swav" else "[sim, sim]"
    model = method(f"method.name={name}", f"data.views={views}").bfloat16()
    images = torch.randn(8, model.num_views, 3, 8, 8).bfloat16()
    loss = sum(model.training_losses(images, torch.zeros(8, dtype=torch.long)).values())
    loss.backward()
    assert torch.isfinite(loss) and next(model.backbone.parameters()).grad.abs().max() > 0


def test_sdclr_contrasts_the_network_with_its_magnitude_pruned_self():
    sdclr = method("method.name=sdclr", "method.prune_ratio=0.75", "method.prune_scope=layer")
    sdclr.eval()
    sdclr.prune()
    for index, name in enumerate(sdclr.pruned):  # each layer keeps its largest quarter
        weight = sdclr.backbone.get_submodule(name).weight.detach().abs().flatten()
        mask = getattr(sdclr, f"mask_{index}").flatten()
        kept = max(1, round(len(weight) * 0.25))
        assert mask.sum() == kept and weight[mask].min() >= weight[~mask].max()
    views = torch.randn(4, 2, 3, 8, 8)
    pruned_copy = build_method(load_config([], ["data.format=digits", "model.feat_dim=8", "model.hidden_dim=16",
                                                "data.views=[sim, sim]", "method.name=simclr"]), [50] * 10)
    pruned_copy.load_state_dict({k: v for k, v in sdclr.state_dict().items()
                                 if not k.startswith(("mask_", "pruned_norms."))})
    with torch.no_grad():  # the same network with the small weights zeroed in place
        for index, name in enumerate(sdclr.pruned):
            pruned_copy.backbone.get_submodule(name).weight.mul_(getattr(sdclr, f"mask_{index}"))
    pruned_copy.eval()
    torch.testing.assert_close(sdclr.pruned_features(views[:, 1]), pruned_copy.features(views[:, 1]))
    loss = sdclr.training_losses(views, torch.zeros(4, dtype=torch.long))["contrastive"]
    with torch.no_grad():
        dense = sdclr.projection(sdclr.features(views[:, 0]))
        pruned = sdclr.projection(pruned_copy.features(views[:, 1]))
    assert loss.item() == pytest.approx(nt_xent_reference(dense, pruned, 0.5), rel=1e-5)
    loss.backward()  # the gradient reaches the shared weights through both branches
    assert sdclr.backbone.get_submodule(sdclr.pruned[0]).weight.grad.abs().max() > 0


def test_sdclr_prunes_by_one_threshold_over_every_layer_by_default():
    sdclr = method("method.name=sdclr", "method.prune_ratio=0.75")
    with torch.no_grad():  # the layers' magnitudes apart, so that one threshold prunes them unevenly
        for scale, name in enumerate(sdclr.pruned, start=1):
            sdclr.backbone.get_submodule(name).weight.mul_(scale)
    sdclr.prune()
    weights = torch.cat([sdclr.backbone.get_submodule(name).weight.detach().abs().flatten() for name in sdclr.pruned])
    masks = torch.cat([getattr(sdclr, f"mask_{index}").flatten() for index in range(len(sdclr.pruned))])
    assert masks.sum() == round(len(weights) * 0.25) and weights[masks].min() >= weights[~masks].max()
    shares = [getattr(sdclr, f"mask_{index}").float().mean().item() for index in range(len(sdclr.pruned))]
    assert max(shares) - min(shares) > 0.2  # not a quarter of each layer
    with pytest.raises(ValueError, match="prune_scope"):
        method("method.name=sdclr", "method.prune_scope=channel")


def test_sdclrs_pruned_branch_normalises_with_batch_norms_of_its_own():
    sdclr = method("method.name=sdclr")
    sdclr.train()
    sdclr.prune()
    norms = [(name, m) for part in (sdclr.backbone, sdclr.projection) for name, m in part.named_modules()
             if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    dense = [(m.running_mean.clone(), m.running_var.clone()) for _, m in norms]
    sdclr.pruned_embeddings(torch.randn(8, 3, 8, 8))
    for (_, m), (mean, var) in zip(norms, dense):  # the dense statistics, which the features read, unmoved
        assert torch.equal(m.running_mean, mean) and torch.equal(m.running_var, var)
    assert all(norm.num_batches_tracked == 1 for norm in sdclr.pruned_norms.values())
    assert len(sdclr.pruned_norms) == len(norms)
    views = torch.randn(8, 2, 3, 8, 8)
    sdclr.training_losses(views, torch.zeros(8, dtype=torch.long))["contrastive"].backward()
    twin = next(iter(sdclr.pruned_norms.values()))
    assert twin.weight.grad.abs().max() > 0  # its own affine parameters learn
    assert any(p is twin.weight for p in sdclr.trainable_parameters())


@pytest.mark.parametrize("name, state", [
    ("moco_v2", "queue."),  # the queue and the key encoder
    ("byol", "target."),  # the target, whose momentum follows the step
    ("sdclr", "mask_"),  # the masks drawn at the epoch's start, before the stop
    ("swav", "prototypes."),  # the prototypes, frozen in the first epoch
    ("twist", "head."),
])
def test_a_pretraining_stopped_mid_epoch_resumes_bit_identical(tmp_path, name, state):
    views = "[sim_global, sim_global, sim_local, sim_local]" if name == "swav" else "[sim, sim]"
    args = [*SHORT, f"method.name={name}", f"data.views={views}", "trainer.checkpoint_every=4", "eval.knn_every=1",
            "eval.knn_k=5", *(["method.queue_size=100"] if name == "moco_v2" else [])]
    full_dir, full, resumed_dir, resumed, stopped_at = uninterrupted_and_resumed(tmp_path, args, 13)
    assert stopped_at["global_step"] == 12  # within the second epoch (9 steps each)
    assert resumed["test"] == full["test"]
    a, b = last_states(full_dir, resumed_dir)
    assert any(k.startswith(state) for k in a) and all(torch.equal(a[k], b[k]) for k in a)
    probes = [[row["knn/overall"] for row in read_curves(run / "metrics.csv") if row.get("knn/overall")]
              for run in (full_dir, resumed_dir)]
    assert len(probes[0]) == 2 and probes[0] == probes[1]  # each epoch's probe, the first from before the stop


def test_the_pretrain_help_names_every_self_supervised_method(capsys):
    from longtail.methods import METHODS, SelfSupervised

    with pytest.raises(SystemExit):
        main(["pretrain", "--help"])
    shown = " ".join(capsys.readouterr().out.split())
    names = [name for name, entry in METHODS.items() if issubclass(entry.method, SelfSupervised)]
    assert len(names) >= 8 and all(name in shown for name in names)


# Each pre-training's loss and its gradient against its equation, written here in float64 one
# anchor at a time. The heads are replaced by leaves; a case gives the method, its images,
# the leaves, and the reference as a function of copies of the leaves taken after the step.


def info_nce_reference(anchor, positive, negatives, temperature, positive_weight=1.0):
    """``-w s(a, a+)/T + log sum_r exp(s(a, r)/T)``, ``s`` the dot product of unit vectors
    and ``r`` over ``negatives`` (which hold the positive where the denominator does)."""
    logits = torch.stack([anchor @ r for r in negatives]) / temperature
    return -positive_weight * (anchor @ positive) / temperature + torch.logsumexp(logits, dim=0)


def two_view_reference(first, second, temperature, objective):
    """NT-Xent (Chen et al., eq. 1): every other embedding in the denominator; DCL (Yeh et
    al., eq. 6): the positive left out; DCLW: its positive term weighted by
    ``2 - exp(s_i / 0.5) / mean_k exp(s_k / 0.5)`` (Sec. 4), a constant of the step."""
    z = F.normalize(torch.cat([first, second]), dim=1)
    n = len(first)
    pair_cosines = (z[:n] * z[n:]).sum(dim=1).detach()
    weights = 2 - torch.exp(pair_cosines / 0.5) / torch.exp(pair_cosines / 0.5).mean()
    terms = []
    for i in range(2 * n):
        pair = (i + n) % (2 * n)
        left_out = {i} if objective == "ntxent" else {i, pair}
        negatives = [z[k] for k in range(2 * n) if k not in left_out]
        weight = weights[i % n] if objective == "dclw" else 1.0
        terms.append(info_nce_reference(z[i], z[pair], negatives, temperature, weight))
    return torch.stack(terms).mean()


def drawn(*shape, seed, requires_grad=True):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64,
                       requires_grad=requires_grad)


def two_view_case(name, objective="ntxent"):
    """SimCLR's objectives (and boosted SimCLR's mean of per-image NT-Xent) on leaf embeddings."""
    model = method(f"method.name={name}", "method.temperature=0.3",
                   *([f"method.objective={objective}"] if name == "simclr" else []))
    first, second = drawn(5, 8, seed=1), drawn(5, 8, seed=2)
    model.embeddings = lambda views: (first, second)
    return model, 5, [first, second], lambda a, b: two_view_reference(a, b, 0.3, objective)


def moco_case():
    """MoCo (He et al., eq. 1): each query against its key, the batch's keys and the queue."""
    moco = method("method.name=moco_v2", "method.queue_size=6", "method.temperature=0.2")
    queued = F.normalize(drawn(3, 8, seed=3, requires_grad=False), dim=1)
    moco.queue.push(queued.float(), torch.full((3,), -1))
    queries, keys = drawn(4, 8, seed=4), drawn(4, 8, seed=5, requires_grad=False)
    moco.features, moco.projection, moco.key_encoder = (lambda images: images), Fixed(queries), Fixed(keys)

    def reference(queries):
        q, k = F.normalize(queries, dim=1), F.normalize(keys, dim=1)
        references = [*k, *queued.float().double()]
        return torch.stack([info_nce_reference(q[i], k[i], references, 0.2) for i in range(4)]).mean()
    return moco, 4, [queries], reference


def byol_case():
    """BYOL (Grill et al., eq. 2): ``2 - 2 cos`` of each prediction and the other view's target."""
    byol = method("method.name=byol")
    predictions, targets = drawn(6, 8, seed=6), drawn(6, 8, seed=7, requires_grad=False)
    byol.features, byol.projection, byol.predictor, byol.target = (
        (lambda images: images), torch.nn.Identity(), Fixed(predictions), Fixed(targets))

    def reference(predictions):
        terms = [2 - 2 * F.cosine_similarity(predictions[i], targets[(i + 3) % 6], dim=0) for i in range(6)]
        return torch.stack(terms).mean()
    return byol, 3, [predictions], reference


def swav_case():
    """SwAV (Caron et al., eq. 2-3): each view's softmax over the prototypes (as the step
    normalised them) predicts the other view's Sinkhorn code, a constant of the step."""
    swav = method("method.name=swav", "method.prototypes=5", "method.small_crops=0", "method.temperature=0.2",
                  "data.views=[sim, sim]")
    embeddings = drawn(8, 8, seed=8)
    swav.features, swav.projection = (lambda images: images), Fixed(embeddings)

    def reference(embeddings, prototypes):
        scores = (F.normalize(embeddings, dim=1) @ prototypes.T).chunk(2)
        codes = [sinkhorn_reference(s.detach(), 0.05, 3) for s in scores]
        terms = [-(codes[1 - v] * torch.log_softmax(scores[v] / 0.2, dim=1)).sum(dim=1).mean() for v in (0, 1)]
        return torch.stack(terms).mean()
    return swav, 4, [embeddings, swav.prototypes.weight], reference


def twist_case():
    """TWIST (Wang et al., eq. 1-4) on the head's logits through their softmax."""
    twist = method("method.name=twist", "method.classes=4")
    logits = drawn(6, 4, seed=9)
    twist.features, twist.head = (lambda images: images), Fixed(logits)

    def entropy(p):
        return -(p * p.log()).sum(dim=-1)

    def reference(logits):
        p = logits.softmax(dim=1).chunk(2)
        consistency = sum((p[a] * (p[a].log() - p[1 - a].log())).sum(dim=1).mean() for a in (0, 1)) / 2
        sharpness = (entropy(p[0]).mean() + entropy(p[1]).mean()) / 2
        diversity = (entropy(p[0].mean(dim=0)) + entropy(p[1].mean(dim=0))) / 2
        return consistency + sharpness - diversity
    return twist, 3, [logits], reference


CASES = {
    "simclr": lambda: two_view_case("simclr"),
    "dcl": lambda: two_view_case("simclr", "dcl"),
    "dclw": lambda: two_view_case("simclr", "dclw"),
    "boosted_simclr": lambda: two_view_case("boosted_simclr"),
    "moco_v2": moco_case,
    "byol": byol_case,
    "swav": swav_case,
    "twist": twist_case,
}


@pytest.mark.parametrize("case", CASES)
def test_each_pretraining_loss_and_its_gradient_follow_its_equation(case):
    model, images, leaves, reference = CASES[case]()
    loss = sum(model.training_losses(torch.zeros(images, 2, 3, 8, 8), torch.zeros(images, dtype=torch.long)).values())
    gradients = torch.autograd.grad(loss, leaves)
    copies = [leaf.detach().double().clone().requires_grad_(True) for leaf in leaves]
    expected = reference(*copies)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    for gradient, expected_gradient in zip(gradients, torch.autograd.grad(expected, copies)):
        assert expected_gradient.abs().max() > 1e-4  # the loss moves this leaf
        torch.testing.assert_close(gradient.double(), expected_gradient, rtol=1e-4, atol=1e-6)


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    """A SimCLR pre-training of three epochs on digits, tested by its k-NN probe."""
    out = tmp_path_factory.mktemp("pretrained")
    assert main(["pretrain", "optim.epochs=3", "optim.warmup_epochs=0", "data.num_workers=0", "eval.knn_every=0",
                 "model.feat_dim=16", "model.hidden_dim=32", f"out_dir={out}", "--no-progress"]) == 0
    (run,) = out.iterdir()
    return run


def test_a_pretraining_is_tested_reported_and_refused_as_the_k_nn_probe_of_its_features(pretrained, tmp_path,
                                                                                      capsys):
    from PIL import Image

    from longtail.checkpoints import load_outputs

    run = pretrained
    metrics = json.loads((run / "metrics.json").read_text())
    logits, targets = load_outputs(run / "test_outputs.safetensors", 10)
    # the saved outputs are the k-NN's votes that the metrics summarise, not the untrained classifier's logits
    assert 100 * (logits.argmax(dim=1) == targets).double().mean().item() == pytest.approx(metrics["test"]["overall"])
    assert torch.allclose(logits.exp().sum(dim=1), torch.ones(len(logits), dtype=logits.dtype), atol=1e-4)

    capsys.readouterr()
    assert main(["eval", str(run), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "is a self-supervised pre-training, tested by the k-NN probe" in out and "k 200" in out
    evaluated = float(out.split("overall", 1)[1].splitlines()[1].split()[0])
    assert evaluated == pytest.approx(metrics["test"]["overall"], abs=1.0)  # the same probe, features recomputed

    assert main(["eval", str(run), "--posthoc", "la", "--no-progress"]) == 2
    assert "self-supervised pre-training, whose classifier is untrained" in capsys.readouterr().err
    Image.new("RGB", (8, 8)).save(tmp_path / "image.png")
    assert main(["predict", str(run), str(tmp_path / "image.png")]) == 2
    assert "whose classifier is untrained" in capsys.readouterr().err

    assert main(["report", str(run)]) == 0
    page = (run / "report.html").read_text()
    assert "Results of the k-NN probe" in page and "A self-supervised pre-training" in page


def test_a_supervised_method_fine_tunes_a_pretrained_backbone(pretrained, tmp_path, monkeypatch):
    from safetensors.torch import load_file

    monkeypatch.chdir(tmp_path)
    common = ["method.name=logit_adjustment", "optim.epochs=1", "optim.warmup_epochs=0", "optim.lr=1e-9",
              "data.num_workers=0", "--no-progress"]
    assert main(["train", f"model.init_from={pretrained}", "out_dir=tuned", *common]) == 0
    assert main(["train", "out_dir=fresh", *common]) == 0
    source = load_file(pretrained / "model.safetensors")
    tuned, fresh = (load_file(next((tmp_path / d).iterdir()) / "model.safetensors") for d in ("tuned", "fresh"))
    convolutions = [k for k in source if k.startswith("backbone.") and source[k].dim() == 4]
    assert convolutions
    # at a rate of 1e-9 the weights stay where they started: the pre-training's, not a fresh draw
    assert all(torch.allclose(tuned[k], source[k], atol=1e-6) for k in convolutions)
    assert not any(torch.allclose(fresh[k], source[k], atol=1e-3) for k in convolutions)
    metrics = json.loads((next((tmp_path / "tuned").iterdir()) / "metrics.json").read_text())
    assert metrics["probe"] is None and {"overall", "many", "medium", "few"} <= set(metrics["test"])
