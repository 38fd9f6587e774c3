"""fused_linear_policy and fused_linear_kto: the preference family's heads on log-probabilities formed by
the fused pass equal the same heads on log-probabilities from materialised logits (an independent
computation: ``log_softmax(h @ W.T)`` gathered at the tokens), values and gradients, in float64."""

import pytest
import torch

import losskit
from losskit import LossInputError

D = torch.float64


def _batch(seed=0, b=4, t=6, h=5, v=13):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, t, h, generator=g, dtype=D, requires_grad=True)
    W = torch.randn(v, h, generator=g, dtype=D, requires_grad=True)
    bias = (0.3 * torch.randn(v, generator=g, dtype=D)).requires_grad_(True)
    y = torch.randint(0, v, (b, t), generator=g)
    y[:, 0] = -100  # the prompt's last position
    y[1, 4:] = -100  # padding
    xr = torch.randn(b, t, h, generator=g, dtype=D)
    adv = torch.randn(b, generator=g, dtype=D)
    return x, W, bias, y, xr, adv


def _naive_logps(x, W, bias, y):
    z = x @ W.T + (0 if bias is None else bias)
    lp = torch.log_softmax(z, -1).gather(-1, y.clamp(min=0)[..., None])[..., 0]
    return lp * (y != -100)


HEADS = [("grpo", {"beta": 0.04}), ("grpo", {"aggregation": "grpo", "epsilon": 0.1}), ("gspo", {}),
         ("sapo", {}), ("ppo", {}), ("rloo", {"group_size": 2}), ("reinforce_pp", {"beta": 0.01})]


@pytest.mark.parametrize("head,opts", HEADS, ids=[f"{h}-{i}" for i, (h, _) in enumerate(HEADS)])
@pytest.mark.parametrize("with_old", [True, False])
def test_policy_equals_the_head_on_materialised_logits(head, opts, with_old):
    x, W, bias, y, xr, adv = _batch()
    old = None
    if with_old:
        old = (_naive_logps(x, W, bias, y) + 0.1 * torch.sin(torch.arange(6.0, dtype=D))).detach().clamp(max=-1e-3)
        old = old * (y != -100)
    ref_h, ref_W = (None, None) if head == "ppo" else (xr, W)
    out = losskit.fused_linear_policy(x, W, y, adv, old, ref_h, ref_W, head=head, linear_bias=bias,
                                      head_options=opts, chunk_size=5)
    lp = _naive_logps(x, W, bias, y)
    args = [lp, lp.detach() if old is None else old, adv, y != -100]
    if ref_h is not None:
        with torch.no_grad():
            args.append(_naive_logps(xr, W, None, y))
    ref = getattr(losskit, head)(*args, **opts)
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-13)
    for a, b in zip(torch.autograd.grad(out, (x, W, bias)), torch.autograd.grad(ref, (x, W, bias))):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def test_policy_returns_the_token_logps_and_refuses_a_reference_for_ppo():
    x, W, bias, y, xr, adv = _batch()
    loss, lp = losskit.fused_linear_policy(x, W, y, adv, return_logps=True)
    torch.testing.assert_close(lp, _naive_logps(x, W, None, y), rtol=1e-12, atol=1e-13)
    with pytest.raises(LossInputError, match="ref_hidden"):
        losskit.fused_linear_policy(x, W, y, adv, None, xr, W, head="ppo")
    with pytest.raises(LossInputError, match="advantages"):
        losskit.fused_linear_policy(x, W, y, adv[:-1])
    with pytest.raises(LossInputError, match="hidden"):
        losskit.fused_linear_policy(x[:, 0], W, y[:, 0], adv)


_KL = {"policy_kl_logps": torch.tensor([-7.0, -9.0, -8.5, -6.0], dtype=D),
       "ref_kl_logps": torch.tensor([-7.5, -8.0, -9.0, -6.5], dtype=D)}


@pytest.mark.parametrize("opts", [{"reference_point": 0.2}, {"reference_point": 0.0, "desirable_weight": 1.33}, _KL],
                         ids=["z0", "weights", "kl-pairs"])
def test_kto_equals_kto_on_materialised_logits(opts):
    x, W, bias, y, xr, _ = _batch(seed=1)
    d = torch.tensor([True, False, True, False])
    out = losskit.fused_linear_kto(x, W, y, d, xr, W, beta=0.3, linear_bias=bias, head_options=opts)
    lp = _naive_logps(x, W, bias, y).sum(-1)
    with torch.no_grad():
        rl = _naive_logps(xr, W, None, y).sum(-1)
    ref = losskit.kto(lp, rl, d, beta=0.3, **opts)
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-13)
    for a, b in zip(torch.autograd.grad(out, (x, W)), torch.autograd.grad(ref, (x, W))):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def test_kto_ignores_a_completion_without_tokens():
    """An all-ignored completion is left out of KTO (and of its batch reference point): the loss of the
    other completions is KTO on them alone."""
    x, W, bias, y, xr, _ = _batch(seed=2)
    d = torch.tensor([True, False, True, False])
    y[2] = -100
    out = losskit.fused_linear_kto(x, W, y, d, xr, W, reduction="none", head_options={"reference_point": 0.1})
    assert out[2] == 0
    keep = torch.tensor([0, 1, 3])
    lp = _naive_logps(x, W, None, y).sum(-1)[keep]
    rl = _naive_logps(xr, W, None, y).sum(-1)[keep].detach()
    torch.testing.assert_close(out[keep], losskit.kto(lp, rl, d[keep], reference_point=0.1, reduction="none"),
                               rtol=1e-12, atol=1e-13)


@pytest.mark.compile
def test_policy_compiles_without_a_graph_break():
    x, W, bias, y, xr, adv = _batch()

    def step(x, W):
        return losskit.fused_linear_policy(x, W, y, adv, None, xr, W, head_options={"beta": 0.04})

    torch._dynamo.reset()
    got = torch.compile(step, backend="aot_eager", fullgraph=True)(x, W)
    want = step(x, W)
    torch.testing.assert_close(got, want)
    for a, b in zip(torch.autograd.grad(got, (x, W)), torch.autograd.grad(want, (x, W))):
        torch.testing.assert_close(a, b)
