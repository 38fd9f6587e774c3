"""Layers 1 and 2: chunked token log-probs and sequence scores against independent float64 computations."""

import math

import numpy as np
import pytest
import scipy.special
import scipy.stats
import torch

import losskit
from losskit import LossInputError
from losskit.preference import (
    geometric_anchor,
    sequence_scores,
    shared_length,
    token_logprobs,
    transform_score,
)


def _data(b=3, t=5, v=7, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    logits = 3 * torch.randn(b, t, v, generator=g, dtype=torch.float64)
    labels = torch.randint(0, v, (b, t), generator=g)
    mask = torch.rand(b, t, generator=g) < 0.7
    mask[0] = True
    return logits.to(dtype), labels, mask


@pytest.mark.parametrize("chunk", [1, 2, 4, None])
def test_logps_match_scipy_and_naive(chunk):
    logits, labels, mask = _data()
    out = token_logprobs(logits, labels, mask, chunk_rows=chunk)
    ref = scipy.special.log_softmax(logits.numpy(), -1)
    ref = np.take_along_axis(ref, labels.numpy()[..., None], -1)[..., 0] * mask.numpy()
    np.testing.assert_allclose(out.logps.numpy(), ref, rtol=1e-12, atol=1e-12)
    assert out.entropy is None and out.kl is None
    naive = losskit.preference.naive_token_logprobs(logits, labels, mask)
    np.testing.assert_allclose(out.logps.numpy(), naive.numpy(), rtol=1e-12, atol=1e-12)


def test_entropy_and_kl_match_scipy():
    logits, labels, mask = _data(seed=1)
    anchor = _data(seed=2)[0]
    out = token_logprobs(logits, labels, mask, return_entropy=True, anchor_logits=anchor, chunk_rows=3,
                         temperature=0.7)
    p = scipy.special.softmax(logits.numpy() / 0.7, -1)
    a = scipy.special.softmax(anchor.numpy() / 0.7, -1)
    np.testing.assert_allclose(out.entropy.numpy(), scipy.stats.entropy(p, axis=-1) * mask.numpy(), rtol=1e-10,
                               atol=1e-12)
    np.testing.assert_allclose(out.kl.numpy(), scipy.stats.entropy(a, p, axis=-1) * mask.numpy(), rtol=1e-10,
                               atol=1e-12)


def test_gradients_match_autograd_of_the_dense_formula():
    logits, labels, mask = _data(seed=3)
    anchor = _data(seed=4)[0]
    g = torch.Generator().manual_seed(5)
    w1, w2, w3 = (torch.randn(3, 5, generator=g, dtype=torch.float64) for _ in range(3))
    x = logits.clone().requires_grad_(True)
    out = token_logprobs(x, labels, mask, return_entropy=True, anchor_logits=anchor, chunk_rows=2,
                         temperature=1.3)
    ((out.logps * w1).sum() + (out.entropy * w2).sum() + (out.kl * w3).sum()).backward()
    y = logits.clone().requires_grad_(True)
    lp = torch.log_softmax(y / 1.3, -1)
    la = torch.log_softmax(anchor / 1.3, -1)
    sel = lp.gather(-1, labels[..., None])[..., 0]
    ent = -(lp.exp() * lp).sum(-1)
    kl = (la.exp() * (la - lp)).sum(-1)
    m = mask.double()
    ((sel * w1 * m).sum() + (ent * w2 * m).sum() + (kl * w3 * m).sum()).backward()
    torch.testing.assert_close(x.grad, y.grad, rtol=1e-10, atol=1e-12)


def test_gradcheck_float64():
    logits, labels, mask = _data(b=2, t=3, v=4, seed=6)
    anchor = _data(b=2, t=3, v=4, seed=7)[0]

    def f(z):
        o = token_logprobs(z, labels, mask, return_entropy=True, anchor_logits=anchor, chunk_rows=2)
        return o.logps, o.entropy, o.kl

    assert torch.autograd.gradcheck(f, (logits.clone().requires_grad_(True),))


@pytest.mark.parametrize("garbage", [float("nan"), 1e4, -1e4, float("inf")])
def test_masked_positions_never_leak(garbage):
    logits, labels, mask = _data(seed=8)
    labels = torch.where(mask, labels, torch.full_like(labels, -100))  # ignored labels may be anything
    anchor = _data(seed=9)[0]
    clean = logits.clone().requires_grad_(True)
    dirty = torch.where(mask[..., None], logits, torch.full_like(logits, garbage)).requires_grad_(True)
    outs = []
    for x in (clean, dirty):
        o = token_logprobs(x, labels, mask, return_entropy=True, anchor_logits=anchor, chunk_rows=4)
        (o.logps.sum() + o.entropy.sum() + o.kl.sum()).backward()
        outs.append(o)
    for a, b in zip(outs[0][:1] + outs[0][2:], outs[1][:1] + outs[1][2:]):
        assert torch.equal(a, b)
    assert torch.equal(clean.grad, dirty.grad)
    assert bool((dirty.grad[~mask] == 0).all())


def test_ignore_index_masks_like_mask():
    logits, labels, mask = _data(seed=10)
    ignored = torch.where(mask, labels, torch.full_like(labels, -100))
    a = token_logprobs(logits, ignored)
    b = token_logprobs(logits, labels, mask)
    assert torch.equal(a.logps, b.logps) and torch.equal(a.mask, b.mask)


def test_half_precision_is_computed_in_float32():
    logits, labels, mask = _data(b=2, t=4, v=50, seed=11, dtype=torch.float32)
    for dt in (torch.bfloat16, torch.float16):
        x = logits.to(dt).requires_grad_(True)
        out = token_logprobs(x, labels, mask, return_entropy=True)
        assert out.logps.dtype == torch.float32
        ref = token_logprobs(x.detach().float(), labels, mask)
        torch.testing.assert_close(out.logps, ref.logps, rtol=1e-6, atol=1e-6)
        out.logps.sum().backward()
        assert x.grad.dtype == dt and bool(torch.isfinite(x.grad).all())


def test_bad_inputs_name_the_argument():
    logits, labels, mask = _data()
    bad = logits.clone()
    bad[0, 1, 2] = float("nan")
    with pytest.raises(LossInputError, match="^logits:"):
        token_logprobs(bad, labels, mask)
    with pytest.raises(LossInputError, match="^labels:"):
        token_logprobs(logits, torch.full_like(labels, 99), mask)
    with pytest.raises(LossInputError, match="^labels:"):
        token_logprobs(logits, labels[:, :-1], mask)
    with pytest.raises(LossInputError, match="^mask:"):
        token_logprobs(logits, labels, mask[:, :-1])
    with pytest.raises(LossInputError, match="^temperature:"):
        token_logprobs(logits, labels, mask, temperature=0.0)


def test_empty_completion_scores_zero_and_dpo_is_log2():
    logits, labels, _ = _data(b=2, t=4, v=6, seed=12)
    mask = torch.zeros(2, 4, dtype=torch.bool)
    x = logits.clone().requires_grad_(True)
    lp = token_logprobs(x, labels, mask).logps
    for agg in ("sum", "mean", "discounted"):
        s = sequence_scores(lp, mask, aggregation=agg, gamma=0.9)
        assert torch.equal(s, torch.zeros(2, dtype=torch.float64))
    s = sequence_scores(lp, mask, aggregation="mean")
    loss = losskit.dpo(s[:1], s[1:], s[:1].detach(), s[1:].detach())
    assert loss.item() == pytest.approx(math.log(2), abs=1e-15)
    loss.backward()
    assert bool((x.grad == 0).all())


# --------------------------------------------------------------------------------------- layer 2
def test_sequence_scores_aggregations_against_loops():
    g = torch.Generator().manual_seed(13)
    lp, ref, w = (-torch.rand(3, 6, generator=g, dtype=torch.float64) for _ in range(3))
    mask = torch.tensor([[0, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1], [0, 0, 1, 0, 0, 0]], dtype=torch.bool)
    prefix = torch.tensor([2, 4, 0])
    x = ((lp - ref) * -w).numpy()
    m = mask.numpy()
    exp = {"sum": [], "mean": [], "shared_tail": [], "discounted": []}
    for i in range(3):
        vals = x[i][m[i]]
        exp["sum"].append(vals.sum())
        exp["mean"].append(vals.mean())
        exp["shared_tail"].append(vals[:prefix[i]].sum() + 0.3 * vals[prefix[i]:].sum())
        exp["discounted"].append(sum(0.9 ** k * v for k, v in enumerate(vals)))
    for agg, e in exp.items():
        s = sequence_scores(lp, mask, ref_token_logps=ref, token_weights=-w, aggregation=agg, alpha=0.3,
                            prefix_length=prefix, gamma=0.9)
        np.testing.assert_allclose(s.numpy(), e, rtol=1e-12)


def test_shared_length_and_nan_outside_mask():
    cm = torch.tensor([[1, 1, 1, 0], [1, 0, 0, 0]], dtype=torch.bool)
    rm = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1]], dtype=torch.bool)
    assert shared_length(cm, rm).tolist() == [2, 1]
    lp = torch.tensor([[-1.0, -2.0, -3.0, float("nan")], [-1.0, float("nan"), 0.0, 1.0]])
    assert sequence_scores(lp, cm).tolist() == [-6.0, -1.0]


def test_transforms_are_f_prime_of_the_ratio():
    u = torch.linspace(-3, 3, 13, dtype=torch.float64)
    t = u.exp()
    torch.testing.assert_close(transform_score(u, "forward_kl"), -1 / t)
    torch.testing.assert_close(transform_score(u, "js"), torch.log(2 * t / (1 + t)))
    torch.testing.assert_close(transform_score(u, "alpha", alpha=0.4), (1 - t ** -0.4) / 0.4)
    torch.testing.assert_close(transform_score(u, "alpha", alpha=1e-9), u, rtol=1e-7, atol=1e-7)
    assert torch.equal(transform_score(u, "reverse_kl"), u)


def test_geometric_anchor():
    a, b = torch.tensor([-1.0, -2.0]), torch.tensor([-3.0, -1.0])
    torch.testing.assert_close(geometric_anchor([a, b], [1.3, -0.3]), 1.3 * a - 0.3 * b)
    with pytest.raises(LossInputError, match="^weights:"):
        geometric_anchor([a, b], [1.0])


def test_end_to_end_dpo_from_logits_matches_dense():
    """token layer -> scores -> head equals the textbook dense computation, value and gradient."""
    logits, labels, mask = _data(b=4, t=5, v=9, seed=14)
    ref_logits = _data(b=4, t=5, v=9, seed=15)[0]
    x = logits.clone().requires_grad_(True)
    lp = token_logprobs(x, labels, mask).logps
    rp = token_logprobs(ref_logits, labels, mask).logps
    s, r = sequence_scores(lp, mask), sequence_scores(rp, mask)
    loss = losskit.dpo(s[:2], s[2:], r[:2], r[2:], beta=0.5)
    loss.backward()
    y = logits.clone().requires_grad_(True)

    def dense(z):
        return (torch.log_softmax(z, -1).gather(-1, labels[..., None])[..., 0] * mask).sum(-1)

    sd, rd = dense(y), dense(ref_logits)
    m = (sd[:2] - rd[:2]) - (sd[2:] - rd[2:])
    ref_loss = -torch.nn.functional.logsigmoid(0.5 * m).mean()
    ref_loss.backward()
    torch.testing.assert_close(loss, ref_loss, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(x.grad, y.grad, rtol=1e-10, atol=1e-12)


def test_extreme_logits_in_half_precision_stay_finite():
    logits, labels, mask = _data(b=2, t=4, v=30, seed=16, dtype=torch.float32)
    big = (logits.sign() * 1e4 + logits)
    ref = token_logprobs(big, labels, mask, return_entropy=True)
    assert bool(torch.isfinite(ref.logps).all()) and bool(torch.isfinite(ref.entropy).all())
    for dt in (torch.bfloat16, torch.float16):
        x = big.to(dt).requires_grad_(True)
        out = token_logprobs(x, labels, mask, return_entropy=True)
        assert bool(torch.isfinite(out.logps).all()) and bool(torch.isfinite(out.entropy).all())
        (out.logps.sum() + out.entropy.sum()).backward()
        assert bool(torch.isfinite(x.grad).all())


def test_token_logprobs_value_checks_skip_meta_tensors():
    """Value checks go through the validation mode: meta tensors (no data) are not read (was .item())."""
    logits, labels, mask = _data()
    out = token_logprobs(logits.to("meta"), labels.to("meta"), mask.to("meta"))
    assert out.logps.device.type == "meta" and out.logps.shape == labels.shape
    bad = labels.clone()
    bad[0, 0] = 99
    with pytest.raises(LossInputError, match="^labels:"):
        token_logprobs(logits, bad, mask)
    with losskit.validation(False):
        token_logprobs(logits, torch.where(mask, labels, torch.full_like(labels, 99)), mask)


def test_sparsepo_token_masks_are_weights_in_the_unit_interval():
    ex = losskit.get("sparsepo").make_example(torch.float64)
    w = torch.rand_like(ex.inputs["chosen_logratios"])
    ex.call(losskit.sparsepo, chosen_reward_mask=w)
    for name in ("chosen_reward_mask", "rejected_kl_mask"):
        with pytest.raises(LossInputError, match=f"^{name}:"):
            ex.call(losskit.sparsepo, **{name: w + 1})
        with pytest.raises(LossInputError, match=f"^{name}:"):
            ex.call(losskit.sparsepo, **{name: w[:, :-1]})
