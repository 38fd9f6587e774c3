"""``losskit arena report``: one HTML page (contents, claims, leaderboards, plots, notes) with matplotlib
PNGs (150 dpi) beside it.

Every plot gives each objective (label) the same colour, has its full title (wrapped, never cut), starts
its bars at zero, and is followed by a sentence saying what it shows, computed from the data.
"""

from __future__ import annotations

import html
import json
import math
import os
import re
import textwrap
from collections import defaultdict

from .leaderboard import Board
from .store import Store

__all__ = ["write_report", "DPI"]

#: Resolution of the PNGs.
DPI = 150


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-")[:80]


def _config_key(b: Board) -> str:
    return ", ".join(f"{k}={v}" for k, v in b.config.items())


_TITLE_KEYS = ("dataset", "noise", "noise_type", "ratio", "truth", "n", "dim")


def _short(b: Board) -> str:
    keys = [f"{k}={b.config[k]}" for k in _TITLE_KEYS if k in b.config]
    return f"{b.task} ({', '.join(keys)})" if keys else b.task


def _wrap_title(text: str, width: int = 70) -> str:
    return "\n".join(textwrap.wrap(text, width)) or text


def colour_map(bs: list[Board], extra_labels=()) -> dict[str, str]:
    """One colour per objective label, the same in every plot of the page: labels sorted, colours from
    matplotlib's qualitative palettes (tab10, then tab20's light shades, then tab20b), cycling only
    beyond 50 labels."""
    from matplotlib import colormaps
    from matplotlib.colors import to_hex

    palette = list(colormaps["tab10"].colors) + list(colormaps["tab20"].colors)[1::2] + \
        list(colormaps["tab20b"].colors)
    labels = sorted({e.label for b in bs for e in b.entries} | set(extra_labels))
    hexes = [to_hex(rgb) for rgb in palette]
    return {label: hexes[i % len(hexes)] for i, label in enumerate(labels)}


class _Page:
    """The page's parts and its table of contents (every h2/h3 gets an anchor)."""

    def __init__(self):
        self.parts: list[str] = []
        self.toc: list[tuple[int, str, str]] = []

    def heading(self, text: str, level: int = 2) -> None:
        anchor = f"s{len(self.toc):02d}-{_slug(text)[:40]}"
        self.toc.append((level, anchor, text))
        self.parts.append(f"<h{level} id='{anchor}'>{html.escape(text)}</h{level}>")

    def add(self, *parts: str) -> None:
        self.parts.extend(parts)

    def contents(self) -> str:
        items, level = [], 2
        for lv, anchor, text in self.toc:
            while lv > level:
                items.append("<ul>")
                level += 1
            while lv < level:
                items.append("</ul>")
                level -= 1
            items.append(f"<li><a href='#{anchor}'>{html.escape(text)}</a></li>")
        items += ["</ul>"] * (level - 2)
        return "<nav><h2>Contents</h2><ul>" + "".join(items) + "</ul></nav>"


def write_report(store: Store, out: str | os.PathLike = "arena_report") -> str:
    """Write ``out/index.html`` and its PNGs; returns the path of the HTML file."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .claims import task_claims
    from .task import canonical, get_task

    out = os.fspath(out)
    os.makedirs(out, exist_ok=True)
    bs = store.boards()
    curves = defaultdict(list)  # (task, config) -> [(objective, hparams, seed, metric, points)]
    for task, cfg, obj, hp, seed, metric, pts in store.curves():
        curves[(task, cfg)].append((obj, hp, seed, metric, pts))
    colours = colour_map(bs)
    page = _Page()

    page.heading("Recommendations")
    page.add("<ul class='recs'>" + "".join(
        f"<li><b>{html.escape(_short(b))}</b>: {html.escape(b.recommendation())}</li>" for b in bs) + "</ul>")
    from .leaderboard import across

    summary = across(bs)
    if summary is not None:
        page.heading("Across boards: critical difference", 3)
        png = "critical-difference.png"
        _cd_plot(plt, summary, os.path.join(out, png), colours)
        page.add(_figure(png, "critical difference diagram", summary.text()))

    claims = task_claims(bs, get_task)
    page.heading("Paper claims at this scale")
    if claims:
        page.add(_claims_html(claims))
    else:
        page.add("<p>No claim's setting is in the store yet.</p>")

    page.heading("Leaderboards")
    for i, b in enumerate(bs):
        key = f"{i:02d}-{_slug(b.task)}"
        try:
            desc = get_task(b.task).description
        except KeyError:
            desc = store.task_meta().get(b.task, {}).get("description", "")
        page.heading(_short(b), 3)
        page.add(f"<p class='rec'><b>{html.escape(b.recommendation())}</b></p>",
                 f"<p>{html.escape(desc)}</p><p class='cfg'>{html.escape(_config_key(b))}</p>", _table(b))
        tuned = b.tuned()
        if tuned:
            page.add("<p>Tuned hyper-parameters (per seed, chosen on the validation split):</p><table>"
                     "<tr><th>objective</th><th>hyper-parameter</th><th>values over seeds</th></tr>" + "".join(
                         f"<tr><td>{html.escape(lab)}</td><td>{html.escape(k)}</td>"
                         f"<td>{html.escape(', '.join(f'{x:.3g}' for x in vs))}</td></tr>"
                         for lab, d in tuned.items() for k, vs in sorted(d.items())) + "</table>")
        png = f"{key}-scores.png"
        caption = _bar_plot(plt, b, os.path.join(out, png), colours)
        page.add(_figure(png, f"{b.task} scores", caption))
        cs = curves.get((b.task, canonical(b.config)))
        if cs:
            png = f"{key}-curves.png"
            caption = _curve_plot(plt, b, cs, os.path.join(out, png), colours)
            page.add(_figure(png, f"{b.task} learning curves", caption))

    for j, (title, png_name, caption) in enumerate(_noise_plots(plt, bs, out, colours)):
        if j == 0:
            page.heading("Accuracy vs label-noise rate")
        page.heading(title, 3)
        page.add(_figure(png_name, "accuracy vs noise", caption))

    notes = store.notes()
    if notes:
        page.heading("Skipped or failed candidates")
        page.add("<table><tr><th>task</th><th>setting</th><th>candidate</th><th>what</th><th>why</th></tr>")
        for t, cfg, label, kind, msg in notes:
            cfg_txt = ", ".join(f"{k}={v}" for k, v in json.loads(cfg).items())
            page.add(f"<tr><td>{html.escape(t)}</td><td class='cfg'>{html.escape(cfg_txt)}</td>"
                     f"<td>{html.escape(label)}</td><td>{kind}</td><td>{html.escape(msg)}</td></tr>")
        page.add("</table>")
    parts = [_HEAD, "<h1>losskit arena report</h1>", _versions(store), page.contents(), *page.parts,
             "</body></html>"]
    path = os.path.join(out, "index.html")
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(parts))
    return path


def _cd_plot(plt, summary, path: str, colours: dict[str, str]) -> None:
    """Demšar's critical-difference diagram: objectives on an average-rank axis (1 = best, left), the CD
    as a bar, and a thick line joining objectives whose average ranks differ by less than the CD."""
    k = len(summary.labels)
    order = sorted(range(k), key=lambda i: summary.ranks[i])
    fig, ax = plt.subplots(figsize=(7, 1.4 + 0.3 * k))
    ax.set_xlim(0.8, k + 0.2)
    ax.set_ylim(-(k + 0.5), 2.0)
    ax.axis("off")
    ax.plot([1, k], [0, 0], color="black", lw=1)          # the rank axis
    for r in range(1, k + 1):
        ax.plot([r, r], [0, 0.12], color="black", lw=1)
        ax.text(r, 0.2, str(r), ha="center", fontsize=8)
    for row, i in enumerate(order):
        r, lab = summary.ranks[i], summary.labels[i]
        y = -(row + 1)
        ax.plot([r, r], [0, y], color=colours.get(lab, "black"), lw=1)
        ax.plot([r], [0], "o", color=colours.get(lab, "black"))
        ax.text(r + 0.05, y, f"{lab} ({r:.2f})", va="center", fontsize=8)
    cd = summary.cd
    ax.plot([1, 1 + cd], [1.2, 1.2], color="black", lw=2)
    ax.text(1 + cd / 2, 1.35, f"critical difference = {cd:.2f}", ha="center", fontsize=8)
    level = -0.25
    for a in range(k):  # maximal groups within the critical difference
        group = [i for i in order if 0 <= summary.ranks[i] - summary.ranks[order[a]] < cd]
        if len(group) > 1 and (a == 0 or summary.ranks[group[-1]] - summary.ranks[order[a - 1]] >= cd):
            ax.plot([summary.ranks[group[0]] - 0.03, summary.ranks[group[-1]] + 0.03], [level, level], color="black",
                    lw=4)
            level -= 0.2
    ax.set_title(f"average rank over {summary.boards} boards (Friedman p = {summary.p:.3g})" if summary.p is not None
                 else f"average rank over {summary.boards} boards", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=150)
    plt.close(fig)


def _figure(src: str, alt: str, caption: str) -> str:
    return (f"<figure><img src='{src}' alt='{html.escape(alt)}'>"
            f"<figcaption>{html.escape(caption)}</figcaption></figure>")


def _claims_html(claims) -> str:
    from .claims import verdict_meaning

    rows = ["<table><tr><th>claim</th><th>verdict</th><th>evidence</th><th>source</th></tr>"]
    for c in claims:
        rows.append(f"<tr><td>{html.escape(c.statement)}</td><td class='v-{_slug(c.verdict)}'>"
                    f"{html.escape(c.verdict)}</td><td>{html.escape(c.evidence)}</td>"
                    f"<td>{html.escape(c.source)}</td></tr>")
    rows.append("</table><p>What the verdicts mean:</p><dl class='verdicts'>")
    from .claims import VERDICTS

    for word in VERDICTS:
        rows.append(f"<dt class='v-{_slug(word)}'>{html.escape(word)}</dt>"
                    f"<dd>{html.escape(verdict_meaning(word))}</dd>")
    rows.append("</dl>")
    return "".join(rows)


def _versions(store: Store) -> str:
    with store._connect() as c:
        vs = c.execute("SELECT DISTINCT losskit_version, torch_version FROM results").fetchall()
        n = c.execute("SELECT COUNT(DISTINCT task || config || objective || hparams || seed) FROM results").fetchone()[0]
    txt = "; ".join(f"losskit {a}, torch {b}" for a, b in vs) or "empty store"
    return (f"<p>{n} trials from <code>{html.escape(store.path)}</code> ({html.escape(txt)}). Scores are mean ± "
            "std over seeds; ▲/▼: significantly better/worse than the task's baseline (two-sided paired t-test "
            "over seeds, p &lt; 0.05); ·: not significant; ?: fewer than two shared seeds. Each objective has "
            "one colour in every plot.</p>")


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


def _num(x):
    """An epoch as written: 4 rather than 4.0."""
    return int(x) if float(x).is_integer() else x


def _seeds_text(ns: list[int]) -> str:
    lo, hi = min(ns), max(ns)
    return f"{lo} seed{'s' * (lo != 1)}" if lo == hi else f"{lo} to {hi} seeds"


def _bar_plot(plt, b: Board, path: str, colours: dict[str, str]) -> str:
    """Horizontal bars of the first metric from zero; returns the caption."""
    m = b.metrics[0]
    es = [e for e in b.ranked() if not math.isnan(e.mean(m))]
    fig, ax = plt.subplots(figsize=(7.5, 0.35 * len(es) + 1.4))
    names = [f"{e.label} (baseline)" if e.label == b.baseline else e.label for e in es][::-1]
    bars = ax.barh(names, [e.mean(m) for e in es][::-1], xerr=[e.std(m) for e in es][::-1],
                   color=[colours.get(e.label, "#888") for e in es][::-1], capsize=2)
    for bar, e in zip(bars, es[::-1]):
        if e.label == b.baseline:
            bar.set_edgecolor("black")
            bar.set_linewidth(1.5)
            bar.set_hatch("//")
    lo = min([0.0] + [e.mean(m) - e.std(m) for e in es])
    hi = max([0.0] + [e.mean(m) + e.std(m) for e in es])
    ax.set_xlim(lo - 0.03 * (hi - lo), hi + 0.05 * (hi - lo) + 1e-12)  # zero is on the axis
    ax.axvline(0, color="black", lw=0.8)
    better = "higher is better" if b.higher_is_better(m) else "lower is better"
    ax.set_xlabel(f"{m} ({better}; mean ± std over seeds)")
    ax.set_title(_wrap_title(f"{_short(b)}: {m}"), fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    if not es:
        return f"No finite {m} to plot."
    best = es[0]
    text = (f"Each bar is one objective's mean {m} ({better}) over its {_seeds_text([e.n for e in es])}, the "
            f"whisker one standard deviation; the axis starts at zero. Best: {best.label} "
            f"({best.mean(m):.3f}).")
    base = b.baseline_entry
    if base is not None and base is not best and not math.isnan(base.mean(m)):
        rank = es.index(base) + 1 if base in es else None
        text += f" The baseline {base.label} (hatched) scores {base.mean(m):.3f}" + \
            (f", rank {rank} of {len(es)}." if rank else ".")
    return text


def _curve_plot(plt, b: Board, cs, path: str, colours: dict[str, str]) -> str:
    """Mean learning curves; returns the caption (where each curve peaks, which fall after their peak)."""
    import numpy as np

    labels = {(e.objective, e.hparams): e.label for e in b.entries}
    by = defaultdict(list)
    metric = ""
    for obj, hp, _seed, m, pts in cs:
        if pts:
            by[(obj, hp)].append(pts)
            metric = m
    higher = b.higher_is_better(metric) if metric else True
    fig, ax = plt.subplots(figsize=(6.2, 3.7))
    summary = []  # (label, peak epoch, peak value, final value, final epoch)
    for k, runs in sorted(by.items(), key=lambda kv: labels.get(kv[0], kv[0][0])):
        n = min(len(r) for r in runs)
        arr = np.array([[p[1] for p in r[:n]] for r in runs])
        x = [p[0] for p in runs[0][:n]]
        y = arr.mean(0)
        label = labels.get(k, k[0])
        ax.plot(x, y, label=f"{label} (baseline)" if label == b.baseline else label,
                color=colours.get(label, "#888"), lw=2.4 if label == b.baseline else 1.3)
        i = int(np.argmax(y) if higher else np.argmin(y))
        summary.append((label, _num(x[i]), float(y[i]), float(y[-1]), _num(x[-1])))
    ax.set_xlabel("epoch")
    ax.set_ylabel(metric)
    ax.set_title(_wrap_title(f"{_short(b)}: learning curves (mean over seeds)"), fontsize=10)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
    fig.savefig(path, dpi=DPI, bbox_inches="tight")
    plt.close(fig)
    if not summary:
        return "No learning curve recorded."
    values = [v for s in summary for v in (s[2], s[3])]
    spread = max(values) - min(values)

    def falls(s) -> bool:  # by more than 1% of its peak and 5% of the plot's range: not noise
        drop = s[2] - s[3] if higher else s[3] - s[2]
        return drop > max(0.01 * abs(s[2]), 0.05 * spread, 1e-9)

    text = f"Mean {metric} over seeds at each evaluation epoch, one line per objective."
    base = next((s for s in summary if s[0] == b.baseline), None)
    if base is not None:
        text += (f" The baseline {base[0]} (thick line) is at its {'best' if higher else 'lowest'} at epoch "
                 f"{base[1]} ({base[2]:.3f}) and ends at {base[3]:.3f} (epoch {base[4]}).")
    fall = [s for s in summary if falls(s)]
    if fall:
        worst = sorted(fall, key=lambda s: -abs(s[2] - s[3]))
        text += " Falling back after their peak: " + ", ".join(
            f"{s[0]} (epoch {s[1]}: {s[2]:.3f} to {s[3]:.3f})" for s in worst[:6]) + \
            (f" and {len(worst) - 6} more" if len(worst) > 6 else "") + "."
        if b.task == "noisy_labels" and b.config.get("noise", 0):
            text += (" With corrupted training labels, clean accuracy that falls after a peak is the network "
                     "memorising the wrong labels.")
    else:
        text += " No curve falls back after its peak by more than 1% of its peak value."
    return text


def _noise_plots(plt, bs: list[Board], out: str, colours: dict[str, str]):
    """Accuracy vs noise rate for every noisy_labels setting that was run at two or more noise rates;
    yields (title, file name, caption)."""
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
        fig, ax = plt.subplots(figsize=(6.2, 3.7))
        labels = sorted({e.label for b in group for e in b.entries})
        for label in labels:
            pts = [(b.config["noise"], e.mean(metric), e.std(metric)) for b in group for e in b.entries
                   if e.label == label]
            xs, ys, ss = zip(*pts)
            ax.errorbar(xs, ys, yerr=ss, marker="o", capsize=3, color=colours.get(label, "#888"),
                        lw=2.4 if label == group[0].baseline else 1.3,
                        label=f"{label} (baseline)" if label == group[0].baseline else label)
        ax.set_xlabel("training label-noise rate")
        ax.set_ylabel(f"clean test {metric}")
        r = json.loads(rest)
        title = f"{task}: {r.get('dataset', '')}, {r.get('noise_type', '')} noise"
        ax.set_title(_wrap_title(title), fontsize=10)
        ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
        name = f"noise-{n:02d}-{_slug(task)}.png"
        fig.savefig(os.path.join(out, name), dpi=DPI, bbox_inches="tight")
        plt.close(fig)
        top = group[-1]
        ranked = [e for e in top.ranked() if not math.isnan(e.mean(metric))]
        caption = (f"Clean test {metric} (mean ± std over seeds) of each objective trained at each label-noise "
                   f"rate ({', '.join(str(b.config['noise']) for b in group)}).")
        if ranked:
            caption += f" At the highest rate, {top.config['noise']}, the best is {ranked[0].label} " \
                       f"({ranked[0].mean(metric):.3f})"
            base = top.baseline_entry
            caption += (f" and the baseline {base.label} scores {base.mean(metric):.3f}."
                        if base is not None and base is not ranked[0] else ".")
        yield title, name, caption


_HEAD = """<!doctype html><html><head><meta charset="utf-8"><title>losskit arena report</title>
<style>body{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:3px 8px;font-size:13px}
th{background:#eee}.cfg{color:#666;font-size:12px}img{display:block;margin:0.5em 0;max-width:100%}
figure{margin:1em 0}figure img{max-width:min(100%,820px)}figcaption{font-size:13px;color:#333;max-width:900px}
nav{background:#f6f6f6;padding:0.3em 1em;border:1px solid #ddd}nav ul{margin:0.2em 0}
dl.verdicts{font-size:13px}dl.verdicts dt{float:left;clear:left;width:9em}dl.verdicts dd{margin-left:10em}
.v-reproduced{color:#070;font-weight:bold}.v-mixed{color:#a60;font-weight:bold}
.v-not-reproduced{color:#b00;font-weight:bold}.v-inconclusive{color:#a60}
.v-partly-tested{color:#06c;font-weight:bold}</style></head><body>"""
