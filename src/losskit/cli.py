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


def _err(message: str) -> None:
    """An error line on stderr (every command reports errors there, plain text)."""
    print(f"losskit: {message}", file=sys.stderr)


def cmd_info(args) -> int:
    from rich.text import Text

    import losskit

    try:
        e = losskit.get(args.name)
    except KeyError as err:
        _err(err.args[0])
        return 1
    console = _console()

    def line(label: str, value: str = "") -> None:
        # Text objects, not markup: formulas and signatures hold [...] that rich would eat as tags; one
        # logical line each, unwrapped (soft_wrap), so the formula is printed verbatim at any width.
        console.print(Text.assemble((f"{label:<12}" if value else label, "bold"), value), soft_wrap=True)

    console.print(Text.assemble((e.name, "bold"), f"  ({e.family})   module: losskit.{e.module.__name__}"),
                  soft_wrap=True)
    line("formula", e.formula)
    line("paper", e.paper.cite())
    line("signature", f"losskit.{e.signature}")
    line("input", f"{e.input_kind.name}: {e.input_kind.description}")
    line("properties", "" if e.properties else "none claimed")
    for p in sorted(e.properties):
        console.print(Text(f"  - {p}: {losskit.PROPERTIES[p]}"), soft_wrap=True)
    if e.domains:
        line("options")
        for k, d in e.domains.items():
            console.print(Text(f"  - {k}: {d.description}"), soft_wrap=True)
    flags = [k for k, v in (("batch-coupled", not e.per_sample),
                            ("one loss for the whole batch: reduction has no effect", e.batch_scalar)) if v]
    flags += [f"{k}={v}" for k, v in e.tags.items()]
    if flags:
        line("notes", ", ".join(flags))
    console.rule()
    console.print(Text(inspect.getdoc(e.fn) or ""), soft_wrap=True)
    return 0


#: Sub-commands that own their argument parsing: ``losskit arena ...`` and ``losskit check ...`` hand the
#: rest of the command line to ``losskit.arena.main(argv)`` / ``losskit.checks.cli.main(argv)``.
DELEGATED = {"arena": "losskit.arena", "check": "losskit.checks.cli"}


def build_parser() -> argparse.ArgumentParser:
    from losskit import __version__

    ap = argparse.ArgumentParser(prog="losskit", description="Training objectives for PyTorch.")
    ap.add_argument("--version", action="version", version=f"losskit {__version__}")
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
