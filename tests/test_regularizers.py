"""Regularisers against independent computations (numpy/scipy) and their defining properties."""

import copy
import math

import numpy as np
import pytest
import scipy.special
import scipy.stats
import torch

import losskit
from losskit.regularizers import (
    SAF,
    ema_update,
    entropy,
    fisher_diagonal,
    fisher_penalty,
    hessian_gradient_alignment,
)


def _z(seed=0, n=6, k=5):
    g = torch.Generator().manual_seed(seed)
    return 3 * torch.randn(n, k, generator=g, dtype=torch.float64)


def test_logit_z_loss_matches_numpy():
    z = _z()
    ref = 1e-4 * scipy.special.logsumexp(z.numpy(), axis=-1) ** 2
    np.testing.assert_allclose(losskit.logit_z_loss(z, reduction="none").numpy(), ref, rtol=1e-12)
    assert losskit.logit_z_loss(z, coefficient=1.0).item() == pytest.approx((ref / 1e-4).mean(), rel=1e-12)


def test_confidence_penalty_is_minus_beta_entropy():
    z = _z(1)
    h = scipy.stats.entropy(scipy.special.softmax(z.numpy(), axis=-1), axis=-1)
    np.testing.assert_allclose(losskit.confidence_penalty(z, beta=0.3, reduction="none").numpy(), -0.3 * h,
                               rtol=1e-12)


def test_attention_entropy_matches_numpy_and_handles_zeros():
    a = torch.softmax(_z(2).reshape(2, 3, 5), -1)
    ref = (a.numpy() * np.log(a.numpy())).sum(-1).mean(-1)
    np.testing.assert_allclose(losskit.attention_entropy(a, lam=1.0, reduction="none").numpy(), ref, rtol=1e-12)
    one_hot = torch.tensor([[[1.0, 0.0, 0.0]]], dtype=torch.float64, requires_grad=True)
    out = losskit.attention_entropy(one_hot)
    assert out.item() == 0.0
    uniform = torch.full((1, 1, 4), 0.25, dtype=torch.float64)
    assert losskit.attention_entropy(uniform, lam=1.0).item() == pytest.approx(-math.log(4))


def test_eata_weights_filter_and_stop_gradient():
    z = torch.tensor([[5.0, 0.0, 0.0, 0.0], [0.1, 0.0, 0.0, 0.0]], dtype=torch.float64, requires_grad=True)
    k = 4
    p = scipy.special.softmax(z.detach().numpy(), axis=-1)
    h = scipy.stats.entropy(p, axis=-1)
    e0 = 0.4 * math.log(k)
    assert h[0] < e0 < h[1]  # the first sample is reliable, the second filtered out
    expected = np.where(h < e0, np.exp(-(h - e0)) * h, 0.0)
    out = losskit.eata_entropy(z, reduction="none")
    np.testing.assert_allclose(out.detach().numpy(), expected, rtol=1e-12)
    out.sum().backward()
    # gradient = S * dH/dz with S held constant
    z2 = z.detach().clone().requires_grad_(True)
    h2 = -(torch.softmax(z2, -1) * torch.log_softmax(z2, -1)).sum(-1)
    (h2[0] * math.exp(-(h[0] - e0))).backward()
    torch.testing.assert_close(z.grad, z2.grad)


def test_fisher_penalty_matches_hand_computation():
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2)
    anchors = {n: p.detach().clone() for n, p in model.named_parameters()}
    x = torch.randn(8, 3)
    fisher = fisher_diagonal(model, [x[:4], x[4:]], lambda m, b: entropy(m(b)).mean())
    # independent: squared gradients of each batch's entropy, averaged
    grads = []
    for b in (x[:4], x[4:]):
        m2 = copy.deepcopy(model)
        logp = torch.log_softmax(m2(b), -1)
        (-(logp.exp() * logp).sum(-1).mean()).backward()
        grads.append({n: p.grad.clone() ** 2 for n, p in m2.named_parameters()})
    for n in fisher:
        torch.testing.assert_close(fisher[n], (grads[0][n] + grads[1][n]) / 2)
    assert fisher_penalty(model, anchors, fisher).item() == 0.0
    with torch.no_grad():
        model.weight.add_(0.1)
    expected = 2000.0 * (fisher["weight"] * 0.01).sum()
    torch.testing.assert_close(fisher_penalty(model, anchors, fisher), expected)


def test_saf_uses_outputs_from_lag_epochs_ago():
    saf = SAF(num_samples=4, num_classes=3, lam=1.0, tau=2.0, lag=2)
    idx = torch.tensor([0, 2])
    history = []
    for epoch in range(4):
        logits = torch.randn(2, 3, dtype=torch.float32) + epoch
        reg = saf(logits, index=idx, reduction="none")
        history.append(logits)
        if epoch < 2:
            assert torch.equal(reg, torch.zeros(2))
        else:
            past = history[epoch - 2]
            pt = torch.softmax(past / 2.0, -1)
            ref = (pt * (torch.log_softmax(past / 2.0, -1) - torch.log_softmax(logits / 2.0, -1))).sum(-1)
            torch.testing.assert_close(reg, ref)
        saf.end_epoch()
    sd = saf.state_dict()
    saf2 = SAF(num_samples=4, num_classes=3, lam=1.0, tau=2.0, lag=2)
    saf2.load_state_dict(sd)
    x = torch.randn(2, 3)
    torch.testing.assert_close(saf(x, index=idx), saf2(x, index=idx))


def test_saf_mesa_and_ema_update():
    student, teacher = torch.nn.Linear(2, 3), torch.nn.Linear(2, 3)
    before = teacher.weight.detach().clone()
    ema_update(teacher, student, decay=0.9)
    torch.testing.assert_close(teacher.weight, 0.9 * before + 0.1 * student.weight.detach())
    mesa = SAF(4, 3, mode="mesa", lam=1.0, tau=1.0)
    x = torch.randn(5, 2)
    out = mesa(student(x), teacher_logits=teacher(x))
    ref = losskit.kl_divergence(teacher(x).detach(), student(x))
    torch.testing.assert_close(out, ref)


def test_hessian_alignment_exact_matches_closed_form_on_quadratics():
    # R_e(w) = 0.5 w^T A_e w - b_e^T w: grad = A_e w - b_e, Hessian = A_e, both in closed form
    g = torch.Generator().manual_seed(0)
    w = torch.randn(3, generator=g, dtype=torch.float64, requires_grad=True)
    mats = []
    for _ in range(3):
        m = torch.randn(3, 3, generator=g, dtype=torch.float64)
        mats.append((m @ m.T + torch.eye(3, dtype=torch.float64), torch.randn(3, generator=g, dtype=torch.float64)))
    losses = [0.5 * w @ a @ w - b @ w for a, b in mats]
    got = hessian_gradient_alignment(losses, [w], alpha=0.7, beta=0.3)
    wd = w.detach()
    gs = [a @ wd - b for a, b in mats]
    hg = [a @ gi for (a, _), gi in zip(mats, gs)]
    gbar, hbar = sum(gs) / 3, sum(hg) / 3
    ref = sum((0.5 * wd @ a @ wd - b @ wd) for a, b in mats)
    ref = ref + sum(0.7 * (gi - gbar).square().sum() + 0.3 * (h - hbar).square().sum() for gi, h in zip(gs, hg))
    torch.testing.assert_close(got.detach(), ref)
    got.backward()  # differentiable
    assert torch.isfinite(w.grad).all()


def test_hessian_alignment_hutchinson_is_unbiased_for_the_diagonal():
    w = torch.zeros(2, dtype=torch.float64, requires_grad=True)
    a1 = torch.tensor([[2.0, 0.5], [0.5, 1.0]], dtype=torch.float64)
    a2 = torch.tensor([[1.0, 0.0], [0.0, 3.0]], dtype=torch.float64)
    gen = torch.Generator().manual_seed(0)
    vals = []
    for _ in range(200):
        losses = [0.5 * w @ a1 @ w, 0.5 * w @ a2 @ w]
        vals.append(hessian_gradient_alignment(losses, [w], alpha=0.0, beta=1.0, mode="hutchinson",
                                               generator=gen).item())
    # v * (A1 v) = diag(A1) + 0.5 s [1, 1] with s = v1 v2 = +-1 (A2 is diagonal: exact). The penalty is
    # 2 [(0.5 + s/4)^2 + (-1 + s/4)^2] = 2.75 - s/2, so its mean is 2.75: the squared spread of the true
    # diagonals (2.5) plus the probe variance (0.25).
    d1, d2 = torch.diag(a1), torch.diag(a2)
    spread = ((d1 - (d1 + d2) / 2) ** 2 + (d2 - (d1 + d2) / 2) ** 2).sum().item()
    assert spread == pytest.approx(2.5)
    assert set(np.round(vals, 12)) <= {2.25, 3.25}
    assert np.mean(vals) == pytest.approx(2.75, abs=4 * 0.5 / np.sqrt(len(vals)))


def test_bad_inputs_raise():
    with pytest.raises(losskit.LossInputError, match="^env_losses"):
        hessian_gradient_alignment([torch.tensor(1.0)], [])
    with pytest.raises(losskit.LossInputError, match="^index"):
        SAF(4, 3)(torch.randn(2, 3))


def test_mixup_objective_is_the_mixture_of_the_two_losses():
    from losskit.regularizers import mix_hidden, mixup

    g = torch.Generator().manual_seed(3)
    x = torch.randn(8, 4, generator=g, dtype=torch.float64)
    y = torch.randint(0, 3, (8,), generator=g)
    batch = mixup(x, y, alpha=0.4, num_classes=3, generator=g)
    assert 0 <= batch.lam <= 1
    torch.testing.assert_close(batch.inputs, batch.lam * x + (1 - batch.lam) * x[batch.perm])
    w = torch.randn(4, 3, generator=g, dtype=torch.float64)
    z = batch.inputs @ w
    mixed = losskit.cross_entropy(z, batch.target)
    ref = batch.lam * torch.nn.functional.cross_entropy(z, y) + (1 - batch.lam) * torch.nn.functional.cross_entropy(
        z, y[batch.perm])
    torch.testing.assert_close(mixed, ref)
    h = torch.randn(8, 5, dtype=torch.float64)
    torch.testing.assert_close(mix_hidden(h, batch), batch.lam * h + (1 - batch.lam) * h[batch.perm])
    # reproducible with a generator
    b2 = mixup(x, y, alpha=0.4, num_classes=3, generator=torch.Generator().manual_seed(3))
    b3 = mixup(x, y, alpha=0.4, num_classes=3, generator=torch.Generator().manual_seed(3))
    assert b2.lam == b3.lam and torch.equal(b2.perm, b3.perm)
    with pytest.raises(losskit.LossInputError, match="^num_classes"):
        mixup(x, y)


def test_entropy_terms_have_finite_gradients_at_masked_logits():
    # -inf marks a masked class: the entropy ignores it and its gradient must stay finite (was NaN)
    logits = torch.tensor([[0.3, -float("inf"), 1.2], [2.0, 0.1, -float("inf")]], requires_grad=True)
    for term in (losskit.confidence_penalty(logits, beta=0.1), losskit.eata_entropy(logits)):
        (g,) = torch.autograd.grad(term, logits)
        assert torch.isfinite(g).all() and (g[torch.isinf(logits)] == 0).all()
    # and the value equals the entropy over the unmasked classes
    p = torch.softmax(torch.tensor([0.3, 1.2]), -1)
    h = -(p * p.log()).sum()
    ref = -0.1 * (h + -(torch.softmax(torch.tensor([2.0, 0.1]), -1) * torch.log_softmax(torch.tensor([2.0, 0.1]), -1)).sum()) / 2
    torch.testing.assert_close(losskit.confidence_penalty(logits.detach(), beta=0.1), ref)


def test_regularizer_option_domains():
    # was: confidence_penalty(beta=-1) rewarded confident predictions (a negative penalty)
    z = _z()
    for fn, opt in ((losskit.confidence_penalty, {"beta": -1.0}), (losskit.logit_z_loss, {"coefficient": -1.0}),
                    (losskit.eata_entropy, {"e_margin": 0.0}),
                    (losskit.attention_entropy, {"lam": -0.1})):
        arg = torch.softmax(z, -1) if fn is losskit.attention_entropy else z
        with pytest.raises(losskit.LossInputError, match=f"^{next(iter(opt))}:"):
            fn(arg, **opt)
    model = torch.nn.Linear(3, 2)
    with pytest.raises(losskit.LossInputError, match="^beta:"):
        fisher_penalty(model, {}, {}, beta=-1.0)
    with pytest.raises(losskit.LossInputError, match="^tau:"):
        SAF(4, 3, tau=0.0)
    with pytest.raises(losskit.LossInputError, match="^decay:"):
        ema_update(model, model, decay=1.5)


@pytest.mark.parametrize("name", ["confidence_penalty", "eata_entropy", "logit_z_loss"])
def test_fully_masked_logit_row_raises(name):
    # was: NaN (confidence_penalty, eata_entropy) / +inf (logit_z_loss) for a row with every entry -inf
    z = _z().clone()
    z[1] = -math.inf
    with pytest.raises(losskit.LossInputError, match="^logits:"):
        getattr(losskit, name)(z)
