import subprocess
import sys

import pytest

from losskit.cli import main


def test_list_prints_every_objective(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    for name in ("cross_entropy", "focal", "kl_divergence", "js_divergence"):
        assert name in out


def test_list_family_filters(capsys):
    assert main(["list", "--family", "divergence"]) == 0
    out = capsys.readouterr().out
    assert "kl_divergence" in out and "focal" not in out
    for alias in ("divergences", "Divergences"):
        assert main(["list", "--family", alias]) == 0
        assert capsys.readouterr().out == out
    assert main(["list", "--family", "nope"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "unknown family 'nope'" in captured.err and "classification" in captured.err and "transport" in captured.err


def test_list_search(capsys):
    assert main(["list", "--search", "Contrastive"]) == 0  # names, summaries and paper titles, any case
    names = {ln.split()[0] for ln in capsys.readouterr().out.splitlines()[2:]}
    assert {"nt_xent", "supcon", "info_nce", "cwcl"} <= names  # supcon only by its summary
    assert "focal" not in names and "dpo" not in names
    assert main(["list", "--search", "Focal Loss for Dense"]) == 0  # a paper title
    out = capsys.readouterr().out
    assert "focal" in out and "binary_focal" in out and "cross_entropy" not in out
    assert main(["list", "--search", "no such word"]) == 1
    assert "no objective matches" in capsys.readouterr().err


def test_python_list_accepts_family_aliases_and_refuses_unknown():
    import losskit

    div = losskit.list(family="divergence")
    assert div and "kl_divergence" in div
    assert losskit.list(family="divergences") == div
    assert losskit.list(family="regularizers") == losskit.list(family="regularisers") == \
        losskit.list(family="regularizer") != []
    with pytest.raises(ValueError, match="unknown family 'divergencez'.*did you mean 'divergence'.*transport"):
        losskit.list(family="divergencez")
    with pytest.raises(ValueError, match="families: adversarial, classification"):
        losskit.objectives("nope")


def _lines_at_80(capsys, monkeypatch, argv):
    monkeypatch.setenv("COLUMNS", "80")
    rc = main(argv)
    out = capsys.readouterr().out
    long = [ln for ln in out.splitlines() if len(ln) > 80]
    assert not long, f"losskit {' '.join(argv)}: {len(long)} lines over 80 characters, e.g. {long[0]!r}"
    return rc, out


def test_list_reads_at_80_columns(capsys, monkeypatch):
    import losskit

    rc, out = _lines_at_80(capsys, monkeypatch, ["list"])
    assert rc == 0
    lines = out.splitlines()
    rows = {ln.split()[0]: ln for ln in lines if ln.split() and ln.split()[0] in losskit.list()}
    assert set(rows) == set(losskit.list())  # every name whole, on its own row (never broken)
    assert len(lines) == len(rows) + len(losskit.families()) + 2  # title, header, one heading per family
    assert any(ln.endswith("…") for ln in rows.values())  # long summaries are cut, not wrapped
    focal = losskit.get("focal")
    assert str(focal.paper.year) in rows["focal"] and "focal loss" in rows["focal"].lower()


def test_check_reads_at_80_columns(capsys, monkeypatch):
    rc, out = _lines_at_80(capsys, monkeypatch, ["check", "focal"])
    assert rc == 0
    claimed, other = out.split("not claimed")
    # a property nobody claimed is not a failure: it is listed apart and never called FAILS
    assert "FAILS" not in out and "proper: does not hold" in other and "calibrated: HOLDS" in claimed
    from losskit._core import registry

    n = sum(o.family == "regularizer" for o in registry.objectives())
    rc, out = _lines_at_80(capsys, monkeypatch, ["check", "--all", "--family", "regularizers"])
    assert rc == 0 and f"{n} objectives, 0 with a false claim" in out


def test_info_shows_formula_paper_signature_properties(capsys):
    assert main(["info", "focal"]) == 0
    out = capsys.readouterr().out
    assert "1708.02002" in out and "gamma" in out and "calibrated" in out and "(1 - p_y)^gamma" in out


def test_info_unknown_name_suggests(capsys):
    assert main(["info", "focall"]) == 1
    assert "did you mean focal" in capsys.readouterr().err


def test_info_prints_every_formula_verbatim(capsys, monkeypatch):
    """rich must not read formulas, signatures or docstrings as markup (``[...]`` would vanish): for every
    registered objective, ``losskit info`` prints the registry's formula and signature character for
    character, at 80 columns (one unwrapped line each)."""
    import inspect

    import losskit

    monkeypatch.setenv("COLUMNS", "80")
    with_brackets = 0
    for e in losskit.objectives():
        assert main(["info", e.name]) == 0
        lines = capsys.readouterr().out.splitlines()
        formula = [ln for ln in lines if ln.startswith("formula")]
        assert formula == [f"formula     {e.formula}"], e.name
        assert f"signature   losskit.{e.signature}" in lines, e.name
        doc = inspect.getdoc(e.fn).splitlines()
        assert lines[-len(doc):] == doc, e.name
        with_brackets += "[" in e.formula
    assert with_brackets >= 20  # the test exercises formulas that rich markup would have damaged


def test_import_does_not_load_rich():
    code = "import sys, losskit; print('rich' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


@pytest.mark.parametrize("bad", [["nosuch"], ["info"]])
def test_bad_usage_exits_nonzero(bad):
    with pytest.raises(SystemExit) as e:
        main(bad)
    assert e.value.code != 0


def test_version(capsys):
    import losskit

    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0
    assert capsys.readouterr().out.strip() == f"losskit {losskit.__version__}"
