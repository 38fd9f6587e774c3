"""Oracle tests (issue 19): (fused) Gromov-Wasserstein and partial OT against POT, their reference
implementation (POT's gromov and partial modules; the entropic GW solver is the paper authors' PGD).

Small batched problems, float64; the fuller comparisons (plans, KL loss, asymmetric costs, gradients,
barycenters) are in tests/test_transport_pot.py.
"""

import numpy as np
import pytest
import torch
from oracle_meta import Oracle

import losskit

POT_TAG = "0.9.7"

ORACLES = [
    Oracle(objective="gromov_wasserstein", repo="PythonOT/POT",
           path="ot/gromov/_bregman.py (entropic_gromov_wasserstein, solver='PGD'), ot/gromov/_utils.py "
                "(init_matrix, gwloss, gwggrad)", commit=POT_TAG, agreement="relation", source="peer",
           differences="same epsilon (units of the linearised cost), square loss without 1/2, same iteration from "
                       "a b^T; POT reports the GW loss at its plan without the entropic term: "
                       "POT = losskit - eps KL(T | a (x) b) (1e-9 relative; plans to 1e-11)."),
    Oracle(objective="fused_gromov_wasserstein", repo="PythonOT/POT",
           path="ot/gromov/_bregman.py (entropic_fused_gromov_wasserstein, solver='PGD')", commit=POT_TAG,
           agreement="relation", source="peer",
           differences="POT's alpha and epsilon conventions; POT = losskit - eps KL(T | a (x) b) (1e-9 relative)."),
    Oracle(objective="partial_ot", repo="PythonOT/POT",
           path="ot/partial/partial_solvers.py (partial_wasserstein, partial_wasserstein2)", commit=POT_TAG,
           agreement="1e-12", source="peer",
           differences="the same dummy-point reduction (POT: network simplex; losskit: its exact solver, "
                       "assignment / HiGHS LP)."),
    Oracle(objective="entropic_partial_ot", repo="PythonOT/POT",
           path="ot/partial/partial_solvers.py (entropic_partial_wasserstein, Dykstra projections)", commit=POT_TAG,
           agreement="relation", source="peer",
           differences="same problem and entropy (sum P (log P - 1)); losskit solves the dual by coordinate ascent "
                       "(the same optimum). POT reports <P, C>: POT = losskit - eps sum P (log P - 1) (1e-9)."),
]

D = torch.float64


def _gen(seed):
    return torch.Generator().manual_seed(seed)


def _kl(T, a, b):
    return float((T * np.log(T / np.outer(a, b))).sum())


@pytest.mark.parametrize("alpha", [None, 0.3])
def test_entropic_gromov_wasserstein_batch_against_pot(alpha):
    ot = pytest.importorskip("ot")
    x = torch.randn(2, 7, 2, generator=_gen(1), dtype=D)
    y = 0.8 * torch.randn(2, 6, 3, generator=_gen(2), dtype=D)
    M = torch.rand(2, 7, 6, generator=_gen(3), dtype=D)
    eps = 1.0
    if alpha is None:
        got = losskit.gromov_wasserstein(x, y, eps=eps, tol=1e-12, reduction="none")
    else:
        got = losskit.fused_gromov_wasserstein(x, y, M, alpha=alpha, eps=eps, tol=1e-12, reduction="none")
    for k in range(2):
        C1, C2 = ot.dist(x[k].numpy(), x[k].numpy()), ot.dist(y[k].numpy(), y[k].numpy())
        a, b = ot.unif(7), ot.unif(6)
        kw = dict(epsilon=eps, tol=1e-12, max_iter=10000, numItermax=20000, stopThr=1e-13, log=True)
        if alpha is None:
            T, log = ot.gromov.entropic_gromov_wasserstein(C1, C2, a, b, "square_loss", **kw)
            ref = log["gw_dist"]
        else:
            T, log = ot.gromov.entropic_fused_gromov_wasserstein(M[k].numpy(), C1, C2, a, b, "square_loss",
                                                                 alpha=alpha, **kw)
            ref = log["fgw_dist"]
        want = ref + eps * _kl(T, a, b)
        assert abs(got[k].item() - want) < 1e-9 * max(1.0, abs(want)), (k, got[k].item(), want)


def test_partial_ot_batch_against_pot():
    ot = pytest.importorskip("ot")
    x = torch.randn(2, 8, 2, generator=_gen(4), dtype=D)
    y = torch.randn(2, 6, 2, generator=_gen(5), dtype=D) + 0.7
    b = torch.full((2, 6), 0.25, dtype=D)                                 # total 1.5 against 1
    mass, eps = 0.6, 0.2
    exact = losskit.partial_ot(x, y, b=b, mass=mass, reduction="none")
    ent = losskit.entropic_partial_ot(x, y, b=b, mass=mass, eps=eps, tol=1e-12, reduction="none")
    for k in range(2):
        C = ot.dist(x[k].numpy(), y[k].numpy())
        a, bk = ot.unif(8), b[k].numpy()
        assert abs(exact[k].item() - ot.partial.partial_wasserstein2(a, bk, C, m=mass)) < 1e-12
        P = ot.partial.entropic_partial_wasserstein(a, bk, C, reg=eps, m=mass, numItermax=100000, stopThr=1e-14)
        want = float((P * C).sum()) + eps * float((P * (np.log(P) - 1)).sum())
        assert abs(ent[k].item() - want) < 1e-9 * max(1.0, abs(want)), (k, ent[k].item(), want)
