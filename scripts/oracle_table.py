"""Write docs/oracles.md from the ORACLES entries of tests/oracles/ (the test checks it is current)."""

import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT / "tests" / "oracles")]

from oracle_meta import table  # noqa: E402

if __name__ == "__main__":
    out = ROOT / "docs" / "oracles.md"
    out.write_text(table())
    print(f"wrote {out.relative_to(ROOT)}")
