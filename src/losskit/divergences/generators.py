"""f-divergence generators: one object per member of the family, used everywhere a divergence is chosen.

An f-divergence between distributions P and Q on a finite set is

.. math:: D_f(P\\,\\|\\,Q) = \\sum_k q_k\\, f(p_k / q_k)

for a convex ``f`` with ``f(1) = 0``. The *perspective* ``q f(p/q)`` is extended to the boundary by
continuity: ``0 f(0/0) = 0``, ``q f(0) = q f(0+)`` and ``p f'(∞) = p lim_{t→∞} f(t)/t`` where
``q = 0 < p``; either limit may be ``+inf``, and then the divergence is ``inf`` (the honest value).

A :class:`FGenerator` carries ``f``; its derivative ``f'`` (the optimal critic of the variational
bound is ``f'(p/q)``; policy-gradient f-divergence objectives use ``-f'(pi/p)`` as a reward), as a
function of the ratio (``f_prime(t)``) and of the log-ratio (``f_prime_log(log t)``, no ``t`` formed);
:func:`f_prime` is the one public entry point other families use; its convex conjugate ``f*`` (for
f-GAN / variational use), an output activation mapping a real critic output into the domain of ``f*``
(Nowozin et al., f-GAN, 2016, arXiv:1606.00709, Table 2), the two boundary limits, and optionally a
closed form of the perspective in log space (``body(log p, log q)``, used at interior points; the
default is ``q * f(exp(log p - log q))``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from .._core import fail
from .._core.domains import Domain

__all__ = ["FGenerator", "GENERATORS", "GENERATOR_DOMAIN", "get_generator", "f_prime", "alpha_generator",
           "skew_js_generator", "skew_kl_generator", "perspective_terms", "lambertw_exp"]

INF = float("inf")


@dataclass(frozen=True)
class FGenerator:
    """A convex generator ``f`` (``f(1) = 0``) with what variational and policy-gradient uses need.

    Fields: ``f``, ``f_prime`` (``f'``, a function of the ratio ``t``), ``f_prime_log`` (``s ↦ f'(e^s)``,
    a closed form in the log-ratio that neither overflows nor loses ``t``'s precision; when absent,
    :meth:`derivative_log` falls back to ``f_prime(exp(s))``), ``conjugate`` with ``conjugate_domain``
    (the closed interval ``[lo, hi]`` outside which ``f* = +inf``; at an open end ``f*`` is ``+inf``) (``f*(u) = sup_t u t - f(t)``),
    ``activation`` (a map from R onto the domain of ``f*``), ``f0 = f(0+)`` and
    ``slope_inf = lim_{t→∞} f(t)/t`` (either may be ``inf``), and ``body(log p, log q)``, a closed form
    of ``q f(p/q)`` for ``p, q > 0`` (optional). Only ``f`` is required for :func:`f_divergence`; the
    other fields are needed by the callers that use them (and say so when missing).
    """

    name: str
    f: Callable[[torch.Tensor], torch.Tensor]
    f_prime: Callable[[torch.Tensor], torch.Tensor] | None = None
    conjugate: Callable[[torch.Tensor], torch.Tensor] | None = None
    activation: Callable[[torch.Tensor], torch.Tensor] | None = None
    f0: float | None = None
    slope_inf: float = INF
    body: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = field(default=None, repr=False)
    symmetric: bool = False
    conjugate_activation: Callable[[torch.Tensor], torch.Tensor] | None = field(default=None, repr=False)
    f_prime_log: Callable[[torch.Tensor], torch.Tensor] | None = field(default=None, repr=False)
    conjugate_domain: tuple[float, float] = (-INF, INF)

    def derivative(self, t: torch.Tensor) -> torch.Tensor:
        """``f'(t)`` at ratios ``t > 0``."""
        if self.f_prime is None:
            raise fail("generator", "an FGenerator with f_prime (its derivative)", self.name)
        return self.f_prime(t)

    def derivative_log(self, log_t: torch.Tensor) -> torch.Tensor:
        """``f'(t)`` at ``t = exp(log_t)``, from the log-ratio (closed form where the generator has one)."""
        if self.f_prime_log is not None:
            return self.f_prime_log(log_t)
        return self.derivative(log_t.exp())

    def conjugate_of_activation(self, v: torch.Tensor) -> torch.Tensor:
        """``f*(activation(v))``, in a closed form where one avoids cancellation at the domain's edge."""
        if self.conjugate_activation is not None:
            return self.conjugate_activation(v)
        if self.conjugate is None or self.activation is None:
            raise fail("generator", "an FGenerator with a conjugate and an activation", self.name)
        return self.conjugate(self.activation(v))

    def value_at_zero(self) -> float:
        if self.f0 is not None:
            return self.f0
        with torch.no_grad():
            return float(self.f(torch.zeros((), dtype=torch.float64)))

    def perspective(self, logp: torch.Tensor, logq: torch.Tensor) -> torch.Tensor:
        """``q f(p/q)`` at interior points (``p, q > 0``), from log-probabilities."""
        if self.body is not None:
            return self.body(logp, logq)
        return logq.exp() * self.f((logp - logq).exp())


def perspective_terms(gen: FGenerator, logp: torch.Tensor, logq: torch.Tensor) -> torch.Tensor:
    """Elementwise ``q f(p/q)`` with the boundary limits, NaN-free in value and gradient.

    Where ``p = 0``: ``q f(0+)``; where ``q = 0 < p``: ``p · slope_inf``; both zero: 0. The interior
    formula is evaluated on safe stand-in values at those positions (double ``where``), so no
    ``-inf - (-inf)`` reaches autograd.
    """
    ninf = -INF
    zp, zq = logp == ninf, logq == ninf
    boundary = zp | zq
    safe_p = torch.where(boundary, torch.zeros_like(logp), logp)
    safe_q = torch.where(boundary, torch.zeros_like(logq), logq)
    inner = gen.perspective(safe_p, safe_q)
    f0, slope = gen.value_at_zero(), gen.slope_inf
    # An infinite limit is a constant (no gradient), never ``q * inf``, whose backward is 0 * inf = NaN.
    zero, inf = torch.zeros_like(inner), torch.full_like(inner, INF)
    at_p0 = torch.where(zq, zero, inf) if math.isinf(f0) else logq.exp() * f0
    at_q0 = inf if math.isinf(slope) else logp.exp() * slope
    return torch.where(zp, at_p0, torch.where(zq, at_q0, inner))


# ----------------------------------------------------------------------------------- named members
def _xlogy_ratio(logp: torch.Tensor, logq: torch.Tensor) -> torch.Tensor:
    return logp.exp() * (logp - logq)


def _kl_f(t):
    return torch.special.xlogy(t, t)


KL = FGenerator(
    "kl", f=_kl_f, f_prime=lambda t: torch.log(t) + 1, conjugate=lambda u: torch.exp(u - 1),
    activation=lambda v: v, f0=0.0, slope_inf=INF, body=_xlogy_ratio, f_prime_log=lambda s: s + 1)

REVERSE_KL = FGenerator(
    "reverse_kl", f=lambda t: -torch.log(t), f_prime=lambda t: -1 / t,
    conjugate=lambda u: -1 - torch.log(-u), activation=lambda v: -torch.exp(-v), f0=INF, slope_inf=0.0,
    body=lambda lp, lq: _xlogy_ratio(lq, lp), conjugate_activation=lambda v: v - 1, conjugate_domain=(-INF, 0.0),
    f_prime_log=lambda s: -torch.exp(-s))


def skew_js_generator(pi: float = 0.5) -> FGenerator:
    """Generalised (skew) Jensen–Shannon: ``π KL(p‖m) + (1-π) KL(q‖m)``, ``m = π p + (1-π) q``.

    ``f(t) = π t log t - (π t + 1 - π) log(π t + 1 - π)``; ``π = 1/2`` is JS. Conjugate
    ``f*(u) = -(1-π) log((1 - π e^{u/π}) / (1-π))`` on ``u < -π log π``; activation
    ``u = -π log π - π softplus(-v)``, for which ``f*(u) = (1-π)(softplus(v) + log(1-π))`` (the GAN
    discriminator's logistic loss).
    """
    if not 0.0 < pi < 1.0:
        raise fail("pi", "a mixture weight in (0, 1)", repr(pi))
    lp_, lq_ = math.log(pi), math.log1p(-pi)

    def f(t):
        m = pi * t + (1 - pi)
        return pi * torch.special.xlogy(t, t) - m * torch.log(m)

    def body(lp, lq):
        lm = torch.logaddexp(lp + lp_, lq + lq_)
        return pi * _xlogy_ratio(lp, lm) + (1 - pi) * _xlogy_ratio(lq, lm)

    return FGenerator(
        "js" if pi == 0.5 else f"skew_js({pi:g})", f=f,
        f_prime=lambda t: pi * (torch.log(t) - torch.log(pi * t + 1 - pi)),
        conjugate=lambda u: -(1 - pi) * (torch.log1p(-pi * torch.exp(u / pi)) - lq_),
        activation=lambda v: -pi * lp_ - pi * F.softplus(-v),
        conjugate_activation=lambda v: (1 - pi) * (F.softplus(v) + lq_),
        f_prime_log=lambda s: pi * (s - torch.logaddexp(s + lp_, torch.full_like(s, lq_))),
        conjugate_domain=(-INF, -pi * lp_),
        f0=-(1 - pi) * lq_, slope_inf=-pi * lp_, body=body, symmetric=pi == 0.5)


def skew_kl_generator(alpha: float = 0.1) -> FGenerator:
    """Skew KL ``KL(p ‖ α p + (1-α) q)`` (DistiLLM, Ko et al. 2024, arXiv:2402.03898), ``α ∈ [0, 1)``.

    ``f(t) = t log(t / (α t + 1 - α))``; ``α = 0`` is KL. Bounded by ``log(1/α)`` for ``α > 0``.
    """
    if not 0.0 <= alpha < 1.0:
        raise fail("alpha", "a skew in [0, 1)", repr(alpha))
    if alpha == 0.0:
        return KL
    la, l1a = math.log(alpha), math.log1p(-alpha)

    def body(lp, lq):
        return _xlogy_ratio(lp, torch.logaddexp(lp + la, lq + l1a))

    def f_prime(t):
        m = alpha * t + 1 - alpha
        return torch.log(t / m) + (1 - alpha) / m

    def f_prime_log(s):
        log_m = torch.logaddexp(s + la, torch.full_like(s, l1a))
        return s - log_m + (1 - alpha) * torch.exp(-log_m)

    return FGenerator(f"skew_kl({alpha:g})", f=lambda t: torch.special.xlogy(t, t / (alpha * t + 1 - alpha)),
                      f_prime=f_prime, f0=0.0, slope_inf=-la, body=body, f_prime_log=f_prime_log)


JS = skew_js_generator(0.5)

TV = FGenerator(
    "tv", f=lambda t: 0.5 * (t - 1).abs(), f_prime=lambda t: 0.5 * torch.sign(t - 1),
    conjugate=lambda u: u, activation=lambda v: 0.5 * torch.tanh(v), f0=0.5, slope_inf=0.5,
    body=lambda lp, lq: 0.5 * (lp.exp() - lq.exp()).abs(), symmetric=True,
    f_prime_log=lambda s: 0.5 * torch.sign(s), conjugate_domain=(-0.5, 0.5))

HELLINGER = FGenerator(
    "hellinger", f=lambda t: (t.sqrt() - 1) ** 2, f_prime=lambda t: 1 - 1 / t.sqrt(),
    conjugate=lambda u: u / (1 - u), activation=lambda v: 1 - torch.exp(-v), f0=1.0, slope_inf=1.0,
    body=lambda lp, lq: ((0.5 * lp).exp() - (0.5 * lq).exp()) ** 2, symmetric=True,
    f_prime_log=lambda s: -torch.expm1(-0.5 * s), conjugate_domain=(-INF, 1.0))

PEARSON = FGenerator(
    "pearson", f=lambda t: (t - 1) ** 2, f_prime=lambda t: 2 * (t - 1), conjugate=lambda u: u + u * u / 4,
    activation=lambda v: v, f0=1.0, slope_inf=INF,
    body=lambda lp, lq: (2 * lp - lq).exp() - 2 * lp.exp() + lq.exp(), f_prime_log=lambda s: 2 * torch.expm1(s))

NEYMAN = FGenerator(
    "neyman", f=lambda t: (1 - t) ** 2 / t, f_prime=lambda t: 1 - 1 / (t * t),
    conjugate=lambda u: 2 - 2 * torch.sqrt(1 - u), activation=lambda v: 1 - torch.exp(-v), f0=INF,
    slope_inf=1.0, body=lambda lp, lq: (2 * lq - lp).exp() - 2 * lq.exp() + lp.exp(),
    f_prime_log=lambda s: -torch.expm1(-2 * s), conjugate_domain=(-INF, 1.0))


def lambertw_exp(a: torch.Tensor, iters: int = 40) -> torch.Tensor:
    """``W(e^a)`` (principal branch), i.e. the ``w > 0`` with ``w + log w = a``, by Newton steps.

    Works for any real ``a`` without forming ``e^a`` (so no overflow); differentiable (autograd goes
    through the iterations, whose derivative converges to ``W'``).
    """
    w = torch.where(a > 1, a - torch.log(a.clamp(min=1.0)), torch.exp(a.clamp(max=1.0)))
    for _ in range(iters):
        w = w * (1 + a - torch.log(w)) / (1 + w)
    return w


def _jeffreys_conjugate(u):
    w = lambertw_exp(1 - u)
    return w + 1 / w + u - 2


JEFFREYS = FGenerator(
    "jeffreys", f=lambda t: (t - 1) * torch.log(t), f_prime=lambda t: torch.log(t) + 1 - 1 / t,
    conjugate=_jeffreys_conjugate, activation=lambda v: v, f0=INF, slope_inf=INF,
    body=lambda lp, lq: (lp.exp() - lq.exp()) * (lp - lq), symmetric=True,
    f_prime_log=lambda s: s - torch.expm1(-s))


def alpha_generator(alpha: float) -> FGenerator:
    """Amari/Cichocki α-divergence ``f(t) = (t^α - α t - (1-α)) / (α(α-1))``; α→1 is KL, α→0 reverse KL.

    ``D_α = (Σ p^α q^{1-α} - 1) / (α(α-1))``; ``α = 2`` is half Pearson χ², ``α = 1/2`` is twice the
    squared Hellinger distance. Conjugate ``f*(u) = ((1 + (α-1)u)^{α/(α-1)} - 1)/α`` on
    ``1 + (α-1) u > 0``.
    """
    alpha = float(alpha)
    if not math.isfinite(alpha):
        raise fail("alpha", "a finite real number", repr(alpha))
    if alpha == 1.0:
        return KL
    if alpha == 0.0:
        return REVERSE_KL
    a, c = alpha, alpha * (alpha - 1)

    def body(lp, lq):
        return ((a * lp + (1 - a) * lq).exp() - a * lp.exp() - (1 - a) * lq.exp()) / c

    def conjugate(u):
        return ((1 + (a - 1) * u) ** (a / (a - 1)) - 1) / a

    if a > 1:
        def activation(v):
            return F.softplus(v) - 1 / (a - 1)
    else:
        def activation(v):
            return 1 / (1 - a) - F.softplus(-v)

    return FGenerator(
        f"alpha({a:g})", f=lambda t: (t ** a - a * t - (1 - a)) / c,
        f_prime=lambda t: (t ** (a - 1) - 1) / (a - 1), conjugate=conjugate, activation=activation,
        f_prime_log=lambda s: torch.expm1((a - 1) * s) / (a - 1),
        conjugate_domain=(-1 / (a - 1), INF) if a > 1 else (-INF, 1 / (1 - a)),
        f0=1 / a if a > 0 else INF, slope_inf=INF if a > 1 else 1 / (1 - a), body=body,
        symmetric=a == 0.5)


GENERATORS: dict[str, FGenerator] = {g.name: g for g in (KL, REVERSE_KL, JS, TV, HELLINGER, PEARSON, NEYMAN,
                                                        JEFFREYS)}
_ALIASES = {"forward": "kl", "forward_kl": "kl", "reverse": "reverse_kl", "jensen_shannon": "js",
            "total_variation": "tv", "squared_hellinger": "hellinger", "pearson_chi2": "pearson",
            "chi2": "pearson", "neyman_chi2": "neyman"}


def get_generator(gen: str | FGenerator, name: str = "generator") -> FGenerator:
    """A generator by name (``'kl', 'reverse_kl', 'js', 'tv', 'hellinger', 'pearson', 'neyman',
    'jeffreys'`` and aliases ``'forward', 'reverse', 'chi2', ...``) or an :class:`FGenerator` as is."""
    if isinstance(gen, FGenerator):
        return gen
    if isinstance(gen, str):
        key = _ALIASES.get(gen, gen)
        if key in GENERATORS:
            return GENERATORS[key]
    raise fail(name, f"an FGenerator or one of {sorted(set(GENERATORS) | set(_ALIASES))}", repr(gen))


def f_prime(generator: str | FGenerator, log_t: torch.Tensor) -> torch.Tensor:
    """The derivative ``f'(t)`` of a generator at ``t = exp(log_t)``, from log density ratios.

    ``generator`` is a name (as :func:`get_generator`) or an :class:`FGenerator`. The named generators
    evaluate ``f'`` in closed form in ``log t`` (no ``exp`` overflow, no precision lost near ``t = 1``):

    ==============  ==========================================
    ``kl``          ``log t + 1``
    ``reverse_kl``  ``-1/t``
    ``js``          ``1/2 (log t - softplus(log t) + log 2)`` (skew JS: ``π (log t - log(π t + 1 - π))``)
    ``tv``          ``1/2 sign(t - 1)``
    ``hellinger``   ``1 - t^(-1/2)``
    ``pearson``     ``2 (t - 1)``
    ``neyman``      ``1 - t^(-2)``
    ``jeffreys``    ``log t + 1 - 1/t``
    ``alpha(a)``    ``(t^(a-1) - 1) / (a - 1)``
    ==============  ==========================================

    Names follow :math:`D_f(P\\,\\|\\,Q) = \\sum_k q_k f(p_k/q_k)` with ``t = p/q``: ``'kl'`` is
    ``KL(P ‖ Q)``. The ratio form is :meth:`FGenerator.derivative`.
    """
    return get_generator(generator).derivative_log(log_t)


class _GeneratorDomain(Domain):
    """The domain of a ``generator=`` option: an :class:`FGenerator`, or a generator's name or alias."""

    @property
    def description(self) -> str:  # type: ignore[override]
        return f"an FGenerator or one of {sorted(set(GENERATORS) | set(_ALIASES))}"

    def contains(self, value, arguments=None) -> bool:
        if isinstance(value, FGenerator):
            return True
        return isinstance(value, str) and _ALIASES.get(value, value) in GENERATORS

    def invalid(self) -> list:
        return ["no-such-generator", 3]

    def boundaries(self) -> list:
        return sorted(GENERATORS)


#: The domain of the ``generator=`` option of the divergence objectives (declared, since ``generator``
#: means a ``torch.Generator`` in :data:`losskit._core.domains.COMMON`).
GENERATOR_DOMAIN = _GeneratorDomain()
