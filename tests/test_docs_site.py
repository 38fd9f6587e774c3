"""The documentation site (mkdocs.yml, scripts/build_docs.py): every registered objective has a generated
page, every generated example runs, and ``mkdocs build --strict`` succeeds (no broken link, no formula
that fails to convert, no page missing from the nav)."""

import os
import pathlib
import re
import subprocess
import sys

import pytest

import losskit
from losskit._core import registry

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

import build_docs  # noqa: E402


@pytest.fixture(scope="module")
def site():
    return build_docs.build(plots=False)


def test_every_objective_has_a_page(site):
    pages = {p for p in site.files if re.fullmatch(r"objectives/[^/]+/[^/]+\.md", p)
             and not p.endswith("/index.md")}
    expected = {f"objectives/{o.family}/{o.name}.md" for o in registry.objectives()}
    assert pages == expected
    assert {f"objectives/{f}/index.md" for f in registry.families()} <= set(site.files)
    # and each page is in the nav
    nav = repr(site.nav)
    assert all(p in nav for p in expected)


def test_objective_page_content(site):
    page = site.files["objectives/classification/focal.md"]
    assert "https://arxiv.org/abs/1708.02002" in page
    assert "$$" in page  # the docstring's formula, rendered as math
    assert "| `gamma` | option | `2.0` | a real number in [0, inf) |" in page
    assert "`calibrated` | yes | holds" in page  # a verdict of losskit check, computed at build time
    dpo = site.files["objectives/preference/dpo.md"]
    assert "log-probabilities &lt;= 0" in dpo  # the declared value domain of the inputs


def test_family_page_embeds_the_stored_arena_run(site):
    """The classification page shows the stored run's leaderboards (every candidate linked to its page) and
    the verdicts of the claims its tasks check, recomputed from the raw rows; the rows name only registered
    objectives, so a renamed objective fails here rather than leaving a dead entry."""
    import json

    data = json.loads(build_docs.ARENA_SNAPSHOT.read_text())
    names = {r["objective"] for r in data["rows"]}
    assert names <= set(losskit.list()), names - set(losskit.list())
    page = site.files["objectives/classification/index.md"]
    assert "## In the arena" in page and "### Paper claims checked in this run" in page
    assert "| 1 | [`" in page  # a ranked, linked candidate
    assert re.search(r"\*\*(reproduced|not reproduced|partly tested|inconclusive)[^*]*\*\*", page), page[-2000:]
    # a family with no arena task gets no section
    assert "## In the arena" not in site.files["objectives/fused/index.md"]


@pytest.mark.parametrize("name", losskit.list())
def test_generated_example_runs(name):
    """The example on each page (the site's doctests): it runs and prints a finite loss."""
    code = build_docs.example_code(registry.get(name))
    out = build_docs.run_example(code)
    assert out.startswith("tensor(") or out.startswith("(tensor("), out
    assert "nan" not in out and "inf" not in out, out


@pytest.mark.slow
def test_mkdocs_build_strict(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "NO_MKDOCS_2_WARNING": "1"}
    out = tmp_path / "site"
    r = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-d", str(out)], cwd=ROOT,
                       env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-5000:]
    for o in registry.objectives():
        assert (out / "objectives" / o.family / o.name / "index.html").exists(), o.name
    focal = (out / "objectives" / "classification" / "focal" / "index.html").read_text()
    assert "<math" in focal and "focal.png" in focal
    assert (out / "objectives" / "classification" / "focal.png").stat().st_size > 1000
    assert (out / "migration" / "index.html").exists()
    # the browser check (scripts/check_docs_site.py), where Chromium exists (CI installs it)
    import check_arena_report
    import check_docs_site

    if check_arena_report.find_chromium() is None:
        pytest.skip("no Chromium: the rendering check of the built site is skipped")
    assert check_docs_site.main([str(out)]) == 0
