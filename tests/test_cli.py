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
    assert "did you mean focal" in capsys.readouterr().out


def test_import_does_not_load_rich():
    code = "import sys, losskit; print('rich' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


@pytest.mark.parametrize("bad", [["nosuch"], ["info"]])
def test_bad_usage_exits_nonzero(bad):
    with pytest.raises(SystemExit) as e:
        main(bad)
    assert e.value.code != 0
