"""The coverage table (docs/coverage.md, written by scripts/coverage_table.py from docs/coverage-seeds.csv):
every registered objective's paper has a row, every losskit name listed there exists, the page is current."""

import pathlib
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

import coverage_table as C  # noqa: E402

import losskit  # noqa: E402,F401
from losskit._core import registry  # noqa: E402

ROWS = C.load()


@pytest.mark.parametrize("name", sorted(o.name for o in registry.objectives() if not o.paper.is_standard))
def test_every_registered_paper_has_a_row(name):
    o = registry.get(name)
    keys = set().union(*(C.row_keys(r) for r in ROWS))
    assert C.paper_key(o.paper) in keys, (
        f"{name}: its paper ({o.paper.cite()}) is missing from docs/coverage-seeds.csv "
        "(add it, or run python scripts/coverage_table.py --sync)")


def test_every_listed_name_is_registered_or_public():
    bad = [p for p in C.problems(ROWS) if "has no row" not in p]
    assert not bad, "\n".join(bad)


def test_registered_objective_is_listed_on_its_papers_row():
    by_key = {}
    for r in ROWS:
        for k in C.row_keys(r):
            by_key.setdefault(k, []).append(r)
    missing = []
    for o in registry.objectives():
        if o.paper.is_standard:
            continue
        rows = by_key.get(C.paper_key(o.paper), [])
        if rows and not any(o.name in map(C.base_name, C.names_of(r)) for r in rows):
            missing.append(f"{o.name} ({o.paper.cite()})")
    assert not missing, f"registered objectives not named on their paper's row: {missing}"


def test_every_seed_paper_is_decided():
    seeds = [r for r in ROWS if r["source"] == "seed"]
    assert len(seeds) >= 230
    assert {r["verdict"] for r in seeds} <= set(C.VERDICTS)


def test_a_paper_missing_from_the_file_is_reported():
    dropped = [r for r in ROWS if "cox_ph_loss" not in r["losskit_names"]]
    assert any(p.startswith("cox_ph_loss:") for p in C.problems(dropped))
    renamed = [dict(r, losskit_names="not_an_objective") if "cox_ph_loss" in r["losskit_names"] else r
               for r in ROWS]
    assert any("'not_an_objective' is not a registered objective" in p for p in C.problems(renamed))


def test_docs_page_is_current():
    assert C.PAGE.exists(), "docs/coverage.md is missing: run python scripts/coverage_table.py"
    assert C.PAGE.read_text() == C.page(ROWS), "docs/coverage.md is stale: run python scripts/coverage_table.py"
