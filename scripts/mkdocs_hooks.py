"""MkDocs hooks (``hooks:`` in mkdocs.yml): add the pages generated from the registry
(``scripts/build_docs.py``) to the site, and render the math as MathML at build time.

Math is written ``$...$`` / ``$$...$$`` (``pymdownx.arithmatex`` marks it); :func:`on_page_content`
converts each piece with ``latex2mathml``, so pages need no JavaScript math renderer and no network:
browsers render MathML natively. A formula that does not convert is a warning (an error under
``--strict``).
"""

from __future__ import annotations

import html
import logging
import pathlib
import re
import sys

from mkdocs.structure.files import File

ROOT = pathlib.Path(__file__).resolve().parents[1]
for _p in (ROOT / "src", ROOT / "scripts"):
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))

import build_docs  # noqa: E402

log = logging.getLogger("mkdocs.hooks.losskit")
_SITE: build_docs.Site | None = None


def _site() -> build_docs.Site:
    global _SITE
    if _SITE is None:
        import os

        _SITE = build_docs.build(plots=os.environ.get("LOSSKIT_DOCS_PLOTS", "1") != "0")
    return _SITE


def on_config(config, **kwargs):
    import losskit

    config.extra["losskit_version"] = losskit.__version__
    nav = config.nav or []
    names = [next(iter(e)) if isinstance(e, dict) else e for e in nav]
    at = names.index("Oracles") if "Oracles" in names else len(nav)
    config.nav = nav[:at] + _site().nav + nav[at:]
    return config


def on_files(files, config, **kwargs):
    for rel, content in _site().files.items():
        files.append(File.generated(config, rel, content=content))
    return files


_BLOCK = re.compile(r'<div class="arithmatex">\s*\\\[(.*?)\\\]\s*</div>', re.S)
_INLINE = re.compile(r'<span class="arithmatex">\\\((.*?)\\\)</span>', re.S)


def _mathml(tex: str, display: str, where: str) -> str:
    from latex2mathml.converter import convert

    tex = html.unescape(tex).strip()
    try:
        return convert(tex, display=display)
    except Exception as e:  # noqa: BLE001  (any failure of the converter: report the formula)
        log.warning("%s: formula not converted to MathML (%s): %s", where, e, tex)
        return f"<code>{html.escape(tex)}</code>"


def on_page_content(content, page, **kwargs):
    where = page.file.src_uri
    content = _BLOCK.sub(lambda m: f'<div class="math">{_mathml(m.group(1), "block", where)}</div>', content)
    return _INLINE.sub(lambda m: _mathml(m.group(1), "inline", where), content)
