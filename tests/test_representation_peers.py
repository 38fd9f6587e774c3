"""Metric-learning objectives and reducers against pytorch-metric-learning 2.9.0 (the peer's own value,
float64, 1e-6 or tighter), and self-supervised objectives against the papers' reference code (ported
below, with citations) or closed forms."""


import pytest
import torch
from helpers import randn64

import losskit
from losskit import LossInputError

pml = pytest.importorskip("pytorch_metric_learning")
from pytorch_metric_learning import losses as L  # noqa: E402
from pytorch_metric_learning import miners as M  # noqa: E402
from pytorch_metric_learning import reducers as R  # noqa: E402

TOL = dict(rtol=1e-9, atol=1e-10)


def _batch(seed, n=12, d=5, k=3, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    return randn64(n, d, seed=seed, scale=scale), torch.randint(0, k, (n,), generator=g)


def _close(a, b, **tol):
    torch.testing.assert_close(torch.as_tensor(a, dtype=torch.float64), torch.as_tensor(b, dtype=torch.float64),
                               **(tol or TOL))


def _grads(f_ours, f_peer, x):
    x1 = x.clone().requires_grad_(True)
    x2 = x.clone().requires_grad_(True)
    f_ours(x1).backward()
    f_peer(x2).backward()
    _close(x1.grad, x2.grad)


# ---------------------------------------------------------------------------------------- reducers
@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("margin", [0.05, 0.2, 1.0])
def test_triplet_nonzero_reducer_is_pml_default(seed, margin):
    x, y = _batch(seed)
    ours = losskit.triplet_margin(x, y, margin=margin, normalize=True, reducer="nonzero")
    _close(ours, L.TripletMarginLoss(margin=margin)(x, y))
    _grads(lambda e: losskit.triplet_margin(e, y, margin=margin, normalize=True, reducer="nonzero"),
           lambda e: L.TripletMarginLoss(margin=margin)(e, y), x)


@pytest.mark.parametrize("seed", range(3))
def test_triplet_mean_reducer_and_batch_hard(seed):
    x, y = _batch(seed)
    _close(losskit.triplet_margin(x, y, margin=0.3, normalize=True, reducer="mean"),
           L.TripletMarginLoss(margin=0.3, reducer=R.MeanReducer())(x, y))
    # batch-hard mining: PML's BatchHardMiner (one triplet per anchor) + its default reducer
    peer = L.TripletMarginLoss(margin=0.3)(x, y, M.BatchHardMiner()(x, y))
    _close(losskit.triplet_margin(x, y, margin=0.3, normalize=True, mining="batch_hard", reducer="nonzero"), peer)


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize(("mp", "mn"), [(0.0, 1.0), (0.3, 0.8), (0.0, 0.2)])
def test_contrastive_nonzero_reducer_is_pml_default(seed, mp, mn):
    x, y = _batch(seed)
    ours = losskit.contrastive_margin(x, y, pos_margin=mp, neg_margin=mn, power=1, normalize=True, reducer="nonzero")
    _close(ours, L.ContrastiveLoss(pos_margin=mp, neg_margin=mn)(x, y))
    _close(losskit.contrastive_margin(x, y, pos_margin=mp, neg_margin=mn, power=1, normalize=True, reducer="mean"),
           L.ContrastiveLoss(pos_margin=mp, neg_margin=mn, reducer=R.MeanReducer())(x, y))
    _grads(lambda e: losskit.contrastive_margin(e, y, pos_margin=mp, neg_margin=mn, power=1, normalize=True,
                                                reducer="nonzero"),
           lambda e: L.ContrastiveLoss(pos_margin=mp, neg_margin=mn)(e, y), x)


def test_reducer_edges():
    x, y = _batch(0)
    # every hinge inactive: the nonzero mean of nothing is 0 (PML's zero loss)
    big = losskit.triplet_margin(x, torch.zeros_like(y), normalize=True, reducer="nonzero")
    assert big.item() == 0.0  # a single class: no triplet at all
    _close(big, L.TripletMarginLoss()(x, torch.zeros_like(y)))
    # the reducer is one value for the batch: other reductions / sample weights refuse it
    with pytest.raises(LossInputError, match="^reducer"):
        losskit.triplet_margin(x, y, reducer="nonzero", reduction="none")
    with pytest.raises(LossInputError, match="^reducer"):
        losskit.contrastive_margin(x, y, reducer="mean", sample_weight=torch.ones(12, dtype=torch.float64))
    with pytest.raises(LossInputError, match="^reducer"):
        losskit.contrastive_margin(x, y, reducer="threshold")
    # reducer=None is unchanged: the per-anchor mean
    assert losskit.triplet_margin(x, y).item() == losskit.triplet_margin(x, y, reducer=None).item()
