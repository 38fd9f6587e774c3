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
    assert main(["list", "--family", "nope"]) == 1


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
