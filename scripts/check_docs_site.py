#!/usr/bin/env python3
"""Check the built documentation site (``make docs`` -> ``site/``) in a real browser.

Headless Chromium opens, over a local HTTP server, the index, one objective page per family and the
migration page, and a probe script (put first in ``<head>`` of a copy of each page) reports:

- the math is rendered: the page's MathML (``<math>``, written at build time) is laid out with a nonzero
  size (objective pages and the index must have some);
- every image decoded (``naturalWidth > 0``); objective pages with a plot have one;
- no console error, no uncaught exception, no resource (script, stylesheet, image) that failed to load.

Usage::

    make docs
    python scripts/check_docs_site.py [site] [--screenshot shot.png]

Exit status 0 when every page passes. Chromium: ``apt-get install -y chromium`` or ``CHROMIUM=...``.
"""

from __future__ import annotations

import argparse
import functools
import http.server
import json
import re
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from check_arena_report import FLAGS, find_chromium  # noqa: E402

PROBE = """<script>
(function () {
  var errors = [];
  var origError = console.error;
  console.error = function () { errors.push('console.error: ' + Array.from(arguments).join(' '));
                                return origError.apply(console, arguments); };
  window.addEventListener('error', function (e) {
    var t = e.target;
    if (t && t !== window && (t.src || t.href)) errors.push('failed to load: ' + (t.src || t.href));
    else errors.push('uncaught: ' + e.message);
  }, true);
  window.addEventListener('unhandledrejection', function (e) { errors.push('unhandled rejection: ' + e.reason); });
  window.addEventListener('load', function () {
    setTimeout(function () {
      var maths = Array.from(document.querySelectorAll('math'));
      var laid = maths.filter(function (m) { var r = m.getBoundingClientRect(); return r.width > 0 && r.height > 0; });
      var imgs = Array.from(document.images);
      var ok = imgs.filter(function (i) { return i.complete && i.naturalWidth > 0; });
      var d = document.createElement('pre');
      d.id = 'site-check';
      d.textContent = 'SITECHECK ' + JSON.stringify({math: maths.length, math_laid_out: laid.length,
        images: imgs.length, images_ok: ok.length, errors: errors, title: document.title});
      document.body.appendChild(d);
    }, 500);
  });
})();
</script>"""


def pages(site: Path) -> list[tuple[str, str]]:
    """(label, path relative to site) of the pages to open: index, one objective per family, migration."""
    out = [("index", "index.html")]
    for fam in sorted(p for p in (site / "objectives").iterdir() if p.is_dir()):
        objs = sorted(p for p in fam.iterdir() if p.is_dir() and (p / "index.html").exists())
        with_plot = [p for p in objs if (fam / f"{p.name}.png").exists()]
        pick = (with_plot or objs)[0]
        out.append((f"{fam.name}/{pick.name}", f"objectives/{fam.name}/{pick.name}/index.html"))
    out.append(("migration", "migration/index.html"))
    return out


def _serve(root: Path):
    handler = functools.partial(_Quiet, directory=str(root))
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):  # keep the output to the verdicts
        pass


def check_page(browser: str, base_url: str, site: Path, rel: str, profile: str, timeout: float) -> dict:
    page = site / rel
    probe = page.with_name("_site_check.html")
    text = page.read_text(encoding="utf-8")
    probe.write_text(re.sub(r"<head>", "<head>" + PROBE, text, count=1), encoding="utf-8")
    try:
        url = f"{base_url}/{probe.relative_to(site).as_posix()}"
        out = subprocess.run([browser, *FLAGS, f"--user-data-dir={profile}", "--dump-dom", url],
                             capture_output=True, text=True, timeout=timeout)
        m = re.search(r"SITECHECK (\{.*?\})</pre>", out.stdout, flags=re.S)
        if not m:
            return {"errors": [f"no verdict in the DOM (chromium exit {out.returncode}): {out.stderr[-600:]}"]}
        import html

        return json.loads(html.unescape(m.group(1)))
    finally:
        probe.unlink(missing_ok=True)


def verdict(label: str, rel: str, r: dict) -> list[str]:
    problems = list(r.get("errors", []))
    if r.get("images", 0) != r.get("images_ok", 0):
        problems.append(f"images loaded {r.get('images_ok')} of {r.get('images')}")
    if r.get("math", 0) != r.get("math_laid_out", 0):
        problems.append(f"math laid out {r.get('math_laid_out')} of {r.get('math')}")
    if label.count("/") == 1 and not r.get("math"):
        problems.append("no rendered math on an objective page")
    return problems


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("site", nargs="?", type=Path, default=Path("site"))
    ap.add_argument("--screenshot", type=Path, default=None, help="save a screenshot of an objective page")
    ap.add_argument("--timeout", type=float, default=90.0)
    a = ap.parse_args(argv)
    browser = find_chromium()
    if browser is None:
        print("no Chromium found (apt-get install -y chromium, or set CHROMIUM=...)")
        return 2
    site = a.site.resolve()
    if not (site / "index.html").exists():
        print(f"no built site in {site} (make docs)")
        return 2
    srv = _serve(site)
    base = f"http://127.0.0.1:{srv.server_address[1]}"
    failed = 0
    try:
        with tempfile.TemporaryDirectory() as profile:
            todo = pages(site)
            for label, rel in todo:
                r = check_page(browser, base, site, rel, profile, a.timeout)
                problems = verdict(label, rel, r)
                failed += bool(problems)
                print(f"{'ok  ' if not problems else 'FAIL'} {label}: math {r.get('math_laid_out', 0)}/"
                      f"{r.get('math', 0)}, images {r.get('images_ok', 0)}/{r.get('images', 0)}"
                      + "".join(f"\n       {p}" for p in problems))
            if a.screenshot is not None:
                rel = todo[1][1]
                subprocess.run([browser, *FLAGS, f"--user-data-dir={profile}",
                                f"--screenshot={a.screenshot.resolve()}", "--window-size=1200,1800",
                                f"{base}/{rel}"], capture_output=True, timeout=a.timeout)
                print(f"screenshot of {rel}: {a.screenshot}")
    finally:
        srv.shutdown()
    print(f"{len(todo) - failed} of {len(todo)} pages pass")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
