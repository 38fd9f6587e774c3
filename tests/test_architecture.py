"""The architecture's rules as tests: import layering (import-linter contracts in pyproject.toml), one
name per input kind, every Module exported under the one naming rule."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import losskit
from losskit._core.registry import module_class_name

ROOT = Path(__file__).resolve().parents[1]


def test_import_contracts_hold():
    exe = shutil.which("lint-imports") or str(Path(sys.executable).with_name("lint-imports"))
    if not Path(exe).exists():
        pytest.fail("import-linter is not installed: it is in the dev extra (make setup installs it)")
    out = subprocess.run([exe, str(ROOT / "pyproject.toml")], cwd=ROOT, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-2000:]
    assert "broken" in out.stdout and " 0 broken" in out.stdout


def test_contracts_can_fail(tmp_path):
    """The layering contract really rejects an upward import (a core module importing the arena)."""
    src = tmp_path / "src"
    shutil.copytree(ROOT / "src" / "losskit", src / "losskit", ignore=shutil.ignore_patterns("__pycache__"))
    (src / "losskit" / "_core" / "bad.py").write_text("from losskit.arena import store  # noqa\n")
    exe = shutil.which("lint-imports") or str(Path(sys.executable).with_name("lint-imports"))
    env = {"PYTHONPATH": str(src), "PATH": str(Path(sys.executable).parent)}
    out = subprocess.run([exe, str(ROOT / "pyproject.toml")], cwd=tmp_path, capture_output=True,
                         text=True, env=env, timeout=300)
    assert out.returncode != 0, out.stdout[-3000:]
    assert "BROKEN" in out.stdout


def test_input_kind_names_are_unique():
    seen = {}
    for o in losskit.objectives():
        k = o.input_kind
        assert seen.setdefault(k.name, k) is k, f"two input kinds are both called {k.name!r}"


def test_every_module_is_exported_under_the_naming_rule():
    for o in losskit.objectives():
        assert getattr(losskit, o.module.__name__) is o.module, o.name
        for alias in o.module_aliases:
            assert getattr(losskit, alias) is o.module
    assert module_class_name("dpo") == "DPOLoss"
    assert module_class_name("kl_divergence") == "KLDivergence"
    assert module_class_name("exact_ot") == "ExactOT"
    assert module_class_name("aot") == "AOTLoss"
