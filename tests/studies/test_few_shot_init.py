"""Checks behind the chapter "Few-shot initialisation" (LinearHead itself: tests/methods/test_finetune.py)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

import clipnb
from clipnb.core.features import SplitFeatures
from clipnb.methods import few_shot
from clipnb.methods.heads import HeadTraining, LinearHead, train_head
from clipnb.studies import few_shot_init


def _task(n_classes: int = 4, dim: int = 16) -> few_shot.FeatureTask:
    """Features scattered around known class directions; the zero-shot weights are those directions."""
    g = torch.Generator().manual_seed(0)
    weights = F.normalize(torch.randn(n_classes, dim, generator=g), dim=-1)

    def split(n: int) -> SplitFeatures:
        y = torch.arange(n_classes).repeat_interleave(n)
        x = F.normalize(weights[y] + 0.6 * torch.randn(len(y), dim, generator=g), dim=-1)
        return SplitFeatures(x, y, [f"c{i}" for i in range(n_classes)])

    return few_shot.FeatureTask("toy", split(8), split(10), split(25), weights, 50.0)


def test_zero_shot_initialised_head_at_zero_epochs_is_zero_shot():
    task = _task()
    methods = {
        "zero-shot": few_shot.zero_shot_method(),
        "zero-shot init": few_shot.head_method("zero_shot", epochs=0),
    }
    records = few_shot.run_few_shot(task, methods, shots=[1, 2], seeds=[0, 1], progress=False)
    by_method = {}
    for r in records:
        by_method.setdefault(r["method"], []).append(r["accuracy"])
    assert by_method["zero-shot"] == by_method["zero-shot init"]
    head = LinearHead.zero_shot(task.class_weights, task.logit_scale)
    zs = clipnb.zero_shot_logits(task.test.x, task.class_weights, task.logit_scale)
    with torch.no_grad():
        assert torch.equal(head(task.test.x).argmax(-1), zs.argmax(-1))


def test_training_never_leaves_a_zero_shot_head_below_zero_shot_on_validation():
    task = _task()
    # Validation = the class directions themselves: zero-shot is perfect there, so no epoch can
    # beat epoch 0 and the trained head must come back as the zero-shot classifier.
    val_x, val_y = task.class_weights.clone(), torch.arange(len(task.class_weights))
    problem = few_shot.few_shot_problem(task, 1, seed=0)
    head = LinearHead.zero_shot(task.class_weights, task.logit_scale)
    head, record = train_head(
        head, problem.train.x, problem.train.y, val_x, val_y, epochs=20, lr=0.5, seed=0
    )
    assert record.val_accuracy[0] == 100.0 and record.best_epoch == 0
    assert len(record.val_accuracy) == 21
    zs = clipnb.zero_shot_logits(task.test.x, task.class_weights, task.logit_scale)
    with torch.no_grad():
        assert torch.allclose(head(task.test.x), zs, atol=1e-4)


def test_random_and_zero_shot_heads_differ_and_are_reproducible():
    task = _task()
    method = few_shot.head_method("random", epochs=5, lr=[0.01, 0.1])
    problem = few_shot.few_shot_problem(task, 2, seed=0)
    a, b = method(problem), method(problem)
    assert a.info == b.info
    with torch.no_grad():
        assert torch.equal(a.predict(task.test.x), b.predict(task.test.x))


# --- the chapter's numbers and verdicts, on hand-made results ----------------------------------

SHOTS = [1, 16]


def _results(
    focus: dict[str, tuple[float, float]],
    contrast: dict[str, tuple[float, float]] | None = None,
    spread: float = 0.0,
    random_epoch: float = 50.0,
    curves: dict[str, list[float]] | None = None,
) -> few_shot_init.FewShotInitResults:
    """Two datasets (focus "digits", contrast "shapes"), two seeds. ``focus[method]`` is the mean
    accuracy at 1 and at 16 shots; the seeds sit ``spread`` below and above it. ``curves`` gives
    the validation curve of both seeds' zero-shot-initialised heads."""
    contrast = contrast or focus
    records = []
    for dataset, accs in (("digits", focus), ("shapes", contrast)):
        for method, means in accs.items():
            for k, mean in zip(SHOTS, means, strict=True):
                for seed, sign in ((0, -1), (1, 1)):
                    record = {
                        "dataset": dataset,
                        "method": method,
                        "shots": k,
                        "seed": seed,
                        "accuracy": mean + sign * spread,
                    }
                    if method.endswith("init"):
                        record["epoch"] = random_epoch if method == "random init" else 3.0
                    records.append(record)
    curves = curves or {"contrast": [50.0, 60.0, 40.0], "focus": [20.0, 30.0, 25.0]}
    trained = {
        key: {
            init: [HeadTraining(values, best_epoch=int(np.argmax(values)))] * 2
            for init in few_shot_init.CURVE_INITS
        }
        for key, values in curves.items()
    }
    zero_steps = pd.DataFrame(
        {"zero-shot": [30.0, 60.0], few_shot_init.ZERO_STEPS_HEAD: [30.0, 60.0]},
        index=pd.Index(["digits", "shapes"], name="dataset"),
    )
    return few_shot_init.FewShotInitResults(
        datasets=["digits", "shapes"],
        shots=SHOTS,
        n_seeds=2,
        epochs=100,
        lrs=[0.03, 0.3],
        logit_scale=50.0,
        focus_dataset="digits",
        contrast_dataset="shapes",
        curve_lr=0.03,
        curve_epochs=2,
        zero_steps=zero_steps,
        records=records,
        curves=trained,
        curve_zs_val={"contrast": 50.0, "focus": 20.0},
    )


def _methods(zs, logreg, random, zsinit) -> dict[str, tuple[float, float]]:
    return {
        "zero-shot": zs,
        "logistic regression": logreg,
        "random init": random,
        "zero-shot init": zsinit,
    }


#: A task where both heads from scratch dip at one shot and the zero-shot start stays near.
DIP = _methods((50.0, 50.0), (40.0, 60.0), (45.0, 62.0), (51.0, 52.0))


def test_numbers_follow_the_records():
    n = few_shot_init.numbers(_results(DIP, spread=1.0))
    assert (n["n_cells"], n["n_small_cells"], n["max_shots"]) == (4.0, 2.0, 16.0)
    assert n["zs_focus"] == 50.0 and n["random_focus_1shot"] == 45.0
    assert n["logreg_contrast_max"] == 60.0 and n["zsinit_focus_max"] == 52.0
    assert n["n_random_below_zs"] == 2.0 and n["n_random_below_zs_small"] == 2.0
    assert n["n_zsinit_below_zs"] == 0.0 and n["zsinit_worst_vs_zs"] == 0.0
    assert n["zsinit_gain_1shot_mean"] == 1.0 and n["zsinit_gain_max_mean"] == 2.0
    assert n["chosen_epoch_focus_max"] == 50.0 and n["chosen_epoch_focus"] == 3.0
    assert n["curve_contrast_best_epoch"] == 1.0 and n["curve_contrast_final_val"] == 40.0
    assert n["curve_focus_best_val"] == 30.0 and n["curve_focus_epoch5"] == 25.0
    assert (n["lr_min"], n["lr_max"], n["near_points"]) == (0.03, 0.3, 2.0)
    assert all(isinstance(v, float) for v in n.values())


def test_tables_of_the_chapter():
    results = _results(DIP)
    table = few_shot_init.shots_table(results)
    assert list(table.columns) == [0, 1, 16]
    assert table.loc[("digits", "zero-shot init"), 0] == "30.0"
    assert table.loc[("digits", "random init"), 0] == "—"
    assert table.loc[("digits", "random init"), 16] == "62.0 ± 0.0"
    assert few_shot_init.zero_steps_table(results).shape == (2, 2)


def test_dip_and_source_claim_every_branch():
    v = few_shot_init.verdicts(_results(DIP))
    assert v["dip_focus"] == v["dip_contrast"] == "both fall below zero-shot"
    assert v["source_claim_contrast"] == "holds on this model"
    assert v["focus_dip_verdict"] == "a dip below zero-shot appears here too"
    only_random = _methods((50.0, 50.0), (50.0, 60.0), (45.0, 62.0), (51.0, 53.0))
    v = few_shot_init.verdicts(_results(only_random))
    assert v["dip_focus"] == "only the random init falls below zero-shot"
    only_logreg = _methods((50.0, 50.0), (45.0, 60.0), (50.0, 62.0), (51.0, 53.0))
    v = few_shot_init.verdicts(_results(only_logreg))
    assert v["dip_focus"] == "only the logistic regression falls below zero-shot"
    assert v["source_claim_contrast"] == "does not hold on this model"
    assert v["focus_dip_verdict"] == "a dip below zero-shot appears here too"
    neither = _methods((50.0, 50.0), (55.0, 60.0), (52.0, 62.0), (51.0, 53.0))
    v = few_shot_init.verdicts(_results(neither))
    assert v["dip_focus"] == "neither falls below zero-shot"
    assert v["focus_dip_verdict"] == "there is no dip to remove"


def test_zero_shot_start_path_and_removal_every_branch():
    v = few_shot_init.verdicts(_results(DIP))
    assert v["zsinit_path_focus"] == "stays within 2 points of it at every number of shots"
    assert v["zsinit_contrast_verdict"] == (
        "it removes the dip, but a few examples add little on top of the text"
        " (at most 5 points at 16 shots)"
    )
    rises = _methods((50.0, 50.0), (40.0, 60.0), (45.0, 62.0), (47.0, 58.0))
    v = few_shot_init.verdicts(_results(rises))
    assert v["zsinit_path_contrast"] == (
        "falls more than 2 points below it at some number of shots"
    )
    assert v["zsinit_contrast_verdict"] == (
        "it does not remove the dip, and at 16 shots the examples add more than 5 points on top"
        " of the text"
    )
    climbs = _methods((50.0, 50.0), (55.0, 60.0), (52.0, 62.0), (49.0, 58.0))
    v = few_shot_init.verdicts(_results(climbs))
    assert v["zsinit_path_focus"] == (
        "never falls more than 2 points below it and rises above it with more shots"
    )
    assert v["zsinit_contrast_verdict"].startswith(
        "there is no dip for it to remove, and at 16 shots"
    )


def test_spread_below_epoch_and_reference_verdicts_every_branch():
    v = few_shot_init.verdicts(_results(DIP, spread=11.0, random_epoch=90.0))
    assert v["focus_spread_verdict"] == "as large as the gaps between them"  # 11 >= 51 - 40
    assert (
        v["zsinit_below_verdict"] == "so on test, as on validation, it never falls below zero-shot"
    )
    assert v["still_improving"] == "so it is still improving there"
    assert v["logreg_reference"] == ("is a reference too, though here it is not above both heads")
    best_logreg = _methods((50.0, 50.0), (40.0, 70.0), (45.0, 62.0), (48.5, 53.0))
    v = few_shot_init.verdicts(_results(best_logreg, spread=5.0, random_epoch=89.0))
    assert v["focus_spread_verdict"] == "smaller than the largest gap between them"
    assert v["zsinit_below_verdict"] == (
        "by at most 1.5 points: the guard is on validation (epoch 0 is a candidate), so on test a"
        " trained epoch can still land below zero-shot"
    )
    assert v["still_improving"] == "so it has mostly stopped improving before the last epoch"
    assert v["logreg_reference"] == (
        "is the better reference at many shots (it is above both heads here)"
    )


def test_curve_verdicts_every_branch():
    v = few_shot_init.verdicts(_results(DIP))  # shapes: best at epoch 1, ends below its start
    assert v["curve_contrast_verdict"].startswith("That is the source's curve (validation chooses")
    assert v["curve_focus_climb"] == "climbs" and v["curve_focus_after"] == "and only then slides"
    assert v["curve_focus_reason"] == (
        "the text knows little about the digits, so training has something to add"
    )
    flat = {"contrast": [50.0, 60.0, 55.0], "focus": [20.0, 20.0, 20.0]}
    v = few_shot_init.verdicts(_results(DIP, curves=flat))
    assert v["curve_contrast_verdict"] == (
        "That is not the source's curve, where validation accuracy fell almost from the first"
        " epoch (here validation does not both choose an epoch within the first five and end"
        " below where it started)"
    )
    assert v["curve_focus_climb"] == "does not climb; it goes"
    assert v["curve_focus_after"] == "and stays there"
    assert v["curve_focus_reason"] == "training adds nothing the text did not already give"
