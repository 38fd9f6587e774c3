"""Lion, Lion-K and ⊥Grad: hand computations, identities, the constraint Lion-K provably solves."""

import copy

import pytest
import torch

from losskit.optim import Lion, LionK, OrthoGrad, get_optimizer, list_optimizers, lp_grad


def _quadratic_run(opt_factory, steps=20, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(3, 4, generator=g, dtype=dtype) * 3
    b = torch.randn(5, generator=g, dtype=dtype)
    params = [torch.nn.Parameter(torch.randn(3, 4, generator=g, dtype=dtype)),
              torch.nn.Parameter(torch.randn(5, generator=g, dtype=dtype))]
    opt = opt_factory(params)
    traj = []
    for _ in range(steps):
        opt.zero_grad()
        loss = ((params[0] - a) ** 2).sum() + (params[1] - b).abs().sum()
        loss.backward()
        opt.step()
        traj.append([p.detach().clone() for p in params])
    return traj, opt


def test_one_lion_step_matches_hand_computation():
    theta = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)
    m = torch.tensor([0.2, -0.1, 0.0], dtype=torch.float64)
    grad = torch.tensor([0.3, 0.4, -1e-3], dtype=torch.float64)
    lr, wd, b1, b2 = 0.1, 0.5, 0.9, 0.99
    p = torch.nn.Parameter(theta.clone())
    opt = Lion([p], lr=lr, betas=(b1, b2), weight_decay=wd)
    opt.state[p]["exp_avg"] = m.clone()
    p.grad = grad.clone()
    opt.step()
    # c = 0.9 m + 0.1 g = [0.21, -0.05, -1e-4] -> sign [1, -1, -1]
    expected = theta * (1 - lr * wd) - lr * torch.tensor([1.0, -1.0, -1.0], dtype=torch.float64)
    torch.testing.assert_close(p.detach(), expected, rtol=0, atol=1e-15)
    torch.testing.assert_close(opt.state[p]["exp_avg"], b2 * m + (1 - b2) * grad)


def test_lion_k_with_l1_is_lion_step_for_step():
    t1, _ = _quadratic_run(lambda ps: Lion(ps, lr=0.05, weight_decay=0.2))
    t2, _ = _quadratic_run(lambda ps: LionK(ps, lr=0.05, weight_decay=0.2, K="l1"))
    for a, b in zip(t1, t2):
        for x, y in zip(a, b):
            torch.testing.assert_close(x, y, rtol=0, atol=0)


@pytest.mark.parametrize("K", ["l1", "huber"])
def test_foreach_and_single_tensor_paths_agree(K):
    t1, _ = _quadratic_run(lambda ps: LionK(ps, lr=0.05, weight_decay=0.1, K=K, foreach=True))
    t2, _ = _quadratic_run(lambda ps: LionK(ps, lr=0.05, weight_decay=0.1, K=K, foreach=False))
    for a, b in zip(t1, t2):
        for x, y in zip(a, b):
            torch.testing.assert_close(x, y, rtol=1e-14, atol=1e-14)


def test_agrees_with_lion_pytorch():
    lion_pytorch = pytest.importorskip("lion_pytorch")
    t1, _ = _quadratic_run(lambda ps: Lion(ps, lr=0.03, betas=(0.9, 0.98), weight_decay=0.3), dtype=torch.float32)
    t2, _ = _quadratic_run(lambda ps: lion_pytorch.Lion(ps, lr=0.03, betas=(0.9, 0.98), weight_decay=0.3),
                           dtype=torch.float32)
    for a, b in zip(t1, t2):
        for x, y in zip(a, b):
            torch.testing.assert_close(x, y, rtol=1e-6, atol=1e-6)


def test_lion_respects_the_box_constraint_it_solves():
    """Lion (K = l1) with weight decay lambda solves min f(x) s.t. ||x||_inf <= 1/lambda (Chen et al. 2023)."""
    lam, lr = 2.0, 0.01
    target = torch.tensor([5.0, -3.0, 0.2, -0.1], dtype=torch.float64)  # minimiser outside the box for 2 coords
    x = torch.nn.Parameter(torch.tensor([3.0, 2.0, -1.0, 1.0], dtype=torch.float64))  # starts outside
    opt = Lion([x], lr=lr, weight_decay=lam)
    sup = []
    for _ in range(1500):
        opt.zero_grad()
        ((x - target) ** 2).sum().backward()
        opt.step()
        sup.append(x.detach().abs().max().item())
    # after the transient the iterates stay in the box (up to one step of size lr)
    assert max(sup[600:]) <= 1 / lam + lr
    # and they converge to the projection of the unconstrained minimiser onto the box
    torch.testing.assert_close(x.detach(), target.clamp(-1 / lam, 1 / lam), atol=2 * lr, rtol=0)
    # before the transient the box was violated: the check is not vacuous
    assert sup[0] > 1 / lam + lr


def test_lion_k_l2_is_normalised_direction():
    p = torch.nn.Parameter(torch.zeros(4, dtype=torch.float64))
    opt = LionK([p], lr=1.0, betas=(0.0, 0.0), K="l2")
    p.grad = torch.tensor([3.0, 0.0, 4.0, 0.0], dtype=torch.float64)
    opt.step()
    torch.testing.assert_close(p.detach(), -torch.tensor([0.6, 0.0, 0.8, 0.0], dtype=torch.float64))


def test_lp_gradient_matches_autograd():
    c = torch.randn(7, dtype=torch.float64, requires_grad=True)
    torch.linalg.vector_norm(c, ord=3).backward()
    torch.testing.assert_close(lp_grad(3)(c.detach()), c.grad)


def test_user_supplied_k_gradient_and_maximize():
    t1, _ = _quadratic_run(lambda ps: LionK(ps, lr=0.05, K=torch.tanh))
    assert len(t1) == 20
    p = torch.nn.Parameter(torch.zeros(2, dtype=torch.float64))
    opt = LionK([p], lr=0.1, betas=(0.0, 0.0), K="l1", maximize=True)
    p.grad = torch.tensor([1.0, -1.0], dtype=torch.float64)
    opt.step()
    torch.testing.assert_close(p.detach(), torch.tensor([0.1, -0.1], dtype=torch.float64))


def test_state_dict_round_trip_and_param_groups():
    traj, opt = _quadratic_run(lambda ps: Lion([{"params": ps[:1]}, {"params": ps[1:], "lr": 0.01}], lr=0.05),
                               steps=5)
    sd = copy.deepcopy(opt.state_dict())
    assert sd["param_groups"][1]["lr"] == 0.01
    params = [torch.nn.Parameter(t.clone()) for t in traj[-1]]
    opt2 = Lion([{"params": params[:1]}, {"params": params[1:], "lr": 0.01}], lr=0.05)
    opt2.load_state_dict(sd)
    for p_old, p_new in zip(opt.param_groups[0]["params"] + opt.param_groups[1]["params"], params):
        torch.testing.assert_close(opt.state[p_old]["exp_avg"], opt2.state[p_new]["exp_avg"])


def test_bad_hyperparameters_raise():
    p = [torch.nn.Parameter(torch.zeros(2))]
    with pytest.raises(ValueError, match="^lr"):
        Lion(p, lr=0)
    with pytest.raises(ValueError, match="^K"):
        LionK(p, K="l7")
    with pytest.raises(ValueError, match="^weight_decay"):
        Lion(p, weight_decay=-1)


def test_orthograd_removes_the_radial_component_and_keeps_the_norm():
    w = torch.nn.Parameter(torch.tensor([1.0, 1.0, 0.0], dtype=torch.float64))
    g = torch.tensor([2.0, 0.0, 1.0], dtype=torch.float64)
    opt = OrthoGrad(torch.optim.SGD([w], lr=1.0))
    w.grad = g.clone()
    opt.step()
    # g_perp = g - (<w,g>/<w,w>) w = [1, -1, 1]; rescaled to ||g|| = sqrt(5)
    expected_g = torch.tensor([1.0, -1.0, 1.0], dtype=torch.float64) * (5 ** 0.5 / 3 ** 0.5)
    torch.testing.assert_close(w.detach(), torch.tensor([1.0, 1.0, 0.0], dtype=torch.float64) - expected_g)
    assert abs(torch.dot(expected_g, torch.tensor([1.0, 1.0, 0.0], dtype=torch.float64)).item()) < 1e-12


def test_optimizer_registry():
    assert {"lion", "lion_k", "orthograd"} <= set(list_optimizers())
    assert get_optimizer("lion").cls is Lion
    assert get_optimizer("lion_k").paper.arxiv == "2310.05898"
    with pytest.raises(KeyError):
        get_optimizer("adamw2")
