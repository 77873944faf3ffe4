"""Independent checks of the contrastive losses beyond SupCon and BCL.

Every reference value here is computed from the papers' equations with explicit
per-anchor Python loops in float64; nothing is taken from the code under test other
than the module being tested itself.

* DCL    -- Yeh et al., ECCV 2022, "Decoupled Contrastive Learning": the positives
  leave the denominator, which holds the negatives only.
* PaCo   -- Cui et al., ICCV 2021, "Parametric Contrastive Learning": one softmax over
  the references (z.z/T) and the C class centres (logit + log prior, no T);
  L_i = -(alpha sum_p log s_p + log s_{c_y}) / (alpha |P(i)| + 1).
* TSC    -- Li et al., CVPR 2022, "Targeted Supervised Contrastive Learning": the C
  targets join the softmax at the same T; L_i = SupCon_i - lambda log s_{t_a(y)}.
* ResCom -- Zhong et al., 2022, "Rebalanced Siamese Contrastive Mining": hard
  positives / negatives mined from a class-balanced queue, anchors weighted by the
  inverse effective number of their class.

PaCo, TSC and ResCom compute part of their logits in float32 (``logits.float()``,
``anchors.float()``), so their comparisons use float32-level tolerances; the losses that
stay in float64 throughout are compared at 1e-10.
"""

from __future__ import annotations

import itertools
import math

import pytest
import torch
import torch.nn.functional as F

from longtail.losses import (
    ClassBalancedQueue,
    ParametricContrastiveLoss,
    ResComLoss,
    SupConLoss,
    TargetedSupConLoss,
    contrastive_loss,
)
from longtail.losses.targeted import uniform_targets

DTYPE = torch.float64
ATOL = 1e-10
RTOL = 1e-9
# the wrappers that go through float32 for part of their logits
ATOL32 = 2e-5
RTOL32 = 2e-5


# --------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------
def _unit(shape, seed):
    g = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(*shape, generator=g, dtype=DTYPE), dim=-1)


def _randn(shape, seed, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g, dtype=DTYPE) * scale


def _leaf(t):
    return t.detach().clone().requires_grad_(True)


def _anchor_list(features, targets):
    """Every view of every image as (vector, class), image-major (the mean is order-free)."""
    B, V, _ = features.shape
    return [(features[b, v], int(targets[b])) for b in range(B) for v in range(V)]


def _dot(a, b):
    return torch.dot(a, b)


def _check_grads(pairs, atol, rtol):
    """pairs: (module leaf, reference leaf); gradients equal and non-trivial."""
    for mod, ref in pairs:
        assert mod.grad is not None and ref.grad is not None
        torch.testing.assert_close(mod.grad.to(DTYPE), ref.grad, atol=atol, rtol=rtol)
        assert ref.grad.abs().max() > 1e-6


# --------------------------------------------------------------------------
# reference loops
# --------------------------------------------------------------------------
def supcon_loop(features, targets, temperature, decoupled=False):
    """SupCon L_out over the views (Khosla et al. eq. 2); with ``decoupled`` the DCL
    denominator (negatives only, Yeh et al.). Anchors with no positive are skipped."""
    anchors = _anchor_list(features, targets)
    n = len(anchors)
    losses = []
    for i in range(n):
        z_i, y = anchors[i]
        others = [k for k in range(n) if k != i]
        positives = [k for k in others if anchors[k][1] == y]
        negatives = [k for k in others if anchors[k][1] != y]
        if not positives:
            continue
        denom = torch.zeros((), dtype=DTYPE)
        for k in (negatives if decoupled else others):
            denom = denom + torch.exp(_dot(z_i, anchors[k][0]) / temperature)
        acc = torch.zeros((), dtype=DTYPE)
        for p in positives:
            acc = acc + _dot(z_i, anchors[p][0]) / temperature - torch.log(denom)
        losses.append(-acc / len(positives))
    return torch.stack(losses).mean()


def extras_loop(anchors, labels, references, reference_labels, temperature, own,
                extra_logits, extra_positives, decoupled, anchor_weights=None):
    """-1/|P(i)| sum_p log(exp(l_p) / sum_{k in D(i)} exp(l_k)) over the references
    (own entry dropped) and the extra logits (as they are); D(i) is everything, or with
    ``decoupled`` the non-positives only. Weighted sum over anchors with a positive,
    divided by their count."""
    N, M = anchors.shape[0], references.shape[0]
    total = torch.zeros((), dtype=DTYPE)
    count = 0
    for i in range(N):
        y = int(labels[i])
        entries = []  # (logit, is_positive)
        for k in range(M):
            if k == int(own[i]):
                continue
            entries.append((_dot(anchors[i], references[k]) / temperature, int(reference_labels[k]) == y))
        if extra_logits is not None:
            for j in range(extra_logits.shape[1]):
                entries.append((extra_logits[i, j], bool(extra_positives[i, j])))
        positives = [l for l, pos in entries if pos]
        if not positives:
            continue
        denom = torch.zeros((), dtype=DTYPE)
        for l, pos in entries:
            if decoupled and pos:
                continue
            denom = denom + torch.exp(l)
        acc = torch.zeros((), dtype=DTYPE)
        for l in positives:
            acc = acc + l - torch.log(denom)
        loss_i = -acc / len(positives)
        w = 1.0 if anchor_weights is None else anchor_weights[i]
        total = total + w * loss_i
        count += 1
    return total / count


def paco_loop(anchors, labels, logits, references, reference_labels, own, counts, alpha,
              temperature, centres=True, decoupled=False):
    """PaCo (Cui et al. 2021, Sec. 3.2-3.3): one softmax over the references (the anchor's
    own entry left out; z_i.z_k / T) and the C centres (l_ij + log pi_j, no T)."""
    N, M = anchors.shape[0], references.shape[0]
    C = logits.shape[1]
    total_n = float(sum(counts))
    log_prior = [math.log(c / total_n) for c in counts]
    losses = []
    for i in range(N):
        y = int(labels[i])
        sample = []  # (logit, is positive)
        for k in range(M):
            if k == int(own[i]):
                continue
            sample.append((_dot(anchors[i], references[k]) / temperature, int(reference_labels[k]) == y))
        centre = [(logits[i, j] + log_prior[j], j == y) for j in range(C)] if centres else []
        denom = torch.zeros((), dtype=DTYPE)
        for l, pos in sample + centre:
            if decoupled and pos:
                continue
            denom = denom + torch.exp(l)
        log_s = [(l - torch.log(denom), pos) for l, pos in sample]
        n_pos = sum(1 for _, pos in log_s if pos)
        sum_pos = torch.zeros((), dtype=DTYPE)
        for v, pos in log_s:
            if pos:
                sum_pos = sum_pos + v
        if centres:
            log_s_centre = logits[i, y] + log_prior[y] - torch.log(denom)
            losses.append(-(alpha * sum_pos + log_s_centre) / (alpha * n_pos + 1))
        else:
            if n_pos == 0:
                continue
            losses.append(-sum_pos / n_pos)
    return torch.stack(losses).mean()


def centre_ce_loop(anchors, labels, logits, references, own, counts, temperature):
    """-log s_{c_y}: the centre's probability in the joint softmax of the references
    (own left out; z.z/T) and the centres (logit + log prior)."""
    N, M = anchors.shape[0], references.shape[0]
    C = logits.shape[1]
    total_n = float(sum(counts))
    losses = []
    for i in range(N):
        y = int(labels[i])
        denom = torch.zeros((), dtype=DTYPE)
        for k in range(M):
            if k != int(own[i]):
                denom = denom + torch.exp(_dot(anchors[i], references[k]) / temperature)
        for j in range(C):
            denom = denom + torch.exp(logits[i, j] + math.log(counts[j] / total_n))
        num = torch.exp(logits[i, y] + math.log(counts[y] / total_n))
        losses.append(-torch.log(num / denom))
    return torch.stack(losses).mean()


def tsc_loop(features, targets, target_vectors, assignment, temperature, lam, counted=None):
    """TSC (Li et al. 2022, eq. 4 with the authors' parenthesis: the target term inside
    KCL's 1/(k+1)): softmax over the other views and all C targets (same T); each anchor's
    ``-(sum_p log s_p + lam log s_target) / |P|``, P its view positives (those ``counted(b,
    v, b2, v2)`` allows, when given: KCL's draw), |P| at least 1. The first term's mean
    runs over the anchors with a view positive, the target term's over all."""
    B, V, _ = features.shape
    anchors = [(b, v) for b in range(B) for v in range(V)]
    C = target_vectors.shape[0]
    first, second = [], []
    for b, v in anchors:
        z_i, y = features[b, v], int(targets[b])
        others = [(b2, v2) for b2, v2 in anchors if (b2, v2) != (b, v)]
        view_logits = {o: _dot(z_i, features[o]) / temperature for o in others}
        target_logits = [_dot(z_i, target_vectors[j]) / temperature for j in range(C)]
        denom = torch.zeros((), dtype=DTYPE)
        for l in list(view_logits.values()) + target_logits:
            denom = denom + torch.exp(l)
        positives = [o for o in others if int(targets[o[0]]) == y and (counted is None or counted(b, v, *o))]
        if positives:
            acc = torch.zeros((), dtype=DTYPE)
            for o in positives:
                acc = acc + view_logits[o] - torch.log(denom)
            first.append(-acc / len(positives))
        a = int(assignment[y])
        second.append(-(target_logits[a] - torch.log(denom)) / max(1, len(positives)))
    return torch.stack(first).mean() + lam * torch.stack(second).mean()


def effective_weights(counts, beta):
    """w_y = mean_c(E_c) / E_y, E_c = (1 - beta^n_c) / (1 - beta) (Cui et al. 2019)."""
    E = [(1 - beta ** n) / (1 - beta) for n in counts]
    mean = sum(E) / len(E)
    return [mean / e for e in E]


def rescom_loop(anchors, labels, references, reference_labels, own, queue_keys, queue_labels,
                temperature, hard_positives, hard_negatives, class_weights):
    """ResCom: each anchor's contrast set is the batch (own left out) plus its mined queue
    keys: the ``hard_positives`` same-class keys of LOWEST similarity and the
    ``hard_negatives`` other-class keys of HIGHEST similarity (mined by sorting).
    Loss = sum_i w_{y_i} L_i / (anchors with a positive)."""
    N, M, Q = anchors.shape[0], references.shape[0], queue_keys.shape[0]
    total = torch.zeros((), dtype=DTYPE)
    count = 0
    for i in range(N):
        y = int(labels[i])
        entries = []
        for k in range(M):
            if k == int(own[i]):
                continue
            entries.append((_dot(anchors[i], references[k]) / temperature, int(reference_labels[k]) == y))
        sims = [(float(_dot(anchors[i], queue_keys[q]).detach()), q) for q in range(Q)]
        same = sorted([(s, q) for s, q in sims if int(queue_labels[q]) == y])  # ascending
        other = sorted([(s, q) for s, q in sims if int(queue_labels[q]) != y], reverse=True)
        for _, q in same[:hard_positives]:
            entries.append((_dot(anchors[i], queue_keys[q]) / temperature, True))
        for _, q in other[:hard_negatives]:
            entries.append((_dot(anchors[i], queue_keys[q]) / temperature, False))
        positives = [l for l, pos in entries if pos]
        if not positives:
            continue
        denom = torch.zeros((), dtype=DTYPE)
        for l, _ in entries:
            denom = denom + torch.exp(l)
        acc = torch.zeros((), dtype=DTYPE)
        for l in positives:
            acc = acc + l - torch.log(denom)
        total = total + class_weights[y] * (-acc / len(positives))
        count += 1
    return total / count


# --------------------------------------------------------------------------
# DCL: SupConLoss(decoupled=True) and the decoupled extra logits
# --------------------------------------------------------------------------
@pytest.mark.parametrize("seed,V", [(0, 2), (1, 2), (2, 3), (3, 1)])
def test_supcon_decoupled_matches_dcl_loop(seed, V):
    B, C, D, T = 7, 3, 8, 0.1
    g = torch.Generator().manual_seed(200 + seed)
    targets = torch.randint(0, C, (B,), generator=g)
    targets[:2] = torch.tensor([0, 0])  # at least one positive pair whatever V
    features = _unit((B, V, D), seed)
    f_mod, f_ref = _leaf(features), _leaf(features)

    loss = SupConLoss(temperature=T, decoupled=True)(f_mod, targets)
    ref = supcon_loop(f_ref, targets, T, decoupled=True)
    torch.testing.assert_close(loss.to(DTYPE), ref, atol=ATOL, rtol=RTOL)
    loss.backward()
    ref.backward()
    _check_grads([(f_mod, f_ref)], ATOL, RTOL)

    # the decoupled loss is not the coupled one: both by the module and by the loops
    coupled = SupConLoss(temperature=T, decoupled=False)(features, targets)
    torch.testing.assert_close(coupled.to(DTYPE), supcon_loop(features, targets, T), atol=ATOL, rtol=RTOL)
    assert abs(coupled.item() - loss.item()) > 1e-3


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("decoupled", [False, True])
def test_contrastive_loss_extra_logits_and_decoupling(seed, decoupled):
    # the anchors' own entries are the first N references; E extra logits, some positive
    N, M, E, D, T = 5, 9, 4, 6, 0.2
    anchors = _unit((N, D), seed)
    references = torch.cat([anchors, _unit((M - N, D), 50 + seed)])
    labels = torch.tensor([0, 0, 1, 2, 1])
    reference_labels = torch.cat([labels, torch.tensor([0, 2, 1, 0])])
    own = torch.arange(N)
    extra = _randn((N, E), 60 + seed, scale=2.0)
    g = torch.Generator().manual_seed(70 + seed)
    extra_pos = torch.rand(N, E, generator=g) < 0.4
    extra_pos[:, 0] = True  # every anchor has at least one extra positive

    a_mod, r_mod, e_mod = _leaf(anchors), _leaf(references), _leaf(extra)
    a_ref, r_ref, e_ref = _leaf(anchors), _leaf(references), _leaf(extra)
    loss = contrastive_loss(a_mod, labels, r_mod, reference_labels, T, own=own, decoupled=decoupled,
                            extra_logits=e_mod, extra_positives=extra_pos)
    ref = extras_loop(a_ref, labels, r_ref, reference_labels, T, own, e_ref, extra_pos, decoupled)
    torch.testing.assert_close(loss.to(DTYPE), ref, atol=ATOL, rtol=RTOL)
    loss.backward()
    ref.backward()
    _check_grads([(a_mod, a_ref), (r_mod, r_ref), (e_mod, e_ref)], ATOL, RTOL)


# --------------------------------------------------------------------------
# anchor_weights
# --------------------------------------------------------------------------
def test_anchor_weights_weighted_sum_over_anchors_with_a_positive():
    N, D, T = 6, 8, 0.15
    anchors = _unit((N, D), 80)
    # anchor 5 (class 3) has no positive: its (large) weight must not count anywhere
    labels = torch.tensor([0, 1, 0, 2, 1, 3])
    own = torch.arange(N)
    weights = torch.tensor([0.5, 2.0, 1.0, 3.0, 0.25, 100.0], dtype=DTYPE)
    # anchor 3 (class 2) has a positive only in the extra references below
    extra_refs = _unit((2, D), 81)
    references = torch.cat([anchors, extra_refs])
    reference_labels = torch.cat([labels, torch.tensor([2, 0])])

    a_mod, a_ref = _leaf(anchors), _leaf(anchors)
    x_mod, x_ref = _leaf(extra_refs), _leaf(extra_refs)
    loss = contrastive_loss(a_mod, labels, torch.cat([a_mod, x_mod]), reference_labels, T, own=own,
                            anchor_weights=weights)
    ref = extras_loop(a_ref, labels, torch.cat([a_ref, x_ref]), reference_labels, T, own, None, None,
                      False, anchor_weights=weights)
    torch.testing.assert_close(loss.to(DTYPE), ref, atol=ATOL, rtol=RTOL)
    loss.backward()
    ref.backward()
    _check_grads([(a_mod, a_ref), (x_mod, x_ref)], ATOL, RTOL)

    # the weights matter, and the divisor is the count (5), not the sum of the weights
    plain = extras_loop(anchors, labels, references, reference_labels, T, own, None, None, False)
    assert abs(loss.item() - plain.item()) > 1e-3
    uniform = contrastive_loss(anchors, labels, references, reference_labels, T, own=own,
                               anchor_weights=torch.full((N,), 2.0, dtype=DTYPE))
    torch.testing.assert_close(uniform.to(DTYPE), 2 * plain, atol=ATOL, rtol=RTOL)


# --------------------------------------------------------------------------
# SupConLoss edge cases
# --------------------------------------------------------------------------
@pytest.mark.parametrize("decoupled", [False, True])
def test_supcon_anchor_without_positive_is_left_out(decoupled):
    B, V, D, T = 6, 1, 8, 0.1
    targets = torch.tensor([0, 0, 1, 1, 1, 2])  # class 2: one image, one view -> no positive
    features = _unit((B, V, D), 90)
    f_mod, f_ref = _leaf(features), _leaf(features)
    loss = SupConLoss(temperature=T, decoupled=decoupled)(f_mod, targets)
    assert torch.isfinite(loss)

    # the loop over the 5 anchors that have a positive, written out here
    anchors = [(f_ref[b, 0], int(targets[b])) for b in range(B)]
    losses = []
    for i in range(B):
        z_i, y = anchors[i]
        if y == 2:
            continue
        denom = torch.zeros((), dtype=DTYPE)
        pos = []
        for k in range(B):
            if k == i:
                continue
            same = anchors[k][1] == y
            if same:
                pos.append(k)
            if not (decoupled and same):
                denom = denom + torch.exp(_dot(z_i, anchors[k][0]) / T)
        losses.append(-sum(_dot(z_i, anchors[p][0]) / T - torch.log(denom) for p in pos) / len(pos))
    assert len(losses) == 5
    ref = torch.stack(losses).mean()
    torch.testing.assert_close(loss.to(DTYPE), ref, atol=ATOL, rtol=RTOL)
    loss.backward()
    ref.backward()
    _check_grads([(f_mod, f_ref)], ATOL, RTOL)
    # the lonely anchor still acts as a negative of the others
    assert f_mod.grad[5].abs().max() > 1e-6


@pytest.mark.parametrize("decoupled", [False, True])
def test_supcon_batch_without_positive_is_zero_with_warning(decoupled):
    features = _leaf(_unit((4, 1, 8), 91))
    targets = torch.tensor([0, 1, 2, 3])
    with pytest.warns(UserWarning):
        loss = SupConLoss(temperature=0.1, decoupled=decoupled)(features, targets)
    assert loss.dim() == 0 and loss.item() == 0.0
    loss.backward()
    assert features.grad is not None
    assert torch.equal(features.grad, torch.zeros_like(features))


# --------------------------------------------------------------------------
# PaCo
# --------------------------------------------------------------------------
PACO_COUNTS = [50, 20, 6, 2]


def _paco_data(seed, shared):
    """N anchors (own entries the first N references), a second view, and a queue whose
    labels include class 3, absent from the anchors."""
    N, D, C = 6, 8, 4
    anchors = _unit((N, D), seed)
    labels = torch.tensor([0, 0, 1, 2, 0, 1])
    second = _unit((N, D), 10 + seed)
    queue = _unit((5, D), 20 + seed)
    queue_labels = torch.tensor([0, 1, 3, 3, 1])
    reference_labels = torch.cat([labels, labels, queue_labels])
    logits = _randn((N, C), 30 + seed, scale=2.0)
    own = torch.arange(N)
    rest = torch.cat([second, queue])
    if shared:  # GPaCo: the anchors are the first references
        return anchors, labels, logits, rest, reference_labels, own
    return anchors, labels, logits, torch.cat([_unit((N, D), 40 + seed), rest]), reference_labels, own


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("shared", [True, False])
@pytest.mark.parametrize("alpha,T", [(0.3, 0.2), (0.02, 0.05)])
def test_paco_matches_loop(seed, shared, alpha, T):
    anchors, labels, logits, refs, ref_labels, own = _paco_data(seed, shared)
    a_mod, l_mod, r_mod = _leaf(anchors), _leaf(logits), _leaf(refs)
    a_ref, l_ref, r_ref = _leaf(anchors), _leaf(logits), _leaf(refs)
    if shared:
        refs_mod, refs_ref = torch.cat([a_mod, r_mod]), torch.cat([a_ref, r_ref])
    else:
        refs_mod, refs_ref = r_mod, r_ref
    crit = ParametricContrastiveLoss(PACO_COUNTS, alpha=alpha, temperature=T)
    loss = crit(a_mod, labels, l_mod, refs_mod, ref_labels, own)
    ref = paco_loop(a_ref, labels, l_ref, refs_ref, ref_labels, own, PACO_COUNTS, alpha, T)
    assert torch.isfinite(loss)
    torch.testing.assert_close(loss.to(DTYPE), ref, atol=ATOL32, rtol=RTOL32)
    loss.backward()
    ref.backward()
    _check_grads([(a_mod, a_ref), (l_mod, l_ref), (r_mod, r_ref)], ATOL32, RTOL32)


def test_paco_decoupled_matches_loop():
    # DCL in PaCo: the positive samples and the anchor's centre leave the denominator
    anchors, labels, logits, refs, ref_labels, own = _paco_data(3, False)
    alpha, T = 0.3, 0.2
    a_mod, l_mod, r_mod = _leaf(anchors), _leaf(logits), _leaf(refs)
    a_ref, l_ref, r_ref = _leaf(anchors), _leaf(logits), _leaf(refs)
    crit = ParametricContrastiveLoss(PACO_COUNTS, alpha=alpha, temperature=T, decoupled=True)
    loss = crit(a_mod, labels, l_mod, r_mod, ref_labels, own)
    ref = paco_loop(a_ref, labels, l_ref, r_ref, ref_labels, own, PACO_COUNTS, alpha, T, decoupled=True)
    torch.testing.assert_close(loss.to(DTYPE), ref, atol=ATOL32, rtol=RTOL32)
    loss.backward()
    ref.backward()
    _check_grads([(a_mod, a_ref), (l_mod, l_ref), (r_mod, r_ref)], ATOL32, RTOL32)
    coupled = paco_loop(anchors, labels, logits, refs, ref_labels, own, PACO_COUNTS, alpha, T)
    assert abs(coupled.item() - loss.item()) > 1e-3


@pytest.mark.parametrize("alpha", [0.02, 1.5])
def test_paco_without_centres_is_supcon_over_the_references(alpha):
    # anchor 3 (class 2) has no reference positive besides its own entry in this set:
    # without centres it has no positive and leaves the mean
    N, D, T = 6, 8, 0.2
    anchors = _unit((N, D), 100)
    labels = torch.tensor([0, 0, 1, 2, 0, 1])
    queue = _unit((5, D), 101)
    queue_labels = torch.tensor([0, 1, 3, 3, 1])
    ref_labels = torch.cat([labels, queue_labels])
    logits = _randn((N, 4), 102, scale=2.0)
    own = torch.arange(N)
    a_mod, q_mod, a_ref, q_ref = _leaf(anchors), _leaf(queue), _leaf(anchors), _leaf(queue)

    crit = ParametricContrastiveLoss(PACO_COUNTS, alpha=alpha, temperature=T, centres=False)
    loss = crit(a_mod, labels, logits, torch.cat([a_mod, q_mod]), ref_labels, own)

    refs = torch.cat([a_ref, q_ref])
    losses = []
    for i in range(N):
        y = int(labels[i])
        denom = torch.zeros((), dtype=DTYPE)
        pos = []
        for k in range(len(refs)):
            if k == i:
                continue
            denom = denom + torch.exp(_dot(a_ref[i], refs[k]) / T)
            if int(ref_labels[k]) == y:
                pos.append(k)
        if pos:
            losses.append(-sum(_dot(a_ref[i], refs[p]) / T - torch.log(denom) for p in pos) / len(pos))
    assert len(losses) == N - 1
    ref = torch.stack(losses).mean()
    torch.testing.assert_close(loss.to(DTYPE), ref, atol=ATOL, rtol=RTOL)
    loss.backward()
    ref.backward()
    _check_grads([(a_mod, a_ref), (q_mod, q_ref)], ATOL, RTOL)


@pytest.mark.parametrize("seed", [0, 1])
def test_paco_alpha_zero_is_the_centre_cross_entropy(seed):
    anchors, labels, logits, refs, ref_labels, own = _paco_data(seed, False)
    T = 0.2
    a_mod, l_mod, r_mod = _leaf(anchors), _leaf(logits), _leaf(refs)
    a_ref, l_ref, r_ref = _leaf(anchors), _leaf(logits), _leaf(refs)
    loss = ParametricContrastiveLoss(PACO_COUNTS, alpha=0.0, temperature=T)(a_mod, labels, l_mod, r_mod,
                                                                             ref_labels, own)
    ref = centre_ce_loop(a_ref, labels, l_ref, r_ref, own, PACO_COUNTS, T)
    torch.testing.assert_close(loss.to(DTYPE), ref, atol=ATOL32, rtol=RTOL32)
    loss.backward()
    ref.backward()
    _check_grads([(a_mod, a_ref), (l_mod, l_ref), (r_mod, r_ref)], ATOL32, RTOL32)
    # the prior is in it: without log pi the value differs
    uniform = centre_ce_loop(anchors, labels, logits, refs, own, [1, 1, 1, 1], T)
    assert abs(uniform.item() - loss.item()) > 1e-3


# --------------------------------------------------------------------------
# TSC
# --------------------------------------------------------------------------
def _tsc_module(C, D, T, lam, seed):
    crit = TargetedSupConLoss(num_classes=C, dim=D, temperature=T, target_weight=lam)
    targets = _unit((C, D), 300 + seed).float()
    perm = torch.randperm(C, generator=torch.Generator().manual_seed(310 + seed))
    with torch.no_grad():
        crit.targets.copy_(targets)
        crit.assignment.copy_(perm)
    return crit, targets.to(DTYPE), perm


@pytest.mark.parametrize("seed,V,lam", [(0, 2, 0.2), (1, 2, 1.0), (2, 1, 0.5), (3, 3, 0.5)])
def test_tsc_matches_loop(seed, V, lam):
    B, C, D, T = 6, 4, 8, 0.1
    crit, tvec, perm = _tsc_module(C, D, T, lam, seed)
    assert not torch.equal(perm, torch.arange(C))  # the assignment must matter
    # class 3 has a single image: with V=1 that anchor has no view positive (first term
    # leaves it out), but it always has its target (second term keeps it)
    targets = torch.tensor([0, 1, 0, 2, 1, 3])
    features = _unit((B, V, D), seed)
    f_mod, f_ref = _leaf(features), _leaf(features)
    loss = crit(f_mod, targets)
    ref = tsc_loop(f_ref, targets, tvec, perm, T, lam)
    torch.testing.assert_close(loss.to(DTYPE), ref, atol=ATOL32, rtol=RTOL32)
    loss.backward()
    ref.backward()
    _check_grads([(f_mod, f_ref)], ATOL32, RTOL32)
    # with the identity assignment the loss is another
    other = tsc_loop(features, targets, tvec, torch.arange(C), T, lam)
    assert abs(other.item() - loss.item()) > 1e-3


def test_tsc_draws_k_positives_and_matches_loop_on_them():
    B, V, C, D, T, lam, k = 9, 2, 3, 8, 0.1, 0.5, 2
    crit, tvec, perm = _tsc_module(C, D, T, lam, 5)
    crit.positives = k
    targets = torch.tensor([0, 0, 0, 0, 0, 1, 1, 2, 0])  # class 0: 6 images, 1: 2, 2: a single one
    images = torch.arange(B).repeat(V)  # view-major, as the loss flattens
    labels = targets.repeat(V)
    kept = crit.kept_positives(labels, images, labels, images)
    assert int(crit.draws) == 1
    for i in range(B * V):
        same_image = (images == images[i]).nonzero().flatten().tolist()
        others = ((labels == labels[i]) & (images != images[i])).nonzero().flatten().tolist()
        assert all(kept[i, j] for j in same_image)  # its image's views, always
        assert sum(bool(kept[i, j]) for j in others) == min(k, len(others))
        assert not kept[i, labels != labels[i]].any()
    crit.draws.fill_(0)  # a resumed run draws again what it drew
    assert torch.equal(crit.kept_positives(labels, images, labels, images), kept)
    assert not torch.equal(crit.kept_positives(labels, images, labels, images), kept)  # the next draw differs
    # uniform: anchor 0 (class 0) draws 2 of the 10 views of the 5 other class-0 images
    counts = sum(crit.kept_positives(labels, images, labels, images)[0].float() for _ in range(400))
    others = ((labels == 0) & (images != 0)).nonzero().flatten()
    assert ((counts[others] / 400 - 0.2).abs() < 0.06).all() and counts.sum() == 400 * (2 + 2)

    features = _unit((B, V, D), 6)
    f_mod, f_ref = _leaf(features), _leaf(features)
    crit.draws.fill_(0)
    loss = crit(f_mod, targets)
    ref = tsc_loop(f_ref, targets, tvec, perm, T, lam, counted=lambda b, v, b2, v2: bool(kept[v * B + b, v2 * B + b2]))
    torch.testing.assert_close(loss.to(DTYPE), ref, atol=ATOL32, rtol=RTOL32)
    loss.backward()
    ref.backward()
    _check_grads([(f_mod, f_ref)], ATOL32, RTOL32)
    every = tsc_loop(features, targets, tvec, perm, T, lam)  # all positives counted: another loss
    assert abs(every.item() - loss.item()) > 1e-3


@pytest.mark.parametrize("C,D,expected", [
    (10, 128, math.degrees(math.acos(-1 / 9))),
    (5, 4, math.degrees(math.acos(-1 / 4))),
    (6, 3, 90.0),  # C > D + 1: the octahedron, the best packing of 6 points on S^2
])
def test_uniform_targets_are_spread(C, D, expected):
    t = uniform_targets(C, D).to(DTYPE)
    assert t.shape == (C, D)
    torch.testing.assert_close(t.norm(dim=1), torch.ones(C, dtype=DTYPE), atol=1e-6, rtol=0)
    cosines = [float(torch.dot(t[i], t[j])) for i in range(C) for j in range(i + 1, C)]
    min_angle = math.degrees(math.acos(max(-1.0, min(1.0, max(cosines)))))
    assert abs(min_angle - expected) <= 0.05 * expected, (min_angle, expected)


def test_tsc_assignment_recovers_a_permutation():
    C, D = 5, 8
    perm = torch.tensor([3, 0, 4, 1, 2])
    targets = _unit((C, D), 400).float()
    for preset in (False, True):
        crit = TargetedSupConLoss(num_classes=C, dim=D, centroid_momentum=0.7)
        with torch.no_grad():
            crit.targets.copy_(targets)
            if preset:  # the class centroids already are the permuted targets
                crit.centroids.copy_(targets[perm])
        assert torch.equal(crit.assignment, torch.arange(C))
        crit.update(targets[perm], torch.arange(C))  # class c's embedding is target perm[c]
        torch.testing.assert_close(crit.centroids, targets[perm], atol=1e-6, rtol=0)
        assert torch.equal(crit.assignment, perm), (preset, crit.assignment)


def test_tsc_assignment_is_the_optimal_matching_not_greedy():
    # class 0 and 1 both prefer target 0; class 1's second choice is much better than
    # class 0's, so the optimal matching sends class 0 to target 0 only if that wins
    C, D = 4, 8
    targets = _unit((C, D), 410)
    t = targets
    centroids = F.normalize(torch.stack([
        t[0] + 0.05 * t[2],
        t[0] + 0.8 * t[1],
        0.3 * t[0] + t[2] + 0.2 * t[3],
        t[3] + 0.1 * t[1],
    ]), dim=1)
    sim = centroids @ t.T
    scores = {p: sum(float(sim[c, p[c]]) for c in range(C)) for p in itertools.permutations(range(C))}
    best = max(scores, key=scores.get)
    ranked = sorted(scores.values(), reverse=True)
    assert ranked[0] - ranked[1] > 1e-3  # a unique optimum
    greedy = sim.argmax(dim=1).tolist()
    assert list(best) != greedy  # the greedy per-class choice is not the answer

    crit = TargetedSupConLoss(num_classes=C, dim=D)
    with torch.no_grad():
        crit.targets.copy_(targets.float())
    crit.update(centroids.float(), torch.arange(C))
    assert crit.assignment.tolist() == list(best)


def test_tsc_centroids_move_by_momentum():
    C, D, m = 4, 6, 0.75
    crit = TargetedSupConLoss(num_classes=C, dim=D, centroid_momentum=m)
    first = _unit((8, D), 420).float()
    labels1 = torch.tensor([0, 0, 1, 1, 1, 2, 2, 0])
    crit.update(first, labels1)
    for c in range(3):  # first sighting: the normalised mean of the class's embeddings
        expected = F.normalize(first[labels1 == c].mean(0), dim=0)
        torch.testing.assert_close(crit.centroids[c], expected, atol=1e-6, rtol=0)
    assert torch.equal(crit.centroids[3], torch.zeros(D))  # never seen
    before = crit.centroids.clone()

    second = _unit((3, D), 421).float()
    labels2 = torch.tensor([1, 1, 3])
    crit.update(second, labels2)
    mean1 = F.normalize(second[:2].mean(0), dim=0)
    torch.testing.assert_close(crit.centroids[1], F.normalize(m * before[1] + (1 - m) * mean1, dim=0),
                               atol=1e-6, rtol=0)
    torch.testing.assert_close(crit.centroids[3], F.normalize(second[2], dim=0), atol=1e-6, rtol=0)
    assert torch.equal(crit.centroids[0], before[0]) and torch.equal(crit.centroids[2], before[2])


# --------------------------------------------------------------------------
# ResCom
# --------------------------------------------------------------------------
RESCOM_COUNTS = [40, 12, 5, 2]


def _rescom_data(seed, two_views=True):
    N, D, C, per_class = 6, 8, 4, 3
    anchors = _unit((N, D), 500 + seed)
    labels = torch.tensor([0, 0, 1, 2, 0, 3])
    own = torch.arange(N)
    second = _unit((N, D), 510 + seed)
    queue = _unit((C * per_class, D), 520 + seed)
    queue_labels = torch.arange(C).repeat_interleave(per_class)
    return anchors, labels, own, second, queue, queue_labels, two_views


def _check_rescom(seed, hp, hn, beta, counts, two_views=True, T=0.2):
    anchors, labels, own, second, queue, queue_labels, _ = _rescom_data(seed)
    ref_labels = torch.cat([labels, labels]) if two_views else labels
    a_mod, s_mod, q_mod = _leaf(anchors), _leaf(second), _leaf(queue)
    a_ref, s_ref, q_ref = _leaf(anchors), _leaf(second), _leaf(queue)
    refs_mod = torch.cat([a_mod, s_mod]) if two_views else a_mod
    refs_ref = torch.cat([a_ref, s_ref]) if two_views else a_ref
    crit = ResComLoss(counts, temperature=T, hard_positives=hp, hard_negatives=hn, beta=beta)
    loss = crit(a_mod, labels, refs_mod, ref_labels, own, q_mod, queue_labels)
    weights = effective_weights(counts, beta)
    ref = rescom_loop(a_ref, labels, refs_ref, ref_labels, own, q_ref, queue_labels, T, hp, hn, weights)
    assert torch.isfinite(loss)
    torch.testing.assert_close(loss.to(DTYPE), ref, atol=ATOL32, rtol=RTOL32)
    loss.backward()
    ref.backward()
    pairs = [(a_mod, a_ref), (q_mod, q_ref)] + ([(s_mod, s_ref)] if two_views else [])
    _check_grads(pairs, ATOL32, RTOL32)
    return loss.item()


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("hp,hn", [(1, 2), (2, 4), (1, 400), (3, 0)])
def test_rescom_matches_loop(seed, hp, hn):
    _check_rescom(seed, hp, hn, beta=0.99, counts=RESCOM_COUNTS)


def test_rescom_default_beta_and_single_view():
    # one view: anchors of classes 1, 2 and 3 have no batch positive, only mined ones;
    # with no hard positive they have none and leave the mean
    _check_rescom(2, 1, 3, beta=0.999999, counts=RESCOM_COUNTS, two_views=False)
    _check_rescom(2, 0, 3, beta=0.999999, counts=RESCOM_COUNTS, two_views=False)


def test_rescom_weights_are_one_for_beta_zero_and_for_equal_counts():
    assert torch.equal(ResComLoss(RESCOM_COUNTS, beta=0.0).class_weights, torch.ones(4))
    torch.testing.assert_close(ResComLoss([7, 7, 7, 7], beta=0.99).class_weights, torch.ones(4),
                               atol=1e-7, rtol=0)
    # and the loss is then the unweighted loop, while skewed counts change it
    unweighted = [1.0] * 4
    anchors, labels, own, second, queue, queue_labels, _ = _rescom_data(4)
    refs, ref_labels = torch.cat([anchors, second]), torch.cat([labels, labels])
    plain = rescom_loop(anchors, labels, refs, ref_labels, own, queue, queue_labels, 0.2, 1, 3, unweighted)
    for counts, beta in ((RESCOM_COUNTS, 0.0), ([7, 7, 7, 7], 0.99)):
        loss = ResComLoss(counts, hard_positives=1, hard_negatives=3, beta=beta)(
            anchors, labels, refs, ref_labels, own, queue, queue_labels)
        torch.testing.assert_close(loss.to(DTYPE), plain, atol=ATOL32, rtol=RTOL32)
    skewed = ResComLoss(RESCOM_COUNTS, hard_positives=1, hard_negatives=3, beta=0.99)(
        anchors, labels, refs, ref_labels, own, queue, queue_labels)
    assert abs(skewed.item() - plain.item()) > 1e-3


def test_rescom_mined_masks():
    anchors, labels, own, second, queue, queue_labels, _ = _rescom_data(5)
    crit = ResComLoss(RESCOM_COUNTS, hard_positives=2, hard_negatives=3)
    kept, positive = crit.mined(anchors, labels, queue, queue_labels)
    for i in range(len(anchors)):
        sims = [(float(_dot(anchors[i], queue[q])), q) for q in range(len(queue))]
        same = sorted((s, q) for s, q in sims if int(queue_labels[q]) == int(labels[i]))
        other = sorted(((s, q) for s, q in sims if int(queue_labels[q]) != int(labels[i])), reverse=True)
        want_pos = {q for _, q in same[:2]}
        want = want_pos | {q for _, q in other[:3]}
        assert set(kept[i].nonzero().flatten().tolist()) == want
        assert set(positive[i].nonzero().flatten().tolist()) == want_pos


# --------------------------------------------------------------------------
# ClassBalancedQueue
# --------------------------------------------------------------------------
def test_class_balanced_queue_keeps_each_class_most_recent_keys():
    C, K, D = 4, 3, 5
    queue = ClassBalancedQueue(num_classes=C, per_class=K, dim=D)
    g = torch.Generator().manual_seed(600)
    history = {c: [] for c in range(C)}
    pushes = [
        torch.tensor([0, 0, 1]),               # classes 2, 3 absent
        torch.tensor([0, 0, 0, 0, 0, 2]),      # more keys of class 0 than per_class
        torch.tensor([1, 3, 1]),
        torch.tensor([2, 0, 2, 1, 2, 2, 3]),   # four keys of class 2
        torch.tensor([3, 3, 3, 3, 1]),
        torch.tensor([1, 0]),
    ]
    for step, labels in enumerate(pushes):
        keys = torch.randn(len(labels), D, generator=g)
        for key, label in zip(keys, labels.tolist()):
            history[label].append(key.clone())
        queue.push(keys, labels)
        held_keys, held_labels = queue()
        assert len(held_keys) == len(held_labels)
        assert held_labels.tolist() == sorted(held_labels.tolist())  # class by class
        for c in range(C):
            mine = held_keys[held_labels == c]
            assert len(mine) == min(K, len(history[c])), (step, c)
            expected = history[c][-K:]  # the most recent, oldest first
            for got, want in zip(mine, expected):
                assert torch.equal(got, want), (step, c)
    # every class has now been pushed at least per_class times
    assert all(len(h) >= K for h in history.values())
    _, held_labels = queue()
    assert torch.bincount(held_labels, minlength=C).tolist() == [K] * C


def test_a_decoupled_anchor_whose_references_are_all_positives_is_left_out():
    """One class only: decoupled, no anchor has a negative, so no denominator: the loss is
    0 with a warning, not -inf."""
    features = _unit((4, 2, 5), 3)
    with pytest.warns(UserWarning, match="no anchor"):
        loss = SupConLoss(decoupled=True)(features, torch.zeros(4, dtype=torch.long))
    assert loss.item() == 0.0
