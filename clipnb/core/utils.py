"""Small shared helpers: seeding, hashing, atomic writes and the cache location."""

from __future__ import annotations

import hashlib
import json
import os
import random
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from threadpoolctl import threadpool_limits

PACKAGE_DIR = Path(__file__).resolve().parents[1]


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch, and ask torch for deterministic kernels.

    Same parameters and seed must give the same numbers on a rerun, so every study calls this first.
    """
    random.seed(seed)
    np.random.seed(seed % 2**32)  # noqa: NPY002 - seeds code that uses the legacy global RNG
    torch.manual_seed(seed)
    # warn_only: a few CPU ops (e.g. some index_add paths) have no deterministic variant flag; they
    # are deterministic on CPU anyway, and a hard error would stop a study for no benefit.
    torch.use_deterministic_algorithms(True, warn_only=True)


def one_blas_thread() -> threadpool_limits:
    """Run numpy/scipy BLAS on one thread inside the ``with`` block (scikit-learn's lbfgs probes).

    On these small problems a second OpenBLAS thread only adds synchronisation: a digits probe
    measured 9.7 s with two threads and 0.3 s with one, while a pretraining run shared the CPU.
    """
    return threadpool_limits(limits=1, user_api="blas")


def cache_dir() -> Path:
    """Root of the on-disk cache (features, checkpoints): ``$CLIPNB_CACHE`` or ``~/.cache/clipnb``."""
    root = os.environ.get("CLIPNB_CACHE") or os.path.join(Path.home(), ".cache", "clipnb")
    path = Path(root)
    path.mkdir(parents=True, exist_ok=True)
    return path


def stable_hash(obj: Any, length: int = 16) -> str:
    """A short sha256 of a JSON-serialisable object (keys sorted), stable across runs and machines."""
    blob = json.dumps(obj, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:length]


def file_hash(path: str | os.PathLike, length: int = 16) -> str:
    """sha256 of a file's bytes (used to key caches on checkpoints, so a changed file is never reused)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()[:length]


def array_hash(array: np.ndarray, length: int = 16) -> str:
    """sha256 of an array's dtype, shape and bytes."""
    digest = hashlib.sha256()
    digest.update(str((array.dtype.str, array.shape)).encode())
    digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()[:length]


def tree_hash(paths: Iterable[Path], root: Path, length: int = 16) -> str:
    """sha256 over files' relative names and bytes (order-independent)."""
    digest = hashlib.sha256()
    for path in sorted(paths):
        digest.update(str(path.relative_to(root)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:length]


def _read_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# Read once: os.umask can only be read by setting it, which is not thread-safe.
_UMASK = _read_umask()


def _atomic_replace(path: str | os.PathLike, write: Callable[[str], None]) -> None:
    """Call ``write(tmp)`` on a temp file beside ``path``, then rename it over ``path``.

    An interrupted run therefore leaves either the old file or the new one, never half of one.
    The file gets the usual permissions (``mkstemp`` alone would make it private to the owner).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~_UMASK)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (temp file + rename)."""
    _atomic_replace(path, lambda tmp: Path(tmp).write_bytes(data))


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> None:
    """``torch.save`` through a temp file + rename."""
    _atomic_replace(path, lambda tmp: torch.save(obj, tmp))


def _host_cpu_ticks() -> tuple[int, int] | None:
    """(steal, total) CPU ticks since boot from ``/proc/stat``; None where it does not exist."""
    try:
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]
        ticks = [int(f) for f in fields]
    except (OSError, ValueError):
        return None
    return ticks[7], sum(ticks)


class Stopwatch:
    """Wall time, this process's CPU time, and the share of the host's CPU time that a hypervisor
    took from this virtual machine ("steal") while it ran.

    On a shared cloud machine the same work can take twice as long in wall time; the CPU time and
    the steal share say whether a slow run was the code or the neighbours.
    """

    def __init__(self) -> None:
        self._wall = time.perf_counter()
        self._cpu = time.process_time()
        self._ticks = _host_cpu_ticks()

    def read(self) -> dict[str, float]:
        """``seconds`` (wall), ``cpu_seconds`` and ``steal_percent`` (NaN off Linux) so far."""
        ticks = _host_cpu_ticks()
        steal = float("nan")
        if self._ticks is not None and ticks is not None and ticks[1] > self._ticks[1]:
            steal = 100.0 * (ticks[0] - self._ticks[0]) / (ticks[1] - self._ticks[1])
        return {
            "seconds": time.perf_counter() - self._wall,
            "cpu_seconds": time.process_time() - self._cpu,
            "steal_percent": steal,
        }
