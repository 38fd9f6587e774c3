"""Write the arena run the documentation embeds: the raw trial rows of a results store, as JSON.

The family pages of the site (``scripts/build_docs.py``) show the leaderboards and paper-claim verdicts
of this run, recomputed at build time from these rows with the arena's own code, so the file holds
results only. Refresh it after a run of the quick suite::

    losskit arena --quick --seeds 3 --store /tmp/snap.db
    PYTHONPATH=src python scripts/arena_snapshot.py /tmp/snap.db --command "losskit arena --quick --seeds 3"
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
OUT = ROOT / "docs" / "arena" / "results.json"


def snapshot(store_path: str, command: str) -> dict:
    import torch

    import losskit
    from losskit.arena.store import Store

    store = Store(store_path)
    try:
        rows = [dataclasses.asdict(r) for r in store.rows()]
    finally:
        store.close()
    rows.sort(key=lambda r: (r["task"], r["config"], r["objective"], r["hparams"], r["seed"], r["metric"]))
    meta = {"command": command, "date": datetime.date.today().isoformat(), "losskit": losskit.__version__,
            "torch": torch.__version__.split("+")[0], "trials": len({(r["task"], r["config"], r["objective"],
                                                                       r["hparams"], r["seed"]) for r in rows})}
    return {"meta": meta, "rows": rows}


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("store", help="the SQLite results store of the run")
    ap.add_argument("--command", required=True, help="the command that made the run (shown on the pages)")
    ap.add_argument("--out", default=str(OUT))
    a = ap.parse_args(argv)
    data = snapshot(a.store, a.command)
    out = pathlib.Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(data, indent=0, sort_keys=True) + "\n")
    print(f"{data['meta']['trials']} trials, {len(data['rows'])} rows -> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
