"""Every ```python block in README.md and docs/*.md runs (each in a fresh namespace). A block importing an
optional extra's package (transformers, TRL, Lightning, ...) skips, with the reason, where it is absent, and runs
offline (no Hugging Face Hub access)."""

import importlib.util
import pathlib
import re

import pytest

#: packages of the optional extras (hf, lightning) that a doc block may import
OPTIONAL = {"transformers": "hf", "trl": "hf", "datasets": "hf", "tokenizers": "hf", "accelerate": "hf",
            "lightning": "lightning"}

ROOT = pathlib.Path(__file__).resolve().parents[1]
FILES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
BLOCKS = [
    pytest.param(code, id=f"{path.name}-{i}")
    for path in FILES if path.exists()
    for i, code in enumerate(re.findall(r"```python\n(.*?)```", path.read_text(), flags=re.S))
]


@pytest.mark.parametrize("code", BLOCKS)
def test_doc_example_runs(code, monkeypatch):
    used = re.findall(r"^\s*(?:import|from)\s+([\w., ]+)", code, flags=re.M)
    names = {n.split()[0].split(".")[0] for line in used for n in line.split(",") if n.strip()} & set(OPTIONAL)
    for name in sorted(names):
        if importlib.util.find_spec(name) is None:
            pytest.skip(f"needs {name}: pip install 'losskit[{OPTIONAL[name]}]'")
    if names:
        for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE"):
            monkeypatch.setenv(k, "1")
    exec(compile(code, "<doc>", "exec"), {"__name__": "__doc_example__"})


def test_there_are_doc_examples():
    assert len(BLOCKS) >= 2
