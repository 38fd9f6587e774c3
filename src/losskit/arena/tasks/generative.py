"""The ``generative`` task: a small MLP learns a 2-D mixture of Gaussians with each generative objective;
the samples it generates are compared with held-out data by losskit's own energy distance and sliced
Wasserstein distance."""

from __future__ import annotations

import math

import torch
from torch import nn

from ...generative import paths as P
from ...generative.consistency import consistency_scalings, ict_num_steps, karras_sigmas, sample_ict_indices
from ...generative.pfgm import pfgmpp_perturbation
from ..task import Candidate, Task, TrialResult, Unavailable, bind_call
from ._common import entry_of

__all__ = ["Generative", "mixture"]

#: The input kinds the task trains (read from the registry, not from objective names).
FLOW_KIND = "path sample"
CONSISTENCY_KIND = "consistency pair"
DENOISER_KIND = "denoiser output"
SIGMA_DATA = 0.5


def mixture(n: int, g: torch.Generator, modes: int = 8, radius: float = 0.7, std: float = 0.07) -> torch.Tensor:
    """``n`` points of ``modes`` Gaussians (std ``std``) evenly spaced on a circle of ``radius`` (overall
    standard deviation about 0.5, EDM's sigma_data)."""
    k = torch.randint(0, modes, (n,), generator=g)
    angle = 2 * math.pi * k.double() / modes
    centres = radius * torch.stack([angle.cos(), angle.sin()], 1)
    return centres + std * torch.randn(n, 2, generator=g, dtype=torch.float64)


class _Net(nn.Module):
    """F(x, c): an MLP on the point and one scalar conditioning feature (the time or the log noise level)."""

    def __init__(self, hidden: int, seed: int):
        super().__init__()
        torch.manual_seed(seed)
        self.f = nn.Sequential(nn.Linear(3, hidden), nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU(),
                               nn.Linear(hidden, 2)).double()

    def forward(self, x, c):
        return self.f(torch.cat([x, c[:, None]], 1))


def _edm_denoiser(net, x, sigma):
    """EDM's preconditioned denoiser D(x, sigma) = c_skip x + c_out F(c_in x, log(sigma) / 4)."""
    s = sigma[:, None]
    c_skip = SIGMA_DATA ** 2 / (s ** 2 + SIGMA_DATA ** 2)
    c_out = s * SIGMA_DATA / torch.sqrt(s ** 2 + SIGMA_DATA ** 2)
    c_in = 1 / torch.sqrt(s ** 2 + SIGMA_DATA ** 2)
    return c_skip * x + c_out * net(c_in * x, sigma.log() / 4)


def _consistency_fn(net, x, sigma):
    """The consistency function f = c_skip x + c_out F(c_in x, log(sigma) / 4) (f(x, sigma_min) = x)."""
    c_skip, c_out = consistency_scalings(sigma, SIGMA_DATA)
    c_in = 1 / torch.sqrt(sigma ** 2 + SIGMA_DATA ** 2)
    return c_skip[:, None] * x + c_out[:, None] * net(c_in[:, None] * x, sigma.log() / 4)


class Generative(Task):
    """A 2-D mixture of Gaussians learned by a small MLP; energy distance to held-out samples."""

    name = "generative"
    description = ("8 Gaussians on a circle (2-D, overall std 0.5), an MLP (2 hidden layers) trained for `steps` "
                   "Adam steps on batches of `batch_size`; flow matching sampled by `sample_steps` Euler steps of "
                   "its ODE, denoisers (PFGM++ / EDM) by Euler steps in sigma from sigma_max, consistency models "
                   "in one step; metrics: losskit's energy distance and sliced W2^2 between `n_eval` generated and "
                   "held-out points (lower is better), training seconds")
    metrics = ("energy_distance", "sliced_w2", "train_s")
    lower_is_better = frozenset({"energy_distance", "sliced_w2", "train_s"})
    baseline = "flow_matching_loss"
    defaults = {"steps": 3000, "batch_size": 256, "hidden": 64, "lr": 2e-3, "sample_steps": 40, "n_eval": 1000,
                "sigma_max": 10.0, "s1": 80}
    quick_config = {"steps": 1000}
    quick = ("flow_matching_loss", "consistency_training_loss", "pfgmpp_loss(D=inf)", "pfgmpp_loss(D=8)")

    def candidates(self):
        return [Candidate("flow_matching_loss"), Candidate("flow_matching_loss", {"path": "cosine"}),
                Candidate("flow_matching_loss", {"prediction": "data"}),
                Candidate("flow_matching_loss", {"weighting": "min_snr", "prediction": "noise", "path": "cosine"}),
                Candidate("consistency_training_loss"), Candidate("latent_consistency_loss"),
                Candidate("pfgmpp_loss", {"D": math.inf}), Candidate("pfgmpp_loss", {"D": 8})]

    def run(self, candidate, seed, config):
        import time

        entry = entry_of(candidate)
        kind = entry.input_kind.name
        if kind not in (FLOW_KIND, CONSISTENCY_KIND, DENOISER_KIND):
            raise Unavailable(f"{entry.name}: the generative task trains {FLOW_KIND!r}, {CONSISTENCY_KIND!r} and "
                              f"{DENOISER_KIND!r} objectives, not {kind!r}")
        options = dict(candidate.options)
        D = float(options.pop("D", math.inf))  # the PFGM++ kernel's augmented dimensions: the task's, not the loss's
        g = torch.Generator().manual_seed(70_000 + seed)
        held_out = mixture(config["n_eval"], torch.Generator().manual_seed(1))
        net = _Net(config["hidden"], seed)
        opt = torch.optim.Adam(net.parameters(), lr=config["lr"])
        steps, n = config["steps"], config["batch_size"]
        sig_max = config["sigma_max"]
        path = options.get("path", "cond_ot")
        prediction = options.get("prediction", "velocity")
        t0 = time.process_time()
        for k in range(steps):
            x1 = mixture(n, g)
            if kind == FLOW_KIND:
                x0 = torch.randn(n, 2, generator=g, dtype=torch.float64)
                t = 1e-3 + (1 - 2e-3) * torch.rand(n, generator=g, dtype=torch.float64)
                inputs = {"pred": net(P.interpolate(x0, x1, t, path), t), "x0": x0, "x1": x1, "t": t}
            elif kind == CONSISTENCY_KIND:
                sig = karras_sigmas(ict_num_steps(k, steps, 10, config["s1"]), 0.002, sig_max)
                i = sample_ict_indices(n, sig, generator=g)
                z = torch.randn(n, 2, generator=g, dtype=torch.float64)
                s, s_next = sig[i], sig[i + 1]
                pred = _consistency_fn(net, x1 + s_next[:, None] * z, s_next)
                with torch.no_grad():
                    target = _consistency_fn(net, x1 + s[:, None] * z, s)
                inputs = {"pred": pred, "target": target, "sigma": s, "sigma_next": s_next}
            else:  # EDM's lognormal noise levels, PFGM++'s kernel with r = sigma sqrt(D)
                sigma = torch.exp(-1.2 + 1.2 * torch.randn(n, generator=g, dtype=torch.float64))
                noise = (sigma[:, None] * torch.randn(n, 2, generator=g, dtype=torch.float64) if math.isinf(D)
                         else pfgmpp_perturbation(x1, sigma, D, generator=g))
                inputs = {"denoised": _edm_denoiser(net, x1 + noise, sigma), "x": x1, "sigma": sigma}
            loss = bind_call(entry.fn, inputs, options)
            opt.zero_grad()
            loss.backward()
            opt.step()
        train_s = time.process_time() - t0
        with torch.no_grad():
            m = config["n_eval"]
            gs = torch.Generator().manual_seed(90_000 + seed)
            if kind == FLOW_KIND:
                x = torch.randn(m, 2, generator=gs, dtype=torch.float64)
                ts = torch.linspace(1e-3, 1 - 1e-3, config["sample_steps"] + 1, dtype=torch.float64)
                for a, b in zip(ts[:-1], ts[1:]):
                    t = a.expand(m)
                    v = P.convert(net(x, t), x, t, path=path, source=prediction, target="velocity")
                    x = x + (b - a) * v
            elif kind == CONSISTENCY_KIND:
                x = _consistency_fn(net, sig_max * torch.randn(m, 2, generator=gs, dtype=torch.float64),
                                    torch.full((m,), sig_max, dtype=torch.float64))
            else:
                sig = karras_sigmas(config["sample_steps"], 0.002, sig_max).flip(0)
                start = torch.full((m,), sig_max, dtype=torch.float64)
                x = (sig_max * torch.randn(m, 2, generator=gs, dtype=torch.float64) if math.isinf(D)
                     else pfgmpp_perturbation(torch.zeros(m, 2, dtype=torch.float64), start, D, generator=gs))
                for a, b in zip(sig[:-1], sig[1:]):  # the PF-ODE dx/dsigma = (x - D(x, sigma)) / sigma
                    x = x + (b - a) * (x - _edm_denoiser(net, x, a.expand(m))) / a
                x = _edm_denoiser(net, x, sig[-1].expand(m))
        from ...divergences import energy_distance
        from ...transport import sliced_wasserstein

        if not bool(torch.isfinite(x).all()):
            return TrialResult({"energy_distance": math.inf, "sliced_w2": math.inf, "train_s": train_s})
        return TrialResult({"energy_distance": float(energy_distance(x, held_out)),
                            "sliced_w2": float(sliced_wasserstein(x, held_out, n_projections=128)),
                            "train_s": train_s})
