"""Every row of the migration tables (scripts/migration_rows.py, shown on the site's migration page):
the peer call and the losskit call on the same inputs satisfy the row's relation. Rows whose peer is
not installed skip with that reason."""

import pathlib
import sys

import pytest
import torch

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

import migration_rows as M  # noqa: E402


@pytest.mark.parametrize("row", M.ROWS, ids=[f"{i}-{r.id}" for i, r in enumerate(M.ROWS)])
def test_row(row):
    section = next(s for s in M.SECTIONS if s.key == row.section)
    reason = M.available(section)
    if reason:
        pytest.skip(reason)
    lhs, rhs = M.evaluate(row)
    torch.testing.assert_close(lhs, rhs, rtol=row.rtol, atol=row.atol,
                               msg=lambda m: f"{row.relation}: {lhs} vs {rhs}\n{m}")


def test_the_page_shows_every_row():
    page = M.page()
    for r in M.ROWS:
        assert M._cell(r.peer_call) in page and M._cell(r.losskit_call) in page


def test_every_peer_has_rows():
    assert {r.section for r in M.ROWS} == {s.key for s in M.SECTIONS}
