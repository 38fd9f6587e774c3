"""Gathered losses under torch.distributed: 2 and 4 gloo processes on CPU, uneven per-rank batches,
float64; every rank's loss and its inputs' gradients must equal those of one process holding the
whole batch (to 1e-6; in practice ~1e-15)."""

import os
import socket

import pytest
import torch
import torch.multiprocessing as mp

import losskit

SIZES = {2: [3, 5], 4: [1, 3, 2, 4]}
REDUCTIONS = ("mean", "sum", "none")


def _data(total):
    g = torch.Generator().manual_seed(123)
    d = 4
    return {
        "z1": torch.randn(total, d, generator=g, dtype=torch.float64),
        "z2": torch.randn(total, d, generator=g, dtype=torch.float64),
        "views": torch.randn(total, 3, d, generator=g, dtype=torch.float64),
        # labels that repeat across ranks (positives on other ranks) and a singleton class
        "labels": torch.tensor([0, 1, 2, 0, 1, 2, 3, 9][:total]) if total <= 8 else torch.arange(total) % 3,
        "w": torch.rand(total, generator=g, dtype=torch.float64) + 0.5,
        "tau": torch.rand(total, generator=g, dtype=torch.float64) * 0.5 + 0.1,
        "index": torch.randperm(20, generator=g)[:total],
    }


def _cases():
    """(name, call(inputs, **kw), grad input names)."""
    return [
        ("info_nce", lambda t, **kw: losskit.info_nce(t["z1"], t["z2"], **kw), ("z1", "z2")),
        ("nt_xent", lambda t, **kw: losskit.nt_xent(t["z1"], t["z2"], temperature=0.3, **kw), ("z1", "z2")),
        ("clip_loss", lambda t, **kw: losskit.clip_loss(t["z1"], t["z2"], **kw), ("z1", "z2")),
        ("cwcl", lambda t, **kw: losskit.cwcl(t["z1"], t["z2"], **kw), ("z1",)),
        ("dcl", lambda t, **kw: losskit.dcl(t["z1"], t["z2"], t["labels"], **kw), ("z1", "z2")),
        ("supcon", lambda t, **kw: losskit.supcon(t["z1"], t["labels"], **kw), ("z1",)),
        ("supcon_weighted", lambda t, **kw: losskit.supcon(t["z1"], t["labels"], sample_weight=t["w"], **kw),
         ("z1",)),
        ("supcon_views", lambda t, **kw: losskit.supcon(t["views"], t["labels"], denominator="decoupled", **kw),
         ("views",)),
        ("mv_infonce", lambda t, **kw: losskit.mv_infonce(t["views"], **kw), ("views",)),
        ("mv_dhel", lambda t, **kw: losskit.mv_dhel(t["views"], block_size=2, **kw), ("views",)),
        ("barlow_twins", lambda t, **kw: losskit.barlow_twins(t["z1"], t["z2"], lambd=0.1, **kw), ("z1", "z2")),
        ("vicreg", lambda t, **kw: losskit.vicreg(t["z1"], t["z2"], **kw), ("z1", "z2")),
        ("triplet_margin", lambda t, **kw: losskit.triplet_margin(t["z1"], t["labels"], margin=1.0, **kw), ("z1",)),
        ("triplet_hard", lambda t, **kw: losskit.triplet_margin(t["z1"], t["labels"], mining="batch_hard", **kw),
         ("z1",)),
        ("contrastive_margin", lambda t, **kw: losskit.contrastive_margin(t["z1"], t["labels"], **kw), ("z1",)),
        ("multi_similarity", lambda t, **kw: losskit.multi_similarity(t["z1"], t["labels"], beta=5.0, **kw), ("z1",)),
        ("tcm", lambda t, **kw: losskit.tcm(t["z1"], t["labels"], margin_minus=0.0, **kw), ("z1",)),
        ("tempnet_dro", lambda t, **kw: losskit.tempnet_dro(t["z1"], t["z2"], t["tau"], **kw), ("z1", "z2", "tau")),
        ("info_nce_blocked", lambda t, **kw: losskit.info_nce(t["z1"], t["z2"], block_size=2, **kw), ("z1", "z2")),
        ("siglip", lambda t, **kw: losskit.siglip(t["z1"], t["z2"], logit_scale=3.0, logit_bias=-1.0, **kw),
         ("z1", "z2")),
        ("siglip_ring", lambda t, **kw: losskit.siglip(t["z1"], t["z2"], logit_scale=3.0, logit_bias=-1.0, ring=True,
                                                       **kw), ("z1", "z2")),
        ("siglip_ring_weighted", lambda t, **kw: losskit.siglip(t["z1"], t["z2"], ring=True, sample_weight=t["w"], **kw),
         ("z1", "z2")),
        ("n_pairs", lambda t, **kw: losskit.n_pairs(t["z1"], t["z2"], **kw), ("z1", "z2")),
        ("circle_loss", lambda t, **kw: losskit.circle_loss(t["z1"], t["labels"], gamma=8.0, **kw), ("z1",)),
        # reducers average terms over every rank's batch (one value: the reduction is left at 'mean')
        ("triplet_nonzero", lambda t, reduction, **kw: losskit.triplet_margin(
            t["z1"], t["labels"], margin=1.0, reducer="nonzero", **kw), ("z1",)),
        ("contrastive_mean", lambda t, reduction, **kw: losskit.contrastive_margin(
            t["z1"], t["labels"], reducer="mean", **kw), ("z1",)),
    ]


def _run(inputs, gather):
    out = {}
    for name, call, grads in _cases():
        for red in REDUCTIONS:
            t = {k: (v.clone().requires_grad_(k in grads) if v.is_floating_point() and k != "w" else v)
                 for k, v in inputs.items()}
            loss = call(t, gather=gather, reduction=red)
            loss.sum().backward()
            out[(name, red)] = (loss.detach(), {k: t[k].grad for k in grads})
    return out


def _model():
    torch.manual_seed(7)
    return torch.nn.Linear(4, 3).double()


def _ddp_step(local):
    """The documented DDP recipe: gathered loss, backward of loss * ddp_scale(); DDP averages."""
    from losskit.representation.distributed import ddp_scale

    model = torch.nn.parallel.DistributedDataParallel(_model())
    loss = losskit.supcon(torch.stack([model(local["z1"]), model(local["z2"])], 1), local["labels"], gather=True)
    (loss * ddp_scale()).backward()
    return loss.detach(), model.module.weight.grad.clone(), model.module.bias.grad.clone()


def _isog_step(data, gather):
    """One iSogCLR step from a fresh state; returns loss, input grads, tau grad, moving averages."""
    from losskit.representation import ISogCLRState

    state = ISogCLRState(20, tau_init=0.2, dtype=torch.float64)
    with torch.no_grad():
        state.tau.copy_(torch.linspace(0.1, 0.6, 20, dtype=torch.float64))
    z1, z2 = data["z1"].clone().requires_grad_(), data["z2"].clone().requires_grad_()
    loss = losskit.isogclr(z1, z2, data["index"], state=state, gather=gather)
    loss.backward()
    state.sync_grad_()
    return loss.detach(), z1.grad, z2.grad, state.tau.grad.clone(), state.log_u.clone()


def _worker(rank, world_size, port, path):
    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world_size)
    try:
        sizes = SIZES[world_size]
        data = _data(sum(sizes))
        lo = sum(sizes[:rank])
        local = {k: v[lo:lo + sizes[rank]] for k, v in data.items()}
        out = _run(local, gather=True)
        out["ddp"] = _ddp_step(local)
        out["isog"] = _isog_step(local, gather=True)
        torch.save(out, os.path.join(path, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.distributed
@pytest.mark.parametrize("world_size", [2, 4])
def test_gathered_losses_equal_single_process(world_size, tmp_path):
    mp.spawn(_worker, args=(world_size, _free_port(), str(tmp_path)), nprocs=world_size, join=True)
    sizes = SIZES[world_size]
    data = _data(sum(sizes))
    whole = _run(data, gather=False)
    model = _model()
    ref_loss = losskit.supcon(torch.stack([model(data["z1"]), model(data["z2"])], 1), data["labels"])
    ref_loss.backward()
    isog = _isog_step(data, gather=False)
    for rank in range(world_size):
        got = torch.load(tmp_path / f"rank{rank}.pt")
        ddp_loss, gw, gb = got.pop("ddp")
        torch.testing.assert_close(ddp_loss, ref_loss.detach(), rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(gw, model.weight.grad, rtol=1e-6, atol=1e-6, msg=f"DDP weight grad, rank {rank}")
        torch.testing.assert_close(gb, model.bias.grad, rtol=1e-6, atol=1e-6, msg=f"DDP bias grad, rank {rank}")
        lo, hi = sum(sizes[:rank]), sum(sizes[:rank + 1])
        i_loss, i_g1, i_g2, i_gt, i_u = got.pop("isog")
        torch.testing.assert_close(i_loss, isog[0], rtol=1e-6, atol=1e-6, msg=f"isogclr loss, rank {rank}")
        torch.testing.assert_close(i_g1, isog[1][lo:hi], rtol=1e-6, atol=1e-6, msg=f"isogclr z1 grad, rank {rank}")
        torch.testing.assert_close(i_g2, isog[2][lo:hi], rtol=1e-6, atol=1e-6, msg=f"isogclr z2 grad, rank {rank}")
        torch.testing.assert_close(i_gt, isog[3], rtol=1e-6, atol=1e-6, msg=f"isogclr tau grad, rank {rank}")
        torch.testing.assert_close(i_u, isog[4], rtol=1e-6, atol=1e-6, msg=f"isogclr state, rank {rank}")
        for key, (loss, grads) in whole.items():
            name, red = key
            rl, rg = got[key]
            ref = loss[lo:hi] if red == "none" and loss.dim() else loss
            torch.testing.assert_close(rl, ref, rtol=1e-6, atol=1e-6, msg=f"{key} loss, rank {rank}")
            if red == "none" and loss.dim():
                continue  # 'none' losses are local; their gradient is not the whole batch's
            for k, g in grads.items():
                torch.testing.assert_close(rg[k], g[lo:hi], rtol=1e-6, atol=1e-6,
                                           msg=f"{key} grad {k}, rank {rank}")


def test_gather_is_identity_without_process_group():
    from losskit.representation import distributed as D

    x = torch.randn(3, 2)
    y, off = D.all_gather(x)
    assert y is x and off == 0
    assert D.ddp_scale() == 1 and D.world() == (0, 1)
