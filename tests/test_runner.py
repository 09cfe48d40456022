from __future__ import annotations

import json
from pathlib import Path

import nbformat
import pytest

from clipnb import registry, runner
from clipnb.__main__ import main
from clipnb.registry import Study

FAKE = """# %% tags=["parameters"]
profile = "embedded"
x = 1
label = "a"
fail = False

# %%
from myst_nb import glue

if fail:
    raise RuntimeError("boom")
glue("value", float(x) * 2, display=False)
"""


@pytest.fixture()
def fake_studies(tmp_path, monkeypatch):
    nb_dir = tmp_path / "notebooks"
    nb_dir.mkdir()
    for name in ("first", "second"):
        (nb_dir / f"{name}.py").write_text(FAKE)
    fake = [
        Study(
            "first",
            "first.py",
            "First",
            profiles={"smoke": {"x": 3}},
            headline={"value": "twice x"},
        ),
        Study("second", "second.py", "Second"),
    ]
    monkeypatch.setattr(registry, "STUDIES", fake)
    monkeypatch.setattr(runner, "STUDIES", fake)
    monkeypatch.setattr(runner, "notebooks_dir", lambda: nb_dir)
    return tmp_path / "out"


def test_parameters_cell_is_parsed(repo):
    nb = runner.read_notebook(registry.get_study("embedded_clip"))
    params = runner.notebook_parameters(nb)
    assert params["profile"] == "embedded" and isinstance(params["seed"], int)


def test_every_registered_study_has_valid_profiles():
    for study in registry.STUDIES:
        nb = runner.read_notebook(study)
        defaults = runner.notebook_parameters(nb, study.notebook)
        for profile in registry.PROFILES:
            runner.check_parameters(study, defaults, study.overrides(profile))


def test_toc_lists_every_study_in_order(repo):
    toc = (repo / "book" / "_toc.yml").read_text()
    positions = [toc.index(f"executed/{s.name}\n") for s in registry.STUDIES]
    assert positions == sorted(positions)


def test_bad_inputs_are_clear_errors(fake_studies):
    with pytest.raises(ValueError, match="Known studies: first, second"):
        runner.run(["nope"], "smoke", out_dir=fake_studies)
    with pytest.raises(runner.ParameterError, match=r"no parameter 'y'.*x=1"):
        runner.run(["first"], "smoke", {"y": 2}, out_dir=fake_studies)
    with pytest.raises(runner.ParameterError, match="must be of type int"):
        runner.run(["first"], "smoke", {"x": "three"}, out_dir=fake_studies)
    with pytest.raises(ValueError, match="Unknown profile"):
        runner.run(["first"], "huge", out_dir=fake_studies)
    assert not fake_studies.exists(), "nothing may run before the inputs are checked"
    assert main(["run", "first", "--set", "y=1", "--out", str(fake_studies)]) == 2


def test_incremental_runs_and_failures(fake_studies):
    out = fake_studies
    first = runner.run(None, "smoke", out_dir=out)
    assert [o.status for o in first] == ["ran", "ran"]
    result = json.loads((out / "first.results.json").read_text())
    assert result["metrics"] == {"value": 6.0} and result["parameters"]["x"] == 3
    assert result["profile"] == "smoke" and "torch" in result["versions"]
    assert "| First | twice x | 6.0 | smoke |" in (out / "summary.md").read_text().replace(
        "[First](first.ipynb)", "First"
    )
    assert "| second | smoke |" in (out / "reproducibility.md").read_text()
    chapter = nbformat.read(out / "first.ipynb", as_version=4)
    assert "hide-input" in chapter.cells[-1].metadata.tags, "code is folded in the book"
    assert "| `x` | `3` | `1` |" in chapter.cells[2].source, "the run's parameters, listed once"

    # Nothing changed: no work.
    assert [o.status for o in runner.run(None, "smoke", out_dir=out)] == [
        "up-to-date",
        "up-to-date",
    ]

    # A changed parameter re-runs only that study.
    second_nb = (out / "second.ipynb").stat().st_mtime_ns
    again = runner.run(["first"], "smoke", {"x": 5}, out_dir=out)
    assert again[0].status == "ran"
    assert (out / "second.ipynb").stat().st_mtime_ns == second_nb

    # A failure keeps the failed notebook, names the cell, and leaves the other study alone.
    second_results = (out / "second.results.json").read_text()
    failed = runner.run(["first"], "smoke", {"fail": True}, out_dir=out)
    assert (
        failed[0].status == "failed" and "boom" in failed[0].message and "cell" in failed[0].message
    )
    executed = (out / "first.ipynb").read_text()
    assert "RuntimeError" in executed
    assert (out / "second.results.json").read_text() == second_results
    assert (
        main(["run", "first", "--profile", "smoke", "--set", "fail=True", "--out", str(out)]) == 1
    )
    # After a failure the study is not considered up to date.
    assert runner.run(["first"], "smoke", {"x": 5}, out_dir=out)[0].status == "ran"


def test_missing_checkpoints_are_trained_before_any_notebook_and_only_then(
    fake_studies, monkeypatch, fresh_cache
):
    from clipnb.methods import pretrain

    trained: list[str] = []
    real_prepare = pretrain.prepare

    def spy(profile, progress=True):
        trained.append(profile)
        return real_prepare(profile, progress=False)

    monkeypatch.setattr(pretrain, "prepare", spy)
    out = fake_studies
    assert [o.status for o in runner.run(None, "smoke", out_dir=out)] == ["ran", "ran"]
    assert trained == ["smoke"]
    config = pretrain.PRETRAIN_CONFIGS["smoke"]
    assert pretrain.checkpoint_path(config).exists()
    assert pretrain.supervised_checkpoint_path(config).exists()
    # A study that re-runs with the checkpoints cached never retrains them.
    monkeypatch.setattr(pretrain, "pretrain", _never)
    monkeypatch.setattr(pretrain, "pretrain_supervised", _never)
    assert runner.run(["first"], "smoke", {"x": 9}, out_dir=out)[0].status == "ran"
    assert trained == ["smoke"]
    # Nothing to execute: the models are not even looked for.
    pretrain.checkpoint_path(config).unlink()
    assert runner.run(["first"], "smoke", {"x": 9}, out_dir=out)[0].status == "up-to-date"
    assert trained == ["smoke"]


def _never(*args, **kwargs):
    raise AssertionError("retrained although the checkpoint was cached")


def test_cli_list_shows_profiles(capsys):
    assert main(["list"]) == 0
    text = capsys.readouterr().out
    assert "embedded_clip" in text and "smoke" in text and "full" in text


def test_glued_values_reads_myst_nb_records():
    import nbformat

    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell("")
    cell.outputs = [
        nbformat.v4.new_output(
            "display_data",
            data={"application/papermill.record/text/plain": "0.25"},
            metadata={"scrapbook": {"name": "acc", "mime_prefix": "application/papermill.record/"}},
        )
    ]
    nb.cells.append(cell)
    assert runner.glued_values(nb) == {"acc": 0.25}


def test_out_dir_default_is_in_book(repo):
    assert runner.default_out_dir() == Path(repo) / "book" / "executed"


def fake_package(root: Path) -> Path:
    """clipnb/{core/features, studies/a, studies/b, runner}: a and b both use features."""
    pkg = root / "clipnb"
    for sub in ("", "core", "studies"):
        (pkg / sub).mkdir(parents=True, exist_ok=True)
        (pkg / sub / "__init__.py").write_text("")
    (pkg / "core" / "features.py").write_text("x = 1\n")
    (pkg / "studies" / "a.py").write_text("from clipnb.core import features\n")
    (pkg / "studies" / "b.py").write_text("def f():\n    from clipnb.core.features import x\n")
    (pkg / "runner.py").write_text("x = 1\n")
    return pkg


def test_a_study_reruns_only_when_code_it_imports_changes(tmp_path, monkeypatch):
    pkg = fake_package(tmp_path)
    monkeypatch.setattr(runner, "PACKAGE_DIR", pkg)
    notebook_a = "from clipnb.studies import a\nimport clipnb.runner\n"
    notebook_b = "from clipnb.studies.b import f\n"
    files = runner.dependency_files(notebook_a)
    assert [p.relative_to(pkg).as_posix() for p in files] == [
        "__init__.py",
        "core/__init__.py",
        "core/features.py",
        "studies/__init__.py",
        "studies/a.py",
    ]
    before = runner.dependency_hash(notebook_a), runner.dependency_hash(notebook_b)
    (pkg / "runner.py").write_text("x = 2\n")  # orchestration: no study re-runs
    assert (runner.dependency_hash(notebook_a), runner.dependency_hash(notebook_b)) == before
    (pkg / "studies" / "a.py").write_text("from clipnb.core import features\ny = 2\n")
    after_a = runner.dependency_hash(notebook_a), runner.dependency_hash(notebook_b)
    assert after_a[0] != before[0] and after_a[1] == before[1]  # only study a re-runs
    (pkg / "core" / "features.py").write_text("x = 2\n")  # both import it (b lazily)
    after_core = runner.dependency_hash(notebook_a), runner.dependency_hash(notebook_b)
    assert after_core[0] != after_a[0] and after_core[1] != after_a[1]


def test_each_chapter_depends_on_its_own_study_module_only():
    modules = {p.stem for p in (runner.PACKAGE_DIR / "studies").glob("*.py")} - {"__init__"}
    for study in registry.STUDIES:
        source = (runner.notebooks_dir() / study.notebook).read_text()
        used = {p.stem for p in runner.dependency_files(source) if p.parent.name == "studies"} - {
            "__init__"
        }
        assert used <= modules
        if study.name in modules:
            assert study.name in used, study.name
        assert "hidden_links" not in used or study.name == "hidden_links", study.name


def test_summary_keeps_the_precision_of_small_scores():
    assert runner.format_metric(41.63) == "41.6"
    assert runner.format_metric(0.1234) == "0.123"
    assert runner.format_metric(-0.004) == "-0.004"
    assert runner.format_metric(float("nan")) == "n/a"


def _code(source: str, tags: list[str] | None = None, outputs: list | None = None):
    cell = nbformat.v4.new_code_cell(source, outputs=outputs or [])
    if tags:
        cell.metadata["tags"] = tags
    return cell


def test_prepare_for_book_folds_code_and_lists_parameters_once():
    nb = nbformat.v4.new_notebook(
        cells=[
            nbformat.v4.new_markdown_cell("# Title"),
            _code('profile = "embedded"\nn = 1\nnames = ["a|b"]', ["parameters"]),
            _code('profile = "smoke"\nn = 2', ["injected-parameters"]),
            _code("x = n"),
            _code("plt.show()", ["remove-input"]),
        ]
    )
    defaults = {"profile": "embedded", "n": 1, "names": ["a|b"]}
    runner.prepare_for_book(nb, "smoke", defaults, {"profile": "smoke", "n": 2})
    tags = [c.metadata.get("tags", []) for c in nb.cells]
    assert "remove-cell" in tags[1] and "remove-cell" in tags[2]
    assert tags[4] == ["hide-input"] and tags[5] == ["remove-input"], "a notebook's own tag wins"
    listing = nb.cells[3]
    assert listing.cell_type == "markdown" and listing.source.startswith(":::{dropdown}")
    assert "| `n` | `2` | `1` |" in listing.source
    assert "| `names` | `['a\\|b']` |  |" in listing.source  # a pipe cannot break the table
    assert sum(line.startswith("| `") for line in listing.source.splitlines()) == 3


def test_strip_progress_keeps_prints_and_warnings_only():
    def stream(name: str, text: str):
        return nbformat.v4.new_output("stream", name=name, text=text)

    warning = (
        "/x/tqdm/auto.py:21: TqdmWarning: IProgress not found. Please update jupyter and "
        "ipywidgets.\n  from .autonotebook import tqdm as notebook_tqdm\n"
    )
    nb = nbformat.v4.new_notebook(
        cells=[
            _code(
                "train()",
                outputs=[
                    stream("stderr", warning),
                    stream("stderr", "\rfit:   0%|          | 0/4 [00:00<?, ?it/s]"),
                    stream("stderr", "\rfit: 100%|██████████| 4/4 [00:02<00:00,  1.6it/s]"),
                    stream("stderr", "\r                              \r"),
                    stream("stderr", "\x1b[A\n"),
                    stream("stderr", "\rencode: 5it [00:01, 4.20it/s]\n"),
                    stream("stderr", "\rWARNING:root:random init\n"),
                    stream("stdout", "memes: 64 train\n"),
                    stream("stderr", "\n"),
                ],
            )
        ]
    )
    runner.strip_progress(nb)
    assert [(o.name, o.text) for o in nb.cells[0].outputs] == [
        ("stderr", "WARNING:root:random init\n"),
        ("stdout", "memes: 64 train\n"),
    ]


SWEEP = """# %% tags=["parameters"]
profile = "embedded"
flag = ""
log = ""

# %%
import os

from clipnb.core import executor


def trial(spec, shared):
    with open(log, "a") as fh:
        fh.write(f"{spec}\\n")
    if spec == 3 and os.path.exists(flag):
        raise RuntimeError("trial 3 fails while the flag exists")
    return spec * 10


executor.map_trials(trial, [1, 2, 3, 4], None, journal="sweep", progress=False)
"""


def test_a_failed_study_resumes_from_its_finished_trials(fake_studies, tmp_path, monkeypatch):
    from clipnb.core import executor

    (runner.notebooks_dir() / "second.py").write_text(SWEEP)
    flag, log = tmp_path / "flag", tmp_path / "log.txt"
    flag.touch()
    params = {"flag": str(flag), "log": str(log)}
    digest = runner.resolve(registry.STUDIES[1], "smoke", params)[2]
    failed = runner.run(["second"], "smoke", params, out_dir=fake_studies)[0]
    assert failed.status == "failed" and "trial 3 fails" in failed.message
    assert log.read_text().split() == ["1", "2", "3"]
    assert len(list(executor.journal_dir(digest).rglob("*.pkl"))) == 2
    # The same study again: only the failed trial and the one never started run.
    flag.unlink()
    log.unlink()
    assert runner.run(["second"], "smoke", params, out_dir=fake_studies)[0].status == "ran"
    assert log.read_text().split() == ["3", "4"]
    assert not executor.journal_dir(digest).exists(), "a finished study forgets its trials"
    # A forced re-run computes every trial again.
    log.unlink()
    assert (
        runner.run(["second"], "smoke", params, out_dir=fake_studies, force=True)[0].status == "ran"
    )
    assert log.read_text().split() == ["1", "2", "3", "4"]
