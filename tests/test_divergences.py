"""Categorical divergences and f-generators against SciPy, NumPy float64 formulas and the catalogue."""

import math

import numpy as np
import pytest
import scipy.optimize
import scipy.spatial.distance
import scipy.special
import scipy.stats
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import losskit
from losskit import LossInputError
from losskit.divergences import generators as G

P = [0.5, 0.3, 0.2]
Q = [0.2, 0.2, 0.6]
KNOWN = {  # catalogue, independent float64 computations
    "kl_divergence": 0.360062, "reverse_kl_divergence": 0.394816, "js_divergence": 0.0905658,
    "total_variation": 0.4, "squared_hellinger": 0.184826, "pearson_chi2": 0.766667,
    "jeffreys_divergence": 0.754879, "cauchy_schwarz_divergence": 0.757366,
}


def _t(x):
    return torch.tensor([x], dtype=torch.float64)


@pytest.mark.parametrize("name", sorted(KNOWN))
def test_catalogue_known_values(name):
    got = getattr(losskit, name)(_t(P), _t(Q), input_space="probs").item()
    assert got == pytest.approx(KNOWN[name], abs=1e-6)


def test_catalogue_known_values_hand_computed_here():
    # the same numbers from plain Python floats (guards the catalogue itself)
    p, q = np.array(P), np.array(Q)
    assert float(np.sum(p * np.log(p / q))) == pytest.approx(KNOWN["kl_divergence"], abs=1e-6)
    cs = -2 * np.log(np.sum(p * q)) + np.log(np.sum(p * p)) + np.log(np.sum(q * q))
    assert float(cs) == pytest.approx(KNOWN["cauchy_schwarz_divergence"], abs=1e-6)


def test_js_of_disjoint_one_hots_is_log2_exactly():
    p = torch.tensor([[0.0, -math.inf, -math.inf]], dtype=torch.float64)
    q = torch.tensor([[-math.inf, 0.0, -math.inf]], dtype=torch.float64)
    assert losskit.js_divergence(p, q, input_space="log_probs").item() == pytest.approx(math.log(2), abs=1e-15)
    assert losskit.total_variation(p, q, input_space="log_probs").item() == pytest.approx(1.0, abs=1e-15)
    assert losskit.squared_hellinger(p, q, input_space="log_probs").item() == pytest.approx(2.0, abs=1e-15)


# ------------------------------------------------------------------------------------------ SciPy
def _random_dists(seed, n=6, k=7):
    rng = np.random.default_rng(seed)
    p = rng.dirichlet(np.ones(k) * 0.7, size=n)
    q = rng.dirichlet(np.ones(k) * 0.7, size=n)
    return p, q


def _np_refs(p, q):
    """Independent float64 NumPy/SciPy values, one per row."""
    a = 0.3
    return {
        "kl_divergence": scipy.special.rel_entr(p, q).sum(1),
        "reverse_kl_divergence": scipy.stats.entropy(q, p, axis=1),
        "js_divergence": scipy.spatial.distance.jensenshannon(p, q, axis=1) ** 2,
        "total_variation": 0.5 * np.abs(p - q).sum(1),
        "squared_hellinger": ((np.sqrt(p) - np.sqrt(q)) ** 2).sum(1),
        "pearson_chi2": ((p - q) ** 2 / q).sum(1),
        "neyman_chi2": ((p - q) ** 2 / p).sum(1),
        "jeffreys_divergence": scipy.special.rel_entr(p, q).sum(1) + scipy.special.rel_entr(q, p).sum(1),
        "cauchy_schwarz_divergence": (-2 * np.log((p * q).sum(1)) + np.log((p * p).sum(1))
                                      + np.log((q * q).sum(1))),
        ("alpha_divergence", a): ((p ** a * q ** (1 - a)).sum(1) - 1) / (a * (a - 1)),
        ("renyi_divergence", 2.0): np.log((p ** 2 / q).sum(1)),
        ("renyi_divergence", 0.5): -2 * np.log(np.sqrt(p * q).sum(1)),
        ("generalized_js_divergence", 0.2): (0.2 * scipy.special.rel_entr(p, 0.2 * p + 0.8 * q).sum(1)
                                             + 0.8 * scipy.special.rel_entr(q, 0.2 * p + 0.8 * q).sum(1)),
        ("skew_kl_divergence", 0.1): scipy.special.rel_entr(p, 0.1 * p + 0.9 * q).sum(1),
    }


_OPT = {"alpha_divergence": "alpha", "renyi_divergence": "alpha", "generalized_js_divergence": "pi",
        "skew_kl_divergence": "alpha"}


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("space", ["probs", "log_probs", "logits"])
def test_against_scipy_and_numpy(seed, space):
    p, q = _random_dists(seed)
    tp, tq = torch.tensor(p), torch.tensor(q)
    if space == "log_probs":
        tp, tq = tp.log(), tq.log()
    elif space == "logits":  # arbitrary shifts per row: logits of the same distributions
        tp, tq = tp.log() + 3.0, tq.log() - torch.arange(6.0, dtype=torch.float64)[:, None]
    for key, ref in _np_refs(p, q).items():
        name, opts = (key, {}) if isinstance(key, str) else (key[0], {_OPT[key[0]]: key[1]})
        got = getattr(losskit, name)(tp, tq, input_space=space, reduction="none", **opts)
        np.testing.assert_allclose(got.numpy(), ref, rtol=1e-10, atol=1e-13, err_msg=str(key))


def test_f_divergence_named_generators_match_named_objectives():
    p, q = _random_dists(5)
    tp, tq = torch.tensor(p), torch.tensor(q)
    pairs = {"kl": "kl_divergence", "reverse_kl": "reverse_kl_divergence", "js": "js_divergence",
             "tv": "total_variation", "hellinger": "squared_hellinger", "pearson": "pearson_chi2",
             "neyman": "neyman_chi2", "jeffreys": "jeffreys_divergence"}
    for gen, name in pairs.items():
        torch.testing.assert_close(losskit.f_divergence(tp, tq, generator=gen, input_space="probs"),
                                   getattr(losskit, name)(tp, tq, input_space="probs"))


def test_user_generator_from_plain_f_uses_the_generic_perspective():
    p, q = _random_dists(6)
    gen = losskit.FGenerator("my_kl", f=lambda t: t * torch.log(t), f0=0.0)
    got = losskit.f_divergence(torch.tensor(p), torch.tensor(q), generator=gen, input_space="probs",
                               reduction="none")
    np.testing.assert_allclose(got.numpy(), scipy.special.rel_entr(p, q).sum(1), rtol=1e-10)


def test_alpha_and_renyi_limits():
    p, q = _random_dists(7)
    tp, tq = torch.tensor(p), torch.tensor(q)
    kl = scipy.special.rel_entr(p, q).sum(1)
    for a in (1 - 1e-6, 1 + 1e-6):
        np.testing.assert_allclose(losskit.alpha_divergence(tp, tq, alpha=a, input_space="probs",
                                                            reduction="none").numpy(), kl, rtol=1e-4)
        np.testing.assert_allclose(losskit.renyi_divergence(tp, tq, alpha=a, input_space="probs",
                                                            reduction="none").numpy(), kl, rtol=1e-4)
    np.testing.assert_allclose(losskit.alpha_divergence(tp, tq, alpha=1e-7, input_space="probs",
                                                        reduction="none").numpy(),
                               scipy.special.rel_entr(q, p).sum(1), rtol=1e-4)
    torch.testing.assert_close(losskit.alpha_divergence(tp, tq, alpha=0.5, input_space="probs"),
                               2 * losskit.squared_hellinger(tp, tq, input_space="probs"))
    torch.testing.assert_close(losskit.alpha_divergence(tp, tq, alpha=2.0, input_space="probs"),
                               0.5 * losskit.pearson_chi2(tp, tq, input_space="probs"))
    np.testing.assert_allclose(losskit.renyi_divergence(tp, tq, alpha=math.inf, input_space="probs",
                                                        reduction="none").numpy(), np.log((p / q).max(1)))


def test_any_dim_and_shapes():
    g = torch.Generator().manual_seed(0)
    p, q = torch.randn(3, 5, 4, generator=g, dtype=torch.float64), torch.randn(3, 5, 4, generator=g,
                                                                               dtype=torch.float64)
    for fn in (losskit.kl_divergence, losskit.js_divergence, losskit.renyi_divergence,
               losskit.cauchy_schwarz_divergence, losskit.pearson_chi2):
        a = fn(p, q, dim=1, reduction="none")
        b = fn(p.transpose(1, 2), q.transpose(1, 2), dim=-1, reduction="none")
        assert a.shape == (3, 4)
        torch.testing.assert_close(a, b)


# ------------------------------------------------------------------------------ zeros and infinities
def test_masked_logits_finite_where_finite_inf_where_infinite():
    ninf = -math.inf
    p = torch.tensor([[1.0, 0.5, ninf, 0.0]], dtype=torch.float64, requires_grad=True)
    q = torch.tensor([[0.3, ninf, ninf, 1.0]], dtype=torch.float64, requires_grad=True)
    finite_q0 = ["total_variation", "squared_hellinger", "js_divergence", "cauchy_schwarz_divergence",
                 "neyman_chi2", "reverse_kl_divergence", "generalized_js_divergence", "skew_kl_divergence"]
    infinite_q0 = ["kl_divergence", "pearson_chi2", "jeffreys_divergence"]
    for name in finite_q0:  # p has mass where q has none; these stay finite (q = 0 < p)
        d = getattr(losskit, name)(p, q)
        assert torch.isfinite(d), name
        (gp, gq) = torch.autograd.grad(d, (p, q))
        assert torch.isfinite(gp).all() and torch.isfinite(gq).all(), name
    for name in infinite_q0:
        assert getattr(losskit, name)(p, q).item() == math.inf, name
    # both zero at index 2: KL is finite when q's support covers p's
    p2 = torch.tensor([[1.0, ninf, 0.0]], dtype=torch.float64, requires_grad=True)
    q2 = torch.tensor([[0.2, ninf, 0.5]], dtype=torch.float64)
    d = losskit.kl_divergence(p2, q2) + losskit.pearson_chi2(p2, q2) + losskit.renyi_divergence(p2, q2, alpha=3.0)
    assert torch.isfinite(d)
    (g,) = torch.autograd.grad(d, p2)
    assert torch.isfinite(g).all() and g[0, 1] == 0
    # reverse KL, Neyman, Jeffreys are infinite where q > 0 = p
    q3 = torch.tensor([[0.2, 0.1, 0.5]], dtype=torch.float64)
    for name in ("reverse_kl_divergence", "neyman_chi2", "jeffreys_divergence"):
        assert getattr(losskit, name)(p2, q3).item() == math.inf, name
    assert losskit.renyi_divergence(p2, q3, alpha=0.5).item() < math.inf
    # zero probabilities (input_space='probs') behave like -inf logits
    pp, qq = torch.softmax(p2.detach(), -1), torch.softmax(q2, -1)
    torch.testing.assert_close(losskit.kl_divergence(pp, qq, input_space="probs"),
                               losskit.kl_divergence(p2.detach(), q2))


def test_bad_inputs_name_the_argument():
    p = torch.randn(3, 4, dtype=torch.float64)
    with pytest.raises(LossInputError, match="^pi:"):
        losskit.generalized_js_divergence(p, p, pi=1.5)
    with pytest.raises(LossInputError, match="^alpha:"):
        losskit.renyi_divergence(p, p, alpha=-1.0)
    with pytest.raises(LossInputError, match="^generator:"):
        losskit.f_divergence(p, p, generator="kll")
    with pytest.raises(LossInputError, match="^p:"):
        losskit.kl_divergence(p.softmax(-1).log() + 0.5, p.log_softmax(-1), input_space="log_probs")


# ----------------------------------------------------------------------------------- hypothesis
_SYMMETRIC = ["js_divergence", "total_variation", "squared_hellinger", "jeffreys_divergence",
              "cauchy_schwarz_divergence"]
_ALL = sorted(KNOWN) + ["neyman_chi2", "alpha_divergence", "renyi_divergence", "generalized_js_divergence",
                        "skew_kl_divergence", "f_divergence"]
logit_rows = st.lists(st.floats(-8, 8), min_size=2, max_size=6)


def _pair_from(xs, ys):
    k = min(len(xs), len(ys))
    return (torch.tensor([xs[:k]], dtype=torch.float64), torch.tensor([ys[:k]], dtype=torch.float64))


@settings(max_examples=60, deadline=None)
@given(logit_rows, logit_rows)
def test_axioms_property_based(xs, ys):
    p, q = _pair_from(xs, ys)
    for name in _ALL:
        fn = getattr(losskit, name)
        d = fn(p, q).item()
        assert d >= -1e-12, (name, d)
        assert abs(fn(p, p).item()) < 1e-10, name
        assert abs(fn(p, p + 3.7).item()) < 1e-10, name  # logits: a shift is the same distribution
    for name in _SYMMETRIC:
        fn = getattr(losskit, name)
        assert fn(p, q).item() == pytest.approx(fn(q, p).item(), rel=1e-9, abs=1e-12), name
    # skew JS: swapping the arguments swaps the weights; Renyi 1/2 and alpha 1/2 are symmetric
    assert losskit.generalized_js_divergence(p, q, pi=0.3).item() == pytest.approx(
        losskit.generalized_js_divergence(q, p, pi=0.7).item(), rel=1e-9, abs=1e-12)
    for name in ("renyi_divergence", "alpha_divergence"):
        fn = getattr(losskit, name)
        assert fn(p, q, alpha=0.5).item() == pytest.approx(fn(q, p, alpha=0.5).item(), rel=1e-9, abs=1e-12)
    assert losskit.generalized_js_divergence(p, q, pi=0.3).item() <= -(0.3 * math.log(0.3) + 0.7 * math.log(0.7)) + 1e-12
    assert losskit.js_divergence(p, q).item() <= math.log(2) + 1e-12
    assert losskit.total_variation(p, q).item() <= 1 + 1e-12
    assert losskit.squared_hellinger(p, q).item() <= 2 + 1e-12
    # Pinsker: TV <= sqrt(KL / 2); and H^2 <= 2 TV... (a second, independent inequality set)
    # (KL may round to -1e-16 for near-identical rows: clamp before the square root)
    # KL carries ~1e-16 of rounding, so sqrt(KL / 2) is known to ~1e-8: compare with that resolution
    assert losskit.total_variation(p, q).item() <= math.sqrt(max(losskit.kl_divergence(p, q).item(), 0.0) / 2) + 1e-7
    assert losskit.squared_hellinger(p, q).item() <= 2 * losskit.total_variation(p, q).item() + 1e-9


# ------------------------------------------------------------------------------------ generators
_GENS = [G.KL, G.REVERSE_KL, G.JS, G.TV, G.HELLINGER, G.PEARSON, G.NEYMAN, G.JEFFREYS,
         G.alpha_generator(0.3), G.alpha_generator(2.5), G.alpha_generator(-0.5), G.skew_js_generator(0.2)]


@pytest.mark.parametrize("gen", _GENS, ids=lambda g: g.name)
def test_generator_is_convex_zero_at_one_and_limits(gen):
    t = torch.linspace(0.05, 20, 400, dtype=torch.float64)
    assert abs(gen.f(torch.ones((), dtype=torch.float64)).item()) < 1e-15
    f = gen.f(t).numpy()
    assert (np.diff(f, 2) >= -1e-12).all()  # convex on a grid
    f0 = gen.value_at_zero()
    at0 = gen.f(torch.tensor(0.0, dtype=torch.float64)).item()  # inf == inf where the limit is infinite
    assert at0 == pytest.approx(f0, abs=1e-12) or at0 == f0
    big = 1e12
    slope = gen.f(torch.tensor(big, dtype=torch.float64)).item() / big
    assert (math.isinf(gen.slope_inf) and slope > 1.0) or slope == pytest.approx(gen.slope_inf, abs=1e-3)


@pytest.mark.parametrize("gen", [g for g in _GENS if g.name != "tv"], ids=lambda g: g.name)
def test_conjugate_fenchel_young_and_numerical_sup(gen):
    t = torch.tensor([0.2, 0.7, 1.0, 1.8, 4.0], dtype=torch.float64)
    u = gen.f_prime(t)
    # Fenchel-Young equality at u = f'(t)
    torch.testing.assert_close(gen.conjugate(u), t * u - gen.f(t), rtol=1e-9, atol=1e-10)
    # f*(u) = sup_t u t - f(t), numerically (bounded scalar search on log t)
    for ui in u.tolist():
        res = scipy.optimize.minimize_scalar(
            lambda s, ui=ui: -(ui * math.exp(s) - gen.f(torch.tensor(math.exp(s), dtype=torch.float64)).item()),
            bounds=(-12, 8), method="bounded", options={"xatol": 1e-10})
        assert gen.conjugate(torch.tensor(ui, dtype=torch.float64)).item() == pytest.approx(-res.fun, abs=1e-6)
    # the activation maps R into the domain of f*: conjugate finite there
    v = torch.linspace(-30, 30, 61, dtype=torch.float64)
    assert torch.isfinite(gen.conjugate(gen.activation(v))).all()


def test_tv_conjugate_on_its_domain():
    u = torch.linspace(-0.5, 0.5, 11, dtype=torch.float64)
    torch.testing.assert_close(G.TV.conjugate(u), u)
    assert G.TV.activation(torch.tensor([-50.0, 50.0])).abs().max() <= 0.5


def test_lambertw_matches_scipy():
    a = np.array([-30.0, -2.0, 0.0, 0.5, 1.0, 3.0, 50.0, 700.0])
    ref = np.real(scipy.special.lambertw(np.exp(a)))
    np.testing.assert_allclose(G.lambertw_exp(torch.tensor(a)).numpy(), ref, rtol=1e-12)


def test_probability_inputs_with_zeros_have_finite_gradients():
    p = torch.tensor([[1.0, 0.0, 0.0]], dtype=torch.float64, requires_grad=True)
    q = torch.tensor([[0.5, 0.5, 0.0]], dtype=torch.float64, requires_grad=True)
    for name in _ALL:
        p.grad = q.grad = None
        d = getattr(losskit, name)(p, q, input_space="probs")
        if torch.isfinite(d):
            d.backward()
            assert torch.isfinite(p.grad).all() and torch.isfinite(q.grad).all(), name
    assert losskit.kl_divergence(p, q, input_space="probs").item() == pytest.approx(math.log(2))


# ------------------------------------------------------------------------------ DEPICT clustering
def test_kl_clustering_loss_by_hand():
    rng = np.random.default_rng(8)
    z = rng.normal(size=(9, 4)) * 2
    p = scipy.special.softmax(z, axis=1)
    q = p / np.sqrt(p.sum(0, keepdims=True))
    q = q / q.sum(1, keepdims=True)
    ref = scipy.special.rel_entr(q, p).sum(1)
    zt = torch.tensor(z, requires_grad=True)
    got = losskit.kl_clustering_loss(zt, reduction="none")
    np.testing.assert_allclose(got.detach().numpy(), ref, rtol=1e-10)
    # the default (fixed target) gradient is that of -1/N sum_i sum_k q_ik log p_ik
    got.mean().backward()
    z2 = torch.tensor(z, requires_grad=True)
    (-(torch.tensor(q) * torch.log_softmax(z2, 1)).sum(1).mean()).backward()
    torch.testing.assert_close(zt.grad, z2.grad)
    # the target is balanced: its cluster masses are closer to uniform than p's
    assert np.std(q.sum(0)) < np.std(p.sum(0))


masked_rows = st.lists(st.one_of(st.floats(-6, 6), st.just(-math.inf)), min_size=3, max_size=5)
# when is each divergence infinite, in terms of the supports S_p, S_q
_INF_WHEN = {
    "kl_divergence": lambda sp, sq: bool((sp & ~sq).any()),
    "pearson_chi2": lambda sp, sq: bool((sp & ~sq).any()),
    "reverse_kl_divergence": lambda sp, sq: bool((sq & ~sp).any()),
    "neyman_chi2": lambda sp, sq: bool((sq & ~sp).any()),
    "jeffreys_divergence": lambda sp, sq: bool((sp ^ sq).any()),
    "cauchy_schwarz_divergence": lambda sp, sq: not bool((sp & sq).any()),
    "renyi_divergence": lambda sp, sq: not bool((sp & sq).any()),  # alpha = 1/2
    "js_divergence": lambda sp, sq: False, "total_variation": lambda sp, sq: False,
    "squared_hellinger": lambda sp, sq: False, "generalized_js_divergence": lambda sp, sq: False,
    "skew_kl_divergence": lambda sp, sq: False,
}


@settings(max_examples=80, deadline=None)
@given(masked_rows, masked_rows)
def test_masked_supports_give_inf_exactly_when_infinite(xs, ys):
    k = min(len(xs), len(ys))
    p, q = torch.tensor([xs[:k]], dtype=torch.float64), torch.tensor([ys[:k]], dtype=torch.float64)
    if not (torch.isfinite(p).any() and torch.isfinite(q).any()):
        return
    sp, sq = torch.isfinite(p[0]), torch.isfinite(q[0])
    for name, rule in _INF_WHEN.items():
        pg = p.clone().requires_grad_(True)
        d = getattr(losskit, name)(pg, q)
        assert not torch.isnan(d), name
        assert bool(torch.isinf(d)) == rule(sp, sq), (name, xs, ys)
        if torch.isfinite(d):
            assert d.item() >= -1e-12, name
            (g,) = torch.autograd.grad(d, pg)
            assert torch.isfinite(g).all(), name
