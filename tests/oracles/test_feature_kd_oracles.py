"""Oracle tests (issue 19): feature distillation, fitnet_loss and attention_transfer."""

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from oracle_meta import Oracle

import losskit

AT_COMMIT = "893df5488f93691799f082a70e2521a9dc2ddf2d"
MDISTILLER_COMMIT = "e8c5bb331e78c9d79a8894ca233caae78531cf7f"
FITNETS_COMMIT = "c3d390579cc0bf9710db9edf54e23b423872f578"

ORACLES = [
    Oracle(objective="attention_transfer", repo="szagoruyko/attention-transfer",
           path="utils.py (at, at_loss), cifar.py (h: beta * sum(loss_groups))", commit=AT_COMMIT,
           agreement="1e-12",
           differences="one layer pair per call (sum the calls, as the official step sums the groups); "
                       "reduction='mean' is beta * at_loss. p != 2 is compared with mdistiller's "
                       "single_stage_at_loss (mdistiller/distillers/AT.py @ e8c5bb33, feat.pow(p): equal to "
                       "|A|^p for even p) on maps of equal size; mdistiller's pooling of the larger map is the "
                       "caller's"),
    Oracle(objective="fitnet_loss", repo="megvii-research/mdistiller",
           path="mdistiller/distillers/FitNet.py (forward_train), mdistiller/distillers/_common.py (ConvReg)",
           commit=MDISTILLER_COMMIT, agreement="1e-12", source="peer",
           differences="the most used PyTorch implementation (the authors' Pylearn2 cost is compared by relation, "
                       "next entry). mdistiller's loss_feat without its FEAT_WEIGHT factor (the caller's); the ConvReg "
                       "regressor is passed as regressor= (the Module owns it); the paper's 1/2 ||.||^2 sum is "
                       "D / 2 times the per-sample mean (stated in the docstring)"),
    Oracle(objective="fitnet_loss", repo="adri-romsor/FitNets", path="costs/HintCost.py (HintCost.expr, MSE branch)",
           commit=FITNETS_COMMIT, agreement="relation",
           differences="the authors' Theano/Pylearn2 cost is mean(sum over axis 1 of 0.5 (hint - r(f_s))^2): for "
                       "(N, C, H, W) maps it is C / 2 times losskit's 'mean', for (N, D) hints D / 2 times; the "
                       "tanh / sigmoid hint layers' cross-entropy branches are not implemented"),
]


def _gen(seed):
    return torch.Generator().manual_seed(seed)


# --------------------------------------------------------------------------------- attention transfer
# Port of szagoruyko/attention-transfer @ 893df548, utils.py L18-23, and the distillation step of cifar.py
# (h(): `utils.distillation(...) + opt.beta * sum(loss_groups)`, loss_groups = [at_loss(x, y) ...]).
def _ref_at(x):
    return F.normalize(x.pow(2).mean(1).view(x.size(0), -1))


def _ref_at_loss(x, y):
    return (_ref_at(x) - _ref_at(y)).pow(2).mean()


def _ref_at_step(g_s, g_t, beta):
    return beta * sum(_ref_at_loss(x, y) for x, y in zip(g_s, g_t))


# Port of megvii-research/mdistiller @ e8c5bb33, mdistiller/distillers/AT.py single_stage_at_loss (p option).
def _ref_mdistiller_at(f_s, f_t, p):
    def _at(feat, p):
        return F.normalize(feat.pow(p).mean(1).reshape(feat.size(0), -1))

    s_H, t_H = f_s.shape[2], f_t.shape[2]
    if s_H > t_H:
        f_s = F.adaptive_avg_pool2d(f_s, (t_H, t_H))
    elif s_H < t_H:
        f_t = F.adaptive_avg_pool2d(f_t, (s_H, s_H))
    return (_at(f_s, p) - _at(f_t, p)).pow(2).mean()


def _grads(value, xs):
    return torch.autograd.grad(value, xs)


@pytest.mark.parametrize("n,cs,ct,hw,scale", [(4, 3, 5, 6, 1.0), (2, 16, 8, 4, 0.3), (5, 2, 2, 7, 10.0),
                                              (1, 1, 4, 3, 1.0)])
def test_attention_transfer_matches_official(n, cs, ct, hw, scale):
    g = _gen(100 + n * cs)
    fs = (scale * torch.randn(n, cs, hw, hw, generator=g, dtype=torch.float64)).requires_grad_()
    ft = (scale * torch.randn(n, ct, hw, hw, generator=g, dtype=torch.float64)).requires_grad_()
    ref = _ref_at_step([fs], [ft], 1000.0)
    got = losskit.attention_transfer(fs, ft)
    torch.testing.assert_close(got, ref, rtol=1e-12, atol=1e-12)
    for a, b in zip(_grads(got, (fs, ft)), _grads(ref, (fs, ft))):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    # the Module form, another beta
    m = losskit.AttentionTransferLoss(beta=250.0)
    torch.testing.assert_close(m(fs, ft), _ref_at_step([fs], [ft], 250.0), rtol=1e-12, atol=1e-12)


def test_attention_transfer_sum_over_layer_pairs_is_the_official_step():
    g = _gen(7)
    g_s = [torch.randn(3, c, s, s, generator=g, dtype=torch.float64) for c, s in ((4, 8), (8, 4), (16, 2))]
    g_t = [torch.randn(3, 2 * c, s, s, generator=g, dtype=torch.float64) for c, s in ((4, 8), (8, 4), (16, 2))]
    got = sum(losskit.attention_transfer(x, y) for x, y in zip(g_s, g_t))
    torch.testing.assert_close(got, _ref_at_step(g_s, g_t, 1000.0), rtol=1e-12, atol=1e-12)


def test_attention_transfer_post_relu_and_zero_maps():
    g = _gen(8)
    fs = torch.randn(4, 3, 5, 5, generator=g, dtype=torch.float64).relu()
    ft = torch.randn(4, 6, 5, 5, generator=g, dtype=torch.float64).relu()
    fs[1] = 0.0  # a dead sample: its map is 0 (F.normalize's eps), as the official code
    torch.testing.assert_close(losskit.attention_transfer(fs, ft, reduction="mean"),
                               _ref_at_step([fs], [ft], 1000.0), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("p", [4.0, 6.0])
def test_attention_transfer_p_matches_mdistiller(p):
    g = _gen(int(p))
    fs = torch.randn(4, 3, 6, 6, generator=g, dtype=torch.float64, requires_grad=True)
    ft = torch.randn(4, 7, 6, 6, generator=g, dtype=torch.float64, requires_grad=True)
    ref = 1000.0 * _ref_mdistiller_at(fs, ft, p)
    got = losskit.attention_transfer(fs, ft, p=p)
    torch.testing.assert_close(got, ref, rtol=1e-12, atol=1e-12)
    for a, b in zip(_grads(got, (fs, ft)), _grads(ref, (fs, ft))):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_attention_transfer_p2_matches_mdistiller_too():
    g = _gen(3)
    fs = torch.randn(4, 3, 6, 6, generator=g, dtype=torch.float64)
    ft = torch.randn(4, 7, 6, 6, generator=g, dtype=torch.float64)
    torch.testing.assert_close(losskit.attention_transfer(fs, ft, beta=1.0), _ref_mdistiller_at(fs, ft, 2),
                               rtol=1e-12, atol=1e-12)


# -------------------------------------------------------------------------------------------- FitNets
# Port of megvii-research/mdistiller @ e8c5bb33: mdistiller/distillers/_common.py ConvReg and
# mdistiller/distillers/FitNet.py forward_train (loss_feat = FEAT_WEIGHT * F.mse_loss(conv_reg(f_s), f_t)).
class _RefConvReg(nn.Module):
    def __init__(self, s_shape, t_shape, use_relu=True):
        super().__init__()
        self.use_relu = use_relu
        s_N, s_C, s_H, s_W = s_shape
        t_N, t_C, t_H, t_W = t_shape
        if s_H == 2 * t_H:
            self.conv = nn.Conv2d(s_C, t_C, kernel_size=3, stride=2, padding=1)
        elif s_H * 2 == t_H:
            self.conv = nn.ConvTranspose2d(s_C, t_C, kernel_size=4, stride=2, padding=1)
        elif s_H >= t_H:
            self.conv = nn.Conv2d(s_C, t_C, kernel_size=(1 + s_H - t_H, 1 + s_W - t_W))
        else:
            raise NotImplementedError(f"student size {s_H}, teacher size {t_H}")
        self.bn = nn.BatchNorm2d(t_C)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x):
        x = self.conv(x)
        if self.use_relu:
            return self.relu(self.bn(x))
        return self.bn(x)


def _ref_fitnet_feat_loss(conv_reg, f_s, f_t, feat_loss_weight=1.0):
    return feat_loss_weight * F.mse_loss(conv_reg(f_s), f_t)


@pytest.mark.parametrize("s_shape,t_shape", [((4, 8, 8, 8), (4, 16, 4, 4)), ((3, 4, 4, 4), (3, 6, 8, 8)),
                                             ((5, 6, 5, 5), (5, 10, 5, 5)), ((2, 3, 6, 6), (2, 5, 4, 4))])
@pytest.mark.parametrize("use_relu", [True, False])
def test_fitnet_matches_mdistiller(s_shape, t_shape, use_relu):
    torch.manual_seed(sum(s_shape) + sum(t_shape))
    reg = _RefConvReg(s_shape, t_shape, use_relu=use_relu).double()
    g = _gen(11)
    fs = torch.randn(*s_shape, generator=g, dtype=torch.float64, requires_grad=True)
    ft = torch.randn(*t_shape, generator=g, dtype=torch.float64)
    ref = _ref_fitnet_feat_loss(reg, fs, ft)
    ref_grads = _grads(ref, (fs, *reg.parameters()))
    loss_module = losskit.FitNetLoss(regressor=reg)
    got = loss_module(fs, ft)
    torch.testing.assert_close(got, ref, rtol=1e-12, atol=1e-12)
    for a, b in zip(_grads(got, (fs, *reg.parameters())), ref_grads):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    # the Module owns the regressor: its parameters are the loss's
    assert {id(p) for p in loss_module.parameters()} == {id(p) for p in reg.parameters()}
    # the functional form: a regressor callable, or features regressed by the caller
    torch.testing.assert_close(losskit.fitnet_loss(fs, ft, regressor=reg), ref, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(losskit.fitnet_loss(reg(fs), ft), ref, rtol=1e-12, atol=1e-12)


def test_fitnet_feat_weight_and_linear_hints():
    g = _gen(12)
    fs = torch.randn(6, 10, generator=g, dtype=torch.float64)
    ft = torch.randn(6, 10, generator=g, dtype=torch.float64)
    torch.testing.assert_close(100.0 * losskit.fitnet_loss(fs, ft), _ref_fitnet_feat_loss(nn.Identity(), fs, ft, 100.0),
                               rtol=1e-12, atol=1e-12)


# Port of adri-romsor/FitNets @ c3d39057, costs/HintCost.py HintCost.expr, the MSE branch (Theano -> torch):
# cost = 0.5*(hint - student_output)**2; cost = T.sum(cost, axis=1); return T.mean(cost)
def _ref_hint_cost(hint, student_output):
    cost = 0.5 * (hint - student_output) ** 2
    cost = torch.sum(cost, dim=1)
    return torch.mean(cost)


@pytest.mark.parametrize("shape", [(4, 6, 5, 5), (3, 8)])
def test_fitnet_relation_to_the_authors_hint_cost(shape):
    g = _gen(13)
    fs = torch.randn(*shape, generator=g, dtype=torch.float64, requires_grad=True)
    ft = torch.randn(*shape, generator=g, dtype=torch.float64)
    ref = _ref_hint_cost(ft, fs)
    got = losskit.fitnet_loss(fs, ft) * shape[1] / 2
    torch.testing.assert_close(got, ref, rtol=1e-12, atol=1e-12)
    for a, b in zip(_grads(got, (fs,)), _grads(ref, (fs,))):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
