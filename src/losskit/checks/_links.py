"""Links: scores -> predicted probabilities, for the properness check (a loss is proper for a link)."""

from __future__ import annotations

from collections.abc import Callable

import torch

__all__ = ["LINKS", "resolve_link", "stablemax", "sparsemax", "entmax"]


def stablemax(z: torch.Tensor) -> torch.Tensor:
    """StableMax: s(x) = x + 1 (x >= 0), 1 / (1 - x) (x < 0), normalised over the last dimension."""
    s = torch.where(z >= 0, z + 1, 1 / (1 - torch.clamp(z, max=0)))
    return s / s.sum(-1, keepdim=True)


def sparsemax(z: torch.Tensor) -> torch.Tensor:
    """Euclidean projection of z onto the simplex (Martins & Astudillo, 2016), sort-based."""
    zs, _ = torch.sort(z, dim=-1, descending=True)
    k = torch.arange(1, z.shape[-1] + 1, dtype=z.dtype)
    cs = zs.cumsum(-1) - 1
    support = (k * zs > cs).sum(-1, keepdim=True)
    tau = cs.gather(-1, support - 1) / support.to(z.dtype)
    return torch.clamp(z - tau, min=0)


def entmax(alpha: float = 1.5, iters: int = 80) -> Callable[[torch.Tensor], torch.Tensor]:
    """The alpha-entmax map (Peters, Niculae, Martins 2019): p = [(alpha-1) z - tau]_+^(1/(alpha-1)),
    tau found by bisection so that p sums to one (float64 precision after 80 halvings)."""
    if not alpha > 1:
        raise ValueError(f"entmax needs alpha > 1, got {alpha!r}")

    def link(z: torch.Tensor) -> torch.Tensor:
        x = (alpha - 1) * z
        hi = x.max(-1, keepdim=True).values
        lo = hi - 1.0  # at tau = max - 1 the top entry alone gives 1
        for _ in range(iters):
            tau = 0.5 * (lo + hi)
            total = torch.clamp(x - tau, min=0).pow(1 / (alpha - 1)).sum(-1, keepdim=True)
            lo, hi = torch.where(total >= 1, tau, lo), torch.where(total >= 1, hi, tau)
        p = torch.clamp(x - 0.5 * (lo + hi), min=0).pow(1 / (alpha - 1))
        return p / p.sum(-1, keepdim=True)

    return link


LINKS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "softmax": lambda z: torch.softmax(z, -1),
    "sigmoid": torch.sigmoid,
    "stablemax": stablemax,
    "sparsemax": sparsemax,
    "entmax15": entmax(1.5),
}


def resolve_link(link) -> Callable | None:
    if link is None or callable(link):
        return link
    try:
        return LINKS[link]
    except KeyError:
        raise ValueError(f"unknown link {link!r}; one of {sorted(LINKS)} or a callable") from None
