"""Dataset-condensation objectives: the losses a synthetic set is optimised through.

* :func:`krr_st`: KRR-ST's outer loss, the MSE of a closed-form kernel-ridge-regression head fitted on the
  synthetic set's features and target representations, evaluated on real data (Lee et al., ICLR 2024).
* :func:`gradient_match_distance` / :func:`gradient_matching`: the layer-wise gradient-matching distance of
  dataset condensation (Zhao, Mopuri, Bilen 2021) and its class-wise (DC) and all-class contrastive (DCC;
  Lee et al., ICML 2022) forms, on lists of gradient tensors.

The bilevel pipelines around them (model pools, inner training loops, augmentation) are training
procedures, not objectives, and stay with the user: these functions are the differentiable losses whose
gradients move the synthetic data.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .._core import Paper, check_reduction, fail, finish, objective
from .._core.domains import FLAG, NONNEGATIVE, Choice, check_option
from .._core.registry import BadInput, Example, InputKind
from .._core.validate import check_floating, require
from ._inputs import scale_all

__all__ = ["krr_st", "KRRSTLoss", "krr_predict", "gradient_match_distance", "gradient_matching"]

KRR_ST = Paper("Self-Supervised Dataset Distillation for Transfer Learning", 2024, "2310.06511",
               "Lee, Lee, Ko, Kawaguchi, Lee, Hwang")
DC = Paper("Dataset Condensation with Gradient Matching", 2021, "2006.05929", "Zhao, Mopuri, Bilen")
DCC = Paper("Dataset Condensation with Contrastive Signals", 2022, "2202.02916",
            "Lee, Chun, Jung, Yun, Yoon")


# --------------------------------------------------------------------------------------------- KRR-ST
def _krr_example(gen, dtype, m: int = 4, n: int = 6, d: int = 3, t: int = 2) -> Example:
    fs = torch.randn(m, d, generator=gen, dtype=torch.float64)
    ys = torch.randn(m, t, generator=gen, dtype=torch.float64)
    fq = torch.randn(n, d, generator=gen, dtype=torch.float64)
    yq = torch.randn(n, t, generator=gen, dtype=torch.float64)
    return Example({"support_features": fs.to(dtype), "support_targets": ys.to(dtype),
                    "query_features": fq.to(dtype), "query_targets": yq.to(dtype)},
                   grad=("support_features", "support_targets", "query_features"),
                   batched=("query_features", "query_targets"))


def _krr_bad(ex: Example) -> list[BadInput]:
    fs, ys = ex.inputs["support_features"], ex.inputs["support_targets"]
    fq, yq = ex.inputs["query_features"], ex.inputs["query_targets"]
    inf = yq.clone()
    inf.view(-1)[0] = float("inf")
    return [
        BadInput("support targets of another size", ex.replace({"support_targets": ys[:-1]}), "support_targets"),
        BadInput("query features of another width", ex.replace({"query_features": fq[:, :-1]}), "query_features"),
        BadInput("query targets of another width", ex.replace({"query_targets": yq[:, :-1]}), "query_targets"),
        BadInput("query targets of another batch", ex.replace({"query_targets": yq[:-1]}), "query_targets"),
        BadInput("features without a feature axis", ex.replace({"support_features": fs[:, 0]}), "support_features"),
        BadInput("integer features", ex.replace({"query_features": fq.round().long()}), "query_features"),
        BadInput("+inf target", ex.replace({"query_targets": inf}), "query_targets"),
    ]


SUPPORT_QUERY = InputKind("support+query regression", "support features (M, D) and targets (M, T); query features "
                          "(N, D) and targets (N, T)", bad_inputs=_krr_bad, extreme=scale_all())


def _matrix(name: str, x: torch.Tensor, rows: int | None = None, cols: int | None = None, what: str = "") -> None:
    check_floating(name, x)
    if x.dim() != 2:
        raise fail(name, f"a matrix {what}", f"shape {tuple(x.shape)}")
    if rows is not None and x.shape[0] != rows:
        raise fail(name, f"{rows} rows {what}", f"shape {tuple(x.shape)}")
    if cols is not None and x.shape[1] != cols:
        raise fail(name, f"{cols} columns {what}", f"shape {tuple(x.shape)}")


def _kernels(fs: torch.Tensor, fq: torch.Tensor, bias: bool) -> tuple[torch.Tensor, torch.Tensor]:
    if bias:
        fs = torch.cat([fs, fs.new_ones(fs.shape[0], 1)], 1)
        fq = torch.cat([fq, fq.new_ones(fq.shape[0], 1)], 1)
    return fs @ fs.T, fq @ fs.T


def _krr_solve(k_ss: torch.Tensor, k_qs: torch.Tensor, ys: torch.Tensor, ridge: float,
               relative_ridge: bool) -> torch.Tensor:
    lam = ridge * torch.diagonal(k_ss.detach()).sum() if relative_ridge else ridge
    eye = torch.eye(k_ss.shape[0], dtype=k_ss.dtype, device=k_ss.device)
    return k_qs @ torch.linalg.solve(k_ss + lam * eye, ys)


def krr_predict(support_features: torch.Tensor, support_targets: torch.Tensor, query_features: torch.Tensor, *,
                ridge: float = 1e-6, relative_ridge: bool = True, bias: bool = True) -> torch.Tensor:
    """Kernel ridge regression with the linear kernel on (optionally bias-augmented) features:
    ``K_qs (K_ss + lam I)^{-1} Y_s``, ``K = F F^T``, ``lam = ridge * tr(K_ss)`` (``relative_ridge``, the trace
    taken without gradient as in the authors' code) or ``ridge``. Shape ``(N, T)``."""
    k_ss, k_qs = _kernels(support_features, query_features, bias)
    return _krr_solve(k_ss, k_qs, support_targets, ridge, relative_ridge)


@objective(
    "krr_st", seed=True, family="representation", input_kind=SUPPORT_QUERY, example=_krr_example, paper=KRR_ST,
    properties={"nonnegative"}, module_name="KRRSTLoss", meta=False,
    domains={"ridge": NONNEGATIVE, "relative_ridge": FLAG, "bias": FLAG},
    formula="l_i = (1/T) ||[f_i, 1] F_s^T (F_s F_s^T + lam I)^{-1} Y_s - y_i||^2,  F_s = [support_features, 1],  "
            "lam = ridge tr(F_s F_s^T)",
)
def krr_st(support_features: torch.Tensor, support_targets: torch.Tensor, query_features: torch.Tensor,
           query_targets: torch.Tensor, *, ridge: float = 1e-6, relative_ridge: bool = True, bias: bool = True,
           sample_weight: torch.Tensor | None = None, reduction: str = "mean") -> torch.Tensor:
    """KRR-ST: the mean squared error of a kernel-ridge-regression head fitted in closed form on the synthetic set.

    .. math:: \\ell_i = \\tfrac1T \\big\\| k(f_i, F_s)\\,(K_{ss} + \\lambda I)^{-1} Y_s - y_i \\big\\|^2,\\qquad
              K_{ss} = F_s F_s^\\top,\\ \\lambda = \\texttt{ridge}\\cdot\\mathrm{tr}(K_{ss})

    ``support_features (M, D)``: the model's representations of the synthetic images ``X_s``;
    ``support_targets (M, T)``: their learnable target representations ``Y_s``; ``query_features (N, D)``
    and ``query_targets (N, T)``: representations of a real batch under the model being fitted and under
    the self-supervised target model. The KRR head is the linear kernel on ``[f, 1]`` (``bias=True`` appends
    the constant feature, as the authors' code does). Minimising the mean over the queries with respect to
    ``X_s`` (through ``support_features``) and ``Y_s`` is KRR-ST's outer step; ``'mean'`` equals the authors'
    ``F.mse_loss`` over all ``N x T`` entries. ``'none'``: (N,).

    Defaults are the authors' code (``algorithms/distill.py``): ``ridge = 1e-6`` relative to the trace of
    ``K_ss``, taken without gradient. ``ridge=0`` is allowed only for a nonsingular ``K_ss``.

    Paper: Lee, Lee, Ko, Kawaguchi, Lee, Hwang, "Self-Supervised Dataset Distillation for Transfer Learning", ICLR 2024,
    arXiv:2310.06511.
    """
    check_reduction(reduction)
    _matrix("support_features", support_features, what="(M, D)")
    m, d = support_features.shape
    _matrix("support_targets", support_targets, rows=m, what=f"(M={m}, T)")
    t = support_targets.shape[1]
    _matrix("query_features", query_features, cols=d, what=f"(N, D={d})")
    _matrix("query_targets", query_targets, rows=query_features.shape[0], cols=t,
            what=f"(N={query_features.shape[0]}, T={t})")
    k_ss, k_qs = _kernels(support_features, query_features, bias)
    for name, k in (("support_features", k_ss), ("query_features", k_qs)):
        require(name, k, lambda k=k: ~torch.isfinite(k).all(), "features whose linear kernel is finite in "
                f"{k.dtype} (entries up to ~sqrt(max/D))", lambda k=k: "an overflowing kernel")
    pred = _krr_solve(k_ss, k_qs, support_targets, ridge, relative_ridge)
    per = (pred - query_targets).square().mean(1)
    return finish(per, reduction, sample_weight=sample_weight)


KRRSTLoss = krr_st.Module


# -------------------------------------------------------------------------------- gradient matching
def _layer_distance(gs: torch.Tensor, gr: torch.Tensor, eps: float, vectors: str) -> torch.Tensor:
    if gs.dim() == 1:
        if vectors == "skip":
            return gs.new_zeros(())
        gs, gr = gs.reshape(1, -1), gr.reshape(1, -1)
    else:
        gs, gr = gs.reshape(gs.shape[0], -1), gr.reshape(gr.shape[0], -1)
    dot = (gs * gr).sum(-1)
    return (1 - dot / (gs.norm(dim=-1) * gr.norm(dim=-1) + eps)).sum()


def _check_lists(syn: Sequence[torch.Tensor], real: Sequence[torch.Tensor], lead: int = 0) -> None:
    if len(syn) != len(real) or len(syn) == 0:
        raise fail("real_grads", f"one tensor per tensor of syn_grads ({len(syn)})", f"{len(real)} tensors")
    for i, (s, r) in enumerate(zip(syn, real)):
        check_floating(f"syn_grads[{i}]", s)
        check_floating(f"real_grads[{i}]", r)
        if s.shape != r.shape:
            raise fail(f"real_grads[{i}]", f"shape {tuple(s.shape)} (as syn_grads[{i}])", f"shape {tuple(r.shape)}")
        if s.dim() < 1 + lead:
            raise fail(f"syn_grads[{i}]", f"a gradient tensor with at least {1 + lead} axes", f"shape {tuple(s.shape)}")


def gradient_match_distance(syn_grads: Sequence[torch.Tensor], real_grads: Sequence[torch.Tensor], *,
                            metric: str = "layerwise", eps: float = 1e-6, vectors: str = "skip") -> torch.Tensor:
    """The distance between two lists of gradient tensors (one per parameter tensor) used by dataset condensation.

    ``metric='layerwise'`` (the DC/DSA/DCC default, their ``'ours'``): for each parameter tensor reshaped to
    ``(out, rest)`` (output channels by everything else),

    .. math:: d(G^S, G^R) = \\sum_{i=1}^{out} \\Big(1 - \\frac{\\langle G^S_i, G^R_i \\rangle}
              {\\|G^S_i\\|\\,\\|G^R_i\\| + \\epsilon}\\Big)

    summed over the tensors. One-dimensional tensors (biases, normalisation scales) add nothing with
    ``vectors='skip'`` (the authors' ``distance_wb`` returns 0 for them); ``vectors='include'`` treats each as
    one row. ``metric='mse'``: ``||vec(G^S) - vec(G^R)||^2`` over all tensors; ``metric='cos'``: one cosine
    distance ``1 - <g^S, g^R> / (||g^S|| ||g^R|| + eps)`` of the concatenated gradients. ``eps = 1e-6`` as in the
    authors' code. Differentiable in both lists (the synthetic gradients come from ``autograd.grad(...,
    create_graph=True)``); returns a 0-dim tensor.

    Paper: Zhao, Mopuri, Bilen, "Dataset Condensation with Gradient Matching", ICLR 2021, arXiv:2006.05929.
    """
    check_option("metric", metric, Choice("layerwise", "mse", "cos"))
    check_option("vectors", vectors, Choice("skip", "include"))
    check_option("eps", eps, NONNEGATIVE)
    syn, real = list(syn_grads), list(real_grads)
    _check_lists(syn, real)
    if metric == "layerwise":
        return torch.stack([_layer_distance(s, r, eps, vectors) for s, r in zip(syn, real)]).sum()
    gs = torch.cat([s.reshape(-1) for s in syn])
    gr = torch.cat([r.reshape(-1) for r in real])
    if metric == "mse":
        return (gs - gr).square().sum()
    return 1 - (gs * gr).sum() / (gs.norm() * gr.norm() + eps)


def gradient_matching(syn_grads: Sequence[torch.Tensor], real_grads: Sequence[torch.Tensor], *,
                      contrastive: bool = False, metric: str = "layerwise", eps: float = 1e-6,
                      vectors: str = "skip", reduction: str = "sum") -> torch.Tensor:
    """Class-wise (DC) or all-class contrastive (DCC) gradient matching on per-class gradients.

    ``syn_grads[l]`` and ``real_grads[l]`` hold the gradients of parameter tensor ``l`` for each class ``c``
    along a leading axis, shape ``(C, *param_shape)``: ``G_c = grad_theta mean_{i in class c} CE(f(x_i), c)`` on
    the synthetic and on the real batch of class ``c``.

    * ``contrastive=False`` (DC, DSA): ``sum_c d(G^S_c, G^R_c)``, each class matched on its own.
      ``reduction='sum'`` (the authors' loop), ``'mean'`` divides by ``C``, ``'none'`` returns the ``(C,)`` terms.
    * ``contrastive=True`` (DCC): ``d(mean_c G^S_c, mean_c G^R_c)``, one distance between the gradients
      averaged over all classes, so each synthetic class is also shaped by the other classes' real
      gradients (the contrastive signal). With equal images per class the averaged synthetic gradient is
      the gradient of the mean cross-entropy over the whole synthetic set, which is what the authors'
      code computes in one backward pass. A 0-dim tensor for every ``reduction``.

    ``d`` is :func:`gradient_match_distance` with ``metric``, ``eps`` and ``vectors``.

    Papers: Lee, Chun, Jung, Yun, Yoon, "Dataset Condensation with Contrastive Signals", ICML 2022,
    arXiv:2202.02916; Zhao, Mopuri, Bilen, "Dataset Condensation with Gradient Matching", ICLR 2021,
    arXiv:2006.05929.
    """
    check_option("contrastive", contrastive, FLAG)
    check_option("reduction", reduction, Choice("mean", "sum", "none"))
    syn, real = list(syn_grads), list(real_grads)
    _check_lists(syn, real, lead=1)
    c = syn[0].shape[0]
    for i, s in enumerate(syn):
        if s.shape[0] != c:
            raise fail(f"syn_grads[{i}]", f"{c} classes on the leading axis (as syn_grads[0])", f"shape {tuple(s.shape)}")
    if contrastive:
        return gradient_match_distance([s.mean(0) for s in syn], [r.mean(0) for r in real], metric=metric,
                                       eps=eps, vectors=vectors)
    terms = torch.stack([gradient_match_distance([s[k] for s in syn], [r[k] for r in real], metric=metric,
                                                 eps=eps, vectors=vectors) for k in range(c)])
    if reduction == "none":
        return terms
    return terms.sum() if reduction == "sum" else terms.mean()
