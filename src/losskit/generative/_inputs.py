"""Input kinds of the generative family: a model output beside the path's endpoints and time (flow
matching), two consistency-function outputs at adjacent noise levels (consistency training), and a
denoiser output beside the clean data and its noise level (PFGM++ / EDM)."""

from __future__ import annotations

import torch

from .._core.inputs import scale_input
from .._core.registry import BadInput, Example, InputKind
from .._core.values import POSITIVE_VALUES, UNIT_VALUES

__all__ = ["FLOW", "flow_example", "CONSISTENCY", "consistency_example", "DENOISER", "denoiser_example",
           "DISTRIBUTION_MATCHING", "distribution_matching_example"]

N, D = 6, 3


def _with(x: torch.Tensor, value: float, index: int = 0) -> torch.Tensor:
    x = x.detach().clone()
    x.view(-1)[index] = value
    return x


def _shape_bad(ex: Example, first: str, others: tuple[str, ...], time: str) -> list[BadInput]:
    out = [BadInput(f"{k} of another shape", ex.replace({k: ex.inputs[k][:, :-1]}), k) for k in others]
    out += [
        BadInput(f"{time} of another batch size", ex.replace({time: ex.inputs[time][:-1]}), time),
        BadInput(f"{time} with a feature axis", ex.replace({time: ex.inputs[time][:, None]}), time),
        BadInput(f"NaN {time}", ex.replace({time: _with(ex.inputs[time], float("nan"))}), time),
        BadInput(f"integer {first}", ex.replace({first: ex.inputs[first].round().long()}), first),
        BadInput(f"+inf in {others[0]}", ex.replace({others[0]: _with(ex.inputs[others[0]], float("inf"))}),
                 others[0]),
    ]
    return out


# ---------------------------------------------------------------------------------- flow matching
def flow_example(gen: torch.Generator, dtype: torch.dtype) -> Example:
    x0 = torch.randn(N, D, generator=gen, dtype=torch.float64)
    x1 = 1.5 + 0.5 * torch.randn(N, D, generator=gen, dtype=torch.float64)
    t = 0.05 + 0.9 * torch.rand(N, generator=gen, dtype=torch.float64)
    pred = (x1 - x0) + 0.3 * torch.randn(N, D, generator=gen, dtype=torch.float64)
    return Example({k: v.to(dtype) for k, v in {"pred": pred, "x0": x0, "x1": x1, "t": t}.items()},
                   grad=("pred",))


def _flow_bad(ex: Example) -> list[BadInput]:
    return _shape_bad(ex, "pred", ("x0", "x1"), "t") + [
        BadInput("t above 1", ex.replace({"t": _with(ex.inputs["t"], 1.5)}), "t"),
    ]


FLOW = InputKind("path sample", "model output (N, ...) at x_t, noise x0 and data x1 of the same shape, times t (N,) "
                 "in [0, 1]", bad_inputs=_flow_bad, extreme=scale_input("pred"), values={"t": UNIT_VALUES})


# ---------------------------------------------------------------------------- consistency training
def consistency_example(gen: torch.Generator, dtype: torch.dtype) -> Example:
    from .consistency import karras_sigmas

    sig = karras_sigmas(11, dtype=torch.float64)
    i = torch.randint(0, 10, (N,), generator=gen)
    target = torch.randn(N, D, generator=gen, dtype=torch.float64)
    pred = target + 0.1 * torch.randn(N, D, generator=gen, dtype=torch.float64)
    return Example({"pred": pred.to(dtype), "target": target.to(dtype), "sigma": sig[i].to(dtype),
                    "sigma_next": sig[i + 1].to(dtype)}, grad=("pred",))


def _consistency_bad(ex: Example) -> list[BadInput]:
    return _shape_bad(ex, "pred", ("target",), "sigma") + [
        BadInput("sigma_next below sigma", ex.replace({"sigma_next": ex.inputs["sigma"] / 2}), "sigma_next"),
        BadInput("negative sigma", ex.replace({"sigma": _with(ex.inputs["sigma"], -1.0)}), "sigma"),
    ]


CONSISTENCY = InputKind("consistency pair", "consistency-function outputs (N, ...) at sigma_next (student) and "
                        "sigma (stop-gradient target), noise levels sigma < sigma_next (N,)",
                        bad_inputs=_consistency_bad, extreme=scale_input("pred"),
                        values={"sigma": POSITIVE_VALUES, "sigma_next": POSITIVE_VALUES})


# --------------------------------------------------------------------------------------- denoiser
def denoiser_example(gen: torch.Generator, dtype: torch.dtype) -> Example:
    x = torch.randn(N, D, generator=gen, dtype=torch.float64)
    sigma = torch.exp(-1.2 + 1.2 * torch.randn(N, generator=gen, dtype=torch.float64))
    denoised = x + 0.2 * torch.randn(N, D, generator=gen, dtype=torch.float64)
    return Example({"denoised": denoised.to(dtype), "x": x.to(dtype), "sigma": sigma.to(dtype)},
                   grad=("denoised",))


def _denoiser_bad(ex: Example) -> list[BadInput]:
    return _shape_bad(ex, "denoised", ("x",), "sigma") + [
        BadInput("zero sigma", ex.replace({"sigma": _with(ex.inputs["sigma"], 0.0)}), "sigma"),
    ]


DENOISER = InputKind("denoiser output", "denoiser output (N, ...) at the perturbed data, clean data x of the same "
                     "shape, noise levels sigma (N,) > 0", bad_inputs=_denoiser_bad,
                     extreme=scale_input("denoised"), values={"sigma": POSITIVE_VALUES})


# ---------------------------------------------------------------------------- distribution matching
def distribution_matching_example(gen: torch.Generator, dtype: torch.dtype) -> Example:
    x_t = torch.randn(N, D, generator=gen, dtype=torch.float64)
    real = -(x_t - 0.5)
    fake = -x_t + 0.2 * torch.randn(N, D, generator=gen, dtype=torch.float64)
    log_ratio = 0.5 * torch.randn(N, generator=gen, dtype=torch.float64)
    return Example({"x_t": x_t.to(dtype), "real_score": real.to(dtype), "fake_score": fake.to(dtype),
                    "log_ratio": log_ratio.to(dtype)}, grad=("x_t",))


def _dm_bad(ex: Example) -> list[BadInput]:
    return _shape_bad(ex, "x_t", ("real_score", "fake_score"), "log_ratio")


DISTRIBUTION_MATCHING = InputKind(
    "diffused samples + scores", "the student's diffused samples x_t (N, ...), the teacher's and the student's "
    "scores there (same shape), log density ratios log p/q (N,)", bad_inputs=_dm_bad, extreme=scale_input("x_t"))
