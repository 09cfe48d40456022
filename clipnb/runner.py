"""Execute study notebooks with papermill, incrementally, into the book's build tree.

A study re-runs only when its notebook, its parameters or the clipnb sources it imports
(transitively) changed: a content hash is stored beside its executed notebook. Outputs are written atomically; a failed study keeps
its executed notebook (error visible) and leaves every other study's output alone.
"""

from __future__ import annotations

import ast
import datetime as _dt
import json
import os
import platform
import re
import subprocess
import sys
import time
import traceback
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import nbformat

from clipnb.core import executor
from clipnb.core.utils import (
    PACKAGE_DIR,
    atomic_write_json,
    atomic_write_text,
    stable_hash,
    tree_hash,
)
from clipnb.registry import STUDIES, Study, get_study, repo_root

KERNEL_NAME = "clipnb"
GLUE_PREFIX = "application/papermill.record/"
VERSIONED_PACKAGES = (
    "torch",
    "torchvision",
    "open_clip_torch",
    "numpy",
    "scikit-learn",
    "grad-cam",
    "papermill",
)


class ParameterError(ValueError):
    """An unknown study parameter or a value of the wrong type."""


@dataclass
class Outcome:
    study: str
    status: str  # "ran", "up-to-date" or "failed"
    seconds: float
    message: str = ""


def notebooks_dir() -> Path:
    return repo_root() / "notebooks"


def default_out_dir() -> Path:
    return repo_root() / "book" / "executed"


def read_notebook(study: Study) -> nbformat.NotebookNode:
    import jupytext

    path = notebooks_dir() / study.notebook
    if not path.exists():
        raise FileNotFoundError(f"Study {study.name!r}: notebook {path} is missing.")
    return jupytext.read(path)


def notebook_parameters(nb: nbformat.NotebookNode, name: str = "notebook") -> dict[str, Any]:
    """The defaults in the notebook's ``parameters`` cell (plain literals only)."""
    cells = [c for c in nb.cells if "parameters" in c.get("metadata", {}).get("tags", [])]
    if len(cells) != 1:
        raise ParameterError(
            f"{name}: expected exactly one cell tagged 'parameters', found {len(cells)}."
        )
    params: dict[str, Any] = {}
    for node in ast.parse(cells[0].source).body:
        if not (isinstance(node, ast.Assign | ast.AnnAssign)):
            raise ParameterError(
                f"{name}: the parameters cell may only hold assignments of literals."
            )
        target = node.targets[0] if isinstance(node, ast.Assign) else node.target
        if not isinstance(target, ast.Name) or node.value is None:
            raise ParameterError(f"{name}: parameters must be simple `name = literal` lines.")
        try:
            params[target.id] = ast.literal_eval(node.value)
        except ValueError as err:
            raise ParameterError(
                f"{name}: parameter {target.id!r} is not a plain literal; compute derived values "
                "in a later cell."
            ) from err
    return params


def _type_ok(default: Any, value: Any) -> bool:
    if isinstance(default, bool) or isinstance(value, bool):
        return isinstance(default, bool) and isinstance(value, bool)
    if isinstance(default, float):
        return isinstance(value, int | float)
    if isinstance(default, list | tuple):
        return isinstance(value, list | tuple)
    if default is None:
        return True
    return isinstance(value, type(default))


def check_parameters(study: Study, defaults: dict[str, Any], given: dict[str, Any]) -> None:
    """Refuse unknown names and wrong types before anything runs (papermill would only warn)."""
    for key, value in given.items():
        if key not in defaults:
            raise ParameterError(
                f"Study {study.name!r} has no parameter {key!r}. Its parameters: "
                + ", ".join(f"{k}={v!r}" for k, v in defaults.items())
            )
        if not _type_ok(defaults[key], value):
            raise ParameterError(
                f"Study {study.name!r}: parameter {key!r} must be of type "
                f"{type(defaults[key]).__name__} (default {defaults[key]!r}), got {value!r}."
            )


def parse_assignment(text: str) -> tuple[str, Any]:
    """``key=value`` from the command line; the value is a Python literal or else a string."""
    if "=" not in text:
        raise ParameterError(f"--set expects key=value, got {text!r}")
    key, raw = text.split("=", 1)
    try:
        value = ast.literal_eval(raw)
    except (ValueError, SyntaxError):
        value = raw
    return key.strip(), value


#: Modules that only orchestrate runs: editing them changes no result, so it re-runs no study.
#: (The registry's parameters are hashed on their own, per study.)
ORCHESTRATION_MODULES = ("clipnb.runner", "clipnb.__main__", "clipnb.registry")


def module_file(module: str) -> Path | None:
    """The source file of a ``clipnb`` module or package (None if there is none)."""
    parts = module.split(".")[1:]
    base = PACKAGE_DIR.joinpath(*parts)
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def imported_modules(source: str) -> set[str]:
    """The ``clipnb`` modules a source imports, at any depth of the code (lazy imports count),
    with every package whose ``__init__`` that import runs."""
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
            names += [f"{node.module}.{alias.name}" for alias in node.names]
        else:
            continue
        for name in names:
            if name.split(".")[0] == "clipnb" and module_file(name) is not None:
                parts = name.split(".")
                found.update(".".join(parts[:i]) for i in range(1, len(parts) + 1))
    return found


def dependency_files(source: str) -> list[Path]:
    """Every ``clipnb`` source file ``source`` depends on: the transitive closure of its imports
    (plus the model configs when the models module is in it), minus the orchestration."""
    seen: set[str] = set()
    todo = sorted(imported_modules(source))
    while todo:
        module = todo.pop()
        if module in seen or module in ORCHESTRATION_MODULES:
            continue
        seen.add(module)
        path = module_file(module)
        if path is not None:
            todo.extend(imported_modules(path.read_text()) - seen)
    files = {module_file(m) for m in seen} - {None}
    if "clipnb.core.models" in seen:
        files |= set((PACKAGE_DIR / "model_configs").glob("*.json"))
    return sorted(files)


def dependency_hash(source: str) -> str:
    """A hash of the sources behind ``source`` (a notebook): an edit re-runs only its users."""
    return tree_hash(dependency_files(source), PACKAGE_DIR)


#: Bumped when :func:`prepare_for_book` changes what it writes, so that executed notebooks are
#: rendered again (the runner itself is not part of :func:`dependency_hash`).
BOOK_FORMAT = 1


def format_metric(value: float) -> str:
    """Percentages and minutes with one decimal; scores below 1 (ARI, AMI, ...) with three."""
    if value != value:  # NaN: a metric this profile cannot compute
        return "n/a"
    return f"{value:.1f}" if abs(value) >= 1 else f"{value:.3f}"


def resolve(
    study: Study, profile: str, overrides: dict[str, Any] | None = None
) -> tuple[nbformat.NotebookNode, dict[str, Any], str]:
    """The notebook, its checked parameters and the content hash that decides whether to re-run."""
    nb = read_notebook(study)
    defaults = notebook_parameters(nb, study.notebook)
    params = {**study.overrides(profile), **(overrides or {})}
    check_parameters(study, defaults, params)
    source = (notebooks_dir() / study.notebook).read_text()
    data = os.environ.get("CLIPNB_DATA", "") if profile == "full" else ""
    digest = stable_hash([source, params, dependency_hash(source), data, BOOK_FORMAT], length=32)
    return nb, params, digest


def _versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for pkg in VERSIONED_PACKAGES:
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = "not installed"
    return out


def _git_sha() -> str:
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=repo_root(),
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=repo_root(),
            capture_output=True,
            text=True,
        ).stdout.strip()
        return sha + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def glued_values(nb: nbformat.NotebookNode) -> dict[str, float]:
    """Every number the notebook glued (myst-nb), by key: the study's headline metrics."""
    values: dict[str, float] = {}
    for cell in nb.cells:
        for output in cell.get("outputs", []):
            name = output.get("metadata", {}).get("scrapbook", {}).get("name")
            if not name:
                continue
            data = output.get("data", {})
            text = data.get(GLUE_PREFIX + "text/plain", data.get("text/plain"))
            try:
                values[name] = float(text)
            except (TypeError, ValueError):
                continue
    return values


def failing_cell(nb: nbformat.NotebookNode) -> str:
    for i, cell in enumerate(nb.cells):
        for output in cell.get("outputs", []):
            if output.get("output_type") == "error":
                first = cell.source.strip().splitlines()[0] if cell.source.strip() else ""
                return f"cell {i} ({first[:60]!r}): {output.get('ename')}: {output.get('evalue')}"
    return "unknown cell"


def _up_to_date(out_nb: Path, stamp_path: Path, digest: str) -> bool:
    if not (out_nb.exists() and stamp_path.exists()):
        return False
    stamp = json.loads(stamp_path.read_text())
    return stamp.get("hash") == digest and stamp.get("status") == "ok"


def stale_studies(
    studies: list[Study],
    profile: str,
    out_dir: Path,
    params: dict[str, dict[str, Any]] | None = None,
) -> list[Study]:
    """The studies a run would execute (their notebook, parameters or code changed).

    ``params`` maps a study's name to the parameters it runs with (default: the profile's).
    """
    return [
        s
        for s in studies
        if not _up_to_date(
            out_dir / f"{s.name}.ipynb",
            out_dir / f"{s.name}.stamp.json",
            resolve(s, profile, (params or {}).get(s.name, {}))[2],
        )
    ]


def prepare_models(profile: str) -> None:
    """Pretrain the offline profile's missing checkpoints here, with a bar in the terminal.

    Notebooks only load them; a missing checkpoint would otherwise hold one notebook cell for
    minutes with nothing on the screen.
    """
    from clipnb.methods import pretrain

    if profile not in pretrain.PRETRAIN_CONFIGS:
        return
    config = pretrain.PRETRAIN_CONFIGS[profile]
    missing = [
        path
        for path in (pretrain.checkpoint_path(config), pretrain.supervised_checkpoint_path(config))
        if not path.exists()
    ]
    if missing:
        print(
            f"[clipnb] pretraining the {profile} models (cached afterwards): "
            + ", ".join(p.name for p in missing),
            flush=True,
        )
        pretrain.prepare(profile, progress=True)


# --- executed notebook -> book chapter ---------------------------------------------------------

#: What a terminal shows of a progress bar: ``desc:  50%|█████     | 1/2 [00:00<00:00, 8.6it/s]``
#: or, without a total, ``desc: 5it [00:01, 4.2it/s]``.
_PROGRESS_LINE = re.compile(r"\d+%\|.*\|\s*[\d.]+[kMG]?/|\d+(it|s/it) \[\d")
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
# tqdm.auto without ipywidgets warns once per kernel, then falls back to text bars.
_TQDM_WARNING = re.compile(r"TqdmWarning: IProgress not found|^\s+from \.autonotebook import")


def strip_progress(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """Drop progress bars and tqdm's IProgress warning from the stream outputs, keep the rest.

    Each line is read as a terminal would show it (the text after its last carriage return,
    without cursor moves); bars and blanks left by redrawn bars go, other lines (a print, a real
    warning) stay.
    """
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        outputs = []
        for output in cell.get("outputs", []):
            if output.get("output_type") == "stream":
                kept = []
                for line in output.text.splitlines(keepends=True):
                    visible = _ANSI.sub("", line.rsplit("\r", 1)[-1])
                    redrawn = "\r" in line or visible != line
                    if _PROGRESS_LINE.search(visible) or _TQDM_WARNING.search(visible):
                        continue
                    if redrawn and not visible.strip():
                        continue
                    kept.append(visible)
                output.text = "".join(kept)
                if not output.text.strip():  # only the newline a closed bar leaves
                    continue
            outputs.append(output)
        cell.outputs = outputs
    return nb


def parameters_markdown(profile: str, defaults: dict[str, Any], params: dict[str, Any]) -> str:
    """The parameters this chapter ran with, as a folded listing (a MyST dropdown)."""

    def code(value: Any) -> str:
        return "`" + repr(value).replace("|", "\\|").replace("`", "'") + "`"

    rows = [
        f"| `{name}` | {code(params.get(name, default))} | "
        + ("" if name not in params or params[name] == default else code(default))
        + " |"
        for name, default in defaults.items()
    ]
    return "\n".join(
        [
            f":::{{dropdown}} Parameters of this run (profile `{profile}`)",
            "The values this chapter ran with; where the profile changed a notebook default, the",
            "default is given beside it. Rerun with others with",
            "`python -m clipnb run STUDY --set name=value`.",
            "",
            "| parameter | value | notebook default |",
            "| --- | --- | --- |",
            *rows,
            ":::",
        ]
    )


def prepare_for_book(
    nb: nbformat.NotebookNode, profile: str, defaults: dict[str, Any], params: dict[str, Any]
) -> nbformat.NotebookNode:
    """Turn an executed notebook into a chapter: code folded, parameters listed once, no noise.

    Tags are added here, to the executed copy, so that the notebooks in ``notebooks/`` stay plain
    in JupyterLab. Every code cell's source is folded (``hide-input``, one click away) unless the
    notebook chose a tag of its own; the defaults cell and papermill's injected cell are removed
    and replaced by one listing of the values the run used.
    """
    nb = strip_progress(nb)
    listing_at = None
    for i, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        tags = cell.metadata.setdefault("tags", [])
        if "parameters" in tags or "injected-parameters" in tags:
            tags.append("remove-cell")
            listing_at = i + 1
        elif not any(t.startswith(("hide-", "remove-")) for t in tags):
            tags.append("hide-input")
    if listing_at is not None:
        listing = nbformat.v4.new_markdown_cell(parameters_markdown(profile, defaults, params))
        listing.metadata["tags"] = ["clipnb-parameters"]
        nb.cells.insert(listing_at, listing)
    return nb


def run_study(
    study: Study,
    profile: str,
    out_dir: Path,
    overrides: dict[str, Any] | None = None,
    kernel_name: str = KERNEL_NAME,
    force: bool = False,
) -> Outcome:
    import papermill as pm

    nb, params, digest = resolve(study, profile, overrides)
    out_nb = out_dir / f"{study.name}.ipynb"
    stamp_path = out_dir / f"{study.name}.stamp.json"
    if not force and _up_to_date(out_nb, stamp_path, digest):
        return Outcome(study.name, "up-to-date", 0.0)
    out_dir.mkdir(parents=True, exist_ok=True)
    nb.metadata["kernelspec"] = {
        "name": kernel_name,
        "display_name": "clipnb",
        "language": "python",
    }
    tmp = out_dir / f".{study.name}.running.ipynb"
    start = time.perf_counter()
    status, message = "ok", ""
    # The kernel inherits this: its sweeps save finished trials under the study's hash, kept
    # until the study succeeds so that a failed or interrupted run resumes from them.
    if force:
        executor.clear_journal(digest)
    previous_key = os.environ.get(executor.ENV_STUDY_KEY)
    os.environ[executor.ENV_STUDY_KEY] = digest
    try:
        pm.execute_notebook(
            nb,
            str(tmp),
            parameters=params,
            kernel_name=kernel_name,
            cwd=str(notebooks_dir()),
            progress_bar={"desc": study.name, "unit": "cell"},
            log_output=False,
        )
    except Exception as err:
        status = "failed"
        message = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        if tmp.exists():
            message = failing_cell(nbformat.read(tmp, as_version=4))
        else:
            message += "\n" + traceback.format_exc(limit=3)
    finally:
        if previous_key is None:
            os.environ.pop(executor.ENV_STUDY_KEY, None)
        else:
            os.environ[executor.ENV_STUDY_KEY] = previous_key
    seconds = time.perf_counter() - start
    if tmp.exists():
        executed = nbformat.read(tmp, as_version=4)
        if status == "ok":  # a failed chapter keeps its code and streams in view, to debug
            defaults = notebook_parameters(nb, study.notebook)
            prepare_for_book(executed, profile, defaults, params)
            nbformat.write(executed, tmp)
        os.replace(tmp, out_nb)
    else:
        executed = nb
    if status == "ok":
        atomic_write_json(
            out_dir / f"{study.name}.results.json",
            {
                "study": study.name,
                "title": study.title,
                "profile": profile,
                "parameters": params,
                "metrics": glued_values(executed),
                "wall_time_s": round(seconds, 1),
                "git_sha": _git_sha(),
                "versions": _versions(),
                "finished": _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
            },
        )
    atomic_write_json(
        stamp_path, {"hash": digest if status == "ok" else "", "status": status, "profile": profile}
    )
    if status == "ok":
        executor.clear_journal(digest)
    return Outcome(study.name, "ran" if status == "ok" else "failed", seconds, message)


def run(
    names: list[str] | None = None,
    profile: str = "embedded",
    overrides: dict[str, Any] | None = None,
    out_dir: Path | None = None,
    kernel_name: str = KERNEL_NAME,
    force: bool = False,
    study_overrides: dict[str, dict[str, Any]] | None = None,
    concurrent: bool = False,
) -> list[Outcome]:
    """Run the named studies (all by default) in registry order; check every study first.

    ``overrides`` apply to every study that has the parameter; ``study_overrides`` maps a study's
    name to parameters for that study only (applied last), e.g. small sizes for a dry run.
    Sweeps run on the executor of :func:`clipnb.core.executor.choice`; with Ray, one Ray serves
    the run and ``concurrent`` runs the studies' notebooks at the same time, one per worker.
    """
    studies = [get_study(n) for n in names] if names else list(STUDIES)
    out_dir = Path(out_dir) if out_dir else default_out_dir()
    per_study = study_overrides or {}
    for name in per_study:
        get_study(name)  # an unknown study name fails before any work
    params = {
        study.name: {
            **((overrides or {}) if len(studies) == 1 else _applicable(study, profile, overrides)),
            **per_study.get(study.name, {}),
        }
        for study in studies
    }
    for study in studies:  # fail fast on bad names/types before any work
        resolve(study, profile, params[study.name])
    if force or stale_studies(studies, profile, out_dir, params):
        prepare_models(profile)
    chosen = executor.choice()
    if chosen.name == "ray":
        # One Ray for the whole run: every notebook kernel joins it instead of starting its own.
        executor.use("ray", executor.connect_ray(chosen.address))
    if concurrent and chosen.name == "ray":
        outcomes = _run_concurrently(studies, profile, out_dir, params, kernel_name, force)
        for outcome in outcomes:
            _report(outcome)
    else:
        outcomes = []
        for study in studies:
            outcomes.append(
                run_study(study, profile, out_dir, params[study.name], kernel_name, force)
            )
            _report(outcomes[-1])
    write_pages(out_dir)
    return outcomes


def _report(outcome: Outcome) -> None:
    label = {
        "ran": f"done in {outcome.seconds:.1f} s",
        "up-to-date": "up to date (skipped)",
    }.get(outcome.status, f"FAILED after {outcome.seconds:.1f} s — {outcome.message}")
    print(
        f"[clipnb] {outcome.study}: {label}",
        file=sys.stderr if outcome.status == "failed" else sys.stdout,
        flush=True,
    )


def _study_task(name: str, shared: dict[str, Any]) -> Outcome:
    # A Ray worker's environment is the one Ray started with: hand over the run's own.
    os.environ.update(shared["env"])
    return run_study(
        get_study(name),
        shared["profile"],
        shared["out_dir"],
        shared["params"][name],
        shared["kernel_name"],
        shared["force"],
    )


def _run_concurrently(
    studies: list[Study],
    profile: str,
    out_dir: Path,
    params: dict[str, dict[str, Any]],
    kernel_name: str,
    force: bool,
) -> list[Outcome]:
    """Each study's notebook as a Ray task (one notebook per worker), outcomes in registry order.

    A study task reserves no CPU: it only drives its kernel, whose sweeps ask Ray for their own
    trials' resources (a study holding a CPU while its trials wait for one would deadlock).
    """
    keys = ("CLIPNB_OFFLINE", "CLIPNB_CACHE", "CLIPNB_DATA", "HF_HUB_OFFLINE", "MPLBACKEND")
    keys += (executor.ENV_EXECUTOR, executor.ENV_RAY_ADDRESS)
    env = {k: os.environ[k] for k in keys if k in os.environ}
    shared = {
        "env": env,
        "profile": profile,
        "out_dir": out_dir,
        "params": params,
        "kernel_name": kernel_name,
        "force": force,
    }
    return executor.map_trials(
        _study_task,
        [s.name for s in studies],
        shared,
        desc="studies",
        resources={"num_cpus": 0},
    )


def _applicable(study: Study, profile: str, overrides: dict[str, Any] | None) -> dict[str, Any]:
    """With several studies, a ``--set`` applies to those that have the parameter."""
    if not overrides:
        return {}
    defaults = notebook_parameters(read_notebook(study), study.notebook)
    unknown = [
        k
        for k in overrides
        if not any(k in notebook_parameters(read_notebook(s), s.notebook) for s in STUDIES)
    ]
    if unknown:
        raise ParameterError(f"No study has parameter(s) {', '.join(unknown)}.")
    return {k: v for k, v in overrides.items() if k in defaults}


# --- generated book pages -----------------------------------------------------------------------


def load_results(out_dir: Path) -> list[dict[str, Any]]:
    results = []
    for study in STUDIES:
        path = out_dir / f"{study.name}.results.json"
        if path.exists():
            results.append(json.loads(path.read_text()))
    return results


def _write_if_changed(path: Path, text: str) -> None:
    if not path.exists() or path.read_text() != text:
        atomic_write_text(path, text)


def write_pages(out_dir: Path) -> None:
    """The summary and Reproducibility pages, generated from the studies' results files."""
    results = {r["study"]: r for r in load_results(out_dir)}
    lines = [
        "# Summary",
        "",
        "Headline numbers of every chapter, read from the results files that the chapters wrote in this",
        "build (so they always agree with the chapters).",
        "",
        "| chapter | metric | value | profile |",
        "| --- | --- | --- | --- |",
    ]
    for study in STUDIES:
        res = results.get(study.name)
        for key, label in study.headline.items():
            value = res["metrics"].get(key) if res else None
            shown = "not run" if value is None else format_metric(value)
            profile = res["profile"] if res else "—"
            title = f"[{study.title}]({study.name}.ipynb)" if res else study.title
            lines.append(f"| {title} | {label} | {shown} | {profile} |")
    _write_if_changed(out_dir / "summary.md", "\n".join(lines) + "\n")

    rows = [
        "# Reproducibility",
        "",
        "One row per study: the profile and parameters it ran with, its wall time, the commit and the",
        "package versions. Rebuild one chapter with other parameters with",
        "`python -m clipnb run STUDY --profile PROFILE --set key=value`.",
        "",
        "| study | profile | wall time (s) | commit | finished | parameters |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    versions: dict[str, str] = {}
    for study in STUDIES:
        res = results.get(study.name)
        if not res:
            rows.append(f"| {study.name} | — | — | — | not run | — |")
            continue
        versions = res["versions"]
        params = ", ".join(f"`{k}={v!r}`" for k, v in res["parameters"].items())
        rows.append(
            f"| {study.name} | {res['profile']} | {res['wall_time_s']} | {res['git_sha']} | {res['finished']} | {params} |"
        )
    if versions:
        rows += ["", "Package versions of the last run:", ""]
        rows += [f"- {k}: {v}" for k, v in versions.items()]
    _write_if_changed(out_dir / "reproducibility.md", "\n".join(rows) + "\n")
