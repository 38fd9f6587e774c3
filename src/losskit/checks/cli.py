"""The command line of ``losskit check``: argument parsing, printing, exit codes.

``losskit check ...`` (see :mod:`losskit.cli`) hands its arguments to :func:`main`; the checks themselves
are :func:`losskit.checks.api.check`.
"""

from __future__ import annotations

import sys
from typing import Any

from ._probes import KINDS, LossOutputError
from ._properties import PROPERTY_CHECKS
from ._report import SKIP
from .api import check

__all__ = ["main"]


def _parse_option(text: str) -> tuple[str, Any]:
    import ast

    key, sep, value = text.partition("=")
    if not sep:
        raise ValueError(f"--option expects key=value, got {text!r}")
    try:
        return key.strip(), ast.literal_eval(value)
    except (ValueError, SyntaxError):
        return key.strip(), value


def main(argv: list[str]) -> int:
    """``losskit check NAME|module:function [--properties a,b] [--kind K] [--option k=v] [--json]``,
    or ``losskit check --all [--family F]`` for every registered objective's claims.

    Exit status: 0 when every claimed property holds, 1 when one fails (a property is never certified from
    non-finite values) or the loss does not return per-sample losses, 2 on a usage error.
    """
    import argparse
    import json

    ap = argparse.ArgumentParser(
        prog="losskit check",
        description="Check a loss's properties numerically and print a verdict per property with the "
                    "evidence. NAME is a registered objective (losskit list), or module:function / "
                    "file.py:function for your own loss fn(logits, target, **options).")
    ap.add_argument("target", nargs="?", help="registered name, module:function or file.py:function")
    ap.add_argument("--all", action="store_true",
                    help="check every registered objective's claimed properties; one line each")
    ap.add_argument("--family", default=None, help="with --all: only this family")
    ap.add_argument("--properties", "-p", default=None,
                    help=f"comma-separated subset of: {', '.join(PROPERTY_CHECKS)} (default: all that apply)")
    ap.add_argument("--kind", choices=sorted(KINDS), default=None,
                    help="input kind of your own loss (default multiclass; registered objectives know theirs)")
    ap.add_argument("--option", "-o", action="append", default=[], metavar="KEY=VALUE",
                    help="keyword option passed to the loss (repeatable), e.g. -o gamma=2.0")
    ap.add_argument("--claims", default=None, help="comma-separated properties your loss claims "
                                                   "(the exit status is 1 if one fails)")
    ap.add_argument("--classes", type=int, default=4, help="number of classes K (default 4)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", action="store_true", help="print the report as JSON")
    args = ap.parse_args(argv)

    def split(s):
        return None if s is None else [t.strip() for t in s.split(",") if t.strip()]

    if args.all:
        return _check_all(args.family, args.json)
    if args.target is None:
        ap.print_usage(sys.stderr)
        print("losskit check: give a loss (NAME, module:function or file.py:function) or --all", file=sys.stderr)
        return 2
    try:
        options = dict(_parse_option(o) for o in args.option)
        report = check(args.target, split(args.properties), kind=args.kind, options=options,
                       claims=split(args.claims), num_classes=args.classes, seed=args.seed)
    except LossOutputError as e:  # the loss itself is at fault, not the command line: exit status 1
        print(f"losskit check: {e}", file=sys.stderr)
        return 1
    except (KeyError, ValueError, TypeError, ImportError) as e:
        print(f"losskit check: {e.args[0] if e.args else e}", file=sys.stderr)
        return 2
    print(json.dumps(report.as_dict(), indent=2, default=str) if args.json else report.format(_width()))
    return 0 if report.ok else 1


def _width() -> int:
    """The terminal's width (``COLUMNS`` when set; 80 when not a terminal)."""
    import shutil

    return shutil.get_terminal_size((80, 24)).columns


def _check_all(family: str | None, as_json: bool) -> int:
    """Every registered objective's claims, one line each; exit status 1 if a claim is false."""
    import json
    import textwrap

    from .._core.registry import objectives

    try:
        entries = objectives(family)
    except ValueError as e:
        print(f"losskit check: {e}", file=sys.stderr)
        return 2
    reports = [check(e, sorted(e.properties)) for e in entries]
    if as_json:
        print(json.dumps([r.as_dict() for r in reports], indent=2, default=str))
    else:
        width = _width()
        name_w = max(len(r.loss) for r in reports)
        for r in reports:
            done = [v for v in r if v.status != SKIP]
            skip = [v for v in r if v.status == SKIP]
            if not r.verdicts:
                line = "no property claimed"
            else:
                line = f"{len(done) - len(r.failed_claims)}/{len(r.verdicts)} claims hold"
            if r.failed_claims:
                line += "; FALSE: " + ", ".join(v.name for v in r.failed_claims)
            if skip:
                line += f"; not checked: {', '.join(v.name for v in skip)} ({skip[0].evidence})"
            if width - name_w - 2 >= 30:  # a column of names, the verdicts beside them
                first, indent = f"{r.loss:<{name_w}}  ", " " * (name_w + 2)
            else:
                first, indent = f"{r.loss}  ", "    "
            out = textwrap.wrap(line, width, initial_indent=first, subsequent_indent=indent,
                                break_on_hyphens=False)
            print("\n".join(out))
    bad = [r.loss for r in reports if not r.ok]
    print(textwrap.fill(f"{len(reports)} objectives, {len(bad)} with a false claim"
                        + (f": {', '.join(bad)}" if bad else ""), _width()))
    return 1 if bad else 0
