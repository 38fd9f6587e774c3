"""Input kinds of the adversarial-training family: per-sample adversarial losses; natural and adversarial
logits with labels; adversarial logits with labels and features."""

from __future__ import annotations

import torch

from .._core.registry import BadInput, Example, InputKind

__all__ = ["LOSSES", "losses_example", "NAT_ADV", "nat_adv_example", "ADV_FEATURES", "adv_features_example"]


def _with(x: torch.Tensor, value: float, index: int = 0) -> torch.Tensor:
    x = x.detach().clone()
    x.view(-1)[index] = value
    return x


def _scale(names):
    def extreme(ex: Example) -> Example:
        out = ex.map_floats(lambda t: t.to(torch.float32))
        return out.replace({k: out.inputs[k].sign() * 1e4 + out.inputs[k] for k in names})

    return extreme


# -------------------------------------------------------------------------------- per-sample losses
def losses_example(gen: torch.Generator, dtype: torch.dtype, n: int = 8) -> Example:
    losses = 3 * torch.rand(n, generator=gen, dtype=torch.float64)
    return Example({"losses": losses.to(dtype)}, grad=("losses",))


def _losses_bad(ex: Example) -> list[BadInput]:
    losses = ex.inputs["losses"]
    return [
        BadInput("losses with a second axis", ex.replace({"losses": losses[:, None].expand(-1, 2)}), "losses"),
        BadInput("+inf loss", ex.replace({"losses": _with(losses, float("inf"))}), "losses"),
        BadInput("NaN loss", ex.replace({"losses": _with(losses, float("nan"))}), "losses"),
        BadInput("integer losses", ex.replace({"losses": losses.round().long()}), "losses"),
    ]


LOSSES = InputKind("per-sample losses", "one (adversarial) loss per sample, shape (N,)",
                   bad_inputs=_losses_bad, extreme=_scale(("losses",)))


# ------------------------------------------------------------------ natural + adversarial logits
def nat_adv_example(gen: torch.Generator, dtype: torch.dtype, n: int = 6, k: int = 5) -> Example:
    nat = 2 * torch.randn(n, k, generator=gen, dtype=torch.float64)
    adv = nat + torch.randn(n, k, generator=gen, dtype=torch.float64)
    target = torch.randint(0, k, (n,), generator=gen)
    return Example({"nat_logits": nat.to(dtype), "adv_logits": adv.to(dtype), "target": target},
                   grad=("adv_logits",))


def _nat_adv_bad(ex: Example) -> list[BadInput]:
    nat, adv, target = ex.inputs["nat_logits"], ex.inputs["adv_logits"], ex.inputs["target"]
    k = nat.shape[1]
    return [
        BadInput("adversarial logits of another shape", ex.replace({"adv_logits": adv[:, :-1]}), "adv_logits"),
        BadInput("logits without a class axis", ex.replace({"nat_logits": nat[:, 0]}), "nat_logits"),
        BadInput("label out of range", ex.replace({"target": torch.full_like(target, k + 1)}), "target"),
        BadInput("float labels", ex.replace({"target": target.to(nat.dtype)}), "target"),
        BadInput("labels of another batch size", ex.replace({"target": target[:-1]}), "target"),
        BadInput("+inf logit", ex.replace({"adv_logits": _with(adv, float("inf"))}), "adv_logits"),
        BadInput("NaN natural logit", ex.replace({"nat_logits": _with(nat, float("nan"))}), "nat_logits"),
    ]


NAT_ADV = InputKind("natural+adversarial logits+labels",
                    "logits (N, K) of the natural inputs, logits (N, K) of their adversarial versions, labels (N,)",
                    bad_inputs=_nat_adv_bad, extreme=_scale(("nat_logits", "adv_logits")))


# ---------------------------------------------------------------- adversarial logits + features
def adv_features_example(gen: torch.Generator, dtype: torch.dtype, n: int = 8, k: int = 3, d: int = 4) -> Example:
    logits = 2 * torch.randn(n, k, generator=gen, dtype=torch.float64)
    target = torch.tensor([0, 0, 0, 0, 1, 1, 2, 2])[:n]  # imbalanced on purpose
    features = torch.randn(n, d, generator=gen, dtype=torch.float64) + target[:, None].to(torch.float64)
    return Example({"adv_logits": logits.to(dtype), "target": target, "features": features.to(dtype)},
                   options={"class_weight": torch.tensor([0.5, 1.0, 1.0], dtype=dtype)},
                   grad=("adv_logits", "features"))


def _adv_features_bad(ex: Example) -> list[BadInput]:
    logits, target, feats = ex.inputs["adv_logits"], ex.inputs["target"], ex.inputs["features"]
    k = logits.shape[1]
    return [
        BadInput("features of another batch size", ex.replace({"features": feats[:-1]}), "features"),
        BadInput("features without a feature axis", ex.replace({"features": feats[:, 0]}), "features"),
        BadInput("label out of range", ex.replace({"target": torch.full_like(target, k)}), "target"),
        BadInput("labels of another batch size", ex.replace({"target": target[:-1]}), "target"),
        BadInput("+inf logit", ex.replace({"adv_logits": _with(logits, float("inf"))}), "adv_logits"),
        BadInput("class weights of the wrong length",
                 ex.replace(options={"class_weight": torch.ones(k + 1, dtype=logits.dtype)}), "class_weight"),
        BadInput("negative class weight",
                 ex.replace(options={"class_weight": -torch.ones(k, dtype=logits.dtype)}), "class_weight"),
    ]


ADV_FEATURES = InputKind("adversarial logits+labels+features",
                         "logits (N, K) of adversarial inputs, labels (N,), their penultimate features (N, D)",
                         bad_inputs=_adv_features_bad, extreme=_scale(("adv_logits", "features")))
