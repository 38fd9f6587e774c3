"""The integrations are optional extras: ``import losskit`` loads none of them (nor transformers, TRL or
Lightning), and a missing extra gives an ImportError naming the extra to install."""

import subprocess
import sys

import pytest

from losskit.integrations import require


def test_import_losskit_does_not_load_integrations():
    code = ("import sys, losskit; print(sorted(m for m in ('losskit.integrations', 'transformers', 'trl', "
            "'lightning', 'accelerate', 'datasets') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_missing_extra_names_it():
    with pytest.raises(ImportError, match=r"pip install 'losskit\[hf\]'"):
        require("hf", "losskit_no_such_module_for_the_test")


@pytest.mark.parametrize("module,extra,blocked", [
    ("losskit.integrations.transformers", "hf", "transformers"),
    ("losskit.integrations.trl", "hf", "trl"),
    ("losskit.integrations.lightning", "lightning", "lightning"),
])
def test_integration_module_without_its_extra(module, extra, blocked):
    """With the extra's package made unimportable, importing the integration says which extra to install."""
    code = (f"import sys; sys.modules[{blocked!r}] = None\n"
            f"try:\n    import {module}\nexcept ImportError as e:\n    print(e)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert f"pip install 'losskit[{extra}]'" in out, out
