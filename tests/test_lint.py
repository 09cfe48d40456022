"""The tree is ruff-clean (package, notebooks and tests), so CI catches style rot too."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def test_ruff_check_and_format(repo):
    ruff = Path(sys.executable).parent / "ruff"
    targets = ["clipnb", "notebooks", "tests"]
    check = subprocess.run([str(ruff), "check", *targets], cwd=repo, capture_output=True, text=True)
    assert check.returncode == 0, check.stdout[-3000:]
    fmt = subprocess.run(
        [str(ruff), "format", "--check", *targets], cwd=repo, capture_output=True, text=True
    )
    assert fmt.returncode == 0, fmt.stdout[-3000:]
