"""Test-wide settings: offline, a private cache, no display.

Set before clipnb is imported, and inherited by every notebook kernel the tests start, so that no
test (and no notebook a test executes) can reach the network or touch the user's cache.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest
import torch

_CACHE = Path(tempfile.mkdtemp(prefix="clipnb-test-cache-"))
os.environ["CLIPNB_CACHE"] = str(_CACHE)
os.environ["CLIPNB_OFFLINE"] = "1"
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["MPLBACKEND"] = "Agg"
os.environ["PYDEVD_DISABLE_FILE_VALIDATION"] = "1"
os.environ.pop("CLIPNB_DATA", None)

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def repo() -> Path:
    return REPO


@pytest.fixture(scope="session")
def smoke_bundle():
    """The smoke profile's pretrained tiny CLIP (trained once per test session, in seconds)."""
    from clipnb.methods.pretrain import load_pretrained

    return load_pretrained("smoke", progress=False)


@pytest.fixture()
def fresh_cache(tmp_path, monkeypatch) -> Path:
    """An empty cache folder for tests that count cache hits."""
    monkeypatch.setenv("CLIPNB_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models run fastest single-threaded on the shared 2-core machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def run_studies_and_build_book(
    book: Path, profile: str, **run_kwargs: Any
) -> tuple[Path, list[Any]]:
    """Copy the repository's book to ``book``, run every study into it, build it strictly.

    Fails on any failed study, and on any warning of ``jupyter-book build -W -n --keep-going``.
    Returns the HTML folder and the studies' outcomes.
    """
    from clipnb import runner

    shutil.copytree(REPO / "book", book, ignore=shutil.ignore_patterns("_build", "executed"))
    outcomes = runner.run(None, profile, out_dir=book / "executed", **run_kwargs)
    failed = [f"{o.study}: {o.message}" for o in outcomes if o.status != "ran"]
    assert not failed, failed
    jb = Path(sys.executable).parent / "jupyter-book"
    proc = subprocess.run(
        [str(jb), "build", str(book), "-W", "-n", "--keep-going"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    return book / "_build" / "html", outcomes


@pytest.fixture(scope="session")
def built_book(tmp_path_factory) -> Path:
    """Every study in the smoke profile, then the book: its HTML folder (built once per session).

    A copy of ``book/`` in a temporary folder, so a test run never touches the user's build.
    """
    html, _ = run_studies_and_build_book(tmp_path_factory.mktemp("site") / "book", "smoke")
    return html
