"""The built book in a real browser: every page of _build/html opened in
headless Chromium.

Run after `make book` with `make check-book` (not part of `make test`, which
runs before the book exists). Checks, per page: math rendered with no MathJax
error, every image loaded, every internal link and anchor resolves, no
console error, no block of the article scrolls sideways at a laptop's window
width, and Chinese text is drawn by a CJK font, not as empty boxes; no page
shows a traceback or a path of the machine that built it. Chromium is
driven over the DevTools protocol by tools/devtools.py.
"""
import os
import re
import sys
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tools"))  # a folder of scripts
from devtools import BROWSER, WINDOW, DevTools  # noqa: E402

# BOOK_HTML: check another build
HTML = Path(os.environ.get("BOOK_HTML", ROOT / "_build" / "html"))
PAGES = sorted(p for p in HTML.rglob("*.html")
               if not p.relative_to(HTML).parts[0].startswith("_"))

if not BROWSER:
    pytest.skip("no chromium on PATH: install Debian's `chromium` to run the "
                "browser test (.ci/run does)", allow_module_level=True)
if not PAGES:
    pytest.skip(f"no built book in {HTML}: run `make book` first",
                allow_module_level=True)


@pytest.fixture(scope="module")
def visited():
    browser = DevTools()
    try:
        yield {path: browser.visit(path) for path in PAGES}
    finally:
        browser.close()


_ids = {}


def anchors(path):
    if path not in _ids:
        text = path.read_text(encoding="utf-8")
        _ids[path] = set(re.findall(r'\bid="([^"]+)"', text))
    return _ids[path]


def page_id(path):
    return str(path.relative_to(HTML))


@pytest.mark.parametrize("page", PAGES, ids=page_id)
def test_math_renders(visited, page):
    found, _ = visited[page]
    if found["math"]:
        assert found["mathjax"], "the page has math but MathJax did not load"
    assert not found["untypeset"], f"math left as TeX: {found['untypeset']}"
    assert not found["math_errors"], f"MathJax errors: {found['math_errors']}"


@pytest.mark.parametrize("page", PAGES, ids=page_id)
def test_images_load(visited, page):
    found, _ = visited[page]
    assert not found["broken_images"], f"images: {found['broken_images']}"


@pytest.mark.parametrize("page", PAGES, ids=page_id)
def test_internal_links_resolve(visited, page):
    found, _ = visited[page]
    broken = []
    for link in found["links"]:
        parts = urlsplit(link)
        if parts.scheme != "file":
            continue  # the web is out of reach here; only the book's own links
        target = Path(unquote(parts.path))
        if target.is_dir():
            target = target / "index.html"
        if not target.exists():
            broken.append(f"{link} (no such file)")
        elif parts.fragment and target.suffix == ".html" and \
                unquote(parts.fragment) not in anchors(target):
            broken.append(f"{link} (no such anchor)")
    assert not broken, f"{len(broken)} broken links: {broken}"


@pytest.mark.parametrize("page", PAGES, ids=page_id)
def test_no_console_errors(visited, page):
    _, errors = visited[page]
    assert not errors, f"console errors: {errors}"


@pytest.mark.parametrize("page", PAGES, ids=page_id)
def test_nothing_scrolls_sideways(visited, page):
    found, _ = visited[page]
    assert not found["scrolls"], (
        f"{len(found['scrolls'])} blocks wider than the column at "
        f"{WINDOW[0]} px: {found['scrolls']}")


@pytest.mark.parametrize("page", PAGES, ids=page_id)
def test_no_traceback_or_build_machine_path(page):
    text = page.read_text(encoding="utf-8")
    found = [marker for marker in (str(HTML.parent.parent), "site-packages",
                                   "Traceback (most recent call last)")
             if marker in text]
    assert not found, f"the page shows {found}: print the one-line error"


@pytest.mark.parametrize("page", PAGES, ids=page_id)
def test_chinese_text_renders(visited, page):
    """Every page's sidebar links the Chinese interview page; its characters
    must be drawn by a CJK font, not as empty boxes (.ci/run installs
    fonts-noto-cjk)."""
    found, _ = visited[page]
    chars, distinct = found["cjk"]["chars"], found["cjk"]["distinct"]
    if len(chars) < 2:
        return
    assert distinct >= 0.9 * len(chars), (
        f"{len(chars)} Chinese characters ({chars[:10]}...) are drawn as "
        f"{distinct} distinct shapes: no CJK font, they show as empty boxes")
