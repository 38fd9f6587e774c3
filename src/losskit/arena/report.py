"""``losskit arena report``: one HTML page (leaderboards, claims, notes) with matplotlib PNGs beside it."""

from __future__ import annotations

import html
import json
import os
import re
from collections import defaultdict

from .leaderboard import Board, boards
from .store import Store

__all__ = ["write_report"]


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-")[:80]


def _config_key(b: Board) -> str:
    return ", ".join(f"{k}={v}" for k, v in b.config.items())


_TITLE_KEYS = ("dataset", "noise", "noise_type", "ratio", "truth", "n", "dim")


def _short(b: Board) -> str:
    keys = [f"{k}={b.config[k]}" for k in _TITLE_KEYS if k in b.config]
    return f"{b.task} ({', '.join(keys)})" if keys else b.task


def write_report(store: Store, out: str | os.PathLike = "arena_report") -> str:
    """Write ``out/index.html`` and its PNGs; returns the path of the HTML file."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .claims import task_claims
    from .task import canonical, get_task

    out = os.fspath(out)
    os.makedirs(out, exist_ok=True)
    bs = boards(store.rows())
    curves = defaultdict(list)  # (task, config) -> [(objective, hparams, seed, metric, points)]
    for task, cfg, obj, hp, seed, metric, pts in store.curves():
        curves[(task, cfg)].append((obj, hp, seed, metric, pts))
    parts = [_HEAD, "<h1>losskit arena report</h1>", _versions(store)]

    claims = task_claims(bs, get_task)
    parts.append("<h2>Paper claims at this scale</h2>")
    if claims:
        parts.append("<table><tr><th>claim</th><th>verdict</th><th>evidence</th><th>source</th></tr>")
        for c in claims:
            parts.append(f"<tr><td>{html.escape(c.statement)}</td><td class='v-{_slug(c.verdict)}'>"
                         f"{html.escape(c.verdict)}</td><td>{html.escape(c.evidence)}</td>"
                         f"<td>{html.escape(c.source)}</td></tr>")
        parts.append("</table>")
    else:
        parts.append("<p>No claim's setting is in the store yet.</p>")

    for i, b in enumerate(bs):
        key = f"{i:02d}-{_slug(b.task)}"
        try:
            desc = get_task(b.task).description
        except KeyError:
            desc = ""
        parts.append(f"<h2>{html.escape(_short(b))}</h2><p>{html.escape(desc)}</p>"
                     f"<p class='cfg'>{html.escape(_config_key(b))}</p>")
        parts.append(_table(b))
        png = f"{key}-scores.png"
        _bar_plot(plt, b, os.path.join(out, png))
        parts.append(f"<img src='{png}' alt='{html.escape(b.task)} scores'>")
        cs = curves.get((b.task, canonical(b.config)))
        if cs:
            png = f"{key}-curves.png"
            _curve_plot(plt, b, cs, os.path.join(out, png))
            parts.append(f"<img src='{png}' alt='{html.escape(b.task)} learning curves'>")

    for j, (title, png_name) in enumerate(_noise_plots(plt, bs, out)):
        if j == 0:
            parts.append("<h2>Accuracy vs label-noise rate</h2>")
        parts.append(f"<h3>{html.escape(title)}</h3><img src='{png_name}' alt='accuracy vs noise'>")

    notes = store.notes()
    if notes:
        parts.append("<h2>Skipped or failed candidates</h2><table><tr><th>task</th><th>setting</th>"
                     "<th>candidate</th><th>what</th><th>why</th></tr>")
        for t, cfg, label, kind, msg in notes:
            cfg_txt = ", ".join(f"{k}={v}" for k, v in json.loads(cfg).items())
            parts.append(f"<tr><td>{html.escape(t)}</td><td class='cfg'>{html.escape(cfg_txt)}</td>"
                         f"<td>{html.escape(label)}</td><td>{kind}</td><td>{html.escape(msg)}</td></tr>")
        parts.append("</table>")
    parts.append("</body></html>")
    path = os.path.join(out, "index.html")
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(parts))
    return path


def _versions(store: Store) -> str:
    with store._connect() as c:
        vs = c.execute("SELECT DISTINCT losskit_version, torch_version FROM results").fetchall()
        n = c.execute("SELECT COUNT(DISTINCT task || config || objective || hparams || seed) FROM results").fetchone()[0]
    txt = "; ".join(f"losskit {a}, torch {b}" for a, b in vs) or "empty store"
    return (f"<p>{n} trials from <code>{html.escape(store.path)}</code> ({html.escape(txt)}). Scores are mean ± "
            "std over seeds; ▲/▼: significantly better/worse than the task's baseline (two-sided paired t-test "
            "over seeds, p &lt; 0.05); ·: not significant; ?: fewer than two shared seeds.</p>")


def _table(b: Board) -> str:
    rows = ["<table><tr><th>#</th><th>objective</th>"
            + "".join(f"<th>{html.escape(m)} {'↑' if b.higher_is_better(m) else '↓'}</th>" for m in b.metrics)
            + "<th>seeds</th></tr>"]
    for i, e in enumerate(b.ranked(), 1):
        cells = "".join(f"<td>{e.mean(m):.4f} ± {e.std(m):.4f} {html.escape(b.marker(e, m))}</td>"
                        for m in b.metrics)
        rows.append(f"<tr><td>{i}</td><td>{html.escape(e.label)}</td>{cells}<td>{e.n}</td></tr>")
    rows.append("</table>")
    return "".join(rows)


def _bar_plot(plt, b: Board, path: str) -> None:
    m = b.metrics[0]
    es = b.ranked()
    fig, ax = plt.subplots(figsize=(7, 0.35 * len(es) + 1.2))
    ax.barh([e.label for e in es][::-1], [e.mean(m) for e in es][::-1], xerr=[e.std(m) for e in es][::-1],
            color=["#c44" if e.label == b.baseline else "#48a" for e in es][::-1])
    lo = min(e.mean(m) - e.std(m) for e in es)
    hi = max(e.mean(m) + e.std(m) for e in es)
    pad = 0.15 * (hi - lo) + 1e-9
    ax.set_xlim(lo - pad if lo - pad > 0 or lo < 0 else 0, hi + pad)  # zoomed: differences are small
    ax.set_xlabel(f"{m} (mean ± std over seeds; red: baseline; axis zoomed)")
    ax.set_title(f"{_short(b)}: {m}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def _curve_plot(plt, b: Board, cs, path: str) -> None:
    import numpy as np

    labels = {(e.objective, e.hparams): e.label for e in b.entries}
    by = defaultdict(list)
    metric = ""
    for obj, hp, _seed, m, pts in cs:
        if pts:
            by[(obj, hp)].append(pts)
            metric = m
    fig, ax = plt.subplots(figsize=(7, 4))
    for k, runs in sorted(by.items(), key=lambda kv: labels.get(kv[0], kv[0][0])):
        n = min(len(r) for r in runs)
        arr = np.array([[p[1] for p in r[:n]] for r in runs])
        x = [p[0] for p in runs[0][:n]]
        ax.plot(x, arr.mean(0), label=labels.get(k, k[0]), lw=2.2 if labels.get(k) == b.baseline else 1.2)
    ax.set_xlabel("epoch")
    ax.set_ylabel(metric)
    ax.set_title(f"{_short(b)}: learning curves (mean over seeds)", fontsize=10)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def _noise_plots(plt, bs: list[Board], out: str):
    """Accuracy vs noise rate for every noisy_labels setting that was run at two or more noise rates."""
    groups = defaultdict(list)
    for b in bs:
        if "noise" in b.config:
            rest = {k: v for k, v in b.config.items() if k != "noise"}
            groups[(b.task, json.dumps(rest, sort_keys=True))].append(b)
    for n, ((task, rest), group) in enumerate(sorted(groups.items())):
        if len({b.config["noise"] for b in group}) < 2:
            continue
        group.sort(key=lambda b: b.config["noise"])
        metric = group[0].metrics[0]
        fig, ax = plt.subplots(figsize=(7, 4))
        labels = sorted({e.label for b in group for e in b.entries})
        for label in labels:
            pts = [(b.config["noise"], e.mean(metric), e.std(metric)) for b in group for e in b.entries
                   if e.label == label]
            xs, ys, ss = zip(*pts)
            ax.errorbar(xs, ys, yerr=ss, marker="o", capsize=3, label=label)
        ax.set_xlabel("training label-noise rate")
        ax.set_ylabel(f"clean test {metric}")
        r = json.loads(rest)
        title = f"{task}: {r.get('dataset', '')}, {r.get('noise_type', '')} noise"
        ax.set_title(title, fontsize=10)
        ax.legend(fontsize=7, ncol=2)
        fig.tight_layout()
        name = f"noise-{n:02d}-{_slug(task)}.png"
        fig.savefig(os.path.join(out, name), dpi=90)
        plt.close(fig)
        yield title, name


_HEAD = """<!doctype html><html><head><meta charset="utf-8"><title>losskit arena report</title>
<style>body{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:3px 8px;font-size:13px}
th{background:#eee}.cfg{color:#666;font-size:12px}img{display:block;margin:0.5em 0;max-width:100%}
.v-reproduced{color:#070;font-weight:bold}.v-partly{color:#a60;font-weight:bold}
.v-not-reproduced{color:#b00;font-weight:bold}.v-inconclusive{color:#a60}</style></head><body>"""
