"""The property checks. Each takes a probe and a generator and returns a :class:`Verdict`.

All checks run in float64 (except the half-precision one) on small inputs (K = 4 classes by default), so
a whole report takes seconds. Tolerances are relative to the loss's magnitude and stated in the evidence.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from .._core.errors import LossInputError
from ._probes import Probe
from ._report import FAIL, PASS, SKIP, Verdict

__all__ = ["PROPERTY_CHECKS", "Check", "conditional_risk_minimiser", "minimise_rows"]

Tensor = torch.Tensor
ALL = ("multiclass", "binary", "distributions", "logits", "example")
LABELLED = ("multiclass", "binary")
SCALES = (0.1, 1.0, 3.0, 10.0)
GRID = (1.0, 10.0, 100.0, 1e3, 1e4)


@dataclass
class Check:
    name: str
    kinds: tuple[str, ...]
    run: Callable[[Probe, torch.Generator], Verdict]
    why_not: str = ""  # why the check does not apply to the other kinds
    whole_batch: bool = True  # also meaningful for a batch-coupled loss (one value per batch)


def _v(name, ok, evidence, **numbers) -> Verdict:
    return Verdict(name, PASS if ok else FAIL, evidence, numbers)


def _fmt(x) -> str:
    if isinstance(x, Tensor):
        x = x.tolist()
    if isinstance(x, list):
        return "[" + ", ".join(_fmt(v) for v in x) + "]"
    return f"{x:.4g}" if isinstance(x, float) else str(x)


def _inputs(probe: Probe, gen: torch.Generator, n: int = 32, scales=SCALES):
    for s in scales:
        yield probe.random(gen, n, s)


# ----------------------------------------------------------------------- conditional risk
def _test_distributions(probe, gen: torch.Generator) -> Tensor:
    """Outcome distributions P (M, J) with a clear but sometimes small lead of the top outcome."""
    if probe.kind == "binary":
        eta = torch.tensor([0.03, 0.15, 0.3, 0.4, 0.45, 0.55, 0.6, 0.7, 0.85, 0.97], dtype=torch.float64)
        return torch.stack([1 - eta, eta], -1)
    k = probe.k
    rows = []
    for _ in range(100000):
        if k <= 8:  # Dirichlet(1, ..., 1): uniform on the simplex
            p = -torch.log(torch.rand(k, generator=gen, dtype=torch.float64))
        else:  # many classes: Dirichlet(1) puts some p_k near 0; softmax of normals stays interior
            p = torch.exp(torch.randn(k, generator=gen, dtype=torch.float64))
        p = p / p.sum()
        top = p.topk(2).values
        # a clear leader, and interior points (minimisers at finite logits); for K = 4: lead > 0.05, p > 0.02
        if top[0] - top[1] > 0.2 / k and p.min() > 0.08 / k:
            rows.append(p)
            if len(rows) == 12:
                break
    near = torch.linspace(1.0, 0.6, k, dtype=torch.float64)  # near ties: leads of 0.05-0.1
    for lead in (0.05, 0.1):
        p = near.clone()
        p[0] = p[1] + lead * p[1:].sum() / (1 - lead)
        p = p / p.sum()
        rows.append(p[torch.randperm(k, generator=gen)])
    return torch.stack(rows)


def _value_and_grad(f, x: Tensor) -> tuple[Tensor, Tensor]:
    x = x.detach().requires_grad_(True)
    r = f(x)
    finite = torch.isfinite(r)
    if not finite.any():
        return r.detach(), torch.zeros_like(x)
    (g,) = torch.autograd.grad(torch.where(finite, r, torch.zeros_like(r)).sum(), x)
    return r.detach(), torch.nan_to_num(g, nan=0.0, posinf=0.0, neginf=0.0)


def minimise_rows(f: Callable[[Tensor], Tensor], x0: Tensor, max_iter: int = 100, history: int = 10,
                  gtol: float = 1e-10) -> tuple[Tensor, Tensor]:
    """Minimise ``f(x) -> (M,)`` row by row: a batched L-BFGS with a per-row backtracking (Armijo) search.

    Every row is its own problem with its own step and history, so a slowly converging row does not
    hold the others back (and no optimiser object, hence no torch.optim import, is needed). A row only
    moves to a point of lower, finite value, so the result is the best point seen.
    """
    shape = x0.shape
    m = shape[0]
    x = x0.detach().reshape(m, -1).clone()

    def fr(v):
        return f(v.reshape(shape))

    r, g = _value_and_grad(fr, x)
    S: list[Tensor] = []
    Y: list[Tensor] = []
    active = torch.isfinite(r)
    for _ in range(max_iter):
        active = active & (g.abs().amax(1) > gtol)
        if not active.any():
            break
        # two-loop recursion, batched over rows (pairs with no curvature carry rho = 0)
        q, alphas = g.clone(), []
        for s_, y_ in zip(reversed(S), reversed(Y)):
            sy = (s_ * y_).sum(1)
            rho = torch.where(sy > 1e-20, 1 / sy.clamp_min(1e-300), torch.zeros_like(sy))
            a = rho * (s_ * q).sum(1)
            q = q - a[:, None] * y_
            alphas.append((a, rho))
        if S:
            sy, yy = (S[-1] * Y[-1]).sum(1), (Y[-1] * Y[-1]).sum(1)
            gamma = torch.where((sy > 1e-20) & (yy > 0), sy / yy.clamp_min(1e-300), torch.ones_like(sy))
        else:
            gamma = 1 / g.norm(dim=1).clamp_min(1.0)
        d = gamma[:, None] * q
        for (s_, y_), (a, rho) in zip(zip(S, Y), reversed(alphas)):
            b = rho * (y_ * d).sum(1)
            d = d + s_ * (a - b)[:, None]
        d = -d
        slope = (g * d).sum(1)
        bad = ~(slope < 0) | ~torch.isfinite(slope)
        d = torch.where(bad[:, None], -g, d)
        slope = torch.where(bad, -(g * g).sum(1), slope)
        # backtracking, every row with its own step
        t = torch.ones(m, dtype=x.dtype)
        todo = active.clone()
        x_new, r_new = x.clone(), r.clone()
        for _ in range(30):
            cand = x + t[:, None] * d
            rc = fr(cand).detach()
            ok = todo & torch.isfinite(rc) & (rc <= r + 1e-4 * t * slope)
            x_new[ok], r_new[ok] = cand[ok], rc[ok]
            todo = todo & ~ok
            if not todo.any():
                break
            t = torch.where(todo, 0.5 * t, t)
        moved = active & ~todo
        # a row stops when its step no longer changes the value (or the search failed)
        progress = (r - r_new) > 1e-15 * (1 + r.abs())
        if not moved.any():
            break
        _, g_new = _value_and_grad(fr, x_new)
        s_, y_ = x_new - x, g_new - g
        s_[~moved], y_[~moved] = 0, 0
        S.append(s_)
        Y.append(y_)
        if len(S) > history:
            S.pop(0)
            Y.pop(0)
        active = active & moved & progress
        x, r, g = x_new, r_new, torch.where(moved[:, None], g_new, g)
    return x.reshape(shape), r


def conditional_risk_minimiser(probe, P: Tensor, gen: torch.Generator, starts: int = 2,
                               max_iter: int = 60) -> tuple[Tensor, Tensor]:
    """Minimise ``R(x; p) = sum_j p_j L(x, outcome_j)`` for each row p of ``P`` (float64).

    Several starts (zero, random), each row minimised by :func:`minimise_rows`; per row the start with
    the lowest finite risk wins. A risk unbounded below still yields the direction it escapes to.
    """
    m = P.shape[0]

    def risk(x):
        return (P * probe.risk_table(x)).sum(1)

    best_r = torch.full((m,), math.inf, dtype=torch.float64)
    best_x = None
    for s in range(starts):
        x0 = probe.random(gen, m, float(s))[0]
        with probe.untracked():  # the optimiser's trial points are not evidence (its result is)
            x, r = minimise_rows(risk, x0, max_iter)
        better = torch.isfinite(r) & (r < best_r)
        best_x = x if best_x is None else torch.where(better.reshape(-1, *([1] * (x.dim() - 1))), x, best_x)
        best_r = torch.where(better, r, best_r)
    return best_x, best_r


def _risk(probe, gen):
    """(P, minimisers, risks, non-finite notes), computed once per probe (calibration and properness share
    it). The evidence is the minimisers: the risk and its gradient there must be finite."""
    if getattr(probe, "_risk", None) is None:
        P = _test_distributions(probe, gen)
        x, _ = conditional_risk_minimiser(probe, P, gen)
        with probe.tracking() as notes:
            xg = x.detach().clone().requires_grad_(True)
            r = (P * probe.risk_table(xg)).sum(1)
            if not torch.isfinite(r).all():
                i = int((~torch.isfinite(r)).nonzero()[0])
                probe._note(f"conditional risk {r[i].item():g} at its minimiser for p = {_fmt(P[i])}")
            else:
                (g,) = torch.autograd.grad(r.sum(), xg)
                probe.note_grad(g, xg, "gradient of the conditional risk")
        probe._risk = (P, x.detach(), r.detach(), list(notes))
    return probe._risk


def _not_finite(name: str, notes: list[str], what: str = "") -> Verdict:
    return _v(name, False, f"non-finite values at {notes[0]}" + (f"; {what}" if what else "")
              + " (a property is never certified from non-finite values)", non_finite=notes)


def check_calibrated(probe, gen) -> Verdict:
    P, x, r, notes = _risk(probe, gen)
    if notes:
        return _not_finite("calibrated", notes, "the conditional risk's minimiser is not evidence")
    d = probe.decision(x)
    top2 = d.topk(2, dim=-1).values
    lead = top2[:, 0] - top2[:, 1]
    right = (d.argmax(-1) == P.argmax(-1)) & (lead > 1e-8)
    gaps = P.topk(2, dim=-1).values
    gap = (gaps[:, 0] - gaps[:, 1]).min().item()
    n, ok = len(P), int(right.sum())
    what = "sign(x*) = sign(eta - 1/2)" if probe.kind == "binary" else "argmax z* = argmax p"
    if ok == n:
        return _v("calibrated", True, f"conditional-risk minimiser: {what} for {n}/{n} distributions "
                                      f"(smallest lead of the top outcome {gap:.3g})", matched=n, total=n)
    i = int((~right).nonzero()[0])
    ex = f"eta={P[i, 1].item():.3g} gives x*={x[i].item():.4g}" if probe.kind == "binary" else \
        f"p={_fmt(P[i])} gives z*={_fmt(x[i])}"
    return _v("calibrated", False, f"{what} for only {ok}/{n} distributions; e.g. {ex}",
              matched=ok, total=n, counterexample_p=P[i].tolist(), counterexample_x=x[i].tolist())


def check_proper(probe, gen) -> Verdict:
    P, x, r, notes = _risk(probe, gen)
    if notes:
        return _not_finite("proper", notes, "the conditional risk's minimiser is not evidence")
    q = probe.link(x)
    err = (q - P).abs().amax(-1)
    err = torch.where(torch.isfinite(err), err, torch.full_like(err, math.inf))  # a NaN link is an error
    worst = int(err.argmax())
    tol = 1e-3
    ok = bool(err.max() <= tol)
    msg = (f"link(risk minimiser) = p within {err.max().item():.2g} (tol {tol:g}) on {len(P)} distributions"
           if ok else f"link(risk minimiser) != p: max error {err.max().item():.3g}; "
                      f"p={_fmt(P[worst])} -> {_fmt(q[worst])}")
    return _v("proper", ok, msg, max_error=err.max().item())


def check_symmetric(probe, gen) -> Verdict:
    sums = torch.cat([probe.risk_table(x).sum(1) for x, _ in _inputs(probe, gen)])
    spread = (sums.max() - sums.min()).item()
    tol = 1e-8 * (1 + sums.abs().max().item())
    lo, hi = sums.min().item(), sums.max().item()
    what = "L(x,0)+L(x,1)" if probe.kind == "binary" else "sum_k L(z,k)"
    finite = bool(torch.isfinite(sums).all())  # an inf sum makes tol inf too: inf <= inf must not pass
    return _v("symmetric", finite and spread <= tol, f"{what} ranges over [{lo:.6g}, {hi:.6g}] on {len(sums)} random "
                                          f"inputs (spread {spread:.2g}, tol {tol:.2g})", min=lo, max=hi)


# ---------------------------------------------------------------------------- values
def check_bounded(probe, gen) -> Verdict:
    sup = []
    for s in GRID:
        vals = torch.cat([probe.loss(*probe.worst(gen, 16, s)), probe.loss(*probe.random(gen, 16, s))])
        sup.append(vals.max().item() if torch.isfinite(vals).all() else math.inf)
    # bounded: the largest scale does not raise the sup above what smaller scales reached (up to 1e-3
    # relative, for sups approached slowly); growth even as slow as log s fails this
    a, b = max(sup[:-1]), sup[-1]
    ok = all(math.isfinite(v) for v in sup) and b <= a + 1e-3 * abs(a) + 1e-6  # not b <= inf
    trend = ", ".join(f"{s:g}: {v:.5g}" for s, v in zip(GRID, sup))
    return _v("bounded", ok, f"sup L over inputs of magnitude s (s: sup) {trend}"
                             + ("; levels off" if ok else "; still growing"), sup=dict(zip(GRID, sup)))


def check_nonnegative(probe, gen) -> Verdict:
    # the example kind (iterative solvers, e.g. Sinkhorn) stops at magnitude 100: its 'worst' is random anyway
    grid = GRID if probe.kind != "example" else GRID[:3]
    vals = [probe.loss(*inp) for inp in _inputs(probe, gen)]
    vals += [probe.loss(*probe.worst(gen, 16, s)) for s in grid if s < 100]
    # at magnitude >= 100 a large loss may overflow to +inf (chi^2 with q ~ exp(-1000)): +inf >= 0 is sound
    # evidence of nonnegativity there (and only there); NaN and -inf are not
    extreme = []
    for s in (s for s in grid if s >= 100):
        x, aux = probe.worst(gen, 16, s)
        with probe.untracked():
            v = probe.loss(x, aux)
        bad = torch.isnan(v) | (v == -math.inf)
        if bad.any():
            i = int(bad.nonzero()[0])
            return _not_finite("nonnegative", [f"loss {v[i].item():g} at an input of magnitude {s:g}"])
        extreme.append(v)
    overflow = sum(int((v == math.inf).sum()) for v in extreme)
    vals += [v[torch.isfinite(v)] for v in extreme]
    vals = [v for v in vals if v.numel()]
    finite = all(bool(torch.isfinite(v).all()) for v in vals)  # (python's min below skips a NaN)
    # rounding tolerance per group of inputs of one magnitude (1e-10 of that group's largest |L|)
    margin = min((v.min() / (1 + v.abs().max())).item() for v in vals)
    allv = torch.cat(vals)
    lo = allv.min().item()
    return _v("nonnegative", finite and margin >= -1e-10,
              f"min L = {lo:.4g} over {len(allv) + overflow} inputs of magnitude up to {grid[-1]:g} (tol 1e-10 "
              f"relative)" + (f"; {overflow} values at magnitude >= 100 overflow to +inf (>= 0)" if overflow else ""),
              min=lo, overflow=overflow)


def _max_rel_change(probe, pairs) -> tuple[float, float]:
    worst, base = 0.0, 0.0
    for (x, aux), (x2, aux2) in pairs:
        a, b = probe.loss(x, aux), probe.loss(x2, aux2)
        rel = ((a - b).abs() / (1 + a.abs())).max().item()
        if not (math.isfinite(rel) and torch.isfinite(a).all() and torch.isfinite(b).all()):
            rel = math.inf
        if rel >= worst:
            worst, base = rel, a.abs().max().item()
    return worst, base


def check_shift_invariant(probe, gen) -> Verdict:
    pairs = []
    for inp in _inputs(probe, gen, 16, (1.0, 3.0)):
        n = inp[0].shape[0]
        for c in (torch.empty(n, dtype=torch.float64).uniform_(-5, 5, generator=gen), torch.full((n,), 50.0)):
            pairs.append((inp, probe.shifted(*inp, c)))
    rel, _ = _max_rel_change(probe, pairs)
    return _v("shift_invariant", rel <= 1e-9, f"max |L(z+c) - L(z)|/(1+|L|) = {rel:.3g} over shifts c in "
                                              f"[-5, 5] and c = 50 (tol 1e-9)", max_rel_change=rel)


def check_scale_invariant(probe, gen) -> Verdict:
    pairs = [(inp, probe.scaled(*inp, a)) for inp in _inputs(probe, gen, 16, (1.0, 3.0)) for a in (0.25, 3.0, 10.0)]
    rel, _ = _max_rel_change(probe, pairs)
    return _v("scale_invariant", rel <= 1e-8, f"max |L(a z) - L(z)|/(1+|L|) = {rel:.3g} over a in "
                                              f"{{0.25, 3, 10}} (tol 1e-8)", max_rel_change=rel)


def check_permutation(probe, gen) -> Verdict:
    pairs = [(inp, probe.permuted(*inp, gen)) for inp in _inputs(probe, gen, 16, (1.0, 3.0)) for _ in range(3)]
    rel, _ = _max_rel_change(probe, pairs)
    what = "flipping the sign of x and the label" if probe.kind == "binary" else "permuting the classes"
    return _v("permutation_equivariant", rel <= 1e-10,
              f"max relative change of L under {what}: {rel:.3g} (tol 1e-10)", max_rel_change=rel)


# ---------------------------------------------------------------------------- convexity
def _hessian_min_eig(probe, x, aux, n=12) -> float | None:
    lo = math.inf
    for i in range(min(n, x.shape[0])):
        a = None if aux is None else aux[i:i + 1]

        def f(row, a=a):
            return probe.loss(row.reshape(1, *x.shape[1:]), a).sum()

        try:
            h = torch.autograd.functional.hessian(f, x[i].reshape(-1).clone())
        except RuntimeError:
            return None
        h = h.reshape(x[i].numel(), x[i].numel())
        if not torch.isfinite(h).all():  # min(lo, nan) would keep lo
            if probe.non_finite is not None:
                bad = h[~torch.isfinite(h)][0].item()
                probe._note(f"Hessian entry {bad:g} at x = {_fmt(x[i].reshape(-1))}")
            return -math.inf
        ev = torch.linalg.eigvalsh(0.5 * (h + h.T))[0].item()
        scale = 1 + h.abs().max().item()
        lo = min(lo, ev / scale)
    return lo


def check_convex(probe, gen) -> Verdict:
    worst, where, lines = math.inf, "", 0
    for x, aux in _inputs(probe, gen, 24, (1.0, 3.0)):
        d = torch.randn(x.shape, generator=gen, dtype=torch.float64)
        d = d / d.reshape(x.shape[0], -1).norm(dim=1).reshape(-1, *([1] * (x.dim() - 1)))
        f0 = probe.loss(x, aux)
        lines += 3 * len(f0)
        for h in (0.3, 1.0, 3.0):
            gap = (0.5 * (probe.loss(x + h * d, aux) + probe.loss(x - h * d, aux)) - f0) / (1 + f0.abs())
            g = gap.min().item() if torch.isfinite(gap).all() else math.nan
            if not g >= worst:  # a NaN gap becomes the worst (``g < worst`` would skip it)
                worst, where = g, f"h={h:g}"
    x, aux = probe.random(gen, 12, 2.0)
    eig = None if probe.batch_coupled or not probe.row_hessian else _hessian_min_eig(probe, x, aux)
    ok = math.isfinite(worst) and worst >= -1e-9 and (eig is None or eig >= -1e-7)
    ev = "Hessian not checked (batch-level inputs)" if eig is None else f"min Hessian eigenvalue {eig:.3g} relative"
    return _v("convex", ok, f"min midpoint gap (L(z+hd)+L(z-hd))/2 - L(z) = {worst:.3g} relative "
                            f"({where}, {lines} random lines); {ev}",
              min_midpoint_gap=worst, min_hessian_eig=eig)


# ---------------------------------------------------------------------------- finiteness
def _finite_with_grad(probe, x, aux, dtype) -> tuple[bool, str]:
    x = x.to(dtype).detach().requires_grad_(True)
    try:
        out = probe.loss(x, probe.cast(aux, dtype))
        (g,) = torch.autograd.grad(out.sum(), x)
    except LossInputError:
        raise
    except Exception as e:  # noqa: BLE001 (reported as evidence)
        return False, f"raised {type(e).__name__}: {e}"
    if not torch.isfinite(out).all():
        return False, f"loss {_fmt(out[~torch.isfinite(out)][:3])}"
    if not (torch.isfinite(g) | (x.detach() == -float("inf"))).all() or torch.isnan(g).any():
        return False, "non-finite gradient"
    return True, ""


def _finite_cases(probe, gen, s):
    cases = [("random", probe.random(gen, 8, 3.0)), (f"|x|={s:g}", probe.worst(gen, 8, s)),
             (f"random*{s:g}", probe.random(gen, 8, s))]
    m = probe.masked(*probe.random(gen, 8, 3.0))
    if m is not None:
        cases.append(("-inf mask", m))
    return cases


def _grad_norms(probe, x, aux) -> Tensor:
    """Per-sample |dL/dx| (float64); NaN where the loss or its gradient is not finite."""
    x = x.detach().clone().requires_grad_(True)
    out = probe.loss(x, aux)
    (g,) = torch.autograd.grad(out.sum(), x)
    probe.note_grad(g, x)
    norms = g.reshape(x.shape[0], -1).norm(dim=1)
    if out.numel() == norms.numel():
        norms = torch.where(torch.isfinite(out.detach()), norms, torch.full_like(norms, math.nan))
    elif not torch.isfinite(out).all():
        norms = torch.full_like(norms, math.nan)
    return torch.where(torch.isfinite(norms), norms, torch.full_like(norms, math.nan))


MARGINS = (3.0, 30.0, 300.0)


def _margin_table(probe) -> dict[float, tuple[float, float]] | None:
    """margin m -> (max |grad| with the right class ahead by m, min |grad| with it behind by m)."""
    if probe.margin_points(1.0) is None:
        return None
    out = {}
    for m in MARGINS:
        x, y = probe.margin_points(m)
        out[m] = (_grad_norms(probe, x, y).max().item(), _grad_norms(probe, -x, y).min().item())
    return out


def _margin_gradients(probe) -> str:
    with probe.untracked():  # informational numbers, not the evidence of finite_extreme
        table = None if probe.batch_coupled else _margin_table(probe)
    if table is None:
        return ""
    return "; |grad| at margin " + ", ".join(f"m={m:g}: {r:.2g} right / {w:.2g} wrong"
                                              for m, (r, w) in table.items())


def check_gradient_on_errors(probe, gen) -> Verdict:
    table = _margin_table(probe)
    wrong = [w for _, w in table.values()]
    ok = all(math.isfinite(w) for w in wrong) and wrong[-1] >= 0.1 * wrong[0] and wrong[-1] > 0
    trend = ", ".join(f"{m:g}: {w:.3g}" for m, w in zip(MARGINS, wrong))
    return _v("gradient_on_errors", ok, f"|grad| with the true class behind by m (m: |grad|) {trend}"
                                        + ("" if ok else "; vanishes: confident mistakes stop being corrected"),
              wrong=dict(zip(MARGINS, wrong)))


def check_no_softmax_collapse(probe, gen) -> Verdict:
    x, y = probe.margin_points(100.0)
    x = x.float().requires_grad_(True)
    loss = probe.loss(x, probe.cast(y, torch.float32))
    (g,) = torch.autograd.grad(loss.sum(), x)
    probe.note_grad(g, x)
    gn = g.reshape(len(loss), -1).norm(dim=1)
    finite = bool(torch.isfinite(loss).all() and torch.isfinite(gn).all())  # inf > 0 is True
    ok = finite and bool((loss > 0).all() and (gn > 0).all())
    return _v("no_softmax_collapse", ok, f"float32, right class ahead by 100: min L = {loss.min().item() + 0.0:.3g}, "
                                         f"min |grad| = {gn.min().item():.3g}"
              + ("" if ok else " (collapsed: confident samples give exactly zero loss and gradient)"),
              min_loss=loss.min().item(), min_grad=gn.min().item())


def check_lipschitz(probe, gen) -> Verdict:
    sup = []
    for s in (1e2, 1e3, 1e4):
        x, aux = probe.worst(gen, 16, s)
        x2, aux2 = probe.random(gen, 16, s)
        g = torch.cat([_grad_norms(probe, x, aux), _grad_norms(probe, x2, aux2)])
        sup.append(g.max().item() if torch.isfinite(g).all() else math.inf)
    ok = all(math.isfinite(v) for v in sup) and sup[-1] <= 2 * sup[-2] + 1e-12  # not x <= inf
    trend = ", ".join(f"{s:g}: {v:.3g}" for s, v in zip((1e2, 1e3, 1e4), sup))
    return _v("lipschitz", ok, f"sup |grad| over inputs of magnitude s (s: sup) {trend}"
                               + ("; bounded" if ok else "; grows"), sup=dict(zip((1e2, 1e3, 1e4), sup)))


def check_finite_extreme(probe, gen) -> Verdict:
    bad = []
    for dtype in (torch.float64, torch.float32):
        for label, (x, aux) in _finite_cases(probe, gen, 1e4):
            ok, why = _finite_with_grad(probe, x, aux, dtype)
            if not ok:
                bad.append(f"{label} {str(dtype)[6:]}: {why}")
    try:
        grads = _margin_gradients(probe)
    except Exception:  # noqa: BLE001
        grads = ""
    if bad:
        return _v("finite_extreme", False, "; ".join(bad[:3]) + grads)
    return _v("finite_extreme", True, "finite loss and gradient at magnitude 1e4 and with -inf masks "
                                      "(float32, float64)" + grads)


def check_finite_half(probe, gen) -> Verdict:
    bad = []
    for dtype in (torch.float16, torch.bfloat16):
        for label, (x, aux) in _finite_cases(probe, gen, 1e4):
            ok, why = _finite_with_grad(probe, x, aux, dtype)
            if not ok:
                bad.append(f"{label} {str(dtype)[6:]}: {why}")
    if bad:
        return _v("finite_half", False, "; ".join(bad[:3]))
    return _v("finite_half", True, "finite loss and gradient in float16 and bfloat16 (random, magnitude 1e4, "
                                   "-inf masks)")


# ---------------------------------------------------------------------------- divergences
def check_divergence(probe, gen) -> Verdict:
    p, q = probe.random(gen, 64, 2.0)
    d = probe.loss(p, q)
    same = torch.cat([probe.loss(p, p), probe.loss(p, p + torch.randn(64, 1, generator=gen, dtype=p.dtype))])
    lo, zero = d.min().item(), same.abs().max().item()
    finite = bool(torch.isfinite(d).all() and torch.isfinite(same).all())  # inf > 0 is True
    ok = finite and lo > 0 and zero <= 1e-10
    return _v("divergence", ok, f"min D(p,q) = {lo:.3g} over 64 random pairs p != q (must be > 0); "
                                f"max |D(p,p)| = {zero:.2g} (also with p's logits shifted; tol 1e-10)",
              min_distinct=lo, max_same=zero)


def check_symmetric_divergence(probe, gen) -> Verdict:
    pairs = [((p, q), (q, p)) for p, q in _inputs(probe, gen, 32, (1.0, 3.0))]
    rel, _ = _max_rel_change(probe, pairs)
    return _v("symmetric_divergence", rel <= 1e-10, f"max |D(p,q) - D(q,p)|/(1+D) = {rel:.3g} (tol 1e-10)",
              max_rel_change=rel)


PROPERTY_CHECKS: dict[str, Check] = {c.name: c for c in (
    Check("calibrated", LABELLED, check_calibrated, "needs a label to take a risk over", whole_batch=False),
    Check("proper", LABELLED, check_proper, "needs a label to take a risk over", whole_batch=False),
    Check("symmetric", LABELLED, check_symmetric, "needs a label to sum over", whole_batch=False),
    Check("bounded", ALL, check_bounded),
    Check("nonnegative", ALL, check_nonnegative),
    Check("convex", ALL, check_convex),
    Check("shift_invariant", ("multiclass", "distributions", "logits", "example"), check_shift_invariant,
          "a shift moves a binary decision threshold"),
    Check("scale_invariant", ALL, check_scale_invariant),
    Check("permutation_equivariant", ALL, check_permutation),
    Check("divergence", ("distributions",), check_divergence, "only for two distributions"),
    Check("symmetric_divergence", ("distributions",), check_symmetric_divergence, "only for two distributions"),
    Check("gradient_on_errors", LABELLED, check_gradient_on_errors, "needs a label", whole_batch=False),
    Check("lipschitz", ALL, check_lipschitz),
    Check("no_softmax_collapse", LABELLED, check_no_softmax_collapse, "needs a label", whole_batch=False),
    Check("finite_extreme", ALL, check_finite_extreme),
    Check("finite_half", ALL, check_finite_half),
)}


def skipped(name: str, why: str) -> Verdict:
    return Verdict(name, SKIP, why)
