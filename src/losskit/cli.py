"""The ``losskit`` command: thin, it parses, calls the library and prints.

``losskit list [--family F] [--search WORD]``, ``losskit info NAME``, ``losskit check NAME``, ``losskit arena ...``.
rich is imported only here, when the command runs, so ``import losskit`` stays light.
"""

from __future__ import annotations

import argparse
import inspect
import sys


def _console():
    from rich.console import Console

    return Console()


def _one_line(e) -> str:
    """An objective's one-line summary: its docstring's first sentence, without reST markup."""
    text = e.summary.replace("``", "").replace(":func:", "").replace(":class:", "")
    for end in (". ", ".\n"):
        if end in text:
            text = text.split(end)[0] + "."
            break
    return text


def _matches(e, word: str) -> bool:
    word = word.lower()
    return any(word in s.lower() for s in (e.name, e.summary, e.paper.title, e.family))


def cmd_list(args) -> int:
    from rich.text import Text

    import losskit

    try:
        entries = losskit.objectives(args.family)
    except ValueError as err:
        _err(err.args[0])
        return 2
    if args.search:
        entries = [e for e in entries if _matches(e, args.search)]
        if not entries:
            _err(f"no objective matches {args.search!r} (searched: name, summary, paper title, family)")
            return 1
    console = _console()
    # Columns name, year, summary: names are never broken, summaries are cut to the terminal's width
    # with an ellipsis; the family is a heading over its rows (the room a family column would take goes
    # to the summaries).
    name_w = max(len(e.name) for e in entries)
    room = max(console.width - name_w - 8, 10)

    def row(name: str, year: str, summary: str, style: str = "") -> Text:
        if len(summary) > room:
            summary = summary[:room - 1].rstrip() + "…"
        return Text(f"{name:<{name_w}}  {year:<4}  {summary}".rstrip(), style=style)

    console.print(Text(f"losskit objectives ({len(entries)}); losskit info NAME for one", style="bold"),
                  soft_wrap=True)
    console.print(row("name", "year", "summary", "bold"), soft_wrap=True)
    family = None
    for e in entries:
        if e.family != family:
            family = e.family
            n = sum(o.family == family for o in entries)
            console.print(Text(f"{family} ({n})", style="bold cyan"), soft_wrap=True)
        year = "" if e.paper.is_standard else str(e.paper.year or "")
        console.print(row(e.name, year, _one_line(e)), soft_wrap=True)
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
    p = sub.add_parser("list", help="the registered objectives: name, paper year, one-line summary")
    p.add_argument("--family", default=None,
                   help="only this family (singular or plural: divergence or divergences)")
    p.add_argument("--search", "-s", default=None, metavar="WORD",
                   help="only objectives whose name, summary, paper title or family contains WORD")
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
