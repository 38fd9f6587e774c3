"""The generated part of the documentation site: one page per registered objective, family pages, the
migration tables. Everything comes from the registry (``losskit._core.registry``), the oracle metadata
(``tests/oracles``) and the migration rows (``scripts/migration_rows.py``), so nothing is written twice.

``mkdocs build`` runs this through ``scripts/mkdocs_hooks.py`` (no generated file is committed); run it
alone to write the pages into a folder and look at them::

    PYTHONPATH=src python scripts/build_docs.py OUTDIR [--no-plots]
"""

from __future__ import annotations

import html
import importlib.util
import inspect
import io
import math
import pathlib
import re
import sys
from dataclasses import dataclass

import torch

ROOT = pathlib.Path(__file__).resolve().parents[1]
SCRIPTS = ROOT / "scripts"

#: registry family -> the hand-written guide in docs/ (where there is one)
GUIDES = {"adversarial": "adversarial.md", "classification": "classification.md", "distillation": "distillation.md",
          "detection": "detection.md", "divergence": "divergences.md", "fused": "fused.md",
          "generative": "generative.md", "preference": "preference.md", "regression": "regression.md",
          "representation": "representation.md", "transport": "transport.md"}

#: the stored arena run the family pages embed (written by ``scripts/arena_snapshot.py`` from a results store)
ARENA_SNAPSHOT = ROOT / "docs" / "arena" / "results.json"

#: families whose objectives solve an inner problem at every call: no 1-D plot (build time)
NO_PLOT_FAMILIES = {"transport"}


def _load(name: str, path: pathlib.Path):
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)  # type: ignore[union-attr]
    return mod


def registry():
    import losskit  # noqa: F401  (registers every objective)
    from losskit._core import registry as reg

    return reg


def oracle_entries() -> dict[str, list]:
    """objective name -> its Oracle / NoReference entries from tests/oracles (oracle_meta.collect())."""
    for d in (ROOT / "tests" / "oracles", ROOT / "tests"):  # the oracle files import these as top-level
        if str(d) not in sys.path:
            sys.path.append(str(d))
    import oracle_meta as meta
    out: dict[str, list] = {}
    for fname, e in meta.collect():
        out.setdefault(e.objective, []).append((fname, e))
    return out


# ------------------------------------------------------------------------------ docstring -> markdown
_ROLE = re.compile(r":(func|class|mod|meth|data|attr):`~?([^`]+)`")
_MATH_ROLE = re.compile(r":math:`([^`]+)`")


def _escape_text(s: str) -> str:
    """Escape what Markdown / HTML would misread in prose (``<P, C>``, ``*``, ``_``), outside code."""
    return html.escape(s, quote=False).replace("*", r"\*").replace("_", r"\_")


def rst_to_md(doc: str, link) -> str:
    """The few reST constructs our docstrings use, as Markdown: ``.. math::`` (one or more indented
    lines) -> ``$$ $$``, ``:math:`x``` -> ``$x$``, ````code```` -> `code`, ``:func:`name``` -> a link
    to the objective's page (``link(name)``) or code."""
    lines = doc.splitlines()
    out: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        m = re.match(r"^(\s*)\.\. math::\s*(.*)$", line)
        if m:
            indent = len(m.group(1))
            body = [m.group(2)]
            i += 1
            while i < len(lines) and lines[i].strip() and len(lines[i]) - len(lines[i].lstrip()) > indent:
                body.append(lines[i].strip())
                i += 1
            out += ["", "$$", " ".join(b for b in body if b), "$$", ""]
            continue
        out.append(_inline(line, link))
        i += 1
    return "\n".join(out)


def _inline(line: str, link) -> str:
    # split into code (``x``), roles and math; escape the prose in between
    parts = re.split(r"(``[^`]+``|:(?:func|class|mod|meth|data|attr):`[^`]+`|:math:`[^`]+`)", line)
    res = []
    for p in parts:
        if p.startswith("``") and p.endswith("``") and len(p) > 4:
            res.append(_code(p[2:-2]))
        elif _MATH_ROLE.fullmatch(p):
            res.append("$" + _MATH_ROLE.fullmatch(p).group(1) + "$")
        elif _ROLE.fullmatch(p):
            target = _ROLE.fullmatch(p).group(2)
            short = target.rsplit(".", 1)[-1]
            url = link(short)
            res.append(f"[`{short}`]({url})" if url else _code(target))
        else:
            res.append(_escape_text(p))
    return "".join(res)


def _code(s: str) -> str:
    return f"`` {s} ``" if "`" in s else f"`{s}`"


def _cell(s: str) -> str:
    return " ".join(str(s).split()).replace("|", r"\|")


# -------------------------------------------------------------------------------------- examples
def _literal(t) -> str | None:
    if isinstance(t, torch.Tensor):
        if t.numel() > 24:
            return None
        vals = t.tolist()
        dt = {torch.float64: "torch.float64", torch.float32: "torch.float32", torch.int64: "torch.long",
              torch.bool: "torch.bool"}.get(t.dtype)
        if dt is None:
            return None
        return f"torch.tensor({_round(vals)}, dtype={dt})"
    if isinstance(t, (int, float, str, bool)) or t is None:
        return repr(t)
    return None


def _round(v):
    if isinstance(v, list):
        return "[" + ", ".join(_round(x) for x in v) + "]"
    if isinstance(v, float):
        return repr(float(f"{v:.17g}"))
    return repr(v)


def example_code(o) -> str:
    """Runnable code calling the objective on its registry example (literal tensors where small, else
    the registry's example generator), checked by executing it at build time."""
    ex = o.make_example(seed=0)
    literals = {k: _literal(v) for k, v in {**ex.inputs, **ex.options}.items()}
    call_args = ", ".join([*(f"{k}={k}" for k in ex.inputs), *(f"{k}={k}" for k in ex.options)])
    if all(v is not None for v in literals.values()):
        body = [f"{k} = {v}" for k, v in literals.items()]
    else:
        body = [f"ex = losskit.get({o.name!r}).make_example(seed=0)  # the registry's example inputs",
                *(f"{k} = ex.inputs[{k!r}]  # {_shape(v)}" for k, v in ex.inputs.items()),
                *(f"{k} = ex.options[{k!r}]  # {_shape(v)}" for k, v in ex.options.items())]
    fn = o.fn.__name__
    attr = f"losskit.{fn}" if hasattr(_losskit(), fn) else f"losskit.get({o.name!r}).fn"
    return "\n".join(["import torch", "import losskit", "", *body, "", f"loss = {attr}({call_args})",
                      "print(loss)"])


def _shape(v) -> str:
    if isinstance(v, torch.Tensor):
        return f"{v.dtype} {tuple(v.shape)}".replace("torch.", "")
    return type(v).__name__


def _losskit():
    import losskit

    return losskit


def run_example(code: str) -> str:
    """Execute an example; its printed output (so the page shows what the code prints)."""
    buf = io.StringIO()
    ns: dict = {"__name__": "__doc_example__"}
    old = sys.stdout
    sys.stdout = buf
    try:
        exec(compile(code, "<example>", "exec"), ns)
    finally:
        sys.stdout = old
    return buf.getvalue().strip()


# ---------------------------------------------------------------------------------------- 1-D plot
def _slice(o):
    """(x0, direction, input name, x-label) for the natural 1-D slice of the objective's example."""
    ex = o.make_example(seed=0)
    name = ex.grad[0] if ex.grad else next(
        (k for k, v in ex.inputs.items() if isinstance(v, torch.Tensor) and v.is_floating_point()), None)
    if name is None:
        return None
    x0 = ex.inputs[name]
    kind = o.input_kind.name
    if kind in ("logits+labels", "student+teacher logits") and "target" in ex.inputs \
            and not ex.inputs["target"].is_floating_point() and x0.dim() == 2:
        y = ex.inputs["target"].clamp_min(0)
        d = torch.nn.functional.one_hot(y, x0.shape[1]).to(x0.dtype)
        d = d - d.mean(1, keepdim=True)
        return ex, name, d, "t: margin added to the true class's logit"
    if kind == "binary logits+targets" and "target" in ex.inputs:
        d = (2 * ex.inputs["target"].to(x0.dtype) - 1)
        return ex, name, d, "t: margin added towards the target"
    g = torch.Generator().manual_seed(1)
    d = torch.randn(x0.shape, generator=g, dtype=x0.dtype)
    d = d / d.norm() * math.sqrt(max(x0.numel(), 1))
    return ex, name, d, f"t: step along a fixed random direction in {name}"


def plot_png(o, points: int = 41) -> bytes | None:
    """PNG of the loss and dL/dt along the 1-D slice, or None where it does not apply."""
    if o.family in NO_PLOT_FAMILIES:
        return None
    sl = _slice(o)
    if sl is None:
        return None
    ex, name, d, xlabel = sl
    import time

    from losskit._core.errors import LossInputError

    x0 = ex.inputs[name]
    try:  # an objective that is slow to evaluate gets fewer points, or no plot (the build stays short)
        o.fn(**ex.inputs, **ex.options)  # (the first call warms up)
        start = time.perf_counter()
        o.fn(**ex.inputs, **ex.options)
    except (LossInputError, RuntimeError, ValueError):
        return None
    cost = time.perf_counter() - start
    if cost > 0.2:
        return None
    if cost > 0.02:
        points = max(9, min(points, int(0.4 / cost)))
    ts = torch.linspace(-3, 3, points, dtype=torch.float64)
    losses, grads = [], []
    for t in ts:
        x = (x0 + t * d).detach().requires_grad_(True)
        try:
            out = o.fn(**{**ex.inputs, name: x}, **ex.options)
            if isinstance(out, tuple):
                out = out[0]
            out = out.sum() if out.dim() else out
            (g,) = torch.autograd.grad(out, x)
            losses.append(out.item())
            grads.append((g * d).sum().item())
        except (LossInputError, RuntimeError, ValueError):
            losses.append(math.nan)
            grads.append(math.nan)
    if sum(math.isfinite(v) for v in losses) < 5:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 2.8), dpi=80)
    ax.plot(ts.numpy(), losses, label="loss", color="C0")
    ax.plot(ts.numpy(), grads, label="dL/dt", color="C1", linestyle="--")
    ax.axhline(0, color="0.7", linewidth=0.8)
    ax.set_xlabel(xlabel)
    ax.legend(loc="best", fontsize=8)
    ax.set_title(f"{o.name} on its example inputs", fontsize=9)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata={"Software": None})
    plt.close(fig)
    return buf.getvalue()


# ------------------------------------------------------------------------------------------ pages
@dataclass
class Site:
    files: dict[str, str | bytes]  # path under docs/ -> content
    nav: list  # the mkdocs nav entries of the generated part


def page_path(o) -> str:
    return f"objectives/{o.family}/{o.name}.md"


def _properties_section(o, reg) -> list[str]:
    from losskit.checks.api import INPUT_KINDS, check

    lines = ["## Properties", ""]
    verdicts = {}
    note = ""
    if o.input_kind.name in INPUT_KINDS:
        report = check(o.name)
        verdicts = {v.name: v for v in report.verdicts}
        note = (f"Verdicts of `losskit check {o.name}` computed when this page was built "
                f"({report.setting}).")
    else:
        note = (f"`losskit check` has no probes for the input kind *{o.input_kind.name}*; the claims are "
                "tested by the conformance suite and the family's tests.")
    lines += [note, "", "| property | claimed | verdict | meaning |", "|---|---|---|---|"]
    names = sorted(set(o.properties) | set(verdicts), key=lambda p: (p not in o.properties, p))
    for p in names:
        v = verdicts.get(p)
        verdict = f"{v.status}: {_cell(v.evidence)}" if v is not None else ""
        lines.append(f"| `{p}` | {'yes' if p in o.properties else ''} | {_cell(_escape_text(verdict))} | "
                     f"{_cell(_escape_text(reg.PROPERTIES.get(p, '')))} |")
    if not names:
        lines.append("| (none claimed) | | | |")
    return lines + [""]


def _arguments_section(o) -> list[str]:
    sig = inspect.signature(o.fn)
    lines = ["## Arguments", "", "| argument | kind | default | accepts |", "|---|---|---|---|"]
    for p in sig.parameters.values():
        kind = "option" if p.kind is inspect.Parameter.KEYWORD_ONLY else "input"
        default = "" if p.default is inspect.Parameter.empty else _code(repr(p.default))
        if kind == "option":
            accepts = repr(o.domains[p.name]) if p.name in o.domains else ""
        else:
            v = o.values.get(p.name)
            accepts = v.description if v is not None else "finite values" if p.name != "target" else ""
        lines.append(f"| `{p.name}` | {kind} | {default} | {_cell(_escape_text(accepts))} |")
    return lines + [""]


def _verified_section(o, oracles) -> list[str]:
    lines = ["## Verified against", ""]
    entries = oracles.get(o.name, [])
    for fname, e in entries:
        if hasattr(e, "repo"):
            who = "the authors' code" if e.source == "authors" else "a peer implementation"
            lines.append(f"- {who}: [{e.repo}](https://github.com/{e.repo}) `{e.path}` @ `{e.commit[:12]}`, "
                         f"agreement {e.agreement} (`tests/oracles/{fname}`)"
                         + (f"; differences: {_escape_text(' '.join(e.differences.split()))}"
                            if e.differences else ""))
        else:
            lines.append(f"- no reference code: {_escape_text(' '.join(e.reason.split()))}"
                         + (f"; checked against {_escape_text(' '.join(e.checked_against.split()))}"
                            if e.checked_against else ""))
    lines.append("- the conformance suite (`tests/test_conformance.py`): reductions, weights, dtypes, "
                 "gradients (gradcheck), declared option and value domains, batch splitting")
    return lines + [""]


def objective_page(o, reg, oracles, link, plot: bool) -> tuple[str, bytes | None]:
    doc = inspect.getdoc(o.fn) or ""
    paper = o.paper
    lines = [f"# {o.name}", "", f"*{o.family}* · input: *{_escape_text(o.input_kind.name)}* · "
             f"module: `losskit.{o.module.__name__}`", ""]
    lines += [rst_to_md(doc, link), ""]
    lines += ["## Formula", "", "```text", o.formula or "(see above)", "```", ""]
    if paper.is_standard:
        lines += ["## Paper", "", "A standard objective (textbook).", ""]
    else:
        ref = f"[arXiv:{paper.arxiv}](https://arxiv.org/abs/{paper.arxiv})" if paper.arxiv else ""
        lines += ["## Paper", "", f"{_escape_text(paper.cite())} {ref}".strip(), ""]
    lines += ["## Signature", "", "```python", o.signature, "```", ""]
    lines += _arguments_section(o)
    lines += _properties_section(o, reg)
    lines += _verified_section(o, oracles)
    code = example_code(o)
    printed = run_example(code)
    lines += ["## Example", "", "On the registry's example inputs (this code runs in the test suite):", "",
              "```python", code, "```", "", "prints", "", "```text", printed, "```", ""]
    png = plot_png(o) if plot else None
    if png is not None:
        lines += ["## Loss and gradient along a 1-D slice", "",
                  f"![loss and gradient of {o.name}]({o.name}.png)", ""]
    return "\n".join(lines), png


def arena_snapshot(path: pathlib.Path = ARENA_SNAPSHOT):
    """``(meta, boards, claims)`` of the stored arena run, recomputed from its raw trial rows with the arena's
    own leaderboard and claim code (the file holds results, never verdicts); ``None`` without the file."""
    import json

    if not path.exists():
        return None
    from losskit.arena.claims import task_claims
    from losskit.arena.leaderboard import boards
    from losskit.arena.store import Row

    data = json.loads(path.read_text())
    bs = boards([Row(**r) for r in data["rows"]])
    return data["meta"], bs, task_claims(bs)


def _fmt(v: float) -> str:
    return "nan" if v != v else f"{v:.4g}"


def arena_section(family: str, reg, snapshot, link) -> list[str]:
    """The leaderboards of the stored arena run in which objectives of ``family`` competed, and the paper
    claims those tasks check, with the verdicts this run gives them."""
    if snapshot is None:
        return []
    meta, bs, _ = snapshot
    names = {o.name for o in reg.objectives(family)}
    mine = [b for b in bs if any(e.objective in names for e in b.entries)]
    if not mine:
        return []
    lines = ["## In the arena", "",
             f"From a stored run (`{_escape_text(meta['command'])}`, {meta['date']}, losskit {meta['losskit']}, "
             f"torch {meta['torch']}; `docs/arena/results.json`, written by `scripts/arena_snapshot.py`). "
             "Mean ± std over seeds; ▲/▼: significantly better/worse than the task's baseline (paired t-test, "
             "p < 0.05), ·: not significant, ?: too few seeds. Rerun it yourself with the command above and "
             "`losskit arena report`.", ""]
    for b in mine:
        cfg = ", ".join(f"{k}={v}" for k, v in sorted(b.config.items()))
        lines += [f"### {b.task}" + (f" ({_escape_text(cfg)})" if cfg else ""), ""]
        head = " | ".join(f"{m} ({'lower' if not b.higher_is_better(m) else 'higher'} is better)"
                          for m in b.metrics)
        lines += [f"| rank | candidate | seeds | {head} | vs baseline |",
                  "|---|---|---|" + "---|" * len(b.metrics) + "---|"]
        for i, e in enumerate(b.ranked(), 1):
            url = link(e.objective)
            who = f"[`{e.label}`]({url})" if url else f"`{e.label}`"
            vals = " | ".join(f"{_fmt(e.mean(m))} ± {_fmt(e.std(m))}" for m in b.metrics)
            lines.append(f"| {i} | {who} | {e.n} | {vals} | {b.marker(e, b.metrics[0])} |")
        lines.append("")
    # the claims of these tasks, checked on every board of the tasks (a claim may compare configurations)
    from losskit.arena.claims import task_claims

    tasks = {b.task for b in mine}
    mine_claims = task_claims([b for b in bs if b.task in tasks])
    if mine_claims:
        lines += ["### Paper claims checked in this run", "", "| claim | source | verdict | evidence |",
                  "|---|---|---|---|"]
        for c in mine_claims:
            lines.append(f"| {_cell(_escape_text(c.statement))} | {_cell(_escape_text(c.source))} | "
                         f"**{c.verdict}** | {_cell(_escape_text(c.evidence))} |")
        lines.append("")
    return lines


def family_page(family: str, objs, reg, snapshot=None, link=None) -> str:
    guide = GUIDES.get(family)
    lines = [f"# {family}", ""]
    if guide:
        lines += [f"The guide, with when to use which objective: [{family}](../../{guide}).", ""]
    lines += [f"{len(objs)} objectives, each page generated from the registry.", "",
              "| objective | summary | paper | claims |", "|---|---|---|---|"]
    for o in objs:
        paper = "standard" if o.paper.is_standard else (
            f"[{o.paper.year} arXiv:{o.paper.arxiv}](https://arxiv.org/abs/{o.paper.arxiv})"
            if o.paper.arxiv else _escape_text(o.paper.cite()))
        claims = ", ".join(sorted(o.properties))
        lines.append(f"| [`{o.name}`]({o.name}.md) | {_cell(_escape_text(o.summary))} | {paper} | {claims} |")
    if snapshot is not None:
        lines += [""] + arena_section(family, reg, snapshot, link or (lambda name: None))
    return "\n".join(lines).rstrip() + "\n"


def build(plots: bool = True) -> Site:
    # Tiny float64 inputs: one thread. (With 2 intra-op threads torch 2.13's CPU log_softmax takes ~7 ms
    # on a 5 x 6 float64 tensor instead of ~2 us, which made the plots the bulk of the build.)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _build(plots)
    finally:
        torch.set_num_threads(threads)


def _build(plots: bool) -> Site:
    reg = registry()
    oracles = oracle_entries()
    objs = reg.objectives()
    by_name = {o.name: o for o in objs}
    files: dict[str, str | bytes] = {}
    nav_families = []
    snapshot = arena_snapshot()
    for family in reg.families():
        fobjs = sorted(reg.objectives(family), key=lambda o: o.name)

        def link(name, _fam=family):
            t = by_name.get(name)
            if t is None:
                return None
            return f"{t.name}.md" if t.family == _fam else f"../{t.family}/{t.name}.md"

        files[f"objectives/{family}/index.md"] = family_page(family, fobjs, reg, snapshot, link)
        entries = [f"objectives/{family}/index.md"]
        for o in fobjs:

            md, png = objective_page(o, reg, oracles, link, plot=plots)
            files[page_path(o)] = md
            if png is not None:
                files[f"objectives/{o.family}/{o.name}.png"] = png
            entries.append({o.name: page_path(o)})
        nav_families.append({family: entries})
    files["objectives/index.md"] = _all_page(objs)
    files["migration.md"] = migration_page()
    return Site(files=files, nav=[{"Objectives": ["objectives/index.md", *nav_families]},
                                  {"Migration": "migration.md"}])


def _all_page(objs) -> str:
    lines = ["# Objectives", "", f"{len(objs)} registered objectives (`losskit.list()`), one page each. "
             "Which seed papers they implement, and why the others are not here: "
             "[coverage](../coverage.md).", "",
             "| objective | family | summary |", "|---|---|---|"]
    for o in sorted(objs, key=lambda o: o.name):
        lines.append(f"| [`{o.name}`]({o.family}/{o.name}.md) | [{o.family}]({o.family}/index.md) | "
                     f"{_cell(_escape_text(o.summary))} |")
    return "\n".join(lines) + "\n"


def migration_page() -> str:
    rows = _load("_lk_migration_rows", SCRIPTS / "migration_rows.py")
    return rows.page()


def main(argv: list[str]) -> int:
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("outdir")
    ap.add_argument("--no-plots", action="store_true")
    a = ap.parse_args(argv)
    site = build(plots=not a.no_plots)
    out = pathlib.Path(a.outdir)
    for rel, content in site.files.items():
        p = out / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        (p.write_bytes if isinstance(content, bytes) else p.write_text)(content)
    print(f"{len(site.files)} files under {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
