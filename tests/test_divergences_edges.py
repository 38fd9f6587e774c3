"""Edge behaviour of the divergence family: masked rows, dims, validation modes, overflow, f' and domains.

Each test here pins a fixed bug (it fails on the code before the fix) or a declared domain.
"""

import math

import pytest
import torch

import losskit
from losskit import LossInputError
from losskit.divergences import generators as G

CATEGORICAL = ["kl_divergence", "reverse_kl_divergence", "js_divergence", "jeffreys_divergence",
               "skew_kl_divergence", "generalized_js_divergence", "alpha_divergence", "renyi_divergence",
               "f_divergence", "pearson_chi2", "neyman_chi2", "squared_hellinger", "total_variation",
               "cauchy_schwarz_divergence"]


def _pq(dtype=torch.float64):
    g = torch.Generator().manual_seed(0)
    return torch.randn(4, 5, generator=g, dtype=dtype), torch.randn(4, 5, generator=g, dtype=dtype)


# ------------------------------------------------------------------------------ fully masked rows
@pytest.mark.parametrize("name", CATEGORICAL)
@pytest.mark.parametrize("which", ["p", "q"])
@pytest.mark.parametrize("space", ["logits", "log_probs"])
def test_fully_masked_row_raises_naming_the_input(name, which, space):
    p, q = _pq()
    if space == "log_probs":
        p, q = p.log_softmax(-1), q.log_softmax(-1)
    x = {"p": p, "q": q}
    x[which] = x[which].clone()
    x[which][1] = -math.inf  # was NaN in every categorical divergence
    with pytest.raises(LossInputError, match=f"^{which}: .*-inf"):
        getattr(losskit, name)(x["p"], x["q"], input_space=space)


@pytest.mark.parametrize("name", CATEGORICAL)
def test_partly_masked_rows_still_allowed(name):
    p, q = _pq()
    p[1, :2] = -math.inf
    q[2, 3] = -math.inf
    out = getattr(losskit, name)(p, q, reduction="none")
    assert not torch.isnan(out).any()


def test_fully_masked_row_along_another_dim():
    p, q = _pq()
    p[:, 2] = -math.inf  # column 2 fully masked: a masked row along dim=0
    with pytest.raises(LossInputError, match="^p: .*dim 0"):
        losskit.kl_divergence(p, q, dim=0)
    assert torch.isfinite(losskit.kl_divergence(p, q, dim=-1, reduction="none")).all()


def test_kl_clustering_fully_masked_sample_raises():
    z = torch.randn(6, 3, dtype=torch.float64)
    z[2] = -math.inf  # was NaN
    with pytest.raises(LossInputError, match="^logits: "):
        losskit.kl_clustering_loss(z)
    z[2] = torch.tensor([0.0, -math.inf, -math.inf], dtype=torch.float64)  # partly masked: fine
    assert torch.isfinite(losskit.kl_clustering_loss(z))


def test_categorical_divergence_engine_leaves_masked_rows_to_callers():
    # distillation calls the engine and may ignore fully masked samples itself
    p, q = _pq()
    p[0] = -math.inf
    out = losskit.divergences.categorical_divergence(p, q, "kl")
    assert out.shape == (4,)


# ------------------------------------------------------------------------------------------- dim
@pytest.mark.parametrize("name", CATEGORICAL)
def test_dim_out_of_range_is_a_loss_input_error(name):
    p, q = _pq()
    with pytest.raises(LossInputError, match="^dim: .*dimension of p"):  # was a raw IndexError
        getattr(losskit, name)(p, q, dim=5)
    with pytest.raises(LossInputError, match="^dim: "):
        losskit.divergences.categorical_divergence(p, q, dim=-3)


def test_dim_counts_from_the_end():
    p, q = _pq()
    a = losskit.kl_divergence(p, q, dim=-1, reduction="none")
    b = losskit.kl_divergence(p.T, q.T, dim=0, reduction="none")
    torch.testing.assert_close(a, b)


# -------------------------------------------------------------------------------- validation modes
def test_log_probs_checks_obey_set_validation():
    p, q = _pq()
    bad = p.log_softmax(-1) + 2.0  # positive "log-probabilities"
    with pytest.raises(LossInputError, match="^p: "):
        losskit.kl_divergence(bad, q.log_softmax(-1), input_space="log_probs")
    with losskit.validation(False):  # used to raise anyway (a host-side bool() on the values)
        out = losskit.kl_divergence(bad, q.log_softmax(-1), input_space="log_probs")
    assert out.shape == ()


@pytest.mark.parametrize("space", ["log_probs", "probs"])
def test_meta_inputs_in_every_input_space(space):
    p, q = _pq(torch.float32)
    if space == "log_probs":
        p, q = p.log_softmax(-1), q.log_softmax(-1)
    else:
        p, q = p.softmax(-1), q.softmax(-1)
    out = losskit.js_divergence(p.to("meta"), q.to("meta"), input_space=space, reduction="none")
    assert out.device.type == "meta" and out.shape == (4,)


# ------------------------------------------------------------------------------------------ domains
def test_declared_domains():
    p, q = _pq()
    with pytest.raises(LossInputError, match="^input_space: "):
        losskit.kl_divergence(p, q, input_space="logprob")
    with pytest.raises(LossInputError, match="^pi: "):
        losskit.generalized_js_divergence(p, q, pi=1.0)
    with pytest.raises(LossInputError, match="^alpha: "):
        losskit.skew_kl_divergence(p, q, alpha=1.0)
    with pytest.raises(LossInputError, match="^alpha: "):
        losskit.renyi_divergence(p, q, alpha=-0.5)
    with pytest.raises(LossInputError, match="^generator: "):
        losskit.f_divergence(p, q, generator="kll")
    with pytest.raises(LossInputError, match="^generator: "):
        losskit.fgan_bound(p[0], q[0], generator=torch.Generator())
    assert torch.isfinite(losskit.renyi_divergence(p, q, alpha=math.inf))
    assert torch.isfinite(losskit.alpha_divergence(p, q, alpha=-1.5))
    assert torch.isfinite(losskit.f_divergence(p, q, generator=G.alpha_generator(0.3)))
    x, y = p[:, :3], q[:, :3] + 1
    with pytest.raises(LossInputError, match="^bandwidth: "):
        losskit.mmd(x, y, bandwidth=(1.0, -2.0))
    with pytest.raises(LossInputError, match="^block_size: "):
        losskit.energy_distance(x, y, block_size=0)
    with pytest.raises(LossInputError, match="^kernel: "):
        losskit.kernel_cauchy_schwarz_divergence(x, y, kernel="energy")
    with pytest.raises(LossInputError, match="^penalty_weight: "):
        losskit.wpc_bound(x, y, lambda a, b: a @ b.T, penalty_weight=-1.0)


# ------------------------------------------------------------------------- sample-based: overflow
@pytest.mark.parametrize("name", ["mmd", "energy_distance", "kernel_cauchy_schwarz_divergence"])
@pytest.mark.parametrize("which", ["x", "y"])
def test_overflowing_sample_distances_are_refused(name, which):
    g = torch.Generator().manual_seed(3)
    s = {"x": torch.randn(8, 3, generator=g), "y": torch.randn(8, 3, generator=g) + 0.5}
    s[which] = s[which].sign() * 1e30 + s[which]  # squared distances overflow float32: was NaN
    opts = {} if name == "energy_distance" else {"bandwidth": 1.5}
    with pytest.raises(LossInputError, match=f"^{which}: .*squared distances"):
        getattr(losskit, name)(s["x"], s["y"], **opts)


@pytest.mark.parametrize("estimator", ["unbiased", "biased", "linear"])
def test_mmd_overflow_every_estimator_and_kernel(estimator):
    x = torch.randn(8, 3) * 1e30
    y = torch.randn(8, 3)
    for kernel in ("gaussian", "laplacian", "imq", "energy"):
        with pytest.raises(LossInputError, match="^x: "):
            losskit.mmd(x, y, kernel=kernel, bandwidth=2.0, estimator=estimator)
    with pytest.raises(LossInputError, match="^x: .*median"):
        losskit.mmd(x, y, bandwidth="median", estimator=estimator)


def test_large_but_representable_samples_stay_finite():
    x = torch.randn(8, 3, dtype=torch.float32) * 1e15
    y = torch.randn(8, 3, dtype=torch.float32) * 1e15
    for out in (losskit.mmd(x, y, bandwidth=1e15), losskit.energy_distance(x, y),
                losskit.kernel_cauchy_schwarz_divergence(x, y, bandwidth=1e15)):
        assert torch.isfinite(out)
    # float64 holds the squared distances of 1e30 coordinates: no refusal there
    assert torch.isfinite(losskit.energy_distance(x.double() * 1e15, y.double() * 1e15))


def test_energy_distance_self_distance_is_exactly_zero():
    # the GEMM form left rounding noise on the diagonal, whose sqrt broke the gradient (gradcheck failed)
    g = torch.Generator().manual_seed(0)
    x = (torch.randn(8, 3, generator=g, dtype=torch.float64) * 3 + 5).requires_grad_(True)
    y = torch.randn(8, 3, generator=g, dtype=torch.float64).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda a, b: losskit.energy_distance(a, b), (x, y), eps=1e-6, atol=1e-5,
                                    rtol=1e-3)


def test_samples_use_ops_pairwise():
    from losskit.divergences import samples

    assert not hasattr(samples, "_sqdist") and not hasattr(samples, "_safe_sqrt")


# --------------------------------------------------------------------------------- variational bounds
def test_nwj_refuses_overflowing_exp_term():
    sp = torch.randn(7)
    sq = torch.randn(9)
    sq[3] = 1e30  # E_Q exp(T - 1) = inf: the bound was -inf
    with pytest.raises(LossInputError, match="^scores_q: "):
        losskit.nwj_bound(sp, sq)
    sq[3] = 80.0
    assert torch.isfinite(losskit.nwj_bound(sp, sq))


def test_fgan_without_activation_checks_the_conjugate_domain():
    sp = torch.randn(7, dtype=torch.float64)
    sq = torch.randn(9, dtype=torch.float64) * 0.1 - 1.0
    assert torch.isfinite(losskit.fgan_bound(sp, sq, generator="js", activation=False))
    with pytest.raises(LossInputError, match="^scores_q: .*'js'"):  # was NaN (log of a negative)
        losskit.fgan_bound(sp, sq + 2.0, generator="js", activation=False)
    with pytest.raises(LossInputError, match="^scores_q: "):  # was a finite, wrong value (u / (1 - u) < 0)
        losskit.fgan_bound(sp, sq + 3.0, generator="hellinger", activation=False)
    with pytest.raises(LossInputError, match="^scores_q: "):  # f* = +inf at the open end: bound -inf
        losskit.fgan_bound(sp, torch.zeros(3, dtype=torch.float64), generator="reverse_kl", activation=False)
    with losskit.validation(False):
        losskit.fgan_bound(sp, sq + 2.0, generator="js", activation=False)


def test_wpc_promotes_mixed_float_inputs():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(6, 3, generator=g, dtype=torch.float64)
    y = torch.randn(6, 4, generator=g, dtype=torch.float64)
    w = torch.randn(3, 4, generator=g, dtype=torch.float64)

    def critic(a, b):
        return torch.tanh(a) @ w @ torch.tanh(b).T  # float64 weights: needs float64 inputs

    ref = losskit.wpc_bound(x, y, critic)
    out = losskit.wpc_bound(x.float(), y, critic)
    assert out.dtype == torch.float64
    torch.testing.assert_close(out, losskit.wpc_bound(x.float().double(), y, critic))
    assert abs(out.item() - ref.item()) < 1e-4


# ------------------------------------------------------------------------------------------------ f'
GENS = list(G.GENERATORS.values()) + [G.alpha_generator(0.3), G.alpha_generator(2.5), G.alpha_generator(-1.0),
                                      G.skew_kl_generator(0.2), G.skew_js_generator(0.3)]


@pytest.mark.parametrize("gen", GENS, ids=lambda g: g.name)
def test_f_prime_is_the_derivative_of_f(gen):
    t = torch.tensor([0.05, 0.3, 0.9, 1.7, 6.0], dtype=torch.float64, requires_grad=True)
    (auto,) = torch.autograd.grad(gen.f(t).sum(), t)
    torch.testing.assert_close(gen.derivative(t.detach()), auto)
    torch.testing.assert_close(gen.derivative_log(t.detach().log()), auto)
    torch.testing.assert_close(G.f_prime(gen, t.detach().log()), auto)
    assert gen.f_prime is not None and gen.f_prime_log is not None


def test_f_prime_by_name_and_in_log_space():
    s = torch.tensor([-200.0, -1.0, 0.0, 2.0, 200.0], dtype=torch.float64)
    torch.testing.assert_close(G.f_prime("kl", s), s + 1)
    torch.testing.assert_close(G.f_prime("reverse_kl", s), -torch.exp(-s))
    torch.testing.assert_close(G.f_prime("tv", s), 0.5 * torch.sign(s))
    js = 0.5 * (s - torch.nn.functional.softplus(s) + math.log(2.0))  # the form f-DPG uses
    torch.testing.assert_close(G.f_prime("jensen_shannon", s), js)
    assert torch.isfinite(G.f_prime("js", s)).all()  # no exp(200) formed
    with pytest.raises(LossInputError, match="^generator: "):
        G.f_prime("nope", s)
    with pytest.raises(LossInputError, match="^generator: "):
        G.FGenerator("mine", f=lambda t: (t - 1) ** 2).derivative(s)


def test_generator_api_is_stable():
    for name in ("FGenerator", "GENERATORS", "get_generator", "alpha_generator", "skew_js_generator",
                 "skew_kl_generator", "perspective_terms", "lambertw_exp", "f_prime", "GENERATOR_DOMAIN"):
        assert name in G.__all__
    assert losskit.divergences.get_generator("chi2") is G.PEARSON


@pytest.mark.parametrize("name", ["mmd", "kernel_cauchy_schwarz_divergence"])
def test_median_bandwidth_default_reads_no_values(name):
    # the default bandwidth='median' called .item(): meta tensors failed and compiles broke the graph
    x, y = torch.randn(8, 3), torch.randn(9, 3) + 1
    fn = getattr(losskit, name)
    out = fn(x.to("meta"), y.to("meta"))
    assert out.device.type == "meta" and out.shape == ()
    torch._dynamo.reset()
    compiled = torch.compile(fn, backend="aot_eager", fullgraph=True)
    torch.testing.assert_close(compiled(x, y), fn(x, y))
    with pytest.raises(LossInputError, match="^x: .*identical"):
        fn(torch.ones(4, 2), torch.ones(5, 2))
    sigma = losskit.divergences.median_bandwidth(x, y)
    torch.testing.assert_close(fn(x, y), fn(x, y, bandwidth=sigma), rtol=1e-5, atol=1e-6)


def test_probabilities_passed_as_logits_warn_at_the_callers_line():
    import warnings

    g = torch.Generator().manual_seed(3)
    p = torch.softmax(torch.randn(4, 5, generator=g, dtype=torch.float64), -1)
    q = torch.softmax(torch.randn(4, 5, generator=g, dtype=torch.float64), -1)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        losskit.kl_divergence(p, q)
    assert len(caught) == 1 and "input_space='probs'" in str(caught[0].message)
    assert caught[0].filename == __file__  # attributed to the user's call, not losskit's internals
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        losskit.kl_divergence(p, q, input_space="probs")  # the right call: silent
        losskit.kl_divergence(torch.log(p) + 1.0, q.log() - 2.0)  # real logits: silent
