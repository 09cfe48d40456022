"""The trial executor: order, errors, the journal of finished trials, and Ray = local exactly."""

from __future__ import annotations

import json

import psutil
import pytest
import torch

import clipnb
from clipnb.core import executor
from clipnb.core.utils import atomic_write_json
from clipnb.methods import few_shot
from clipnb.studies import finetune_parts as ps

LOCAL = executor.ExecutorChoice("local")
RAY = executor.ExecutorChoice("ray")

CALLS: list[int] = []


def square_or_fail(spec: dict, shared: dict) -> int:
    CALLS.append(spec["i"])
    if spec["i"] in shared["fail"]:
        raise ValueError(f"trial {spec['i']} cannot be squared")
    return spec["i"] ** 2


def test_local_results_come_back_in_spec_order() -> None:
    specs = [{"i": i} for i in (3, 1, 2)]
    out = executor.map_trials(square_or_fail, specs, {"fail": []}, executor=LOCAL, progress=False)
    assert out == [9, 1, 4]


def test_unknown_executor_names_the_known_ones(monkeypatch) -> None:
    with pytest.raises(ValueError, match="local, ray"):
        executor.ExecutorChoice("dask")
    monkeypatch.setenv(executor.ENV_EXECUTOR, "ray")
    monkeypatch.setenv(executor.ENV_RAY_ADDRESS, "10.0.0.1:6379")
    assert executor.choice() == executor.ExecutorChoice("ray", "10.0.0.1:6379")
    monkeypatch.delenv(executor.ENV_EXECUTOR)
    monkeypatch.delenv(executor.ENV_RAY_ADDRESS)
    assert executor.choice() == LOCAL


def test_a_failed_trial_names_its_spec_and_the_finished_ones_are_resumed(
    fresh_cache, monkeypatch
) -> None:
    monkeypatch.setenv(executor.ENV_STUDY_KEY, "study-hash")
    specs = [{"i": i} for i in range(5)]
    CALLS.clear()
    with pytest.raises(executor.TrialError) as err:
        executor.map_trials(
            square_or_fail, specs, {"fail": [3]}, executor=LOCAL, progress=False, journal="k"
        )
    message = str(err.value)
    assert "{'i': 3}" in message and "cannot be squared" in message
    assert "3 of 5 trials finished" in message
    assert err.value.spec == {"i": 3}
    # The next run does only the failed trial and the ones never started.
    CALLS.clear()
    out = executor.map_trials(
        square_or_fail, specs, {"fail": []}, executor=LOCAL, progress=False, journal="k"
    )
    assert out == [0, 1, 4, 9, 16]
    assert CALLS == [3, 4]
    # Another sweep key, or no study (outside the runner), starts from nothing.
    CALLS.clear()
    executor.map_trials(
        square_or_fail, specs, {"fail": []}, executor=LOCAL, progress=False, journal="other"
    )
    assert CALLS == [0, 1, 2, 3, 4]
    monkeypatch.delenv(executor.ENV_STUDY_KEY)
    CALLS.clear()
    executor.map_trials(
        square_or_fail, specs, {"fail": []}, executor=LOCAL, progress=False, journal="k"
    )
    assert CALLS == [0, 1, 2, 3, 4]


# --- the same sweeps on a local Ray ------------------------------------------------------------


@pytest.fixture(scope="module")
def local_ray():
    """A local Ray of two workers (on this 2-core machine), shut down after the module."""
    import ray

    address = executor.connect_ray(num_cpus=2)
    yield address
    ray.shutdown()


@pytest.fixture(scope="module")
def sweeps(smoke_bundle):
    """Two studies' sweeps on the smoke model: finetuning parts (with Grad-CAM) and Tip-Adapter."""
    data = clipnb.load_dataset("digits")
    prompts = ps.prompt_texts(data.class_names)
    test = ps.SplitScorer(smoke_bundle, data.test.subset(range(60)), prompts)
    probe = ps.CamProbe(test, [0, 1, 2], [0, 5], setting=ps.CamSetting("GradCAM"))
    task = few_shot.load_feature_task(smoke_bundle, "digits")
    methods = {
        "zero-shot": few_shot.zero_shot_method(),
        "Tip-Adapter": few_shot.tip_adapter_method(),
        "linear probe": few_shot.linear_probe_method(Cs=[0.1, 1.0]),
    }

    def run(choice: executor.ExecutorChoice) -> dict[str, list[dict]]:
        previous = executor.choice()
        executor.use(choice.name, choice.address)
        try:
            parts = ps.sweep_part(
                smoke_bundle,
                "text_projection",
                ps.Setting(1e-2, 3),
                data.train,
                [1, 2],
                [0, 1],
                test,
                batch_size=8,
                probe=probe,
                progress=False,
            )
            tip = few_shot.run_few_shot(task, methods, [1, 2], [0, 1], progress=False)
        finally:
            executor.use(previous.name, previous.address)
        timing = {"seconds", "cam_seconds"}
        return {
            "finetune_parts": [{k: v for k, v in r.items() if k not in timing} for r in parts],
            "tip_adapter": tip,
            "maps": {str(k): v.tolist() for k, v in probe.maps.items()},
        }

    return run, task


def test_ray_gives_the_local_results_files_exactly(
    sweeps, local_ray, tmp_path, monkeypatch
) -> None:
    # One thread per trial on both executors: the local Ray then runs two trials at a time.
    monkeypatch.setenv(executor.ENV_TRIAL_THREADS, "1")
    run, _ = sweeps
    files = {}
    for choice in (LOCAL, RAY):
        path = tmp_path / f"{choice.name}.results.json"
        atomic_write_json(path, run(choice))
        files[choice.name] = path.read_bytes()
    assert files["local"] == files["ray"]
    results = json.loads(files["ray"])
    assert len(results["finetune_parts"]) == 4 and len(results["tip_adapter"]) == 12
    assert results["maps"]  # the kept seed's figure maps came back from the workers


def test_a_failed_ray_trial_names_its_spec_and_worker_traceback(sweeps, local_ray) -> None:
    _, task = sweeps
    previous = executor.choice()
    executor.use("ray")
    try:
        with pytest.raises(executor.TrialError) as err:
            few_shot.run_few_shot(
                task, {"zero-shot": few_shot.zero_shot_method()}, [1, 10_000], [0]
            )
    finally:
        executor.use(previous.name, previous.address)
    message = str(err.value)
    assert "{'shots': 10000, 'seed': 0}" in message
    assert "1 of 2 trials finished" in message
    assert "Traceback" in message or "File " in message
    assert "\x1b[" not in message


def test_the_local_ray_listens_on_loopback_only(local_ray) -> None:
    assert local_ray.startswith("127.0.0.1:")
    listening = [
        c
        for c in psutil.net_connections(kind="inet")
        if c.status == psutil.CONN_LISTEN and c.pid and _is_ray(c.pid)
    ]
    assert listening, "no Ray process found listening"
    addresses = {c.laddr.ip for c in listening}
    assert addresses <= {"127.0.0.1", "::ffff:127.0.0.1", "::1"}, addresses


def _is_ray(pid: int) -> bool:
    try:
        proc = psutil.Process(pid)
        text = " ".join([proc.name(), *proc.cmdline()])
    except psutil.Error:
        return False
    return "ray" in text or "gcs_server" in text or "raylet" in text


def test_trial_threads_come_from_the_environment(monkeypatch) -> None:
    monkeypatch.setenv(executor.ENV_TRIAL_THREADS, "3")
    assert executor.trial_threads() == 3
    assert executor.ray_resources(3)["num_cpus"] == 3
    monkeypatch.setenv(executor.ENV_TRIAL_THREADS, "zero")
    with pytest.raises(ValueError, match="positive integer"):
        executor.trial_threads()
    monkeypatch.delenv(executor.ENV_TRIAL_THREADS)
    assert executor.trial_threads() == torch.get_num_threads()


def test_trials_seed_themselves(sweeps) -> None:
    # Results must not depend on what ran before in the same process (a worker runs many trials).
    _, task = sweeps
    methods = {"Tip-Adapter": few_shot.tip_adapter_method()}
    alone = few_shot.few_shot_trial({"shots": 2, "seed": 1}, (task, methods))
    torch.manual_seed(1234)
    few_shot.few_shot_trial({"shots": 1, "seed": 0}, (task, methods))
    after = few_shot.few_shot_trial({"shots": 2, "seed": 1}, (task, methods))
    assert alone == after


@pytest.mark.slow
def test_studies_run_concurrently_on_ray_with_the_local_numbers(
    built_book, local_ray, tmp_path, monkeypatch
) -> None:
    """Two smoke chapters as concurrent Ray tasks (one notebook per worker, each joining the same
    Ray for its trials) give the numbers of the sequential, local build of the smoke book."""
    from clipnb import runner

    monkeypatch.setenv(executor.ENV_EXECUTOR, "ray")
    monkeypatch.delenv(executor.ENV_RAY_ADDRESS, raising=False)
    studies = ["few_shot_init", "tip_adapter"]
    outcomes = runner.run(studies, "smoke", out_dir=tmp_path, concurrent=True)
    assert [(o.study, o.status) for o in outcomes] == [(s, "ran") for s in studies]
    local_dir = built_book.parent.parent / "executed"
    for study in studies:
        ray_metrics = json.loads((tmp_path / f"{study}.results.json").read_text())["metrics"]
        local_metrics = json.loads((local_dir / f"{study}.results.json").read_text())["metrics"]
        timing = {k for k in local_metrics if "minutes" in k or "seconds" in k}
        ray_numbers = {k: v for k, v in ray_metrics.items() if k not in timing}
        local_numbers = {k: v for k, v in local_metrics.items() if k not in timing}
        assert ray_numbers == local_numbers, study
