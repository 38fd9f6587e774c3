"""Divergences between categorical distributions, computed in log space.

Each takes two distributions ``p`` and ``q`` over ``dim`` given as ``input_space='logits'`` (default;
normalised with ``log_softmax``), ``'log_probs'`` or ``'probs'``, and returns one value per
distribution (the input shape without ``dim``), reduced by ``reduction``. Zero probabilities (``-inf``
logits) are exact: ``0 log 0 = 0``; a divergence that is infinite (``p > 0`` where ``q = 0`` for KL)
returns ``inf``, never NaN. Gradients are finite wherever the value is; with respect to an entry that
is exactly zero (a masked logit, a zero probability) the gradient is 0.

Every f-divergence goes through one function, :func:`categorical_divergence`, with an
:class:`~losskit.divergences.generators.FGenerator`; the named objectives are that call with a fixed
generator. Rényi and Cauchy–Schwarz (not f-divergences) are log-sum-exp closed forms.
"""

from __future__ import annotations

import math

import torch

from .._core import Paper, fail, finish, objective
from .._core import validate as _validate
from .._core.domains import HALF_OPEN_UNIT, OPEN_UNIT, REAL, Choice, Dim, Either, Real
from .._core.errors import warn
from .._core.inputs import TWO_DISTRIBUTIONS, distributions_example
from .._core.validate import check_floating, check_probabilities, check_rows, require, value_check_mode
from .generators import (
    GENERATOR_DOMAIN,
    HELLINGER,
    JEFFREYS,
    JS,
    KL,
    NEYMAN,
    PEARSON,
    REVERSE_KL,
    TV,
    FGenerator,
    alpha_generator,
    get_generator,
    perspective_terms,
    skew_js_generator,
    skew_kl_generator,
)

__all__ = ["log_probs", "kl_divergence", "reverse_kl_divergence", "js_divergence", "generalized_js_divergence",
           "skew_kl_divergence", "total_variation", "squared_hellinger", "pearson_chi2", "neyman_chi2",
           "jeffreys_divergence", "alpha_divergence", "renyi_divergence", "cauchy_schwarz_divergence",
           "f_divergence", "categorical_divergence", "KLDivergence", "ReverseKLDivergence", "JSDivergence",
           "GeneralizedJSDivergence", "SkewKLDivergence", "TotalVariation", "SquaredHellinger", "PearsonChi2",
           "NeymanChi2", "JeffreysDivergence", "AlphaDivergence", "RenyiDivergence", "CauchySchwarzDivergence",
           "FDivergence"]

INPUT_SPACES = ("logits", "log_probs", "probs")


def log_probs(x: torch.Tensor, input_space: str, dim: int, name: str, *, rows: bool = False) -> torch.Tensor:
    """Log-probabilities from logits / log-probabilities / probabilities, validated.

    ``rows=True`` also refuses a row (along ``dim``) of logits or log-probabilities whose every entry is
    ``-inf`` (fully masked: no distribution), with :class:`~losskit.LossInputError` naming ``name``.
    """
    check_floating(name, x)
    if input_space == "logits":
        if rows:
            check_rows(name, x, dim=dim)
        return torch.log_softmax(x, dim=dim)
    if input_space == "log_probs":
        if rows:
            check_rows(name, x, dim=dim)
        if value_check_mode(x) is not None:  # the checks below read values: nothing to compute when off
            require(name, x, lambda: x.amax() > 1e-6, "log-probabilities (<= 0)",
                    lambda: f"max {x.max().item():.4g}")
            check_probabilities(name, x.exp(), dim=dim)
        return x
    if input_space == "probs":
        check_probabilities(name, x, dim=dim)
        # log 0 = -inf (the boundary terms handle it); its gradient is taken as 0, not 0 * inf = NaN
        pos = x > 0
        return torch.where(pos, torch.log(torch.where(pos, x, torch.ones_like(x))), torch.full_like(x, -math.inf))
    raise fail("input_space", f"one of {INPUT_SPACES}", repr(input_space))


def _pair(p, q, input_space, dim, rows=True):
    """Both inputs as log-probabilities. ``rows``: fully masked rows raise (the named objectives); the
    engine :func:`categorical_divergence` leaves that to its callers, which may ignore such samples."""
    if input_space not in INPUT_SPACES:
        raise fail("input_space", f"one of {INPUT_SPACES}", repr(input_space))
    check_floating("p", p)
    check_floating("q", q)
    if p.shape != q.shape:
        raise fail("q", f"the shape of p {tuple(p.shape)}", f"shape {tuple(q.shape)}")
    if p.dim() == 0:
        raise fail("p", "a tensor with a class dimension", "a scalar")
    if isinstance(dim, bool) or not -p.dim() <= dim < p.dim():
        raise fail("dim", f"a dimension of p (ndim {p.dim()})", repr(dim))
    if input_space == "logits":
        _warn_if_probabilities(p, dim)
    return log_probs(p, input_space, dim, "p", rows=rows), log_probs(q, input_space, dim, "q", rows=rows)


def _warn_if_probabilities(p: torch.Tensor, dim: int) -> None:
    """The usual mistake: probabilities passed with the default ``input_space='logits'`` are read as logits
    (a KL of 0.010 where the probabilities' KL is 0.530). Legal logits can look like that, so it is a
    warning, not an error; one host read on the eager path (validation on, CPU), nothing elsewhere."""
    if p.shape[dim] < 2 or _validate.value_check_mode(p) != "eager":
        return
    x = p.detach()
    lo, dev = torch.stack([x.amin(), (x.sum(dim) - 1).abs().amax()]).tolist()
    if lo >= 0 and dev <= 1e-4:
        warn("p looks like probabilities (entries >= 0, rows summing to 1) but input_space='logits' "
                      "reads it as logits (softmax is applied); pass input_space='probs' if these are "
                      "probabilities")


def _kl_terms(logp: torch.Tensor, logq: torch.Tensor) -> torch.Tensor:
    """p (log p - log q) with 0 log 0 = 0 and +inf where p > 0 = q. Gradient-safe at p = 0."""
    p = logp.exp()
    zero = logp == -float("inf")
    diff = torch.where(zero, torch.zeros_like(logp), logp - logq)
    return torch.where(zero, torch.zeros_like(p), p * diff)


def categorical_divergence(p: torch.Tensor, q: torch.Tensor, generator: str | FGenerator = "kl", *,
                           input_space: str = "logits", dim: int = -1) -> torch.Tensor:
    """``D_f(p ‖ q) = Σ_k q_k f(p_k/q_k)`` per distribution (unreduced), the one f-divergence routine.

    Used by every named f-divergence here and by the distillation losses (``divergence=``). It does
    not refuse fully masked rows (all ``-inf``; their value is NaN): callers that may ignore such
    samples mask them; the named objectives refuse them.
    """
    gen = get_generator(generator)
    logp, logq = _pair(p, q, input_space, dim, rows=False)
    return perspective_terms(gen, logp, logq).sum(dim)


def _fdiv(p, q, gen, input_space, dim, reduction, sample_weight):
    gen = get_generator(gen)
    logp, logq = _pair(p, q, input_space, dim)
    return finish(perspective_terms(gen, logp, logq).sum(dim), reduction, sample_weight=sample_weight)


_DOMAINS = {"input_space": Choice(*INPUT_SPACES), "dim": Dim(of="p")}
_RENYI_ORDER = Either(Real(0.0, None), Choice(math.inf))  # alpha >= 0, or inf (the max-ratio limit)
_DIV = dict(family="divergence", input_kind=TWO_DISTRIBUTIONS, example=distributions_example,
            allow_neg_inf=("p", "q"), unchecked=("p", "q"))  # p, q: checked (rows, finiteness) by _pair
_ARGS = """
    Args: ``p``, ``q`` of the same shape; ``input_space`` ``'logits'`` (default), ``'log_probs'`` or
    ``'probs'``; ``dim`` the class axis (a dimension of ``p``); ``sample_weight`` one weight per
    distribution (or per leading sample); ``reduction`` ``'mean' | 'sum' | 'none'``. ``-inf`` entries
    (logits, log-probabilities) are probability 0; a row whose every entry is ``-inf`` (fully masked)
    raises :class:`~losskit.LossInputError` naming ``p`` or ``q``."""


def _doc(fn):
    fn.__doc__ = (fn.__doc__ or "").rstrip() + "\n" + _ARGS
    return fn


@objective("kl_divergence", seed=True, properties={"nonnegative", "divergence"},
           formula="KL(p || q) = sum_k p_k (log p_k - log q_k)", module_name="KLDivergence", domains=_DOMAINS, **_DIV)
@_doc
def kl_divergence(p: torch.Tensor, q: torch.Tensor, *, input_space: str = "logits", dim: int = -1,
                  sample_weight: torch.Tensor | None = None, reduction: str = "mean") -> torch.Tensor:
    """Forward Kullback–Leibler divergence KL(p ‖ q), one value per distribution.

    .. math:: \\mathrm{KL}(p\\,\\|\\,q) = \\sum_k p_k (\\log p_k - \\log q_k)

    The direction is the name: the first argument is the distribution the expectation is taken
    under. (``torch.nn.functional.kl_div(input, target)`` computes KL(target ‖ input) and its
    ``'mean'`` averages over elements, not distributions; here ``'mean'`` averages over
    distributions, torch's ``'batchmean'``.) Infinite where ``p > 0 = q``.

    Paper: standard (Kullback & Leibler, 1951).
    """
    return _fdiv(p, q, KL, input_space, dim, reduction, sample_weight)


@objective("reverse_kl_divergence", properties={"nonnegative", "divergence"},
           formula="KL(q || p) = sum_k q_k (log q_k - log p_k)", module_name="ReverseKLDivergence",
           domains=_DOMAINS, **_DIV)
@_doc
def reverse_kl_divergence(p: torch.Tensor, q: torch.Tensor, *, input_space: str = "logits", dim: int = -1,
                          sample_weight: torch.Tensor | None = None, reduction: str = "mean") -> torch.Tensor:
    """Reverse Kullback–Leibler divergence KL(q ‖ p): :func:`kl_divergence` with the arguments swapped.

    With ``p`` the data (or teacher) and ``q`` the model, this is the mode-seeking direction. It is
    the f-divergence with ``f(t) = -log t``. Infinite where ``q > 0 = p``.

    Paper: standard.
    """
    return _fdiv(p, q, REVERSE_KL, input_space, dim, reduction, sample_weight)


@objective("js_divergence", properties={"nonnegative", "divergence", "symmetric_divergence", "bounded"},
           formula="JS(p, q) = 1/2 KL(p || m) + 1/2 KL(q || m),  m = (p + q)/2", module_name="JSDivergence",
           domains=_DOMAINS, **_DIV)
@_doc
def js_divergence(p: torch.Tensor, q: torch.Tensor, *, input_space: str = "logits", dim: int = -1,
                  sample_weight: torch.Tensor | None = None, reduction: str = "mean") -> torch.Tensor:
    """Jensen–Shannon divergence (natural log, so 0 <= JS <= log 2).

    .. math:: \\mathrm{JS}(p, q) = \\tfrac12 \\mathrm{KL}(p\\,\\|\\,m) + \\tfrac12 \\mathrm{KL}(q\\,\\|\\,m),
              \\quad \\log m = \\mathrm{logaddexp}(\\log p, \\log q) - \\log 2

    The mixture is formed in log space, so disjoint supports give exactly log 2. SciPy's
    ``jensenshannon`` returns the square root of this value (the JS distance).

    Paper: standard (Lin, "Divergence measures based on the Shannon entropy", 1991).
    """
    return _fdiv(p, q, JS, input_space, dim, reduction, sample_weight)


@objective("generalized_js_divergence", properties={"nonnegative", "divergence", "bounded"},
           formula="JS_pi(p, q) = pi KL(p || m) + (1 - pi) KL(q || m),  m = pi p + (1 - pi) q",
           module_name="GeneralizedJSDivergence", domains={**_DOMAINS, "pi": OPEN_UNIT}, **_DIV)
@_doc
def generalized_js_divergence(p: torch.Tensor, q: torch.Tensor, *, pi: float = 0.5, input_space: str = "logits",
                              dim: int = -1, sample_weight: torch.Tensor | None = None,
                              reduction: str = "mean") -> torch.Tensor:
    """Generalised (skew) Jensen–Shannon divergence with mixture weight ``pi`` ∈ (0, 1).

    .. math:: \\mathrm{JS}_\\pi(p, q) = \\pi\\,\\mathrm{KL}(p\\,\\|\\,m) + (1-\\pi)\\,\\mathrm{KL}(q\\,\\|\\,m),
              \\quad m = \\pi p + (1-\\pi) q

    ``pi = 0.5`` is :func:`js_divergence`; bounded by the entropy of (π, 1-π), reached on disjoint
    supports. (GKD, Agarwal et al. 2024, uses ``JSD(β)`` with ``β = 1 - pi`` in this notation.)

    Paper: standard (Lin, 1991; generalised JSD).
    """
    return _fdiv(p, q, skew_js_generator(pi), input_space, dim, reduction, sample_weight)


@objective("skew_kl_divergence", properties={"nonnegative", "divergence", "bounded"},
           formula="SKL_a(p || q) = KL(p || a p + (1 - a) q)", module_name="SkewKLDivergence",
           paper=Paper("DistiLLM: Towards Streamlined Distillation for Large Language Models", 2024,
                       "2402.03898"), domains={**_DOMAINS, "alpha": HALF_OPEN_UNIT}, **_DIV)
@_doc
def skew_kl_divergence(p: torch.Tensor, q: torch.Tensor, *, alpha: float = 0.1, input_space: str = "logits",
                       dim: int = -1, sample_weight: torch.Tensor | None = None,
                       reduction: str = "mean") -> torch.Tensor:
    """Skew KL divergence ``KL(p ‖ α p + (1-α) q)``, ``α ∈ [0, 1)``; finite (≤ log(1/α)) for α > 0.

    .. math:: \\mathrm{SKL}_\\alpha(p\\,\\|\\,q) = \\sum_k p_k \\log \\frac{p_k}{\\alpha p_k + (1-\\alpha) q_k}

    ``alpha = 0`` is :func:`kl_divergence`. The mixture is formed with ``logaddexp``.

    Paper: DistiLLM: Towards Streamlined Distillation for Large Language Models (Ko et al., 2024,
    arXiv:2402.03898).
    """
    return _fdiv(p, q, skew_kl_generator(alpha), input_space, dim, reduction, sample_weight)


@objective("total_variation", properties={"nonnegative", "divergence", "symmetric_divergence", "bounded"},
           formula="TV(p, q) = 1/2 sum_k |p_k - q_k|", module_name="TotalVariation", domains=_DOMAINS, **_DIV)
@_doc
def total_variation(p: torch.Tensor, q: torch.Tensor, *, input_space: str = "logits", dim: int = -1,
                    sample_weight: torch.Tensor | None = None, reduction: str = "mean") -> torch.Tensor:
    """Total variation distance, ``½ Σ |p - q|`` ∈ [0, 1] (f-divergence with ``f(t) = ½|t - 1|``).

    The gradient at ``p_k = q_k`` is the subgradient 0.

    Paper: standard.
    """
    return _fdiv(p, q, TV, input_space, dim, reduction, sample_weight)


@objective("squared_hellinger", properties={"nonnegative", "divergence", "symmetric_divergence", "bounded"},
           formula="H^2(p, q) = sum_k (sqrt p_k - sqrt q_k)^2", module_name="SquaredHellinger",
           domains=_DOMAINS, **_DIV)
@_doc
def squared_hellinger(p: torch.Tensor, q: torch.Tensor, *, input_space: str = "logits", dim: int = -1,
                      sample_weight: torch.Tensor | None = None, reduction: str = "mean") -> torch.Tensor:
    """Squared Hellinger divergence ``Σ (√p - √q)² = 2 - 2 Σ √(pq)`` ∈ [0, 2] (``f(t) = (√t - 1)²``).

    Convention: no factor ½ (some texts define H² as half this value, in [0, 1]). Square roots are
    ``exp(log p / 2)``, so zero probabilities have finite gradients.

    Paper: standard (Hellinger, 1909).
    """
    return _fdiv(p, q, HELLINGER, input_space, dim, reduction, sample_weight)


_NO_EXTREME = ("at logits of +-1e4 the value exceeds the float range (e.g. p^2/q ~ e^20000): inf is the "
               "honest result, so the finite-at-extremes check does not apply")


@objective("pearson_chi2", properties={"nonnegative", "divergence"},
           formula="chi2(p || q) = sum_k (p_k - q_k)^2 / q_k", module_name="PearsonChi2", extreme=False,
           skip_reasons={"extreme": _NO_EXTREME}, domains=_DOMAINS, **_DIV)
@_doc
def pearson_chi2(p: torch.Tensor, q: torch.Tensor, *, input_space: str = "logits", dim: int = -1,
                 sample_weight: torch.Tensor | None = None, reduction: str = "mean") -> torch.Tensor:
    """Pearson χ² divergence ``Σ (p - q)²/q = Σ p²/q - 1`` (``f(t) = (t - 1)²``); infinite where p > 0 = q.

    Each term is computed as ``exp(2 log p - log q) - 2p + q`` (exactly 0 when p = q).

    Paper: standard (Pearson, 1900).
    """
    return _fdiv(p, q, PEARSON, input_space, dim, reduction, sample_weight)


@objective("neyman_chi2", properties={"nonnegative", "divergence"},
           formula="chi2_N(p || q) = sum_k (p_k - q_k)^2 / p_k", module_name="NeymanChi2", extreme=False,
           skip_reasons={"extreme": _NO_EXTREME}, domains=_DOMAINS, **_DIV)
@_doc
def neyman_chi2(p: torch.Tensor, q: torch.Tensor, *, input_space: str = "logits", dim: int = -1,
                sample_weight: torch.Tensor | None = None, reduction: str = "mean") -> torch.Tensor:
    """Neyman χ² divergence ``Σ (p - q)²/p`` (``f(t) = (1 - t)²/t``): Pearson with the arguments swapped.

    Infinite where q > 0 = p.

    Paper: standard (Neyman, 1949).
    """
    return _fdiv(p, q, NEYMAN, input_space, dim, reduction, sample_weight)


@objective("jeffreys_divergence", properties={"nonnegative", "divergence", "symmetric_divergence"},
           formula="J(p, q) = KL(p || q) + KL(q || p) = sum_k (p_k - q_k)(log p_k - log q_k)",
           module_name="JeffreysDivergence", domains=_DOMAINS, **_DIV)
@_doc
def jeffreys_divergence(p: torch.Tensor, q: torch.Tensor, *, input_space: str = "logits", dim: int = -1,
                        sample_weight: torch.Tensor | None = None, reduction: str = "mean") -> torch.Tensor:
    """Jeffreys divergence, the symmetrised KL ``KL(p‖q) + KL(q‖p)`` (``f(t) = (t - 1) log t``).

    Infinite unless p and q have the same support.

    Paper: standard (Jeffreys, 1946).
    """
    return _fdiv(p, q, JEFFREYS, input_space, dim, reduction, sample_weight)


@objective("alpha_divergence", properties={"nonnegative", "divergence"},
           formula="D_a(p || q) = (sum_k p_k^a q_k^(1-a) - 1) / (a (a - 1))", module_name="AlphaDivergence",
           domains={**_DOMAINS, "alpha": REAL}, **_DIV)
@_doc
def alpha_divergence(p: torch.Tensor, q: torch.Tensor, *, alpha: float = 0.5, input_space: str = "logits",
                     dim: int = -1, sample_weight: torch.Tensor | None = None,
                     reduction: str = "mean") -> torch.Tensor:
    """α-divergence (Amari–Cichocki parametrisation), ``f(t) = (t^α - αt - (1-α))/(α(α-1))``.

    .. math:: D_\\alpha(p\\,\\|\\,q) = \\frac{\\sum_k p_k^\\alpha q_k^{1-\\alpha} - 1}{\\alpha(\\alpha - 1)}

    ``alpha = 1`` is KL(p‖q), ``alpha = 0`` is KL(q‖p) (the limits), ``alpha = 0.5`` is twice the
    squared Hellinger divergence, ``alpha = 2`` is half Pearson χ². Terms are
    ``exp(α log p + (1-α) log q)``. (Amari's α ∈ [-1, 1] convention maps by α_A = 2α - 1.)

    Paper: standard (Amari, 1985; Cichocki & Amari, "Families of Alpha- Beta- and Gamma-
    Divergences", 2010).
    """
    return _fdiv(p, q, alpha_generator(alpha), input_space, dim, reduction, sample_weight)


@objective("f_divergence", properties={"nonnegative", "divergence"},
           formula="D_f(p || q) = sum_k q_k f(p_k / q_k)", module_name="FDivergence",
           domains={**_DOMAINS, "generator": GENERATOR_DOMAIN}, **_DIV)
@_doc
def f_divergence(p: torch.Tensor, q: torch.Tensor, *, generator: str | FGenerator = "kl",
                 input_space: str = "logits", dim: int = -1, sample_weight: torch.Tensor | None = None,
                 reduction: str = "mean") -> torch.Tensor:
    """The f-divergence of a generator ``f`` (convex, ``f(1) = 0``): ``Σ_k q_k f(p_k / q_k)``.

    ``generator`` is a name (``'kl', 'reverse_kl', 'js', 'tv', 'hellinger', 'pearson', 'neyman',
    'jeffreys'``) or an :class:`~losskit.divergences.FGenerator` (e.g. ``alpha_generator(0.3)`` or
    one built from your own ``f``). Boundary terms use the generator's limits ``f(0+)`` and
    ``lim f(t)/t``; infinite limits give ``inf``.

    Paper: standard (Csiszár, 1963; Ali & Silvey, 1966); used as a training objective in "Aligning
    Language Models with Preferences through f-divergence Minimization" (Go et al., 2023,
    arXiv:2302.08215).
    """
    return _fdiv(p, q, generator, input_space, dim, reduction, sample_weight)


# ------------------------------------------------------------------------------- not f-divergences
def _masked_exponent(logp, logq, alpha):
    """``α log p + (1-α) log q`` with ``p^α q^(1-α) = 0`` where p = 0, and where q = 0 < p: 0 if
    α < 1, +inf if α > 1 (limits), computed without ``inf - inf``."""
    zp, zq = logp == -math.inf, logq == -math.inf
    bnd = zp | zq
    e = alpha * torch.where(bnd, torch.zeros_like(logp), logp) + (1 - alpha) * torch.where(
        bnd, torch.zeros_like(logq), logq)
    at_q0 = torch.full_like(e, math.inf if alpha > 1 else -math.inf)
    return torch.where(zp, torch.full_like(e, -math.inf), torch.where(zq, at_q0, e))


@objective("renyi_divergence", properties={"nonnegative", "divergence"},
           formula="D_a(p || q) = 1/(a - 1) log sum_k p_k^a q_k^(1-a)", module_name="RenyiDivergence",
           domains={**_DOMAINS, "alpha": _RENYI_ORDER}, **_DIV)
@_doc
def renyi_divergence(p: torch.Tensor, q: torch.Tensor, *, alpha: float = 0.5, input_space: str = "logits",
                     dim: int = -1, sample_weight: torch.Tensor | None = None,
                     reduction: str = "mean") -> torch.Tensor:
    """Rényi divergence of order ``alpha`` ≥ 0 (``alpha = inf`` allowed), in log-sum-exp form.

    .. math:: D_\\alpha(p\\,\\|\\,q) = \\frac{1}{\\alpha - 1} \\log \\sum_k p_k^\\alpha q_k^{1-\\alpha}

    ``alpha = 1`` is KL(p‖q) (the limit); ``alpha = 0.5`` is ``-2 log Σ √(pq)`` (symmetric);
    ``alpha = inf`` is ``log max_k p_k / q_k``; ``alpha = 0`` is ``-log Σ_{p>0} q``. Infinite for
    α ≥ 1 when p > 0 = q somewhere, and for α < 1 when the supports are disjoint.

    Paper: standard (Rényi, "On measures of entropy and information", 1961).
    """
    a = float(alpha)
    if a == 1.0:
        return _fdiv(p, q, KL, input_space, dim, reduction, sample_weight)
    logp, logq = _pair(p, q, input_space, dim)
    if math.isinf(a):
        zp = logp == -math.inf
        ratio = torch.where(zp, torch.full_like(logp, -math.inf),
                            torch.where(zp, torch.zeros_like(logp), logp) - logq)
        per = ratio.amax(dim)
    else:
        per = torch.logsumexp(_masked_exponent(logp, logq, a), dim) / (a - 1)
    return finish(per, reduction, sample_weight=sample_weight)


@objective("cauchy_schwarz_divergence", seed=True, properties={"nonnegative", "divergence", "symmetric_divergence"},
           formula="D_CS(p, q) = -2 log sum_k p_k q_k + log sum_k p_k^2 + log sum_k q_k^2",
           module_name="CauchySchwarzDivergence",
           paper=Paper("Cauchy-Schwarz Divergence Information Bottleneck for Regression", 2024, "2404.17951"),
           domains=_DOMAINS, **_DIV)
@_doc
def cauchy_schwarz_divergence(p: torch.Tensor, q: torch.Tensor, *, input_space: str = "logits", dim: int = -1,
                              sample_weight: torch.Tensor | None = None, reduction: str = "mean") -> torch.Tensor:
    """Cauchy–Schwarz divergence between categorical distributions, three log-sum-exps.

    .. math:: D_{CS}(p, q) = -2\\log\\sum_k p_k q_k + \\log\\sum_k p_k^2 + \\log\\sum_k q_k^2

    Symmetric, ≥ 0 by the Cauchy–Schwarz inequality, scale invariant (``D(p, c q) = D(p, q)``),
    infinite for disjoint supports. The sample (kernel) estimate is
    :func:`kernel_cauchy_schwarz_divergence`.

    Paper: Cauchy-Schwarz Divergence Information Bottleneck for Regression (Yu et al., 2024,
    arXiv:2404.17951); the divergence is Principe's (2000).
    """
    logp, logq = _pair(p, q, input_space, dim)
    per = (-2 * torch.logsumexp(logp + logq, dim) + torch.logsumexp(2 * logp, dim)
           + torch.logsumexp(2 * logq, dim))
    return finish(per, reduction, sample_weight=sample_weight)


KLDivergence = kl_divergence.Module
ReverseKLDivergence = reverse_kl_divergence.Module
JSDivergence = js_divergence.Module
GeneralizedJSDivergence = generalized_js_divergence.Module
SkewKLDivergence = skew_kl_divergence.Module
TotalVariation = total_variation.Module
SquaredHellinger = squared_hellinger.Module
PearsonChi2 = pearson_chi2.Module
NeymanChi2 = neyman_chi2.Module
JeffreysDivergence = jeffreys_divergence.Module
AlphaDivergence = alpha_divergence.Module
RenyiDivergence = renyi_divergence.Module
CauchySchwarzDivergence = cauchy_schwarz_divergence.Module
FDivergence = f_divergence.Module
