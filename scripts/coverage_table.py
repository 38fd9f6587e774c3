"""Write docs/coverage.md from docs/coverage-seeds.csv and the registry (tests/test_coverage.py checks it
is current, and that the metadata file and the registry agree).

``docs/coverage-seeds.csv`` has one row per paper: every seed paper (``source=seed``; the census of
issue 18, re-checked against the registry) and every other paper a registered objective cites
(``source=registry``). Columns: ``arxiv_id, title, source, verdict, losskit_names, note, seed_file``.
``verdict`` is one of :data:`VERDICTS`; ``losskit_names`` lists registered objective names (bare) or
other public losskit API (a dotted ``losskit.…`` path: helpers, optimisers, stateful modules), with an
optional ``(option=value)`` suffix naming the mode that implements the paper.

    PYTHONPATH=src python scripts/coverage_table.py          # write docs/coverage.md
    PYTHONPATH=src python scripts/coverage_table.py --sync   # first append rows for uncited registry papers
"""

from __future__ import annotations

import csv
import importlib
import pathlib
import re
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
if str(ROOT / "src") not in sys.path:
    sys.path.insert(0, str(ROOT / "src"))

META = ROOT / "docs" / "coverage-seeds.csv"
PAGE = ROOT / "docs" / "coverage.md"
FIELDS = ("arxiv_id", "title", "source", "verdict", "losskit_names", "note", "seed_file")

#: verdict -> what it means (the page's legend, in this order)
VERDICTS = {
    "COVERED": "every objective the paper defines is registered (or is public losskit API)",
    "PARTIAL": "some of the paper's objectives are in losskit; the note says what is missing",
    "PLANNED": "an implementable objective losskit should own, not built yet (issue 18)",
    "OUT OF SCOPE": "not a training objective losskit owns: a data set, an analysis, an architecture, "
                    "or an application of a standard loss; the note says which",
}


def load(path: pathlib.Path = META) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def save(rows: list[dict[str, str]], path: pathlib.Path = META) -> None:
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=FIELDS, lineterminator="\n")
        w.writeheader()
        w.writerows({k: r.get(k, "") for k in FIELDS} for r in rows)


def names_of(row: dict[str, str]) -> list[str]:
    return [n.strip() for n in row["losskit_names"].split(",") if n.strip()]


def base_name(name: str) -> str:
    """``sinkhorn(method='newton')`` -> ``sinkhorn``."""
    return re.sub(r"\(.*\)$", "", name).strip()


def paper_key(paper) -> str:
    """How a registry Paper is found in the metadata file: its arXiv id, else its normalised title."""
    return paper.arxiv or _norm(paper.title)


def row_keys(row: dict[str, str]) -> set[str]:
    return {k for k in (row["arxiv_id"], _norm(row["title"])) if k}


def _norm(title: str) -> str:
    return re.sub(r"[^a-z0-9]", "", title.lower())


def resolve(name: str):
    """The object a dotted ``losskit.…`` name refers to (AttributeError / ImportError if none)."""
    parts = base_name(name).split(".")
    obj = importlib.import_module(parts[0])
    for i, p in enumerate(parts[1:], 1):
        try:
            obj = getattr(obj, p)
        except AttributeError:
            obj = importlib.import_module(".".join(parts[: i + 1]))
    return obj


def problems(rows: list[dict[str, str]]) -> list[str]:
    """Everything wrong between the metadata file and the registry (empty when they agree)."""
    import losskit  # noqa: F401  (registers every objective)
    from losskit._core import registry

    out = []
    registered = {o.name for o in registry.objectives()}
    keys = set().union(*(row_keys(r) for r in rows))
    for o in registry.objectives():
        if not o.paper.is_standard and paper_key(o.paper) not in keys:
            out.append(f"{o.name}: its paper ({o.paper.cite()}) has no row in {META.name}")
    for r in rows:
        where = f"{r['title'][:60]!r}"
        if r["verdict"] not in VERDICTS:
            out.append(f"{where}: verdict {r['verdict']!r} is not one of {list(VERDICTS)}")
        if r["source"] not in ("seed", "registry"):
            out.append(f"{where}: source {r['source']!r} is not 'seed' or 'registry'")
        if r["verdict"] == "COVERED" and not names_of(r):
            out.append(f"{where}: COVERED with no losskit name")
        if r["verdict"] in ("OUT OF SCOPE", "PLANNED", "PARTIAL") and not r["note"].strip():
            out.append(f"{where}: {r['verdict']} needs a note saying why")
        for n in names_of(r):
            b = base_name(n)
            if b.startswith("losskit."):
                try:
                    resolve(b)
                except (AttributeError, ImportError):
                    out.append(f"{where}: {b!r} is not public losskit API")
            elif b not in registered:
                out.append(f"{where}: {b!r} is not a registered objective")
    return out


def sync(rows: list[dict[str, str]]) -> list[dict[str, str]]:
    """Append a ``source=registry, COVERED`` row for each registered paper the file does not list."""
    import losskit  # noqa: F401
    from losskit._core import registry

    keys = set().union(*(row_keys(r) for r in rows))
    added: dict[str, dict[str, str]] = {}
    for o in sorted(registry.objectives(), key=lambda o: o.name):
        if o.paper.is_standard or paper_key(o.paper) in keys:
            continue
        r = added.setdefault(paper_key(o.paper), {
            "arxiv_id": o.paper.arxiv or "", "title": o.paper.title, "source": "registry",
            "verdict": "COVERED", "losskit_names": "", "note": "", "seed_file": ""})
        r["losskit_names"] = ", ".join([*names_of(r), o.name])
    return rows + list(added.values())


def _cell(s: str) -> str:
    return " ".join(str(s).split()).replace("|", r"\|").replace("*", r"\*").replace("_", r"\_")


def page(rows: list[dict[str, str]] | None = None) -> str:
    """The docs page: the seed papers by verdict, then the other papers the registry cites."""
    import losskit  # noqa: F401
    from losskit._core import registry

    rows = load() if rows is None else rows
    family = {o.name: o.family for o in registry.objectives()}

    def names(r):
        out = []
        for n in names_of(r):
            b = base_name(n)
            code = f"`{n}`"
            out.append(f"[{code}](objectives/{family[b]}/{b}.md)" if b in family else code)
        return ", ".join(out)

    def paper(r):
        t = _cell(r["title"])
        return f"[{t}](https://arxiv.org/abs/{r['arxiv_id']})" if r["arxiv_id"] else t

    seeds = [r for r in rows if r["source"] == "seed"]
    others = sorted((r for r in rows if r["source"] == "registry"), key=lambda r: r["title"].lower())
    counts = {v: sum(r["verdict"] == v for r in seeds) for v in VERDICTS}
    lines = [
        "# Coverage of the seed papers",
        "",
        "<!-- generated by scripts/coverage_table.py from docs/coverage-seeds.csv and the registry; "
        "do not edit by hand -->",
        "",
        f"Every one of the {len(seeds)} seed papers with the losskit objectives that implement it, or why "
        "it is not an objective losskit owns. The metadata is "
        "[`coverage-seeds.csv`](coverage-seeds.csv); `tests/test_coverage.py` fails when a registered "
        "objective's paper has no row there, when a name listed there is not registered (or not public "
        "losskit API), and when this page is stale.",
        "",
        "| verdict | seed papers | meaning |",
        "|---|---|---|",
    ]
    lines += [f"| {v} | {counts[v]} | {m} |" for v, m in VERDICTS.items()]
    lines.append("")
    for v in VERDICTS:
        group = sorted((r for r in seeds if r["verdict"] == v), key=lambda r: r["title"].lower())
        if not group:
            continue
        lines += [f"## {v.capitalize()} ({len(group)})", "", "| paper | losskit | note |", "|---|---|---|"]
        lines += [f"| {paper(r)} | {names(r)} | {_cell(r['note'])} |" for r in group]
        lines.append("")
    lines += [f"## Other papers the registry implements ({len(others)})", "",
              "Registered objectives whose paper is not a seed paper (textbook objectives, cited as "
              "*standard*, are not listed).", "", "| paper | losskit |", "|---|---|"]
    lines += [f"| {paper(r)} | {names(r)} |" for r in others]
    return "\n".join(lines).rstrip() + "\n"


def main(argv: list[str]) -> int:
    rows = load()
    if "--sync" in argv:
        rows = sync(rows)
        save(rows)
    bad = problems(rows)
    for b in bad:
        print(b, file=sys.stderr)
    PAGE.write_text(page(rows))
    print(f"wrote {PAGE.relative_to(ROOT)}")
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
