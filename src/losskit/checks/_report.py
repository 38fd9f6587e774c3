"""Verdicts and the report ``losskit check`` returns."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["Verdict", "Report", "PASS", "FAIL", "SKIP"]

PASS, FAIL, SKIP = "holds", "fails", "skipped"


@dataclass
class Verdict:
    """The outcome of one property check.

    ``status`` is ``'holds'``, ``'fails'`` or ``'skipped'`` (the check does not apply to this input kind,
    or the loss could not be evaluated as the check needs); ``evidence`` says what was measured, in
    words and numbers; ``numbers`` holds the same numbers for programs.
    """

    name: str
    status: str
    evidence: str
    numbers: dict[str, Any] = field(default_factory=dict)
    claimed: bool = False

    @property
    def holds(self) -> bool:
        return self.status == PASS

    @property
    def fails(self) -> bool:
        return self.status == FAIL

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "status": self.status, "claimed": self.claimed,
                "evidence": self.evidence, "numbers": self.numbers}


@dataclass
class Report:
    """Verdicts for one loss. ``report['calibrated'].holds``; ``report.ok``: every claimed property holds."""

    loss: str
    kind: str
    verdicts: list[Verdict]
    seconds: float = 0.0
    setting: str = ""

    def __getitem__(self, name: str) -> Verdict:
        for v in self.verdicts:
            if v.name == name:
                return v
        raise KeyError(f"no verdict for {name!r}; checked: {[v.name for v in self.verdicts]}")

    def __contains__(self, name: str) -> bool:
        return any(v.name == name for v in self.verdicts)

    def __iter__(self):
        return iter(self.verdicts)

    def holds(self, name: str) -> bool:
        return self[name].holds

    @property
    def failed_claims(self) -> list[Verdict]:
        """Claimed properties the checks found false."""
        return [v for v in self.verdicts if v.claimed and v.fails]

    @property
    def ok(self) -> bool:
        return not self.failed_claims

    def as_dict(self) -> dict[str, Any]:
        return {"loss": self.loss, "kind": self.kind, "setting": self.setting, "seconds": self.seconds,
                "ok": self.ok, "verdicts": [v.as_dict() for v in self.verdicts]}

    def __str__(self) -> str:
        width = max([len(v.name) for v in self.verdicts] + [8])
        head = f"losskit check {self.loss}  [{self.kind}; {self.setting}]  {self.seconds:.2f} s"
        lines = [head, f"{'property':<{width}}  claimed  verdict  evidence"]
        for v in self.verdicts:
            mark = {PASS: "HOLDS", FAIL: "FAILS", SKIP: "skip"}[v.status]
            lines.append(f"{v.name:<{width}}  {'yes' if v.claimed else '-':<7}  {mark:<7}  {v.evidence}")
        if self.failed_claims:
            lines.append("claimed but false: " + ", ".join(v.name for v in self.failed_claims))
        return "\n".join(lines)

    __repr__ = __str__
