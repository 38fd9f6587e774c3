"""Optimisers against their authors' code (ports kept here, each citing repository, file and commit).

* M-FAC: IST-DASLab/M-FAC, ``optim.py`` @ 835320e17164b84a470ef122b1422d90c379885a: ``HInvFastUpMulti`` (the
  dynamic algorithm, its CPU path: one device, the coefficient recursion in Python instead of the CUDA
  kernel), ``HInvSlow`` (the authors' naive Woodbury check) and the ``MFAC.step`` update. The port replaces
  ``torch.lu(A, pivot=False)`` (removed from torch, and GPU-only without pivoting) by the equivalent
  unpivoted Doolittle elimination written out below.
* SSO: WilderLavington/Target-Based-Surrogates-For-Stochastic-Optimization, ``optimizers/sgd_fmdopt.py``
  @ 4cc4ea7e8ea076a6a377323933bc19e9303cc784: the surrogate of ``SGD_FMDOpt.step``,
  ``mean(dl/dz(z_t) * z / eta_a + (z - z_t)^2)``. It is losskit's surrogate scaled by a positive constant with
  ``eta = 1 / (2 eta_a)`` (and the constant ``-<g, z_t>`` dropped), so both have the same minimiser.

The optimisers are not registered objectives, so this file declares no ``ORACLES`` entries (those name
objectives); the comparisons are the tests below.
"""

import pytest
import torch

from losskit.optim import MFAC, SSO, SlidingFisherInverse

ORACLES: list = []


# ------------------------------------------------------------------------------- M-FAC port (authors)
def _lu_nopivot(a):
    """Packed LU without pivoting (what ``torch.lu(a, pivot=False)[0]`` returns): U on and above the
    diagonal, L's multipliers below it."""
    a = a.clone()
    n = a.shape[0]
    for k in range(n - 1):
        a[k + 1:, k] /= a[k, k]
        a[k + 1:, k + 1:] -= torch.outer(a[k + 1:, k], a[k, k + 1:])
    return a


class HInvFastUpMulti:
    """IST-DASLab/M-FAC optim.py HInvFastUpMulti, single device, USE_CUDA = False."""

    def __init__(self, grads, damp=1e-5):
        self.m, self.d = grads.shape
        self.dtype = grads.dtype
        self.lambd = 1. / damp
        self.grads = grads.clone()
        self.dots = self.grads.matmul(self.grads.t())
        self.last = 0
        self.giHig = self.lambd * self.dots
        self.denom = torch.zeros(self.m, dtype=self.dtype)
        self.coef = self.lambd * torch.eye(self.m, dtype=self.dtype)
        self.setup()

    def setup(self):
        self.giHig = self.lambd * self.dots
        diag = torch.diag(torch.full([self.m], self.m, dtype=self.dtype))
        self.giHig = _lu_nopivot(self.giHig + diag)
        self.giHig = torch.triu(self.giHig - diag)
        self.denom = self.m + torch.diagonal(self.giHig)
        tmp = -self.giHig.t().contiguous() / self.denom.reshape((1, -1))
        for i in range(max(self.last, 1), self.m):
            self.coef[i, :i] = tmp[i, :i].matmul(self.coef[:i, :i])

    def mul(self, x, dots=None):
        if dots is None:
            dots = self.grads.matmul(x)
        giHix = self.lambd * dots
        for i in range(1, self.m):
            giHix[i:].sub_(self.giHig[i - 1, i:], alpha=giHix[i - 1] / self.denom[i - 1])
        return self.lambd * x - ((giHix / self.denom).matmul(self.coef)).matmul(self.grads)

    def update(self, g):
        self.grads[self.last, :] = g
        tmp = self.grads.matmul(g)
        self.dots[self.last, :] = tmp
        self.dots[:, self.last] = tmp
        self.setup()
        self.last = (self.last + 1) % self.m

    def update_mul(self, g):
        self.grads[self.last, :] = g
        tmp = self.grads.matmul(g)
        self.dots[self.last, :] = tmp
        self.dots[:, self.last] = tmp
        self.setup()
        res = self.mul(g, tmp)
        self.last = (self.last + 1) % self.m
        return res


class HInvSlow:
    """IST-DASLab/M-FAC optim.py HInvSlow (naive Woodbury, the authors' correctness check)."""

    def __init__(self, grads, damp=1e-5):
        m, d = grads.shape
        H = torch.diag(torch.full([d], 1. / damp, dtype=grads.dtype))
        for i in range(m):
            g = grads[i, :]
            Hg = H.matmul(g)
            H -= torch.outer(Hg, Hg) / (m + g.dot(Hg))
        self.H = H

    def mul(self, x):
        return self.H.matmul(x)


def _mfac_step_port(params, grads, hinv, lr, momentum, weight_decay, v):
    """IST-DASLab/M-FAC optim.py MFAC.step, one group."""
    g = torch.cat([(gr + weight_decay * p if weight_decay > 0 else gr).reshape(-1) for p, gr in zip(params, grads)])
    tmp = hinv.update_mul(g)
    if momentum > 0:
        v = momentum * v + (1 - momentum) * tmp
        tmp = v
    count, out = 0, []
    for p in params:
        out.append(p - lr * tmp[count:count + p.numel()].reshape(p.shape))
        count += p.numel()
    return out, v


@pytest.mark.parametrize(("m", "d", "pushes", "damp"), [(4, 10, 4, 1e-2), (8, 30, 19, 1e-3), (6, 15, 3, 0.5)])
def test_ihvp_equals_the_authors_dynamic_algorithm(m, d, pushes, damp):
    gen = torch.Generator().manual_seed(m * 100 + pushes)
    ours = SlidingFisherInverse(d, m, damp, dtype=torch.float64)
    theirs = HInvFastUpMulti(torch.zeros(m, d, dtype=torch.float64), damp=damp)
    for _ in range(pushes):
        g = torch.randn(d, generator=gen, dtype=torch.float64)
        ours.update(g)
        theirs.update(g)
        v = torch.randn(d, generator=gen, dtype=torch.float64)
        a, b = ours.mul(v), theirs.mul(v.clone())
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-9 * b.abs().max().item())


def test_ihvp_equals_the_authors_naive_woodbury_on_a_full_window():
    gen = torch.Generator().manual_seed(1)
    m, d, damp = 8, 25, 1e-5
    grads = torch.randn(m, d, generator=gen, dtype=torch.float64)
    ours = SlidingFisherInverse(d, m, damp, dtype=torch.float64)
    for g in grads:
        ours.update(g)
    v = torch.randn(d, generator=gen, dtype=torch.float64)
    ref = HInvSlow(grads.clone(), damp).mul(v)
    assert ((ours.mul(v) - ref).abs().max() / ref.abs().max()).item() < 1e-9


def test_mfac_steps_equal_the_authors_optimizer():
    gen = torch.Generator().manual_seed(2)
    shapes = [(3, 4), (5,)]
    params = [torch.nn.Parameter(torch.randn(s, generator=gen, dtype=torch.float64)) for s in shapes]
    ref_params = [p.detach().clone() for p in params]
    opt = MFAC(params, lr=0.05, momentum=0.3, weight_decay=1e-3, ngrads=4, damp=1e-2)
    hinv = HInvFastUpMulti(torch.zeros(4, 17, dtype=torch.float64), damp=1e-2)
    v = torch.zeros(17, dtype=torch.float64)
    for _ in range(7):
        grads = [torch.randn(s, generator=gen, dtype=torch.float64) for s in shapes]
        for p, g in zip(params, grads):
            p.grad = g.clone()
        opt.step()
        ref_params, v = _mfac_step_port(ref_params, grads, hinv, 0.05, 0.3, 1e-3, v)
        for p, r in zip(params, ref_params):
            torch.testing.assert_close(p.detach(), r, rtol=1e-9, atol=1e-10)


# ------------------------------------------------------------------------------- SSO port (authors)
def _authors_surrogate(model, X_t, dlt_dft, target_t, eta):
    """WilderLavington/Target-Based-Surrogates-For-Stochastic-Optimization optimizers/sgd_fmdopt.py,
    SGD_FMDOpt.step's ``surrogate`` (without the backward call)."""
    target = model(X_t)
    loss = dlt_dft * target
    reg_term = (target - target_t.detach()).pow(2)
    surr = (loss / eta + reg_term).mean()
    return surr


@pytest.mark.parametrize("eta_a", [0.5, 2.0, 10.0])
def test_sso_surrogate_is_the_authors_up_to_scale_and_shares_its_minimiser(eta_a):
    gen = torch.Generator().manual_seed(3)
    n, d = 20, 4
    x = torch.randn(n, d, generator=gen, dtype=torch.float64)
    y = torch.randn(n, generator=gen, dtype=torch.float64)
    model = torch.nn.Linear(d, 1, bias=False).double()
    with torch.no_grad():
        model.weight.copy_(torch.randn(1, d, generator=gen, dtype=torch.float64))

    def f():
        return model(x).squeeze(1)

    def loss_fn(z):
        return 0.5 * ((z - y) ** 2).mean()

    z_t = f().detach().requires_grad_(True)
    (g_t,) = torch.autograd.grad(loss_fn(z_t), z_t)
    z_t = z_t.detach()
    eta = 1.0 / (2.0 * eta_a)
    sso = SSO(model.parameters(), eta=eta)
    # the relation at arbitrary parameters: n eta_a * theirs = ours + <g_t, z_t>
    for _ in range(3):
        with torch.no_grad():
            model.weight.add_(0.1 * torch.randn(1, d, generator=gen, dtype=torch.float64))
        ours = sso.surrogate(f(), z_t, g_t, eta)
        theirs = _authors_surrogate(lambda inp: model(inp).squeeze(1), x, g_t, z_t, eta_a)
        torch.testing.assert_close(ours + (g_t * z_t).sum(), n * eta_a * theirs, rtol=1e-12, atol=1e-12)
    # the minimisers (closed form: least squares to z_t - eta g_t) agree
    target = z_t - eta * g_t
    theta = torch.linalg.lstsq(x, target).solution
    with torch.no_grad():
        model.weight.copy_(theta[None])
    for fn in (lambda: sso.surrogate(f(), z_t, g_t, eta),
               lambda: _authors_surrogate(lambda inp: model(inp).squeeze(1), x, g_t, z_t, eta_a)):
        model.zero_grad()
        fn().backward()
        assert model.weight.grad.abs().max().item() < 1e-12


# ---------------------------------------------------------------------------- ParetoDA (authors' LP)
def _epo_lp_program(G, G_val, loss_val, eps=1e-3, relax=False):
    """BIT-DA/ParetoDA tools/epo_lp_dna.py @ 6691766010f415a48ef32d8bbcc526f8410f4006, EPO_LP.get_alpha:
    the program it hands to cvxpy (objective vector and constraint rows), written out as functions of alpha
    (cvxpy/GLPK are not installed here: the test maximises over a fine grid of the simplex instead)."""
    import numpy as np

    C = G @ G.T
    Ca = G @ G_val
    rl = np.mean(G * G_val, axis=1)
    if loss_val > eps:
        J = Ca > 0
        if len(np.where(J)[0]) > 0:
            J_star_idx = np.where(rl == np.max(rl))[0]
            rhs = Ca.copy()
            rhs[J] = -np.inf
            rhs[J_star_idx] = 0
        else:
            rhs = np.zeros_like(Ca)
        return (lambda a: a @ Ca), (lambda a: bool(np.all(C @ a >= rhs - 1e-9)))
    extra = (lambda a: True) if relax else (lambda a: a @ Ca >= -max(-np.max(Ca), 0) - 1e-9)
    return (lambda a: np.sum(a @ C)), (lambda a: bool(np.all(C @ a >= -1e-9)) and extra(a))


def _simplex_grid(step=300):
    import numpy as np

    pts = [(i, j, step - i - j) for i in range(step + 1) for j in range(step + 1 - i)]
    return np.array(pts, dtype=float) / step


@pytest.mark.parametrize("case", range(6))
def test_pareto_da_weights_solve_the_authors_program(case):
    import numpy as np

    from losskit.optim import pareto_da_weights

    gen = torch.Generator().manual_seed(case)
    G = torch.randn(3, 7, generator=gen, dtype=torch.float64)
    g_val = torch.randn(7, generator=gen, dtype=torch.float64)
    if case == 4:  # no objective aligned with the preference
        g_val = -(G.sum(0))
    loss_val = 0.5 if case % 2 == 0 else 1e-4  # balance and dominance modes
    relax = case == 5
    obj, feasible = _epo_lp_program(G.numpy(), g_val.numpy(), loss_val, relax=relax)
    try:
        alpha = pareto_da_weights(G, g_val, loss_val, relax=relax).numpy()
    except RuntimeError:
        alpha = None
    grid = [a for a in _simplex_grid() if feasible(a)]
    if alpha is None:
        assert not grid, "losskit found the program infeasible, the grid did not"
        return
    assert alpha.min() >= 0 and abs(alpha.sum() - 1) < 1e-12 and feasible(alpha)
    best = max(obj(a) for a in grid) if grid else -np.inf
    assert obj(alpha) >= best - 1e-9  # at least as good as every feasible grid point
    # and the grid's best is within its resolution of the LP optimum
    lip = np.abs(G.numpy() @ G.numpy().T).sum() + np.abs(G.numpy() @ g_val.numpy()).sum()
    assert obj(alpha) <= best + lip * 2 / 300
