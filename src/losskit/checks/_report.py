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

    def format(self, width: int = 80) -> str:
        """The report as text in lines of at most ``width`` characters: the claimed properties first
        (HOLDS / FAILS: a claim found false fails the check), then the others, for information (a property
        nobody claimed "does not hold"; it never fails the check), each with its evidence below it."""
        import textwrap

        width = max(width, 40)

        def wrap(text: str, indent: str) -> list[str]:
            return textwrap.wrap(text, width, initial_indent=indent, subsequent_indent=indent,
                                 break_long_words=True, break_on_hyphens=False) or [indent.rstrip()]

        lines = wrap(f"losskit check {self.loss}  ({self.seconds:.2f} s)", "")
        lines += wrap(f"{self.kind}; {self.setting}", "  ")
        claimed = [v for v in self.verdicts if v.claimed]
        other = [v for v in self.verdicts if not v.claimed]
        for title, group, words in (
                ("claimed properties", claimed, {PASS: "HOLDS", FAIL: "FAILS", SKIP: "skipped"}),
                ("not claimed (for information: these never fail the check)", other,
                 {PASS: "holds", FAIL: "does not hold", SKIP: "skipped"})):
            if not group:
                continue
            lines += wrap(title, "")
            for v in group:
                lines += wrap(f"{v.name}: {words[v.status]}", "  ")
                lines += wrap(v.evidence, "      ")
        if not claimed:
            lines.append("no property claimed")
        if self.failed_claims:
            lines += wrap("claimed but false: " + ", ".join(v.name for v in self.failed_claims), "")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.format()

    __repr__ = __str__
