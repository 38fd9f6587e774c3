"""The ``losskit`` command: thin, it parses, calls the library and prints.

``losskit list [--family F]``, ``losskit info NAME``, ``losskit check NAME``, ``losskit arena ...``.
rich is imported only here, when the command runs, so ``import losskit`` stays light.
"""

from __future__ import annotations

import argparse
import inspect
import sys


def _console():
    from rich.console import Console

    return Console()


def cmd_list(args) -> int:
    from rich.table import Table

    import losskit

    entries = losskit.objectives(args.family)
    if not entries:
        fams = ", ".join(losskit.families())
        _console().print(f"[red]no objectives in family {args.family!r}[/]; families: {fams}")
        return 1
    table = Table(title=f"losskit objectives ({len(entries)})", show_lines=False)
    for col in ("name", "family", "paper", "input", "properties"):
        table.add_column(col, overflow="fold")
    for e in entries:
        paper = "standard" if e.paper.is_standard else f"{e.paper.title} ({e.paper.year})"
        table.add_row(f"[bold]{e.name}[/]", e.family, paper, e.input_kind.name, ", ".join(sorted(e.properties)))
    _console().print(table)
    return 0


def cmd_info(args) -> int:
    from rich.panel import Panel

    import losskit

    try:
        e = losskit.get(args.name)
    except KeyError as err:
        _console().print(f"[red]{err.args[0]}[/]")
        return 1
    doc = inspect.getdoc(e.fn) or ""
    lines = [
        f"[bold]{e.name}[/]  ({e.family})   module: losskit.{e.module.__name__}",
        f"[bold]formula[/]     {e.formula}",
        f"[bold]paper[/]       {e.paper.cite()}",
        f"[bold]signature[/]   losskit.{e.signature}",
        f"[bold]input[/]       {e.input_kind.name}: {e.input_kind.description}",
        "[bold]properties[/]  " + ("none claimed" if not e.properties else ""),
    ]
    for p in sorted(e.properties):
        lines.append(f"  - {p}: {losskit.PROPERTIES[p]}")
    from rich.markup import escape

    if e.domains:
        lines.append("[bold]options[/]")
        lines += [f"  - {k}: {escape(d.description)}" for k, d in e.domains.items()]
    flags = [k for k, v in (("batch-coupled", not e.per_sample),
                            ("one loss for the whole batch: reduction has no effect", e.batch_scalar)) if v]
    flags += [f"{k}={v}" for k, v in e.tags.items()]
    if flags:
        lines.append("[bold]notes[/]       " + ", ".join(flags))
    _console().print(Panel("\n".join(lines), title=e.name, expand=False))
    _console().print(doc, markup=False, highlight=False)
    return 0


#: Sub-commands that own their argument parsing: ``losskit arena ...`` and ``losskit check ...`` hand the
#: rest of the command line to ``losskit.arena.main(argv)`` / ``losskit.checks.cli.main(argv)``.
DELEGATED = {"arena": "losskit.arena", "check": "losskit.checks.cli"}


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="losskit", description="Training objectives for PyTorch.")
    sub = ap.add_subparsers(dest="command", required=True)
    p = sub.add_parser("list", help="list the registered objectives")
    p.add_argument("--family", default=None, help="only this family")
    p.set_defaults(func=cmd_list)
    p = sub.add_parser("info", help="formula, paper, signature and properties of one objective")
    p.add_argument("name")
    p.set_defaults(func=cmd_info)
    for name, help_ in (("check", "check a loss's claimed properties numerically (losskit check -h)"),
                        ("arena", "run objectives head-to-head on embedded tasks (losskit arena -h)")):
        sub.add_parser(name, help=help_, add_help=False)
    return ap


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in DELEGATED:
        import importlib

        return int(importlib.import_module(DELEGATED[argv[0]]).main(argv[1:]) or 0)
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
