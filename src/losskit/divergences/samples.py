"""Sample-based divergences: MMD (unbiased, biased, linear-time), energy distance, kernel Cauchy–Schwarz.

All of them are sums of a kernel over pairs of samples. One routine, :func:`kernel_sum`, computes such
a sum over row blocks of ``x`` (``block_size`` rows at a time), so memory stays O(n · block_size)
instead of O(n · m). When a gradient is needed each block runs under activation checkpointing, so the
backward pass does not keep the n × m kernel matrix either (it recomputes each block). The same
routine in log space (``log=True``, a blocked log-sum-exp) gives the Cauchy–Schwarz estimate.

Kernels, with ``d = ‖x - y‖`` and bandwidth σ: ``'gaussian'`` ``exp(-d²/(2σ²))``, ``'laplacian'``
``exp(-d/σ)``, ``'imq'`` (inverse multiquadric) ``(1 + d²/σ²)^(-1/2)``, and ``'energy'`` ``-d``
(conditionally positive definite: MMD with it is the energy distance). ``bandwidth`` is a number, a
tuple of numbers (the kernel is then the sum over them, a multi-scale kernel) or ``'median'``: σ = the
median pairwise distance of the pooled sample (Gretton et al., 2012), computed without gradient on at
most ``MEDIAN_POINTS`` points (an evenly strided subset beyond that).

Distances use ``‖x‖² + ‖y‖² - 2 x·y`` (a matmul, :func:`losskit.ops.sq_dist`), whose rounding can give
tiny negative values: they are set to 0 (the only clamp, stated here). ``sqrt`` has a zero subgradient
at ``d = 0`` (:func:`losskit.ops.safe_sqrt`). Samples whose squared distances overflow the dtype (e.g.
float32 coordinates of 1e30) raise :class:`~losskit.LossInputError` naming the sample: the kernel
values there are not computable (``inf - inf``). The check reads each block's distances once (one
``amax``) and follows :func:`losskit.set_validation`.
"""

from __future__ import annotations

import math

import torch
from torch.utils.checkpoint import checkpoint

from .._core import Paper, fail, finish, objective
from .._core.domains import COUNT, POSITIVE, Choice, Either, Seq
from .._core.registry import BadInput, Example, InputKind
from .._core.validate import check_floating, require, value_check_mode
from ..ops import safe_sqrt, sq_dist

__all__ = ["mmd", "energy_distance", "kernel_cauchy_schwarz_divergence", "kernel_sum", "median_bandwidth",
           "MMD", "EnergyDistance", "KernelCauchySchwarzDivergence", "KERNELS"]

KERNELS = ("gaussian", "laplacian", "imq", "energy")
ESTIMATORS = ("unbiased", "biased", "linear")
MEDIAN_POINTS = 1024


# ---------------------------------------------------------------------------------------- kernels
def _distances(a: torch.Tensor, b: torch.Tensor, name: str, cross: bool = False) -> torch.Tensor:
    """Squared distances of the rows of ``a`` and ``b`` (:func:`losskit.ops.sq_dist`), refusing an overflow
    (``inf``, or NaN from ``inf - inf``) with a LossInputError naming the sample ``name``."""
    d2 = sq_dist(a, b)
    what = " to the other sample" if cross else ""
    require(name, d2, lambda: ~torch.isfinite(d2.amax()),
            f"samples whose squared distances{what} fit in {d2.dtype}",
            lambda: f"a squared distance of {d2.amax().item()} (overflow: coordinates too large for the dtype)")
    return d2


def _log_kernel(d2: torch.Tensor, kernel: str, sigma: float) -> torch.Tensor:
    if kernel == "gaussian":
        return -d2 / (2 * sigma * sigma)
    if kernel == "laplacian":
        return -safe_sqrt(d2) / sigma
    if kernel == "imq":
        return -0.5 * torch.log1p(d2 / (sigma * sigma))
    raise fail("kernel", "a positive kernel ('gaussian', 'laplacian', 'imq') for a log-domain sum", repr(kernel))


def _kernel(d2: torch.Tensor, kernel: str, sigmas: tuple[float, ...]) -> torch.Tensor:
    if kernel == "energy":
        return -safe_sqrt(d2)
    out = _log_kernel(d2, kernel, sigmas[0]).exp()
    for s in sigmas[1:]:
        out = out + _log_kernel(d2, kernel, s).exp()
    return out


def median_bandwidth(x: torch.Tensor, y: torch.Tensor | None = None, max_points: int = MEDIAN_POINTS) -> float:
    """Median pairwise Euclidean distance of the pooled sample (no gradient; strided subset if large).

    Squared distances that overflow the dtype raise :class:`~losskit.LossInputError` naming the sample
    (``x`` or ``y``) whose rows hold them; identical samples (a zero median) raise naming ``x``."""
    med = _median(x, y, max_points).item()  # returns a number: reads the value (the objectives do not)
    if not med > 0:
        raise fail("x", "samples that are not all identical (the median bandwidth is 0)", "a zero median distance")
    return med


def _median(x: torch.Tensor, y: torch.Tensor | None = None, max_points: int = MEDIAN_POINTS) -> torch.Tensor:
    """:func:`median_bandwidth` as a 0-d tensor, without reading values (checks by the validation mode)."""
    with torch.no_grad():
        z = x if y is None else torch.cat([x, y])
        from_x = torch.arange(z.shape[0], device=z.device) < x.shape[0]
        if z.shape[0] > max_points:
            sel = torch.linspace(0, z.shape[0] - 1, max_points, device=z.device).long()
            z, from_x = z[sel], from_x[sel]
        d2 = sq_dist(z, z)
        if value_check_mode(d2) is not None:  # named by block: x's own distances, y's, then x against y
            bad = ~torch.isfinite(d2)
            for name, block in (("x", from_x[:, None] & from_x), ("y", ~from_x[:, None] & ~from_x),
                                ("y", from_x[:, None] != from_x)):
                require(name, d2, lambda b=block: (bad & b).any(),
                        f"samples whose squared distances fit in {d2.dtype} (for the median bandwidth)",
                        lambda b=block: f"an overflowing squared distance ({d2[bad & b][0].item()})")
        iu = torch.triu_indices(z.shape[0], z.shape[0], 1, device=z.device)
        med = torch.quantile(safe_sqrt(d2[iu[0], iu[1]]), 0.5)  # midpoint for an even count
    require("x", med, lambda: ~(med > 0), "samples that are not all identical (the median bandwidth is 0)",
            lambda: "a zero median distance")
    return med


def _sigmas(bandwidth, kernel, x, y) -> tuple:
    if kernel == "energy":
        return (1.0,)
    if isinstance(bandwidth, str):
        if bandwidth != "median":
            raise fail("bandwidth", "a positive number, a tuple of them, or 'median'", repr(bandwidth))
        return (_median(x, y),)  # a 0-d tensor: no host read (meta tensors and compiled graphs run)
    values = tuple(bandwidth) if isinstance(bandwidth, (tuple, list)) else (bandwidth,)
    if not values or not all(isinstance(v, (int, float)) and v > 0 and math.isfinite(v) for v in values):
        raise fail("bandwidth", "a positive number, a tuple of them, or 'median'", repr(bandwidth))
    return tuple(float(v) for v in values)


# ------------------------------------------------------------------------------------ blocked sums
def _block(xb, y, offset, kernel, sigmas, exclude_diagonal, log, tail, name):
    """One row block. ``tail``: ``y`` is ``x[i:]`` of the same sample, the block's rows are its first rows;
    the leading square block counts once and every later column twice (the mirrored lower triangle)."""
    d2 = _distances(xb, y, name, cross=not tail)
    rows = torch.arange(xb.shape[0], device=xb.device)[:, None] + offset
    cols = torch.arange(y.shape[0], device=y.device)[None, :]
    if tail:  # a point's distance to itself is exactly 0 (the GEMM form leaves rounding noise, whose sqrt
        d2 = torch.where(rows == cols, torch.zeros_like(d2), d2)  # would dominate the energy kernel's gradient)
    vals = _log_kernel(d2, kernel, sigmas[0]) if log else _kernel(d2, kernel, sigmas)
    if exclude_diagonal:
        vals = torch.where(rows == cols, torch.full_like(vals, -math.inf if log else 0.0), vals)
    if tail:
        mirrored = cols >= xb.shape[0]
        vals = torch.where(mirrored, vals + math.log(2.0) if log else 2 * vals, vals)
    return torch.logsumexp(vals.reshape(-1), 0) if log else vals.sum()


def kernel_sum(x: torch.Tensor, y: torch.Tensor | None = None, *, kernel: str = "gaussian",
               sigmas: tuple[float, ...] = (1.0,), exclude_diagonal: bool = False, block_size: int = 1024,
               log: bool = False, name: str = "x") -> torch.Tensor:
    """``Σ_ij k(x_i, y_j)`` (or its log, ``log=True``, single bandwidth) over row blocks of ``x``.

    ``y=None`` means ``y = x`` and uses the symmetry of the kernel (each block against the columns from
    its own first row on: half the work); ``exclude_diagonal`` then drops the ``i = j`` terms. Memory is
    O(block_size · len(y)) in the forward pass and, through checkpointing, in the backward pass.
    Squared distances that overflow the dtype raise :class:`~losskit.LossInputError` naming ``name``.
    """
    if block_size < 1:
        raise fail("block_size", "a positive number of rows", repr(block_size))
    tail = y is None
    if exclude_diagonal and not tail:
        raise fail("y", "None (the same sample) when the diagonal is excluded", "a second sample")
    other = x if tail else y
    ckpt = torch.is_grad_enabled() and (x.requires_grad or other.requires_grad) and x.shape[0] > block_size
    parts = []
    for i in range(0, x.shape[0], block_size):
        args = ((x[i:i + block_size], x[i:], 0, kernel, sigmas, exclude_diagonal, log, True, name) if tail else
                (x[i:i + block_size], y, i, kernel, sigmas, False, log, False, name))
        parts.append(checkpoint(_block, *args, use_reentrant=False) if ckpt else _block(*args))
    stacked = torch.stack(parts)
    return torch.logsumexp(stacked, 0) if log else stacked.sum()


# ---------------------------------------------------------------------------------------- inputs
def _check_samples(x, y, *, same_size=False):
    check_floating("x", x)
    check_floating("y", y)
    if x.dim() != 2:
        raise fail("x", "samples of shape (n, d)", f"shape {tuple(x.shape)}")
    if y.dim() != 2 or y.shape[1] != x.shape[1]:
        raise fail("y", f"samples of shape (m, {x.shape[1]})", f"shape {tuple(y.shape)}")
    if same_size and y.shape[0] != x.shape[0]:
        raise fail("y", f"as many samples as x ({x.shape[0]}) for the linear-time estimator", f"{y.shape[0]}")


def samples_example(gen: torch.Generator, dtype: torch.dtype, n: int = 8, m: int = 8, d: int = 3, *,
                    kernel: bool = True) -> Example:
    """Two small samples from different Gaussians; a fixed bandwidth (the median heuristic is a
    data-dependent constant without gradient, which finite differences would see)."""
    x = torch.randn(n, d, generator=gen, dtype=torch.float64)
    y = torch.randn(m, d, generator=gen, dtype=torch.float64) * 1.3 + 0.7
    options = {"kernel": "gaussian", "bandwidth": 1.5} if kernel else {}
    return Example({"x": x.to(dtype), "y": y.to(dtype)}, options=options, grad=("x", "y"))


def _samples_bad(ex: Example) -> list[BadInput]:
    x, y = ex.inputs["x"], ex.inputs["y"]
    return [
        BadInput("feature dimension mismatch", ex.replace({"y": y[:, :-1]}), "y"),
        BadInput("x without a feature axis", ex.replace({"x": x[:, 0]}), "x"),
        BadInput("+inf sample", ex.replace({"y": y.clone().fill_(float("inf"))}), "y"),
        BadInput("integer samples", ex.replace({"x": x.round().long()}), "x"),
    ] + ([
        BadInput("unknown kernel", ex.replace(options={"kernel": "rbf"}), "kernel"),
        BadInput("negative bandwidth", ex.replace(options={"bandwidth": -1.0}), "bandwidth"),
        BadInput("unknown bandwidth rule", ex.replace(options={"bandwidth": "mean"}), "bandwidth"),
    ] if "kernel" in ex.options else [])


TWO_SAMPLES = InputKind(
    "two samples",
    "samples x (n, d) and y (m, d) from two distributions",
    bad_inputs=_samples_bad,
    extreme=lambda ex: ex.map_floats(lambda t: (t * 1e4).float()),
)

_SAMPLES = dict(family="divergence", input_kind=TWO_SAMPLES, example=samples_example, per_sample=False,
                sample_weight=False, allow_neg_inf=())
_BANDWIDTH = Either(POSITIVE, Seq(POSITIVE), Choice("median"))  # sigma > 0, a multi-scale tuple, or 'median'



def _center(x, y=None):
    """The samples minus their pooled mean (no gradient): every kernel here is translation invariant, and
    centring keeps ``‖x‖² + ‖y‖² - 2 x·y`` from cancelling catastrophically (or overflowing) for data far
    from 0. The sums of a sample against itself centre it on its own mean: its distances then do not
    depend on where the other sample lies (nor overflow because of it)."""
    with torch.no_grad():
        c = x.mean(0) if y is None else (x.sum(0) + y.sum(0)) / (x.shape[0] + y.shape[0])
    return x - c if y is None else (x - c, y - c)


def _mmd2(x, y, kernel, sigmas, estimator, block_size):
    m, n = x.shape[0], y.shape[0]
    if estimator == "linear":
        x, y = _center(x, y)
        h = x.shape[0] // 2
        if h < 1:
            raise fail("x", "at least 2 samples for the linear-time estimator", f"{x.shape[0]}")
        x1, x2, y1, y2 = x[0:2 * h:2], x[1:2 * h:2], y[0:2 * h:2], y[1:2 * h:2]

        def k(a, b, name, cross=False):
            d2 = ((a - b) ** 2).sum(-1)
            require(name, d2, lambda: ~torch.isfinite(d2.amax()),
                    f"samples whose squared distances{' to the other sample' if cross else ''} fit in {d2.dtype}",
                    lambda: f"a squared distance of {d2.amax().item()} (overflow)")
            return _kernel(d2, kernel, sigmas)

        return (k(x1, x2, "x") + k(y1, y2, "y") - k(x1, y2, "y", True) - k(x2, y1, "y", True)).mean()
    unbiased = estimator == "unbiased"
    if unbiased and (m < 2 or n < 2):
        raise fail("x" if m < 2 else "y", "at least 2 samples for the unbiased estimator", f"{min(m, n)}")
    # each sample against itself first, so an overflow is reported on the sample that holds it
    kxx = kernel_sum(_center(x), kernel=kernel, sigmas=sigmas, exclude_diagonal=unbiased, block_size=block_size,
                     name="x")
    kyy = kernel_sum(_center(y), kernel=kernel, sigmas=sigmas, exclude_diagonal=unbiased, block_size=block_size,
                     name="y")
    kxy = kernel_sum(*_center(x, y), kernel=kernel, sigmas=sigmas, block_size=block_size, name="y")
    if unbiased:
        return kxx / (m * (m - 1)) + kyy / (n * (n - 1)) - 2 * kxy / (m * n)
    return kxx / (m * m) + kyy / (n * n) - 2 * kxy / (m * n)


_ONE = """
    One statistic per call: ``reduction`` is accepted for the common signature and every value returns
    the same scalar. ``block_size`` bounds memory (rows of ``x`` per block)."""


def _one(fn):
    fn.__doc__ = fn.__doc__.rstrip() + "\n" + _ONE
    return fn


@objective("mmd", seed=True, batch_scalar=True, properties=set(), module_name="MMD",
           formula="MMD^2 = E k(x, x') + E k(y, y') - 2 E k(x, y)  (unbiased: i != j in the first two sums)",
           paper=Paper("A Kernel Two-Sample Test", 2012, None, "Gretton, Borgwardt, Rasch, Schölkopf, Smola"),
           domains={"kernel": Choice(*KERNELS), "bandwidth": _BANDWIDTH, "estimator": Choice(*ESTIMATORS),
                    "block_size": COUNT}, **_SAMPLES)
@_one
def mmd(x: torch.Tensor, y: torch.Tensor, *, kernel: str = "gaussian", bandwidth: float | tuple | str = "median",
        estimator: str = "unbiased", block_size: int = 1024, reduction: str = "mean") -> torch.Tensor:
    """Squared maximum mean discrepancy MMD² between samples ``x`` (n, d) and ``y`` (m, d).

    .. math:: \\widehat{\\mathrm{MMD}}^2_u = \\frac{1}{m(m-1)}\\sum_{i\\ne j} k(x_i, x_j)
              + \\frac{1}{n(n-1)}\\sum_{i\\ne j} k(y_i, y_j) - \\frac{2}{mn}\\sum_{i,j} k(x_i, y_j)

    ``estimator``: ``'unbiased'`` (the U-statistic above; can be negative, mean 0 when the
    distributions are equal), ``'biased'`` (the V-statistic, including ``i = j``; ≥ 0 for a
    positive-definite kernel), ``'linear'`` (Gretton et al.'s linear-time statistic
    ``mean_i h((x_{2i}, y_{2i}), (x_{2i+1}, y_{2i+1}))``, needs ``n = m``, O(n) time and memory).
    ``kernel`` ``'gaussian' | 'laplacian' | 'imq' | 'energy'`` and ``bandwidth`` as in the module
    docstring (``'median'``: the median heuristic, treated as a constant for the gradient).

    Paper: A Kernel Two-Sample Test (Gretton et al., JMLR 2012).
    """
    _check_samples(x, y, same_size=estimator == "linear")
    sigmas = _sigmas(bandwidth, kernel, x, y)
    return finish(_mmd2(x, y, kernel, sigmas, estimator, block_size), reduction)


@objective("energy_distance", batch_scalar=True, properties={"nonnegative"}, module_name="EnergyDistance",
           formula="E = 2 E||x - y|| - E||x - x'|| - E||y - y'||",
           paper=Paper("Energy statistics: A class of statistics based on distances", 2013, None,
                       "Székely, Rizzo"), domains={"estimator": Choice("biased", "unbiased"), "block_size": COUNT},
           **{**_SAMPLES, "example": lambda g, d: samples_example(g, d, kernel=False)})
@_one
def energy_distance(x: torch.Tensor, y: torch.Tensor, *, estimator: str = "biased", block_size: int = 1024,
                    reduction: str = "mean") -> torch.Tensor:
    """Energy distance statistic (squared): MMD² with the distance kernel ``k = -‖x - y‖``.

    .. math:: \\mathcal E(x, y) = 2\\,\\mathbb E\\lVert x - y\\rVert - \\mathbb E\\lVert x - x'\\rVert
              - \\mathbb E\\lVert y - y'\\rVert

    ``estimator='biased'`` (default; V-statistic, ≥ 0) averages over all pairs including ``i = j``;
    ``'unbiased'`` excludes them. SciPy's ``scipy.stats.energy_distance`` (1-D) returns
    ``sqrt(E)`` of the biased statistic. Gradients at coincident points use the zero subgradient.

    Paper: Energy statistics: A class of statistics based on distances (Székely & Rizzo, 2013).
    """
    _check_samples(x, y)
    return finish(_mmd2(x, y, "energy", (1.0,), estimator, block_size), reduction)


@objective("kernel_cauchy_schwarz_divergence", seed=True, batch_scalar=True, properties={"nonnegative"},
           module_name="KernelCauchySchwarzDivergence",
           formula="D_CS = -2 log mean k(x_i, y_j) + log mean k(x_i, x_j) + log mean k(y_i, y_j)",
           paper=Paper("Cauchy-Schwarz Divergence Information Bottleneck for Regression", 2024, "2404.17951"),
           domains={"kernel": Choice("gaussian", "laplacian", "imq"), "bandwidth": _BANDWIDTH, "block_size": COUNT},
           **_SAMPLES)
@_one
def kernel_cauchy_schwarz_divergence(x: torch.Tensor, y: torch.Tensor, *, kernel: str = "gaussian",
                                     bandwidth: float | str = "median", block_size: int = 1024,
                                     reduction: str = "mean") -> torch.Tensor:
    """Cauchy–Schwarz divergence between the kernel density estimates of ``x`` and ``y``.

    .. math:: \\hat D_{CS} = -2\\log\\frac{1}{mn}\\sum_{i,j} k(x_i, y_j)
              + \\log\\frac{1}{m^2}\\sum_{i,j} k(x_i, x_j) + \\log\\frac{1}{n^2}\\sum_{i,j} k(y_i, y_j)

    The plug-in (V-statistic) Gram-matrix estimate, ≥ 0 for a positive-definite kernel by the
    Cauchy–Schwarz inequality in its feature space; symmetric. Each sum is a blocked log-sum-exp of
    the log-kernel, so far-apart samples give a large finite value rather than ``log 0``. Kernels:
    ``'gaussian'`` (the paper's), ``'laplacian'``, ``'imq'``; one bandwidth (or ``'median'``).
    (For Gaussian kernels the Parzen-window constant cancels between the three terms.)

    Paper: Cauchy-Schwarz Divergence Information Bottleneck for Regression (Yu et al., 2024,
    arXiv:2404.17951).
    """
    _check_samples(x, y)
    sigmas = _sigmas(bandwidth, kernel, x, y)
    if len(sigmas) != 1:
        raise fail("bandwidth", "one bandwidth (or 'median') for the Cauchy-Schwarz estimate", repr(bandwidth))
    m, n = x.shape[0], y.shape[0]

    def lse(a, b=None, name="x"):
        return kernel_sum(a, b, kernel=kernel, sigmas=sigmas, block_size=block_size, log=True, name=name)

    lxx, lyy = lse(_center(x)) - 2 * math.log(m), lse(_center(y), name="y") - 2 * math.log(n)
    d = -2 * (lse(*_center(x, y), "y") - math.log(m * n)) + lxx + lyy
    return finish(d, reduction)


MMD = mmd.Module
EnergyDistance = energy_distance.Module
KernelCauchySchwarzDivergence = kernel_cauchy_schwarz_divergence.Module
