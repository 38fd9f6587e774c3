"""Run conformance checks over the registry and print failures grouped by family (a developer's tool).

    python scripts/edge_report.py [--checks domains,hyperparameters,...] [--family F] [--objectives a,b]
"""
import argparse
import collections
import pathlib
import sys
import warnings

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "src"))  # this checkout's losskit

import losskit  # noqa: E402
from losskit.testing.conformance import CHECKS, Skip  # noqa: E402

warnings.filterwarnings("ignore")
ap = argparse.ArgumentParser()
ap.add_argument("--checks", default="domains,hyperparameters,meta,nonfinite,dtypes,batch_mismatch,ignore_index,label_grad")
ap.add_argument("--family")
ap.add_argument("--objectives")
a = ap.parse_args()
names = a.objectives.split(",") if a.objectives else None
fails = collections.defaultdict(list)
total = 0
for e in losskit.objectives(a.family):
    if names and e.name not in names:
        continue
    for c in a.checks.split(","):
        total += 1
        try:
            CHECKS[c](e)
        except Skip:
            pass
        except AssertionError as err:
            fails[e.family].append(f"[{c}] {str(err)[:400]}")
        except Exception as err:  # noqa: BLE001
            fails[e.family].append(f"[{c}] {e.name}: CHECK CRASHED {type(err).__name__}: {str(err)[:300]}")
n = sum(map(len, fails.values()))
for fam, lines in sorted(fails.items()):
    print(f"== {fam}: {len(lines)} failures")
    for line in lines:
        print("  " + line.replace("\n", " | "))
print(f"{n} failures of {total} checks")
sys.exit(1 if n else 0)
