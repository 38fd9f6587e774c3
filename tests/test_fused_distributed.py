"""Vocabulary-parallel cross-entropy with 2 gloo processes on CPU against the single-process fused loss.

Each rank holds a vocabulary shard of W, of the bias and of the class weights (unequal shards: V = 23 split
12 + 11); every rank must return the full-vocabulary loss, the full gradient for the hidden states and the
gradient of its own shards.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

import losskit

_WORKER = r"""
import sys, torch, torch.distributed as dist, losskit
rank, world, init, out = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
torch.set_num_threads(1)
dist.init_process_group("gloo", init_method="file://" + init, rank=rank, world_size=world)
exec(sys.argv[5])  # defines data() and CONFIGS
x, W, b, y, w, sw = data()
lo, hi = SPLITS[rank], SPLITS[rank + 1]
res = []
for cfg in CONFIGS:
    xs = x.clone().requires_grad_(True)
    Ws = W[lo:hi].clone().requires_grad_(True)
    bs = b[lo:hi].clone().requires_grad_(True)
    kw = dict(cfg)
    if kw.pop("cw", False):
        kw["weight"] = w[lo:hi]
    if kw.pop("sw", False):
        kw["sample_weight"] = sw
    loss = losskit.vocab_parallel_cross_entropy(xs, Ws, y, vocab_start=lo, linear_bias=bs, chunk_size=5, **kw)
    up = torch.linspace(-1, 2, loss.numel(), dtype=loss.dtype).reshape(loss.shape)
    (loss * up).sum().backward()
    res.append((loss.detach(), xs.grad, Ws.grad, bs.grad))
try:  # every rank's shard past the vocabulary end: refused on every rank (after the vocabulary-size all-reduce)
    losskit.vocab_parallel_cross_entropy(x, W[lo:hi], y, vocab_start=23)
    res.append("no error")
except losskit.LossInputError as e:
    res.append(str(e))
torch.save(res, out)
dist.destroy_process_group()
"""

_DATA = r"""
SPLITS = [0, 12, 23]
CONFIGS = [
    dict(reduction="mean"),
    dict(reduction="mean", label_smoothing=0.1, cw=True, z_loss=1e-2, softcap=4.0, sw=True),
    dict(reduction="sum", label_smoothing=0.2),
    dict(reduction="none", cw=True, z_loss=1e-3),
]
def data():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(17, 6, generator=g, dtype=torch.float64)
    W = torch.randn(23, 6, generator=g, dtype=torch.float64)
    b = torch.randn(23, generator=g, dtype=torch.float64)
    y = torch.randint(0, 23, (17,), generator=g)
    y[[2, 9]] = -100
    w = torch.rand(23, generator=g, dtype=torch.float64) + 0.5
    sw = torch.rand(17, generator=g, dtype=torch.float64) + 0.1
    return x, W, b, y, w, sw
"""


@pytest.mark.distributed
def test_vocab_parallel_two_gloo_ranks_equal_single_process(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.path.join(os.path.dirname(__file__), "..", "src")}
    init = tmp_path / "init"
    procs = [subprocess.Popen([sys.executable, "-c", _WORKER, str(r), "2", str(init), str(tmp_path / f"r{r}.pt"),
                               _DATA], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for r in range(2)]
    for p in procs:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
    ranks = [torch.load(tmp_path / f"r{r}.pt") for r in range(2)]
    for res in ranks:
        assert res.pop().startswith("vocab_start:")

    ns: dict = {"torch": torch}
    exec(_DATA, ns)
    x, W, b, y, w, sw = ns["data"]()
    splits = ns["SPLITS"]
    for i, cfg in enumerate(ns["CONFIGS"]):
        xs, Ws, bs = (t.clone().requires_grad_(True) for t in (x, W, b))
        kw = dict(cfg)
        if kw.pop("cw", False):
            kw["weight"] = w
        if kw.pop("sw", False):
            kw["sample_weight"] = sw
        loss = losskit.fused_linear_cross_entropy(xs, Ws, y, linear_bias=bs, **kw)
        if not kw.get("z_loss") and not kw.get("softcap") and "sample_weight" not in kw:
            ref = F.cross_entropy(x @ W.T + b, y, reduction=kw["reduction"], weight=kw.get("weight"),
                                  label_smoothing=kw.get("label_smoothing", 0.0))
            torch.testing.assert_close(loss.detach(), ref, rtol=1e-10, atol=1e-12)
        up = torch.linspace(-1, 2, loss.numel(), dtype=loss.dtype).reshape(loss.shape)
        (loss * up).sum().backward()
        for r, res in enumerate(ranks):
            lo, hi = splits[r], splits[r + 1]
            rl, gx, gW, gb = res[i]
            torch.testing.assert_close(rl, loss.detach(), rtol=1e-10, atol=1e-12)
            torch.testing.assert_close(gx, xs.grad, rtol=1e-10, atol=1e-12)
            torch.testing.assert_close(gW, Ws.grad[lo:hi], rtol=1e-10, atol=1e-12)
            torch.testing.assert_close(gb, bs.grad[lo:hi], rtol=1e-10, atol=1e-12)


def test_vocab_parallel_single_process_is_fused_cross_entropy():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(9, 4, generator=g, dtype=torch.float64)
    W = torch.randn(7, 4, generator=g, dtype=torch.float64)
    y = torch.randint(0, 7, (9,), generator=g)
    torch.testing.assert_close(losskit.vocab_parallel_cross_entropy(x, W, y, label_smoothing=0.1),
                               F.cross_entropy(x @ W.T, y, label_smoothing=0.1), rtol=1e-12, atol=0)
