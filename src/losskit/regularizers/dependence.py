"""Distance-covariance dependence penalties: fairness (demographic parity) regularisers for predictions
and protected attributes of any type.

``distance_covariance(pred, protected)`` is Székely, Rizzo and Bakirov's squared distance covariance
dCov²(X, Y), zero if and only if X and Y are independent (population version): adding it to a loss pushes
the predictions towards independence of the protected attributes, i.e. demographic parity, for linear and
non-linear dependence alike. With several protected attributes, concatenating them column-wise into one
``protected`` matrix (continuous attributes as they are or standardised, categorical ones one-hot) gives
Lee et al.'s *concatenated* distance covariance CCdCov = dCov²(ŷ, (S_1, ..., S_m)): it vanishes only
when the predictions are independent of the attributes *jointly*, which is intersectional demographic
parity (no "fairness gerrymandering" across subgroups). ``joint_distance_covariance`` is Chakraborty and
Zhang's JdCov of the predictions and each attribute as separate variables.

Estimators (n samples, double-centred distance matrices A, B):

- ``'biased'``: the V-statistic ``(1/n²) Σ_kl A_kl B_kl`` (>= 0);
- ``'unbiased'``: the U-statistic of Székely & Rizzo (2014), ``1/(n(n-3)) Σ_{k≠l} Ã_kl B̃_kl`` with
  U-centred matrices (needs n >= 4; can be slightly negative under independence).

Paper: Lee, Antonio, Avanzi, Marchi, Zhou, "Machine Learning with Multitype Protected Attributes:
Intersectional Fairness through Regularisation", 2025, arXiv:2509.08163.
"""

from __future__ import annotations

import torch

from .._core import BadInput, Example, InputKind, Paper, fail, finish, objective
from .._core.domains import NONNEGATIVE, Choice, Integer, Maybe, Seq
from .._core.validate import check_floating
from ..ops import safe_sqrt, sq_dist

__all__ = ["distance_covariance", "joint_distance_covariance", "DistanceCovariance", "JointDistanceCovariance"]

LEE = Paper("Machine Learning with Multitype Protected Attributes: Intersectional Fairness through Regularisation",
            2025, "2509.08163", "Lee, Antonio, Avanzi, Marchi, Zhou")


def _as_matrix(name: str, t: torch.Tensor, n: int | None = None) -> torch.Tensor:
    check_floating(name, t)
    if t.dim() == 1:
        t = t[:, None]
    if t.dim() != 2:
        raise fail(name, "shape (N,) or (N, p)", f"shape {tuple(t.shape)}")
    if n is not None and t.shape[0] != n:
        raise fail(name, f"one row per sample ({n})", f"{t.shape[0]} rows")
    return t


def _distances(x: torch.Tensor) -> torch.Tensor:
    # exact differences (no GEMM cancellation); centring and scaling by the largest entry (both without
    # gradient) change nothing but keep the squared distances from overflowing
    x = x - x.detach().mean(0)
    scale = x.detach().abs().amax().clamp_min(torch.finfo(x.dtype).tiny)
    return scale * safe_sqrt(sq_dist(x / scale, x / scale, expand=False))


def _double_centre(d: torch.Tensor) -> torch.Tensor:
    return d - d.mean(0, keepdim=True) - d.mean(1, keepdim=True) + d.mean()


def _u_centre(d: torch.Tensor) -> torch.Tensor:
    n = d.shape[0]
    a = (d - d.sum(0, keepdim=True) / (n - 2) - d.sum(1, keepdim=True) / (n - 2)
         + d.sum() / ((n - 1) * (n - 2)))
    return a * (1 - torch.eye(n, dtype=d.dtype, device=d.device))


def _dcov2(x: torch.Tensor, y: torch.Tensor, estimator: str) -> torch.Tensor:
    dx, dy = _distances(x), _distances(y)
    n = dx.shape[0]
    if estimator == "unbiased":
        return (_u_centre(dx) * _u_centre(dy)).sum() / (n * (n - 3))
    return (_double_centre(dx) * _double_centre(dy)).sum() / (n * n)


# ------------------------------------------------------------------------------------ input kind
def _example(gen: torch.Generator, dtype: torch.dtype, n: int = 10) -> Example:
    s_cont = torch.randn(n, 1, generator=gen, dtype=torch.float64)
    s_cat = torch.nn.functional.one_hot(torch.randint(0, 3, (n,), generator=gen), 3).to(torch.float64)
    protected = torch.cat([s_cont, s_cat], 1)
    pred = 0.8 * s_cont[:, 0] + s_cat[:, 1] + 0.5 * torch.randn(n, generator=gen, dtype=torch.float64)
    return Example({"pred": pred.to(dtype), "protected": protected.to(dtype)}, grad=("pred",))


def _bad(ex: Example) -> list[BadInput]:
    p, s = ex.inputs["pred"], ex.inputs["protected"]
    return [BadInput("batch mismatch", ex.replace({"protected": s[:-1]}), "protected"),
            BadInput("3-d predictions", ex.replace({"pred": p[:, None, None]}), "pred"),
            BadInput("integer predictions", ex.replace({"pred": p.round().long()}), "pred"),
            BadInput("+inf attribute", ex.replace({"protected": s.clone().fill_(float("inf"))}), "protected")]


PRED_PROTECTED = InputKind("predictions+protected attributes",
                           "predictions (N,) or (N, p) and protected attributes (N,) or (N, q) (one-hot categories)",
                           bad_inputs=_bad, extreme=lambda ex: ex.map_floats(lambda t: (t * 1e4).float()))

_COMMON = dict(family="regularizer", input_kind=PRED_PROTECTED, example=_example, paper=LEE, per_sample=False,
               batch_scalar=True, sample_weight=False, allow_neg_inf=(), seed=True)


@objective("distance_covariance", formula="dCov²(X, Y) = (1/n²) Σ_kl A_kl B_kl,  A, B double-centred "
           "distance matrices (U-statistic: U-centred, 1/(n(n-3)) Σ_{k≠l})",
           module_name="DistanceCovariance", properties={"nonnegative"},
           domains={"estimator": Choice("biased", "unbiased")}, **_COMMON)
def distance_covariance(pred: torch.Tensor, protected: torch.Tensor, *, estimator: str = "biased",
                        reduction: str = "mean") -> torch.Tensor:
    """Squared distance covariance dCov²(pred, protected): the dCov / CCdCov fairness regulariser.

    .. math:: \\mathrm{dCov}^2_n(X, Y) = \\frac{1}{n^2}\\sum_{k,l} A_{kl} B_{kl}, \\quad
              A_{kl} = a_{kl} - \\bar a_{k\\cdot} - \\bar a_{\\cdot l} + \\bar a_{\\cdot\\cdot},\\;
              a_{kl} = \\lVert X_k - X_l \\rVert

    ``pred`` (N,) or (N, p) are the model's predictions (scores, probabilities or logits), ``protected``
    (N,) or (N, q) the protected attributes. Several attributes of mixed types go in as one matrix
    (continuous columns, one-hot categorical columns): the result is the paper's CCdCov, the penalty for
    intersectional demographic parity. Add ``lam * distance_covariance(pred, protected)`` to the task loss;
    the paper calibrates λ per data set (e.g. by the Jensen-Shannon divergence between the prediction
    distributions of the groups), so no default weight is applied here. ``estimator``: ``'biased'``
    (V-statistic, >= 0, default) or ``'unbiased'`` (U-statistic, N >= 4). Euclidean distances have zero
    gradient at coincident points. One statistic per batch: ``reduction`` has no effect.

    Paper: Lee, Antonio, Avanzi, Marchi, Zhou, "Machine Learning with Multitype Protected Attributes:
    Intersectional Fairness through Regularisation", 2025, arXiv:2509.08163 (dCov: Székely, Rizzo,
    Bakirov, Ann. Statist. 2007).
    """
    x = _as_matrix("pred", pred)
    y = _as_matrix("protected", protected, x.shape[0])
    n = x.shape[0]
    if n < (4 if estimator == "unbiased" else 2):
        raise fail("pred", f"at least {4 if estimator == 'unbiased' else 2} samples", f"{n}")
    return finish(_dcov2(x, y.to(x.dtype), estimator), reduction)


@objective("joint_distance_covariance",
           formula="JdCov²(X_0, ..., X_m; c) = (1/n²) Σ_kl Π_i (U^i_kl + c) - c^(m+1),  U^i = -A^i (minus the "
                   "double-centred distances),  X_0 = pred, X_1..X_m = the attributes",
           module_name="JointDistanceCovariance", properties=set(),
           domains={"c": NONNEGATIVE, "groups": Maybe(Seq(Integer(1)))}, **_COMMON)
def joint_distance_covariance(pred: torch.Tensor, protected: torch.Tensor, *, c: float = 1.0,
                              groups: tuple[int, ...] | None = None, reduction: str = "mean") -> torch.Tensor:
    """Joint distance covariance (JdCov) of the predictions and each protected attribute (V-statistic).

    .. math:: \\widehat{\\mathrm{JdCov}}^2(X_0, \\ldots, X_m; c) = \\frac{1}{n^2}\\sum_{k,l}
              \\prod_{i=0}^{m} \\big(A^{i}_{kl} + c\\big) - c^{m+1}

    with ``A^i`` the double-centred distance matrix of variable ``i``: ``X_0 = pred`` and
    ``X_1, ..., X_m`` the protected attributes, read from the columns of ``protected``: one column each
    (``groups=None``), or consecutive blocks of ``groups[j]`` columns (a one-hot categorical attribute is
    one block). It expands to ``c^{m-1} Σ_{i<j} dCov²(X_i, X_j) + c^{m-2} Σ_{i<j<l} dCov²(X_i, X_j, X_l) +
    ...`` (Chakraborty & Zhang 2019) and vanishes iff the m+1 variables are mutually independent. The
    terms among the attributes alone do not depend on the model (no gradient), so the value is offset by
    the attributes' own dependence. ``c >= 0`` weights the lower-order terms (default 1, Chakraborty &
    Zhang's choice). One statistic per batch: ``reduction`` has no effect.

    Papers: Lee et al. 2025 (arXiv:2509.08163); Chakraborty, Zhang, "Distance Metrics for Measuring Joint
    Dependence with Application to Causal Inference", JASA 2019.
    """
    x = _as_matrix("pred", pred)
    s = _as_matrix("protected", protected, x.shape[0]).to(x.dtype)
    sizes = (1,) * s.shape[1] if groups is None else tuple(int(g) for g in groups)
    if sum(sizes) != s.shape[1]:
        raise fail("groups", f"block sizes summing to the {s.shape[1]} columns of protected", repr(groups))
    if x.shape[0] < 2:
        raise fail("pred", "at least 2 samples", f"{x.shape[0]}")
    # U^i = -A^i (Chakraborty & Zhang's sign: E|x - X'| + E|X - x'| - |x - x'| - E|X - X'|); the sign
    # cancels in the pairwise terms but not in the odd-order ones
    prod = c - _double_centre(_distances(x))
    for block in torch.split(s, sizes, dim=1):
        prod = prod * (c - _double_centre(_distances(block)))
    n = x.shape[0]
    return finish(prod.sum() / (n * n) - c ** (len(sizes) + 1), reduction)


DistanceCovariance = distance_covariance.Module
JointDistanceCovariance = joint_distance_covariance.Module
