"""Property checks (placeholder until `losskit check` lands)."""

from __future__ import annotations

__all__: list[str] = []


def check(fn, *args, **kwargs):
    raise NotImplementedError("losskit.check is not built yet")


def main(argv: list[str]) -> int:
    raise SystemExit("losskit check is not built yet")
