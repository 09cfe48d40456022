"""The chapter "Few-shot initialisation": a few-shot head started at random or at zero-shot.

The CLIP paper found a linear probe on one or two examples per class below zero-shot CLIP; the
source blog's fix starts the head *at* the zero-shot classifier, ``W_0 = s T``, ``b_0 = 0``, so
that at zero steps it is zero-shot. :func:`run` measures both initialisations (and logistic
regression and zero-shot) against the number of shots, and the one-shot validation curves;
:func:`numbers` and :func:`verdicts` give what the prose cites.

The heads themselves are :mod:`clipnb.methods.heads`; the protocol (k-shot draws, choices on
validation, one test read) is :mod:`clipnb.methods.few_shot`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import torch

from clipnb.core import report
from clipnb.core.evaluation import accuracy, zero_shot_logits
from clipnb.core.features import ENSEMBLE_TEMPLATES, SINGLE_TEMPLATE
from clipnb.core.utils import seed_everything
from clipnb.methods import few_shot
from clipnb.methods.backbones import load_model
from clipnb.methods.heads import HeadTraining, LinearHead, train_head
from clipnb.studies.tip_adapter import plot_accuracy_vs_shots
from clipnb.studies.zero_shot import dataset_options, plot_val_curves

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = [
    "NEAR",
    "FewShotInitResults",
    "curve_figure",
    "numbers",
    "run",
    "shots_figure",
    "shots_table",
    "verdicts",
    "zero_steps_table",
]

#: "Near" zero-shot means within this many points of it.
NEAR = 2.0

#: The methods compared against shots, in the table's order.
METHODS = ("zero-shot", "logistic regression", "random init", "zero-shot init")

#: The trained methods and the short names of their glue keys.
TRAINED_KEYS = {
    "random init": "random",
    "zero-shot init": "zsinit",
    "logistic regression": "logreg",
}

#: The two initialisations of the one-shot curves, in the order they are trained and drawn.
CURVE_INITS = ("zero-shot init", "random init")

#: The column of the zero-steps table for the zero-shot-initialised head.
ZERO_STEPS_HEAD = "zero-shot-initialised head, 0 steps"


@dataclass
class FewShotInitResults:
    """Everything the chapter computes.

    ``zero_steps``: test accuracy of zero-shot and of the zero-shot head before any step, per
    dataset; ``records``: one row per (dataset, method, shots, seed) as
    :func:`clipnb.methods.few_shot.run_few_shot` gives them; ``curves``: for ``"contrast"`` and
    ``"focus"``, the one-shot training records per initialisation (one per seed), and
    ``curve_zs_val`` zero-shot's validation accuracy there.
    """

    datasets: list[str]
    shots: list[int]
    n_seeds: int
    epochs: int
    lrs: list[float]
    logit_scale: float
    focus_dataset: str
    contrast_dataset: str
    curve_lr: float
    curve_epochs: int
    zero_steps: pd.DataFrame
    records: list[dict[str, Any]]
    curves: dict[str, dict[str, list[HeadTraining]]]
    curve_zs_val: dict[str, float]

    @property
    def frame(self) -> pd.DataFrame:
        return pd.DataFrame.from_records(self.records)

    @property
    def curve_datasets(self) -> dict[str, str]:
        """The curves' datasets: a task where zero-shot works, then the OOD digits."""
        return {"contrast": self.contrast_dataset, "focus": self.focus_dataset}


def zero_steps_row(task: few_shot.FeatureTask) -> dict[str, Any]:
    """Zero-shot and the zero-shot-initialised head at zero steps, on the test split (asserted
    equal)."""
    head = LinearHead.zero_shot(task.class_weights, task.logit_scale)
    with torch.no_grad():
        head_acc = accuracy(head(task.test.x), task.test.y)
    zs_acc = accuracy(
        zero_shot_logits(task.test.x, task.class_weights, task.logit_scale), task.test.y
    )
    if head_acc != zs_acc:  # the chapter's claim: at zero steps the head *is* zero-shot
        raise AssertionError((task.name, head_acc, zs_acc))
    return {"dataset": task.name, "zero-shot": zs_acc, ZERO_STEPS_HEAD: head_acc}


def one_shot_curves(
    task: few_shot.FeatureTask, seeds: Sequence[int], epochs: int, lr: float
) -> dict[str, list[HeadTraining]]:
    """Validation accuracy per epoch of one-shot heads from each initialisation, one per seed."""
    runs: dict[str, list[HeadTraining]] = {init: [] for init in CURVE_INITS}
    for seed in seeds:
        problem = few_shot.few_shot_problem(task, 1, seed)
        for init, done in runs.items():
            if init == "zero-shot init":
                head = LinearHead.zero_shot(problem.class_weights, problem.logit_scale)
            else:
                head = LinearHead.random(problem.class_weights.shape[1], problem.n_classes, seed)
            split = (problem.train.x, problem.train.y, problem.val.x, problem.val.y)
            done.append(train_head(head, *split, epochs=epochs, lr=lr, seed=seed)[1])
    return runs


def run(
    *,
    profile: str,
    datasets: Sequence[str],
    world_per_class: Sequence[int],
    shots: Sequence[int],
    seeds: Sequence[int],
    prompt: str,
    epochs: int,
    lrs: Sequence[float],
    focus_dataset: str,
    contrast_dataset: str,
    curve_lr: float,
    curve_epochs: int,
    progress: bool = True,
) -> FewShotInitResults:
    """The chapter's computation, with the notebook's parameters, in the notebook's order.

    The zero-steps check, then every method at every (shots, seed), then the one-shot curves.
    Heads draw their initial weights from the global generator, so the order is the seeding.
    """
    seed_everything(seeds[0])
    bundle = load_model(profile)
    templates = {"single": SINGLE_TEMPLATE, "ensemble": ENSEMBLE_TEMPLATES}[prompt]
    tasks = {
        name: few_shot.load_feature_task(
            bundle, name, templates, **dataset_options(name, world_per_class)
        )
        for name in datasets
    }
    zero_steps = pd.DataFrame([zero_steps_row(task) for task in tasks.values()])
    methods = {
        "zero-shot": few_shot.zero_shot_method(),
        "logistic regression": few_shot.linear_probe_method(),
        "random init": few_shot.head_method("random", epochs=epochs, lr=lrs),
        "zero-shot init": few_shot.head_method("zero_shot", epochs=epochs, lr=lrs),
    }
    records = []
    for task in tasks.values():
        records += few_shot.run_few_shot(task, methods, shots, seeds, progress=progress)
    curves, curve_zs_val = {}, {}
    for key, name in (("contrast", contrast_dataset), ("focus", focus_dataset)):
        task = tasks[name]
        curves[key] = one_shot_curves(task, seeds, curve_epochs, curve_lr)
        curve_zs_val[key] = accuracy(
            zero_shot_logits(task.val.x, task.class_weights, task.logit_scale), task.val.y
        )
    return FewShotInitResults(
        datasets=list(datasets),
        shots=list(shots),
        n_seeds=len(seeds),
        epochs=epochs,
        lrs=list(lrs),
        logit_scale=bundle.logit_scale,
        focus_dataset=focus_dataset,
        contrast_dataset=contrast_dataset,
        curve_lr=curve_lr,
        curve_epochs=curve_epochs,
        zero_steps=zero_steps.set_index("dataset"),
        records=records,
        curves=curves,
        curve_zs_val=curve_zs_val,
    )


# --- tables and figures ----------------------------------------------------------------------------


def zero_steps_table(results: FewShotInitResults) -> pd.DataFrame:
    """Zero-shot beside the zero-shot-initialised head before any step (identical by design)."""
    return results.zero_steps.round(2)


def shots_table(results: FewShotInitResults) -> pd.DataFrame:
    """Test accuracy (mean ± std over seeds) per (dataset, method) and shots; column 0 holds
    zero-shot for the two classifiers that exist without examples."""
    table = report.mean_std_table(results.frame, ["dataset", "method"], "shots")
    zero_steps = zero_steps_table(results)
    zero_col = [
        f"{zero_steps.loc[d, 'zero-shot']:.1f}" if m in ("zero-shot", "zero-shot init") else "—"
        for d, m in table.index
    ]
    table.insert(0, 0, zero_col)
    return table


def shots_figure(results: FewShotInitResults) -> Figure:
    """Test accuracy against shots per class, one panel per dataset."""
    return plot_accuracy_vs_shots(
        results.records,
        methods=["zero-shot", "random init", "zero-shot init", "logistic regression"],
        ncols=len(results.datasets),
    )


def curve_figure(results: FewShotInitResults) -> Figure:
    """The one-shot validation curves: left, a task where zero-shot works; right, the digits."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8), sharey=False)
    for ax, (key, name) in zip(axes, results.curve_datasets.items(), strict=True):
        title = f"1-shot heads, {name}"
        plot_val_curves(results.curves[key], results.curve_zs_val[key], title=title, ax=ax)
    fig.tight_layout()
    return fig


# --- numbers and verdicts --------------------------------------------------------------------------


def _means(results: FewShotInitResults) -> pd.DataFrame:
    """Mean test accuracy over seeds: rows (dataset, method), columns shots."""
    return report.mean_table(results.frame, ["dataset", "method"], "shots")


def _epochs_at_max_shots(results: FewShotInitResults) -> pd.Series:
    """The epoch validation chose at the most shots, mean over seeds, per (dataset, method)."""
    frame = results.frame
    top = frame[frame["shots"] == results.shots[-1]]
    return top.groupby(["dataset", "method"])["epoch"].mean()


def _curve_means(runs: Sequence[HeadTraining]) -> dict[str, float]:
    """Means over seeds of a curve's start, end, best validation accuracy and best epoch."""
    return {
        "start": float(np.mean([r.val_accuracy[0] for r in runs])),
        "final": float(np.mean([r.val_accuracy[-1] for r in runs])),
        "best_val": float(np.mean([r.best_val for r in runs])),
        "best_epoch": float(np.mean([r.best_epoch for r in runs])),
    }


def numbers(results: FewShotInitResults) -> dict[str, float]:
    """Every number the chapter's prose cites."""
    means = _means(results)
    zs = means.xs("zero-shot", level="method")
    shots = results.shots
    small = [k for k in shots if k <= 2]
    out: dict[str, float] = {
        "logit_scale": results.logit_scale,
        "epochs": results.epochs,
        "n_seeds": results.n_seeds,
        "lr_min": min(results.lrs),
        "lr_max": max(results.lrs),
        "n_cells": len(results.datasets) * len(shots),
        "n_small_cells": len(results.datasets) * len(small),
    }
    places = (("focus", results.focus_dataset), ("contrast", results.contrast_dataset))
    for m, key in TRAINED_KEYS.items():
        below = means.xs(m, level="method") < zs - 1e-9
        out[f"n_{key}_below_zs"] = float(below.to_numpy().sum())
        out[f"n_{key}_below_zs_small"] = float(below[small].to_numpy().sum())
        for where, d in places:
            out[f"{key}_{where}_1shot"] = means.loc[(d, m), shots[0]]
            out[f"{key}_{where}_max"] = means.loc[(d, m), shots[-1]]
    gain = means.xs("zero-shot init", level="method") - zs
    out |= {
        "zs_focus": zs.loc[results.focus_dataset, shots[0]],
        "zs_contrast": zs.loc[results.contrast_dataset, shots[0]],
        "chosen_epoch_focus_max": _epochs_at_max_shots(results)[
            (results.focus_dataset, "random init")
        ],
        "max_shots": shots[-1],
        "zsinit_gain_1shot_mean": gain[shots[0]].mean(),
        "zsinit_gain_max_mean": gain[shots[-1]].mean(),
        "zsinit_worst_vs_zs": max(0.0, -gain.min().min()),
        "near_points": NEAR,
        "curve_lr": results.curve_lr,
        "curve_epochs": results.curve_epochs,
    }
    frame = results.frame
    one_shot = frame[(frame["method"] == "zero-shot init") & (frame["shots"] == shots[0])]
    for key, name in results.curve_datasets.items():
        runs = results.curves[key]["zero-shot init"]
        epoch5 = min(5, results.curve_epochs)
        out |= {
            f"curve_{key}_zs_val": results.curve_zs_val[key],
            f"curve_{key}_best_epoch": np.mean([r.best_epoch for r in runs]),
            f"curve_{key}_best_val": np.mean([r.best_val for r in runs]),
            f"curve_{key}_final_val": np.mean([r.val_accuracy[-1] for r in runs]),
            f"curve_{key}_epoch5": np.mean([r.val_accuracy[epoch5] for r in runs]),
            f"chosen_epoch_{key}": one_shot.loc[one_shot["dataset"] == name, "epoch"].mean(),
        }
    return {name: float(value) for name, value in out.items()}


def _dip(means: pd.DataFrame, zs: pd.DataFrame, dataset: str, one: int) -> str:
    """Which of the heads trained from scratch fall below zero-shot at one shot."""
    z = zs.loc[dataset, one]
    dips = [m for m in ("random init", "logistic regression") if means.loc[(dataset, m), one] < z]
    if len(dips) == 2:
        return "both fall below zero-shot"
    if dips:
        return f"only the {dips[0]} falls below zero-shot"
    return "neither falls below zero-shot"


def _zsinit_path(means: pd.DataFrame, zs: pd.DataFrame, dataset: str) -> str:
    """How the zero-shot-initialised head moves against zero-shot as the shots grow."""
    diff = means.loc[(dataset, "zero-shot init")] - zs.loc[dataset]
    if diff.abs().max() <= NEAR:
        return f"stays within {NEAR:.0f} points of it at every number of shots"
    if diff.min() >= -NEAR:
        return (
            f"never falls more than {NEAR:.0f} points below it and rises above it with more shots"
        )
    return f"falls more than {NEAR:.0f} points below it at some number of shots"


def _contrast_verdict(results: FewShotInitResults, means: pd.DataFrame, zs: pd.DataFrame) -> str:
    """Does the zero-shot start remove the one-shot dip, and do the examples add much after it?"""
    d, one, last = results.contrast_dataset, results.shots[0], results.shots[-1]
    dips = means.loc[(d, "random init"), one] < zs.loc[d, one]
    removed = means.loc[(d, "zero-shot init"), one] >= zs.loc[d, one] - NEAR
    if dips and removed:
        removal = "it removes the dip"
    elif dips:
        removal = "it does not remove the dip"
    else:
        removal = "there is no dip for it to remove"
    if means.loc[(d, "zero-shot init"), last] - zs.loc[d, last] <= 5:
        return removal + (
            f", but a few examples add little on top of the text (at most 5 points at {last} shots)"
        )
    return removal + f", and at {last} shots the examples add more than 5 points on top of the text"


def _curve_verdicts(results: FewShotInitResults) -> dict[str, str]:
    """What the one-shot curves of the zero-shot-initialised head show (means over seeds)."""
    contrast = _curve_means(results.curves["contrast"]["zero-shot init"])
    source_like = contrast["best_epoch"] <= 5 and contrast["final"] < contrast["start"]
    if source_like:
        contrast_verdict = (
            "That is the source's curve (validation chooses an epoch within the first five and"
            " ends below where it started): one example per class pulls the classifier towards"
            ' those particular images (the source\'s "sleeping dog" for the class dog) and away'
            " from what the class name covers"
        )
    else:
        contrast_verdict = (
            "That is not the source's curve, where validation accuracy fell almost from the first"
            " epoch (here validation does not both choose an epoch within the first five and end"
            " below where it started)"
        )
    focus = _curve_means(results.curves["focus"]["zero-shot init"])
    climbs = focus["best_val"] > focus["start"] + 1e-9
    slides = focus["final"] < focus["best_val"] - 1e-9
    return {
        "curve_contrast_verdict": contrast_verdict,
        "curve_focus_climb": "climbs" if climbs else "does not climb; it goes",
        "curve_focus_after": "and only then slides" if slides else "and stays there",
        "curve_focus_reason": (
            "the text knows little about the digits, so training has something to add"
            if climbs
            else "training adds nothing the text did not already give"
        ),
    }


def verdicts(results: FewShotInitResults) -> dict[str, str]:
    """Every phrase the chapter's prose pulls in with ``{glue:md}``, computed from the numbers."""
    means = _means(results)
    zs = means.xs("zero-shot", level="method")
    focus, one, last = results.focus_dataset, results.shots[0], results.shots[-1]
    out = {}
    for where, d in (("contrast", results.contrast_dataset), ("focus", focus)):
        out[f"dip_{where}"] = _dip(means, zs, d, one)
        out[f"zsinit_path_{where}"] = _zsinit_path(means, zs, d)
    contrast_dips = (
        means.loc[(results.contrast_dataset, "random init"), one]
        < zs.loc[results.contrast_dataset, one]
    )
    out["source_claim_contrast"] = (
        "holds on this model" if contrast_dips else "does not hold on this model"
    )
    out["zsinit_contrast_verdict"] = _contrast_verdict(results, means, zs)
    focus_dips = any(
        means.loc[(focus, m), one] < zs.loc[focus, one]
        for m in ("random init", "logistic regression")
    )
    out["focus_dip_verdict"] = (
        "a dip below zero-shot appears here too" if focus_dips else "there is no dip to remove"
    )
    frame = results.frame
    spread = (
        frame[(frame["dataset"] == focus) & (frame["shots"] == one)]
        .groupby("method")["accuracy"]
        .std(ddof=0)
    )
    trained = ["random init", "logistic regression", "zero-shot init"]
    gaps = means.loc[[(focus, m) for m in trained], one]
    out["focus_spread_verdict"] = (
        "as large as the gaps between them"
        if spread[trained].max() >= gaps.max() - gaps.min()
        else "smaller than the largest gap between them"
    )
    worst = (means.xs("zero-shot init", level="method") - zs).min().min()
    out["zsinit_below_verdict"] = (
        f"by at most {max(0.0, -worst):.1f} points: the guard is on validation (epoch 0 is a"
        " candidate), so on test a trained epoch can still land below zero-shot"
        if worst < -1e-9
        else "so on test, as on validation, it never falls below zero-shot"
    )
    epoch_max = _epochs_at_max_shots(results)[(focus, "random init")]
    out["still_improving"] = (
        "so it is still improving there"
        if epoch_max >= 0.9 * results.epochs
        else "so it has mostly stopped improving before the last epoch"
    )
    lr_best = means.loc[(focus, "logistic regression"), last] > max(
        means.loc[(focus, m), last] for m in ("random init", "zero-shot init")
    )
    out["logreg_reference"] = (
        "is the better reference at many shots (it is above both heads here)"
        if lr_best
        else "is a reference too, though here it is not above both heads"
    )
    return out | _curve_verdicts(results)
