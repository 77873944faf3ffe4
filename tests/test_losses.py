"""Independent checks of the losses in ``longtail.losses``.

Every reference value here is computed from the papers' equations with explicit
per-anchor Python loops in float64; nothing is taken from the code under test.

* BCL  -- Zhu et al., CVPR 2022, "Balanced Contrastive Learning for Long-Tailed
  Visual Recognition": class-averaged denominator over the views plus the class
  prototypes ("class-complement").
* SupCon -- Khosla et al., NeurIPS 2020, eq. 2 (L_out).
* Logit adjustment -- Menon et al., ICLR 2021.
* Balanced softmax -- Ren et al., NeurIPS 2020.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from longtail.losses import (
    BalancedContrastiveLoss,
    BalancedSoftmaxLoss,
    LogitAdjustedLoss,
    SupConLoss,
)

DTYPE = torch.float64
ATOL = 1e-10
RTOL = 1e-9


# --------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------
def _unit(shape, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(*shape, generator=g, dtype=DTYPE)
    return F.normalize(x, dim=-1)


def _leaf(t):
    return t.detach().clone().requires_grad_(True)


def _flatten_views(features, targets):
    """Anchors: list of (vector, class) for every view of every image."""
    B, V, _ = features.shape
    out = []
    for b in range(B):
        for v in range(V):
            out.append((features[b, v], int(targets[b])))
    return out


def bcl_reference(features, targets, prototypes, temperature):
    """BCL loss from the paper's equations, one anchor at a time."""
    anchors = _flatten_views(features, targets)
    C = prototypes.shape[0]
    # contrast set: all views, then the C prototypes (prototype c is of class c)
    contrast = list(anchors) + [(prototypes[c], c) for c in range(C)]
    n_anchor = len(anchors)

    losses = []
    for i in range(n_anchor):
        z_i, y = anchors[i]
        # members of each class, excluding the anchor itself
        members = {}
        for k, (z_k, c_k) in enumerate(contrast):
            if k == i:
                continue
            members.setdefault(c_k, []).append(k)
        # class-averaged denominator
        denom = torch.zeros((), dtype=DTYPE)
        for j, ks in members.items():
            n_j = len(ks)
            assert n_j > 0
            s = torch.zeros((), dtype=DTYPE)
            for k in ks:
                s = s + torch.exp(torch.dot(z_i, contrast[k][0]) / temperature)
            denom = denom + s / n_j
        positives = members[y]  # never empty: the class prototype is there
        acc = torch.zeros((), dtype=DTYPE)
        for p in positives:
            num = torch.exp(torch.dot(z_i, contrast[p][0]) / temperature)
            acc = acc + torch.log(num / denom)
        losses.append(-acc / len(positives))
    return torch.stack(losses).mean()


def supcon_reference(features, targets, temperature):
    """SupCon L_out (Khosla et al. 2020, eq. 2), one anchor at a time."""
    anchors = _flatten_views(features, targets)
    n = len(anchors)
    losses = []
    for i in range(n):
        z_i, y = anchors[i]
        denom = torch.zeros((), dtype=DTYPE)
        for k in range(n):
            if k == i:
                continue
            denom = denom + torch.exp(torch.dot(z_i, anchors[k][0]) / temperature)
        positives = [p for p in range(n) if p != i and anchors[p][1] == y]
        if not positives:
            continue
        acc = torch.zeros((), dtype=DTYPE)
        for p in positives:
            num = torch.exp(torch.dot(z_i, anchors[p][0]) / temperature)
            acc = acc + torch.log(num / denom)
        losses.append(-acc / len(positives))
    return torch.stack(losses).mean()


def shifted_ce_reference(logits, targets, shift):
    """Mean softmax cross-entropy of (logits + shift), log-softmax by hand."""
    rows = logits.tolist()
    total = 0.0
    for r, y in zip(rows, targets.tolist()):
        z = [a + s for a, s in zip(r, shift)]
        m = max(z)
        lse = m + math.log(sum(math.exp(v - m) for v in z))
        total += lse - z[y]
    return total / len(rows)


def shifted_ce_grad_reference(logits, targets, shift):
    """d/dlogits of the mean shifted CE: (softmax(z + shift) - onehot) / B."""
    rows = logits.tolist()
    B = len(rows)
    grad = []
    for r, y in zip(rows, targets.tolist()):
        z = [a + s for a, s in zip(r, shift)]
        m = max(z)
        e = [math.exp(v - m) for v in z]
        tot = sum(e)
        g = [v / tot for v in e]
        g[y] -= 1.0
        grad.append([v / B for v in g])
    return torch.tensor(grad, dtype=DTYPE)


def _check_bcl(features, targets, prototypes, temperature):
    f_mod, p_mod = _leaf(features), _leaf(prototypes)
    f_ref, p_ref = _leaf(features), _leaf(prototypes)
    C = prototypes.shape[0]

    crit = BalancedContrastiveLoss(num_classes=C, temperature=temperature)
    loss = crit(f_mod, targets, p_mod)
    ref = bcl_reference(f_ref, targets, p_ref, temperature)

    assert loss.dim() == 0
    assert torch.isfinite(loss)
    torch.testing.assert_close(loss.to(DTYPE), ref, atol=ATOL, rtol=RTOL)

    loss.backward()
    ref.backward()
    assert f_mod.grad is not None and p_mod.grad is not None
    torch.testing.assert_close(f_mod.grad, f_ref.grad, atol=ATOL, rtol=RTOL)
    torch.testing.assert_close(p_mod.grad, p_ref.grad, atol=ATOL, rtol=RTOL)
    # the reference gradients are non-trivial, so the comparison means something
    assert f_ref.grad.abs().max() > 1e-6
    assert p_ref.grad.abs().max() > 1e-6
    return ref.item()


# --------------------------------------------------------------------------
# BalancedContrastiveLoss
# --------------------------------------------------------------------------
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_bcl_general_batch(seed):
    B, V, C, D = 8, 2, 5, 16
    g = torch.Generator().manual_seed(100 + seed)
    targets = torch.randint(0, C, (B,), generator=g, dtype=torch.int64)
    features = _unit((B, V, D), seed)
    prototypes = _unit((C, D), 1000 + seed)
    _check_bcl(features, targets, prototypes, 0.1)


@pytest.mark.parametrize("seed", [3, 4])
def test_bcl_some_classes_absent(seed):
    B, V, C, D = 8, 2, 5, 12
    # only classes 0, 1, 2 in the batch; 3 and 4 exist only as prototypes
    targets = torch.tensor([0, 0, 0, 1, 1, 2, 0, 2], dtype=torch.int64)
    features = _unit((B, V, D), seed)
    prototypes = _unit((C, D), 1000 + seed)
    _check_bcl(features, targets, prototypes, 0.1)


@pytest.mark.parametrize("seed", [5, 6])
def test_bcl_each_class_once(seed):
    C, V, D = 5, 2, 10
    g = torch.Generator().manual_seed(seed)
    targets = torch.randperm(C, generator=g).to(torch.int64)
    features = _unit((C, V, D), seed)
    prototypes = _unit((C, D), 1000 + seed)
    _check_bcl(features, targets, prototypes, 0.1)


@pytest.mark.parametrize("seed", [7, 8])
def test_bcl_three_views(seed):
    B, V, C, D = 6, 3, 4, 8
    targets = torch.tensor([0, 1, 1, 3, 0, 1], dtype=torch.int64)
    features = _unit((B, V, D), seed)
    prototypes = _unit((C, D), 1000 + seed)
    _check_bcl(features, targets, prototypes, 0.1)


@pytest.mark.parametrize("seed", [9, 10])
def test_bcl_one_view(seed):
    B, V, C, D = 7, 1, 5, 8
    # class 4 appears once (its only positive is its prototype), class 3 absent
    targets = torch.tensor([0, 0, 1, 2, 2, 2, 4], dtype=torch.int64)
    features = _unit((B, V, D), seed)
    prototypes = _unit((C, D), 1000 + seed)
    _check_bcl(features, targets, prototypes, 0.1)


def test_bcl_temperature_matters():
    B, V, C, D = 8, 2, 5, 16
    targets = torch.tensor([0, 1, 2, 3, 4, 0, 1, 0], dtype=torch.int64)
    features = _unit((B, V, D), 11)
    prototypes = _unit((C, D), 12)
    v1 = _check_bcl(features, targets, prototypes, 0.1)
    v2 = _check_bcl(features, targets, prototypes, 0.5)
    assert math.isfinite(v1) and math.isfinite(v2)
    assert abs(v1 - v2) > 1e-3


def test_bcl_default_temperature_is_0_1():
    B, V, C, D = 6, 2, 3, 8
    targets = torch.tensor([0, 1, 2, 0, 1, 1], dtype=torch.int64)
    features = _unit((B, V, D), 13)
    prototypes = _unit((C, D), 14)
    loss = BalancedContrastiveLoss(num_classes=C)(features, targets, prototypes)
    ref = bcl_reference(features, targets, prototypes, 0.1)
    torch.testing.assert_close(loss.to(DTYPE), ref, atol=ATOL, rtol=RTOL)


@pytest.mark.parametrize("V", [1, 2])
def test_bcl_all_identical_is_log_num_classes(V):
    # Closed form from the equations: if every view and prototype is the same
    # unit vector u, each exp(z_i.z_k/T) equals e^{1/T}; the class-averaged
    # denominator is sum over the C classes (all present through their
    # prototypes) of e^{1/T}, so loss_i = log C for every anchor.
    B, C, D = 6, 4, 8
    u = _unit((D,), 15)
    features = u.expand(B, V, D).clone()
    prototypes = u.expand(C, D).clone()
    targets = torch.tensor([0, 0, 1, 2, 0, 1], dtype=torch.int64)
    loss = BalancedContrastiveLoss(num_classes=C, temperature=0.1)(
        features, targets, prototypes
    )
    torch.testing.assert_close(
        loss.to(DTYPE), torch.tensor(math.log(C), dtype=DTYPE), atol=1e-9, rtol=1e-9
    )


def test_bcl_temperature_zero_raises():
    with pytest.raises(ValueError):
        BalancedContrastiveLoss(num_classes=3, temperature=0)


def test_bcl_prototype_count_mismatch_raises():
    B, V, D = 4, 2, 8
    crit = BalancedContrastiveLoss(num_classes=3, temperature=0.1)
    features = _unit((B, V, D), 16)
    targets = torch.tensor([0, 1, 2, 0], dtype=torch.int64)
    with pytest.raises(ValueError):
        crit(features, targets, _unit((4, D), 17))
    with pytest.raises(ValueError):
        crit(features, targets, _unit((2, D), 18))


# --------------------------------------------------------------------------
# SupConLoss
# --------------------------------------------------------------------------
@pytest.mark.parametrize(
    "V,seed", [(2, 20), (2, 21), (3, 22), (3, 23)]
)
def test_supcon_matches_loop(V, seed):
    B, C, D = 8, 4, 12
    g = torch.Generator().manual_seed(seed)
    targets = torch.randint(0, C, (B,), generator=g, dtype=torch.int64)
    features = _unit((B, V, D), seed)
    f_mod, f_ref = _leaf(features), _leaf(features)
    loss = SupConLoss(temperature=0.1)(f_mod, targets)
    ref = supcon_reference(f_ref, targets, 0.1)
    assert loss.dim() == 0 and torch.isfinite(loss)
    torch.testing.assert_close(loss.to(DTYPE), ref, atol=ATOL, rtol=RTOL)
    loss.backward()
    ref.backward()
    torch.testing.assert_close(f_mod.grad, f_ref.grad, atol=ATOL, rtol=RTOL)
    assert f_ref.grad.abs().max() > 1e-6


def test_supcon_temperature():
    B, V, D = 8, 2, 12
    targets = torch.tensor([0, 1, 2, 3, 0, 1, 2, 0], dtype=torch.int64)
    features = _unit((B, V, D), 24)
    loss = SupConLoss(temperature=0.3)(features, targets)
    ref = supcon_reference(features, targets, 0.3)
    torch.testing.assert_close(loss.to(DTYPE), ref, atol=ATOL, rtol=RTOL)
    assert abs(ref.item() - supcon_reference(features, targets, 0.1).item()) > 1e-3


def test_supcon_single_view_skips_anchors_without_positive():
    # V=1: images of classes 2 and 3 are singletons and have no positive;
    # the mean runs only over the anchors that do have one.
    B, V, D = 6, 1, 8
    targets = torch.tensor([0, 0, 1, 1, 2, 3], dtype=torch.int64)
    features = _unit((B, V, D), 25)
    f_mod, f_ref = _leaf(features), _leaf(features)
    loss = SupConLoss(temperature=0.1)(f_mod, targets)
    ref = supcon_reference(f_ref, targets, 0.1)
    assert torch.isfinite(loss)
    torch.testing.assert_close(loss.to(DTYPE), ref, atol=ATOL, rtol=RTOL)
    loss.backward()
    ref.backward()
    torch.testing.assert_close(f_mod.grad, f_ref.grad, atol=ATOL, rtol=RTOL)


# --------------------------------------------------------------------------
# LogitAdjustedLoss
# --------------------------------------------------------------------------
def _logits(B, C, seed):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(B, C, generator=g, dtype=DTYPE) * 2.0
    targets = torch.randint(0, C, (B,), generator=g, dtype=torch.int64)
    return logits, targets


def test_logit_adjusted_tau_zero_is_cross_entropy():
    logits, targets = _logits(10, 4, 30)
    loss = LogitAdjustedLoss([100, 20, 5, 1], tau=0.0)(logits, targets)
    torch.testing.assert_close(
        loss.to(DTYPE), F.cross_entropy(logits, targets), atol=ATOL, rtol=RTOL
    )


@pytest.mark.parametrize("tau", [0.5, 1.0, 2.0])
def test_logit_adjusted_equal_counts_is_cross_entropy(tau):
    logits, targets = _logits(10, 4, 31)
    loss = LogitAdjustedLoss([7, 7, 7, 7], tau=tau)(logits, targets)
    torch.testing.assert_close(
        loss.to(DTYPE), F.cross_entropy(logits, targets), atol=ATOL, rtol=RTOL
    )


@pytest.mark.parametrize("as_tensor", [False, True])
@pytest.mark.parametrize("tau", [1.0, 2.0])
def test_logit_adjusted_unequal_counts(tau, as_tensor):
    counts = [500, 120, 30, 8, 2]
    logits, targets = _logits(12, 5, 32)
    total = sum(counts)
    shift = [tau * math.log(c / total) for c in counts]
    ref = shifted_ce_reference(logits, targets, shift)
    cc = torch.tensor(counts) if as_tensor else counts
    x = _leaf(logits)
    loss = LogitAdjustedLoss(cc, tau=tau)(x, targets)
    assert loss.dim() == 0
    assert abs(loss.item() - ref) < 1e-10
    loss.backward()
    torch.testing.assert_close(
        x.grad, shifted_ce_grad_reference(logits, targets, shift), atol=ATOL, rtol=RTOL
    )


def test_logit_adjusted_tau_scales_shift():
    counts = [500, 120, 30, 8, 2]
    logits, targets = _logits(12, 5, 33)
    l1 = LogitAdjustedLoss(counts, tau=1.0)(logits, targets).item()
    l2 = LogitAdjustedLoss(counts, tau=2.0)(logits, targets).item()
    assert abs(l1 - l2) > 1e-3
    total = sum(counts)
    ref2 = shifted_ce_reference(
        logits, targets, [2.0 * math.log(c / total) for c in counts]
    )
    assert abs(l2 - ref2) < 1e-10


def test_logit_adjusted_default_tau_is_one():
    counts = [50, 10, 3]
    logits, targets = _logits(9, 3, 34)
    total = sum(counts)
    ref = shifted_ce_reference(logits, targets, [math.log(c / total) for c in counts])
    assert abs(LogitAdjustedLoss(counts)(logits, targets).item() - ref) < 1e-10


def test_logit_adjusted_zero_count_raises():
    with pytest.raises(ValueError):
        LogitAdjustedLoss([10, 0, 5])


# --------------------------------------------------------------------------
# BalancedSoftmaxLoss
# --------------------------------------------------------------------------
def test_balanced_softmax_equal_counts_is_cross_entropy():
    logits, targets = _logits(10, 4, 40)
    loss = BalancedSoftmaxLoss([3, 3, 3, 3])(logits, targets)
    torch.testing.assert_close(
        loss.to(DTYPE), F.cross_entropy(logits, targets), atol=ATOL, rtol=RTOL
    )


@pytest.mark.parametrize("as_tensor", [False, True])
def test_balanced_softmax_unequal_counts(as_tensor):
    counts = [1000, 200, 40, 9, 1]
    logits, targets = _logits(12, 5, 41)
    shift = [math.log(c) for c in counts]
    ref = shifted_ce_reference(logits, targets, shift)
    cc = torch.tensor(counts) if as_tensor else counts
    x = _leaf(logits)
    loss = BalancedSoftmaxLoss(cc)(x, targets)
    assert loss.dim() == 0
    assert abs(loss.item() - ref) < 1e-10
    loss.backward()
    torch.testing.assert_close(
        x.grad, shifted_ce_grad_reference(logits, targets, shift), atol=ATOL, rtol=RTOL
    )


def test_balanced_softmax_equals_logit_adjusted_tau_one():
    # log(count) and log(prior) differ by a per-row constant, which softmax ignores
    counts = [300, 60, 12, 4]
    logits, targets = _logits(10, 4, 42)
    a = BalancedSoftmaxLoss(counts)(logits, targets).item()
    ref = shifted_ce_reference(logits, targets, [math.log(c) for c in counts])
    assert abs(a - ref) < 1e-10
    b = LogitAdjustedLoss(counts, tau=1.0)(logits, targets).item()
    assert abs(a - b) < 1e-10


@pytest.mark.parametrize("counts", [[10, 0, 5], [10, -1, 5]])
def test_balanced_softmax_bad_count_raises(counts):
    with pytest.raises(ValueError):
        BalancedSoftmaxLoss(counts)


# --------------------------------------------------------------------------
# precision: float64 inputs must be computed in float64
# --------------------------------------------------------------------------
# both shift the logits by log(pi): logit adjustment at tau = 1, and balanced softmax
shifting_by_log_prior = pytest.mark.parametrize(
    "make",
    [lambda c: LogitAdjustedLoss(c, tau=1.0), lambda c: BalancedSoftmaxLoss(c)],
    ids=["logit_adjusted", "balanced_softmax"],
)


@shifting_by_log_prior
def test_rebalancing_losses_keep_float64(make):
    counts = [500, 120, 30, 8, 2]
    logits, targets = _logits(12, 5, 43)
    loss = make(counts)(logits, targets)
    assert loss.dtype == torch.float64


# --------------------------------------------------------------------------
# precision: under bf16 autocast, similarities and softmax stay in float32
# --------------------------------------------------------------------------
# bf16 keeps 8 bits of mantissa: a loss computed in it misses the float64 reference
# by about 1e-2, one computed in float32 from the same bf16 inputs by under 1e-4.
BF16_INPUT_TOLERANCE = 1e-4


def test_bcl_under_bf16_autocast_computes_in_float32():
    B, V, C, D = 8, 2, 5, 16
    targets = torch.tensor([0, 0, 0, 1, 1, 2, 0, 4], dtype=torch.int64)
    features = _unit((B, V, D), 60).to(torch.bfloat16)
    prototypes = _unit((C, D), 61).to(torch.bfloat16)
    ref = bcl_reference(features.to(DTYPE), targets, prototypes.to(DTYPE), 0.1)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = BalancedContrastiveLoss(num_classes=C, temperature=0.1)(
            features, targets, prototypes
        )
    assert loss.dtype == torch.float32
    assert abs(loss.item() - ref.item()) < BF16_INPUT_TOLERANCE


@shifting_by_log_prior
def test_rebalancing_losses_under_bf16_autocast_compute_in_float32(make):
    counts = [500, 120, 30, 8, 2]
    logits, targets = _logits(12, 5, 62)
    logits = (logits * 3).to(torch.bfloat16)
    total = sum(counts)
    shift = [math.log(c / total) for c in counts]
    ref = shifted_ce_reference(logits.to(DTYPE), targets, shift)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = make(counts)(logits, targets)
    assert loss.dtype == torch.float32
    assert abs(loss.item() - ref) < BF16_INPUT_TOLERANCE
