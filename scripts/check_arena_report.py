#!/usr/bin/env python3
"""Check that an arena report renders in a real browser: headless Chromium loads the page, every image
decodes (``naturalWidth > 0``), and a screenshot is taken.

Usage::

    losskit arena                      # fill the store
    losskit arena report --out arena_report
    python scripts/check_arena_report.py arena_report/index.html [--screenshot shot.png]

Chromium: ``apt-get install -y chromium`` (Debian/Ubuntu) or set ``CHROMIUM=/path/to/chrome``. The check
writes a copy of the page with a small probe script appended (``_render_check.html`` beside the report,
so relative image paths resolve as in the report), runs
``chromium --headless --no-sandbox --disable-gpu --disable-background-networking ... --dump-dom`` on it,
and reads the probe's verdict from the DOM. Exit status 0: rendered and every image loaded.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-extensions", "--disable-sync", "--disable-default-apps", "--no-first-run",
         "--disable-dev-shm-usage", "--mute-audio", "--hide-scrollbars", "--allow-file-access-from-files",
         "--virtual-time-budget=10000"]

PROBE = """<script>
window.addEventListener('load', function () {
  var imgs = Array.from(document.images);
  var ok = imgs.filter(function (i) { return i.complete && i.naturalWidth > 0; });
  var bad = imgs.filter(function (i) { return !(i.complete && i.naturalWidth > 0); })
                .map(function (i) { return i.getAttribute('src'); });
  var d = document.createElement('pre');
  d.id = 'render-check';
  d.textContent = 'images loaded: ' + ok.length + ' of ' + imgs.length + '; tables: ' +
    document.querySelectorAll('table').length + '; broken: ' + JSON.stringify(bad);
  document.body.appendChild(d);
});
</script>"""


def find_chromium() -> str | None:
    env = os.environ.get("CHROMIUM")
    if env:
        return env
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


def check(html_path: Path, screenshot: Path | None = None, timeout: float = 90.0) -> tuple[bool, str]:
    browser = find_chromium()
    if browser is None:
        return False, "no Chromium found (apt-get install -y chromium, or set CHROMIUM=...)"
    html_path = html_path.resolve()
    probe = html_path.with_name("_render_check.html")
    text = html_path.read_text(encoding="utf-8")
    probe.write_text(text.replace("</body>", PROBE + "</body>") if "</body>" in text else text + PROBE,
                     encoding="utf-8")
    try:
        with tempfile.TemporaryDirectory() as profile:
            base = [browser, *FLAGS, f"--user-data-dir={profile}"]
            out = subprocess.run([*base, "--dump-dom", probe.as_uri()], capture_output=True, text=True,
                                 timeout=timeout)
            m = re.search(r"images loaded: (\d+) of (\d+); tables: (\d+); broken: (\[.*?\])", out.stdout)
            if not m:
                return False, f"no render verdict in the DOM (chromium exit {out.returncode}): {out.stderr[-800:]}"
            loaded, total = int(m.group(1)), int(m.group(2))
            if screenshot is not None:
                subprocess.run([*base, f"--screenshot={screenshot.resolve()}", "--window-size=1200,2000",
                                html_path.as_uri()], capture_output=True, timeout=timeout)
            verdict = m.group(0)
            return (total > 0 and loaded == total), verdict
    finally:
        probe.unlink(missing_ok=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("html", type=Path, help="the report's index.html")
    ap.add_argument("--screenshot", type=Path, default=None, help="also save a screenshot here")
    args = ap.parse_args(argv)
    ok, verdict = check(args.html, args.screenshot)
    print(verdict)
    if args.screenshot is not None and args.screenshot.exists():
        print(f"screenshot: {args.screenshot} ({args.screenshot.stat().st_size} bytes)")
    print("OK: the report renders and every image loads" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
