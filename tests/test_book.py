"""End to end: every study notebook in the smoke profile, then the Jupyter Book build.

This is what keeps chapters from rotting: a notebook that no longer runs, a glue key the prose
cites but the code no longer sets, or a broken image or link fails here.
"""

from __future__ import annotations

from html.parser import HTMLParser
from urllib.parse import unquote, urlparse

import pytest

from clipnb import studies
from tests.conftest import run_studies_and_build_book

pytestmark = pytest.mark.slow


class _Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.refs: list[str] = []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "img" and attrs.get("src"):
            self.refs.append(attrs["src"])
        if tag == "a" and attrs.get("href"):
            self.refs.append(attrs["href"])


@pytest.fixture(scope="module")
def built_book(tmp_path_factory, repo):
    html, _ = run_studies_and_build_book(tmp_path_factory.mktemp("site") / "book", "smoke")
    return html


def test_every_chapter_and_the_reproducibility_page_are_built(built_book):
    for study in studies.STUDIES:
        page = built_book / "executed" / f"{study.name}.html"
        assert page.exists(), page
        assert study.title in page.read_text()
    repro = (built_book / "executed" / "reproducibility.html").read_text()
    for study in studies.STUDIES:
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


def test_no_glue_key_is_missing(built_book):
    for page in (built_book / "executed").glob("*.html"):
        text = page.read_text()
        assert "glue" not in text.lower() or "Could not find" not in text, page
