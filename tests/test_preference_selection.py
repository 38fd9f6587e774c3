"""D^3S's selection helpers and Scaf-GRPO's hint mask (losskit.preference.selection).

References: brute force over every subset (the max-variance selection's optimality, the property D^3S's
sample-level rule states), a direct ranking of |A| H (the token-level rule), and GRPO on the same rollouts with
the hint tokens removed (the hint mask's meaning).
"""

import itertools
import math

import pytest
import torch

import losskit
from losskit.preference import advantage_entropy_token_mask, hint_token_mask, max_variance_subset


def _var(x):
    return ((x - x.mean()) ** 2).mean().item()


def _brute_best(row, k):
    return max(_var(row[list(c)]) for c in itertools.combinations(range(len(row)), k))


@pytest.mark.parametrize("n", [2, 3, 5, 8])
@pytest.mark.parametrize("seed", range(6))
def test_max_variance_subset_is_optimal_vs_brute_force(n, seed):
    g = torch.Generator().manual_seed(seed * 10 + n)
    vals = torch.randn(4, n, generator=g, dtype=torch.float64)
    vals[1] = torch.randint(0, 2, (n,), generator=g).double()  # binary rewards: many ties
    vals[2] = torch.randint(-2, 3, (n,), generator=g).double()
    for k in range(1, n + 1):
        keep = max_variance_subset(vals, k)
        assert keep.shape == vals.shape and (keep.sum(-1) == k).all()
        for r in range(vals.shape[0]):
            assert _var(vals[r][keep[r]]) == pytest.approx(_brute_best(vals[r], k), rel=1e-12, abs=1e-12)


def test_max_variance_subset_flat_and_cross_group():
    g = torch.Generator().manual_seed(1)
    vals = torch.randn(3, 6, generator=g, dtype=torch.float64)
    assert torch.equal(max_variance_subset(vals.reshape(-1), 3, group_size=6),
                       max_variance_subset(vals, 3).reshape(-1))
    flat = vals.reshape(-1)[:9]
    keep = max_variance_subset(flat, 4)  # one group: the whole batch (cross-group)
    assert _var(flat[keep]) == pytest.approx(_brute_best(flat, 4), rel=1e-12)
    # rewards and their group advantages select the same rollouts (an increasing affine map per group)
    adv = losskit.group_advantages(vals)
    assert torch.equal(max_variance_subset(vals, 4), max_variance_subset(adv, 4))


def test_max_variance_subset_refuses():
    v = torch.randn(2, 4, dtype=torch.float64)
    for k in (0, 5, 2.0, True):
        with pytest.raises(losskit.LossInputError, match="^k:"):
            max_variance_subset(v, k)
    with pytest.raises(losskit.LossInputError, match="group_size"):
        max_variance_subset(v.reshape(-1), 2, group_size=3)
    with pytest.raises(losskit.LossInputError, match="values"):
        max_variance_subset(torch.tensor([[1.0, float("nan")]]), 1)


def _token_batch(seed, b=5, t=8):
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(1, t + 1, (b,), generator=g)
    mask = torch.arange(t)[None] < lengths[:, None]
    adv = torch.randn(b, generator=g, dtype=torch.float64)
    ent = torch.rand(b, t, generator=g, dtype=torch.float64) * 3
    return adv, ent, mask


@pytest.mark.parametrize("fraction", [0.1, 0.25, 0.5, 0.8, 1.0])
@pytest.mark.parametrize("seed", range(4))
def test_token_mask_keeps_the_largest_scores(fraction, seed):
    adv, ent, mask = _token_batch(seed)
    score = adv[:, None].abs() * ent
    keep = advantage_entropy_token_mask(adv, ent, mask, fraction)
    assert not (keep & ~mask).any()
    assert keep.sum().item() == math.ceil(fraction * mask.sum().item())
    if (mask & ~keep).any():
        assert score[keep].min() >= score[mask & ~keep].max()
    keep_s = advantage_entropy_token_mask(adv[:, None].expand_as(ent), ent, mask, fraction, scope="sequence")
    for i in range(mask.shape[0]):
        row, m, k = score[i], mask[i], keep_s[i]
        assert k.sum().item() == math.ceil(fraction * m.sum().item()) and not (k & ~m).any()
        if (m & ~k).any():
            assert row[k].min() >= row[m & ~k].max()


def test_token_mask_refuses():
    adv, ent, mask = _token_batch(0)
    for bad in (0.0, 1.5, True):
        with pytest.raises(losskit.LossInputError, match="fraction"):
            advantage_entropy_token_mask(adv, ent, mask, bad)
    with pytest.raises(losskit.LossInputError, match="scope"):
        advantage_entropy_token_mask(adv, ent, mask, 0.5, scope="group")
    with pytest.raises(losskit.LossInputError, match="advantages"):
        advantage_entropy_token_mask(adv[:-1], ent, mask, 0.5)


def test_hint_mask_is_grpo_without_the_hint_tokens():
    """GRPO with the hint tokens masked equals GRPO on the completions with the hint tokens cut out (values and
    gradients): the hint conditions the log-probs (they are the inputs) but takes no part in the loss."""
    g = torch.Generator().manual_seed(3)
    b, t = 6, 9
    lengths = torch.randint(3, t + 1, (b,), generator=g)
    mask = torch.arange(t)[None] < lengths[:, None]
    hints = torch.tensor([0, 2, 0, 1, 3, 0])
    lp = -torch.rand(b, t, generator=g, dtype=torch.float64) * 2
    old = (lp + 0.3 * torch.randn(b, t, generator=g, dtype=torch.float64)).clamp(max=0)
    ref = (lp + 0.2 * torch.randn(b, t, generator=g, dtype=torch.float64)).clamp(max=0)
    adv = losskit.group_advantages(torch.tensor([0.0, 1, 0, 0, 1, 0], dtype=torch.float64), 3)
    hm = hint_token_mask(mask, hints)
    assert (hm.sum(-1) == lengths - hints).all()
    # the same rollouts with the hint tokens removed (shifted left), padded at the end
    def cut(x):
        out = torch.zeros_like(x)
        for i in range(b):
            kept = x[i, hints[i]:lengths[i]]
            out[i, :len(kept)] = kept
        return out
    short_mask = torch.arange(t)[None] < (lengths - hints)[:, None]
    for agg in ("grpo", "bnpo", "dapo", "luspo"):
        for beta in (0.0, 0.04):
            x = lp.clone().requires_grad_(True)
            a = losskit.grpo(x, old, adv, hm, ref, beta=beta, aggregation=agg)
            (ga,) = torch.autograd.grad(a, x)
            y = cut(lp).requires_grad_(True)
            bb = losskit.grpo(y, cut(old), adv, short_mask, cut(ref), beta=beta, aggregation=agg)
            (gb,) = torch.autograd.grad(bb, y)
            torch.testing.assert_close(a, bb, rtol=1e-12, atol=1e-12)
            torch.testing.assert_close(cut(ga), gb, rtol=1e-12, atol=1e-12)
            assert (ga[~hm] == 0).all()


def test_hint_mask_refuses():
    mask = torch.ones(2, 4, dtype=torch.bool)
    with pytest.raises(losskit.LossInputError, match="hint_lengths"):
        hint_token_mask(mask, torch.tensor([1.0, 0.0]))
    with pytest.raises(losskit.LossInputError, match="hint_lengths"):
        hint_token_mask(mask, torch.tensor([-1, 0]))
    with pytest.raises(losskit.LossInputError, match="hint_lengths"):
        hint_token_mask(mask, torch.tensor([5, 0]))
