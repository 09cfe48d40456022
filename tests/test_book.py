"""End to end: every study notebook in the smoke profile, then the Jupyter Book build.

This is what keeps chapters from rotting: a notebook that no longer runs, a glue key the prose
cites but the code no longer sets, or a broken image or link fails here. The build itself is the
session fixture ``built_book`` (conftest), shared with the browser test.
"""

from __future__ import annotations

import re
from html.parser import HTMLParser
from urllib.parse import unquote, urlparse

import pytest

from clipnb import registry

pytestmark = pytest.mark.slow


class _Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.refs: list[str] = []
        self.resources: list[str] = []  # what a browser loads with the page (not links)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "img" and attrs.get("src"):
            self.refs.append(attrs["src"])
        if tag == "a" and attrs.get("href"):
            self.refs.append(attrs["href"])
        if tag in ("script", "img", "iframe", "source", "video", "audio") and attrs.get("src"):
            self.resources.append(attrs["src"])
        if tag == "link" and attrs.get("href"):
            self.resources.append(attrs["href"])


def test_every_chapter_and_the_reproducibility_page_are_built(built_book):
    for study in registry.STUDIES:
        page = built_book / "executed" / f"{study.name}.html"
        assert page.exists(), page
        assert study.title in page.read_text()
    repro = (built_book / "executed" / "reproducibility.html").read_text()
    for study in registry.STUDIES:
        assert study.name in repro
    assert (built_book / "index.html").exists()


def test_every_image_and_local_link_resolves(built_book):
    missing = []
    for page in built_book.rglob("*.html"):
        parser = _Links()
        parser.feed(page.read_text())
        for ref in parser.refs:
            url = urlparse(ref)
            if url.scheme or ref.startswith(("#", "mailto:", "//")) or not url.path:
                continue
            target = (page.parent / unquote(url.path)).resolve()
            if not target.exists():
                missing.append(f"{page.relative_to(built_book)} -> {ref}")
    assert not missing, missing[:20]


def test_no_page_or_style_sheet_loads_anything_from_outside(built_book):
    outside = []
    for page in built_book.rglob("*.html"):
        parser = _Links()
        parser.feed(page.read_text())
        outside += [
            f"{page.name}: {r}"
            for r in parser.resources
            if urlparse(r).scheme or r.startswith("//")
        ]
    for sheet in built_book.rglob("*.css"):
        for url in re.findall(r"url\(\s*[\"']?([^)\"']+)", sheet.read_text(errors="replace")):
            if urlparse(url).scheme not in ("", "data"):
                outside.append(f"{sheet.name}: {url}")
    assert not outside, outside[:20]
    assert (built_book / "_static" / "mathjax" / "tex-chtml.js").exists(), (
        "MathJax ships with the book"
    )
