"""Run a sweep's independent trials in this process or on Ray, with the same results either way.

A sweep hands :func:`map_trials` a pure function ``fn(spec, shared) -> result``, a list of trial
specifications and the large read-only inputs every trial reads (``shared``: models, cached
features, datasets). Results come back in the order of ``specs``, whichever executor ran them:

* ``local`` (the default): in this process, one trial after the other;
* ``ray``: each trial a Ray task (one GPU each on a GPU machine, one CPU otherwise), ``shared``
  put in Ray's object store once. Without an address a local Ray starts inside the process,
  bound to the loopback address; with one (``ray start --head`` prints it) the trials fan out
  over the cluster.

The executor is chosen by :func:`use` (the command line's ``--executor``) or by the environment
(``CLIPNB_EXECUTOR``, ``CLIPNB_RAY_ADDRESS``), which papermill-executed notebooks inherit.

Results are identical across executors because every trial seeds itself from its spec (never
from the order it runs in) and computes with the same number of threads wherever it runs
(:func:`trial_threads`: float sums in matrix products depend on how many threads share them). With a ``journal`` key, each finished trial is saved as it finishes:
when a trial fails, :class:`TrialError` names its spec and the worker's traceback, the finished
ones stay on disk, and the next call with the same key runs only the missing trials. The runner
forgets a study's trials once the study has finished (and before a forced re-run).
"""

from __future__ import annotations

import os
import pickle
import re
import shutil
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from clipnb.core.utils import atomic_write_bytes, cache_dir, stable_hash

__all__ = [
    "EXECUTORS",
    "ExecutorChoice",
    "TrialError",
    "choice",
    "clear_journal",
    "journal_dir",
    "map_trials",
    "ray_resources",
    "trial_threads",
    "use",
]

EXECUTORS: tuple[str, ...] = ("local", "ray")
ENV_EXECUTOR = "CLIPNB_EXECUTOR"
ENV_RAY_ADDRESS = "CLIPNB_RAY_ADDRESS"
#: Threads each trial computes with, on every executor (default: see :func:`trial_threads`).
ENV_TRIAL_THREADS = "CLIPNB_TRIAL_THREADS"
#: Set by the runner for each study it executes: a hash of the notebook, its parameters, the
#: profile and the code it imports. Finished trials are saved under it (see ``journal``).
ENV_STUDY_KEY = "CLIPNB_STUDY_KEY"
#: The loopback address a project-started Ray binds to: no traffic leaves the machine.
LOOPBACK = "127.0.0.1"


class TrialError(RuntimeError):
    """A trial failed: its spec, the worker's traceback, and how many trials finished."""

    def __init__(self, desc: str, spec: Any, worker_traceback: str, finished: int, total: int):
        self.spec, self.worker_traceback = spec, worker_traceback
        self.finished, self.total = finished, total
        kept = (
            "they are saved and the next run of this sweep starts from them"
            if finished
            else "none finished"
        )
        super().__init__(
            f"{desc}: the trial {spec!r} failed ({finished} of {total} trials finished; {kept})."
            f"\nWorker traceback:\n{worker_traceback}"
        )


@dataclass(frozen=True)
class ExecutorChoice:
    """Which executor runs trials, and the Ray cluster to join (``None``: start a local one)."""

    name: str = "local"
    address: str | None = None

    def __post_init__(self) -> None:
        if self.name not in EXECUTORS:
            raise ValueError(
                f"Unknown executor {self.name!r}; known: {', '.join(EXECUTORS)} "
                f"(set by --executor or ${ENV_EXECUTOR})."
            )


def choice() -> ExecutorChoice:
    """The executor the environment asks for (``local`` unless ``CLIPNB_EXECUTOR`` says otherwise)."""
    name = os.environ.get(ENV_EXECUTOR, "").strip() or "local"
    address = os.environ.get(ENV_RAY_ADDRESS, "").strip() or None
    return ExecutorChoice(name, address)


def trial_threads() -> int:
    """Threads per trial: ``CLIPNB_TRIAL_THREADS``, else this process's torch threads on a CPU
    machine, else the CPUs per GPU. A Ray task asks for that many CPUs."""
    import torch

    given = os.environ.get(ENV_TRIAL_THREADS, "").strip()
    if given:
        if not given.isdigit() or int(given) < 1:
            raise ValueError(f"{ENV_TRIAL_THREADS} must be a positive integer, got {given!r}.")
        return int(given)
    if torch.cuda.is_available():
        return max(1, (os.cpu_count() or 1) // torch.cuda.device_count())
    return torch.get_num_threads()


def use(name: str, address: str | None = None) -> ExecutorChoice:
    """Select the executor for this process and every notebook kernel it starts (via the environment)."""
    selected = ExecutorChoice(name, address)
    os.environ[ENV_EXECUTOR] = selected.name
    if address:
        os.environ[ENV_RAY_ADDRESS] = address
    else:
        os.environ.pop(ENV_RAY_ADDRESS, None)
    return selected


# --------------------------------------------------------------------------------------- journal


def journal_dir(study_key: str) -> Path:
    """Where a study's finished trials are kept (until the study finishes: see the runner)."""
    return cache_dir() / "trials" / study_key


def clear_journal(study_key: str) -> None:
    """Forget a study's finished trials (after it succeeded, or before a forced re-run)."""
    shutil.rmtree(journal_dir(study_key), ignore_errors=True)


class _Journal:
    """Finished trials of one sweep on disk, one file per trial (written atomically)."""

    def __init__(self, study_key: str, key: Any, fn: Callable[..., Any]) -> None:
        name = f"{fn.__module__}.{getattr(fn, '__qualname__', repr(fn))}"
        # The study key already covers the notebook, its parameters and the code it imports.
        sweep = stable_hash([key, name])
        self.root = journal_dir(study_key) / sweep

    def _path(self, spec: Any) -> Path:
        return self.root / f"{stable_hash(spec)}.pkl"

    def load(self, spec: Any) -> tuple[bool, Any]:
        path = self._path(spec)
        if not path.exists():
            return False, None
        with open(path, "rb") as fh:
            return True, pickle.load(fh)

    def save(self, spec: Any, result: Any) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(self._path(spec), pickle.dumps(result, pickle.HIGHEST_PROTOCOL))


class _NoJournal:
    def load(self, spec: Any) -> tuple[bool, Any]:
        return False, None

    def save(self, spec: Any, result: Any) -> None:
        pass


# ------------------------------------------------------------------------------------- map_trials


def map_trials(
    fn: Callable[[Any, Any], Any],
    specs: Sequence[Any],
    shared: Any = None,
    *,
    desc: str = "trials",
    progress: bool = True,
    journal: Any = None,
    executor: ExecutorChoice | None = None,
    resources: dict[str, float] | None = None,
) -> list[Any]:
    """``[fn(spec, shared) for spec in specs]`` on the chosen executor, in the order of ``specs``.

    ``fn`` must be a module-level function (or a ``functools.partial`` of one) that seeds itself
    from ``spec``; ``specs`` are small, JSON-able values naming each trial. ``journal`` names the
    sweep within its study (model and data fingerprints, fixed settings): inside a study run by
    the runner (``CLIPNB_STUDY_KEY`` set), finished trials are then saved and reused, so a failed
    or interrupted sweep resumes from them. ``resources`` overrides what each Ray task asks for
    (default :func:`ray_resources`). One tqdm bar counts the trials.
    """
    executor = executor or choice()
    study = os.environ.get(ENV_STUDY_KEY, "")
    store = _Journal(study, journal, fn) if journal is not None and study else _NoJournal()
    results: list[Any] = [None] * len(specs)
    pending = []
    for i, spec in enumerate(specs):
        found, value = store.load(spec)
        if found:
            results[i] = value
        else:
            pending.append(i)
    bar = tqdm(
        total=len(specs),
        initial=len(specs) - len(pending),
        desc=desc,
        disable=not progress,
        leave=False,
    )
    finished = len(specs) - len(pending)

    def keep(i: int, value: Any) -> None:
        nonlocal finished
        results[i] = value
        store.save(specs[i], value)
        finished += 1
        bar.update(1)

    threads = trial_threads()
    try:
        run = _run_ray if executor.name == "ray" else _run_local
        failure = run(fn, specs, shared, pending, keep, executor, resources, threads)
    finally:
        bar.close()
    if failure is not None:
        index, worker_traceback = failure
        raise TrialError(desc, specs[index], worker_traceback, finished, len(specs))
    return results


_Keep = Callable[[int, Any], None]
_ANSI = re.compile(r"\x1b\[[0-9;]*m")  # Ray colours the task name in its tracebacks


def _run_local(
    fn, specs, shared, pending, keep: _Keep, executor, resources, threads
) -> tuple[int, str] | None:
    for i in pending:
        try:
            value = _call(fn, specs[i], shared, threads)
        except Exception:
            return i, traceback.format_exc()
        keep(i, value)
    return None


def _run_ray(
    fn, specs, shared, pending, keep: _Keep, executor, resources, threads
) -> tuple[int, str] | None:
    import ray

    connect_ray(executor.address)
    task = ray.remote(**(resources or ray_resources(threads)))(_call)
    shared_ref = ray.put(shared)  # once: every task reads the same object
    futures = {task.remote(fn, specs[i], shared_ref, threads): i for i in pending}
    failure = None
    while futures:
        done, _ = ray.wait(list(futures), num_returns=1)
        i = futures.pop(done[0])
        try:
            value = ray.get(done[0])
        except ray.exceptions.RayTaskError as err:
            # Keep collecting: the other trials' results are saved before the error is raised.
            if failure is None:
                failure = (i, _ANSI.sub("", str(err)))
            continue
        keep(i, value)
    return failure


def _call(fn: Callable[[Any, Any], Any], spec: Any, shared: Any, threads: int) -> Any:
    """One trial with ``threads`` threads for torch and for numpy/scikit-learn's BLAS.

    On Ray, the object-store reference is resolved before the call: ``shared`` is the value.
    """
    import torch
    from threadpoolctl import threadpool_limits

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with threadpool_limits(threads):
            return fn(spec, shared)
    finally:
        torch.set_num_threads(before)


# ------------------------------------------------------------------------------------------- Ray


def ray_resources(threads: int) -> dict[str, float]:
    """What one trial asks Ray for: its threads' CPUs, and a GPU on a GPU machine."""
    import torch

    return {"num_cpus": threads} | ({"num_gpus": 1} if torch.cuda.is_available() else {})


def connect_ray(address: str | None = None, num_cpus: int | None = None) -> str:
    """Join the Ray cluster at ``address``, or start a local one bound to the loopback address.

    Returns the cluster's address, so child processes (notebook kernels) can join the same one.
    A second call in the same process reuses the connection.
    """
    # Usage statistics would phone home; the offline profiles forbid that and so does this.
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if not address:
        # Ray resolves "127.0.0.1" to the machine's outward address unless it runs as a
        # single-machine cluster; this flag keeps every Ray process on the loopback interface.
        os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    import ray
    import ray._private.ray_constants as ray_constants

    if not ray.is_initialized():
        if not address:
            ray_constants.ENABLE_RAY_CLUSTER = False  # if ray was imported before the flag was set
        if address:
            ray.init(address=address, log_to_driver=False, configure_logging=False)
        else:
            ray.init(
                num_cpus=num_cpus,
                include_dashboard=False,
                _node_ip_address=LOOPBACK,
                log_to_driver=False,
                configure_logging=False,
            )
    # Workers of a local Ray inherit this environment (offline guard, cache, data root).
    return ray.get_runtime_context().gcs_address
