# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python (clipnb)
#     language: python
#     name: clipnb
# ---

# %% [markdown]
# # Few-shot initialisation
#
# The CLIP paper found, against its authors' expectation, that a linear classifier trained on
# CLIP's features with one or two examples per class does worse than zero-shot CLIP with no
# examples at all (the source slides: "CLIP + Linear Probe is worse than Zero-shot CLIP for 2-3
# labels"). The source blog's explanation is that a classifier trained from scratch throws away
# what the class names say; its fix is to start the classifier *at* the zero-shot classifier. On
# CIFAR-100 it reports that the zero-shot-initialised head at zero steps matches zero-shot exactly
# (0.6168), that its one-shot accuracy no longer falls below zero-shot, but also that it is not
# much better, because validation accuracy starts dropping almost as soon as training starts.
#
# **Question.** On the embedded CLIP, does a randomly initialised few-shot head fall below
# zero-shot at 1–2 shots, does the zero-shot initialisation prevent it, and does one-shot
# training overfit from the first epoch?

# %% tags=["parameters"]
profile = "embedded"
datasets = ["digits", "world-shape-photo"]
world_per_class = [32, 16, 64]
shots = [1, 2, 4, 8, 16]
seeds = [0, 1, 2]
prompt = "single"
epochs = 100
lrs = [0.03, 0.3]
focus_dataset = "digits"
contrast_dataset = "world-shape-photo"
curve_lr = 0.03
curve_epochs = 100

# %%
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch

import clipnb
from clipnb.core import report
from clipnb.core.evaluation import accuracy, zero_shot_logits
from clipnb.core.features import ENSEMBLE_TEMPLATES, SINGLE_TEMPLATE
from clipnb.methods import few_shot
from clipnb.methods.backbones import load_model
from clipnb.methods.heads import LinearHead, train_head
from clipnb.studies import tip_adapter as tip_adapter_figures
from clipnb.studies.zero_shot import plot_val_curves

clipnb.seed_everything(seeds[0])
report.set_style()
bundle = load_model(profile)
templates = {"single": SINGLE_TEMPLATE, "ensemble": ENSEMBLE_TEMPLATES}[prompt]


def dataset_options(name: str) -> dict:
    return {"per_class": tuple(world_per_class)} if name.startswith("world-") else {}


tasks = {
    name: few_shot.load_feature_task(bundle, name, templates, **dataset_options(name))
    for name in datasets
}
report.glue("logit_scale", bundle.logit_scale)
report.glue("epochs", epochs)
report.glue("n_seeds", len(seeds))
report.glue("lr_min", min(lrs))
report.glue("lr_max", max(lrs))

# %% [markdown]
# ## Method
#
# The head is linear on the frozen, L2-normalised image features $f(x)$:
# $\operatorname{logits}(x) = W f(x) + b$, trained with Adam on the cross-entropy of the $k$
# examples per class. Zero-shot CLIP is itself such a head, $W = s\,T$, $b = 0$, where the rows
# of $T$ are the normalised class prompt embeddings ("a photo of a {c}.") and $s$ is the logit
# scale (here {glue:text}`logit_scale:.1f`). So two initialisations are compared:
#
# $$
# W_0^{\text{random}} \sim \mathcal{U}\!\left(-\tfrac{1}{\sqrt{D}}, \tfrac{1}{\sqrt{D}}\right),
# \qquad
# W_0^{\text{zero-shot}} = s\,T,\quad b_0 = 0 ,
# $$
#
# and at zero steps the second one *is* the zero-shot classifier. Each head trains for
# {glue:text}`epochs:.0f` epochs (full batch at these sizes, so one step per epoch) at learning
# rates from {glue:text}`lr_min:.2g` to {glue:text}`lr_max:.2g`; the learning rate and the epoch
# (epoch 0, the initial head, included) are chosen on the validation split, and the test split is
# read once per number. Beside them: logistic regression (C chosen on validation, as in the
# previous chapter) and zero-shot. Shots are drawn per seed ({glue:text}`n_seeds:.0f` seeds).

# %% [markdown]
# ## Zero steps: the zero-shot head is zero-shot

# %%
rows = []
for name, task in tasks.items():
    head = LinearHead.zero_shot(task.class_weights, task.logit_scale)
    with torch.no_grad():
        head_acc = accuracy(head(task.test.x), task.test.y)
    zs_acc = accuracy(
        zero_shot_logits(task.test.x, task.class_weights, task.logit_scale), task.test.y
    )
    assert head_acc == zs_acc, (name, head_acc, zs_acc)
    rows.append(
        {"dataset": name, "zero-shot": zs_acc, "zero-shot-initialised head, 0 steps": head_acc}
    )
zero_steps = pd.DataFrame(rows).set_index("dataset").round(2)
zero_steps

# %% [markdown]
# Identical on every dataset (the notebook asserts equality, and a unit test checks the logits).
#
# ## Accuracy against shots

# %%
methods = {
    "zero-shot": few_shot.zero_shot_method(),
    "logistic regression": few_shot.linear_probe_method(),
    "random init": few_shot.head_method("random", epochs=epochs, lr=lrs),
    "zero-shot init": few_shot.head_method("zero_shot", epochs=epochs, lr=lrs),
}
records = []
for task in tasks.values():
    records += few_shot.run_few_shot(task, methods, shots, seeds)
results = pd.DataFrame.from_records(records)
table = report.mean_std_table(results, ["dataset", "method"], "shots")
zero_col = [
    f"{zero_steps.loc[d, 'zero-shot']:.1f}" if m in ("zero-shot", "zero-shot init") else "—"
    for d, m in table.index
]
table.insert(0, 0, zero_col)
table

# %% [markdown]
# Test accuracy (%), mean ± std over seeds, by shots per class (column 0: no examples; only the
# zero-shot classifier and the zero-shot-initialised head exist there).

# %%
fig = tip_adapter_figures.plot_accuracy_vs_shots(
    records,
    methods=["zero-shot", "random init", "zero-shot init", "logistic regression"],
    ncols=len(datasets),
)
report.glue("fig_shots", fig)
plt.close(fig)

means = report.mean_table(results, ["dataset", "method"], "shots")
zs = means.xs("zero-shot", level="method")
below = {m: (means.xs(m, level="method") < zs - 1e-9) for m in methods if m != "zero-shot"}
small = [k for k in shots if k <= 2]
report.glue("n_cells", len(datasets) * len(shots))
report.glue("n_small_cells", len(datasets) * len(small))
for m, key in (
    ("random init", "random"),
    ("zero-shot init", "zsinit"),
    ("logistic regression", "logreg"),
):
    report.glue(f"n_{key}_below_zs", float(below[m].to_numpy().sum()))
    report.glue(f"n_{key}_below_zs_small", float(below[m][small].to_numpy().sum()))
    for where, d in (("focus", focus_dataset), ("contrast", contrast_dataset)):
        report.glue(f"{key}_{where}_1shot", means.loc[(d, m), shots[0]])
        report.glue(f"{key}_{where}_max", means.loc[(d, m), shots[-1]])
report.glue("zs_focus", zs.loc[focus_dataset, shots[0]])
report.glue("zs_contrast", zs.loc[contrast_dataset, shots[0]])
top = results[results["shots"] == shots[-1]].groupby(["dataset", "method"])["epoch"].mean()
report.glue("chosen_epoch_focus_max", top[(focus_dataset, "random init")])
report.glue("max_shots", shots[-1])
gain = means.xs("zero-shot init", level="method") - zs
report.glue("zsinit_gain_1shot_mean", gain[shots[0]].mean())
report.glue("zsinit_gain_max_mean", gain[shots[-1]].mean())
worst = (means.xs("zero-shot init", level="method") - zs).min().min()
report.glue("zsinit_worst_vs_zs", max(0.0, -worst))

# Verdicts for the prose. "Near" zero-shot means within NEAR points of it.
NEAR = 2.0
report.glue("near_points", NEAR)
one = shots[0]
for where, d in (("contrast", contrast_dataset), ("focus", focus_dataset)):
    z = zs.loc[d, one]
    dips = [m for m in ("random init", "logistic regression") if means.loc[(d, m), one] < z]
    if len(dips) == 2:
        dip = "both fall below zero-shot"
    elif dips:
        dip = f"only the {dips[0]} falls below zero-shot"
    else:
        dip = "neither falls below zero-shot"
    report.glue_words(f"dip_{where}", dip)
    zsinit_diff = means.loc[(d, "zero-shot init")] - zs.loc[d]
    if zsinit_diff.abs().max() <= NEAR:
        path = f"stays within {NEAR:.0f} points of it at every number of shots"
    elif zsinit_diff.min() >= -NEAR:
        path = (
            f"never falls more than {NEAR:.0f} points below it and rises above it with more shots"
        )
    else:
        path = f"falls more than {NEAR:.0f} points below it at some number of shots"
    report.glue_words(f"zsinit_path_{where}", path)
contrast_dips = means.loc[(contrast_dataset, "random init"), one] < zs.loc[contrast_dataset, one]
contrast_removed = means.loc[(contrast_dataset, "zero-shot init"), one] >= (
    zs.loc[contrast_dataset, one] - NEAR
)
report.glue_words(
    "source_claim_contrast",
    "holds on this model" if contrast_dips else "does not hold on this model",
)
contrast_gain_max = (
    means.loc[(contrast_dataset, "zero-shot init"), shots[-1]] - zs.loc[contrast_dataset, shots[-1]]
)
if contrast_dips and contrast_removed:
    removal = "it removes the dip"
elif contrast_dips:
    removal = "it does not remove the dip"
else:
    removal = "there is no dip for it to remove"
report.glue_words(
    "zsinit_contrast_verdict",
    removal
    + (
        ", but a few examples add little on top of the text"
        f" (at most 5 points at {shots[-1]} shots)"
        if contrast_gain_max <= 5
        else f", and at {shots[-1]} shots the examples add more than 5 points on top of the text"
    ),
)
focus_dips = any(
    means.loc[(focus_dataset, m), one] < zs.loc[focus_dataset, one]
    for m in ("random init", "logistic regression")
)
report.glue_words(
    "focus_dip_verdict",
    "a dip below zero-shot appears here too" if focus_dips else "there is no dip to remove",
)
spread = (
    results[(results["dataset"] == focus_dataset) & (results["shots"] == one)]
    .groupby("method")["accuracy"]
    .std(ddof=0)
)
trained = ["random init", "logistic regression", "zero-shot init"]
gaps = means.loc[[(focus_dataset, m) for m in trained], one]
report.glue_words(
    "focus_spread_verdict",
    "as large as the gaps between them"
    if spread[trained].max() >= gaps.max() - gaps.min()
    else "smaller than the largest gap between them",
)
report.glue_words(
    "zsinit_below_verdict",
    f"by at most {max(0.0, -worst):.1f} points: the guard is on validation (epoch 0 is a"
    " candidate), so on test a trained epoch can still land below zero-shot"
    if worst < -1e-9
    else "so on test, as on validation, it never falls below zero-shot",
)
epoch_max = top[(focus_dataset, "random init")]
report.glue_words(
    "still_improving",
    "so it is still improving there"
    if epoch_max >= 0.9 * epochs
    else "so it has mostly stopped improving before the last epoch",
)
lr_best = means.loc[(focus_dataset, "logistic regression"), shots[-1]] > max(
    means.loc[(focus_dataset, m), shots[-1]] for m in ("random init", "zero-shot init")
)
report.glue_words(
    "logreg_reference",
    "is the better reference at many shots (it is above both heads here)"
    if lr_best
    else "is a reference too, though here it is not above both heads",
)

# %% [markdown]
# ```{glue:figure} fig_shots
# :name: fig-few-shot-init
#
# Test accuracy against shots per class (mean ± std over seeds): zero-shot (flat), linear heads
# from a random and from the zero-shot initialisation (Adam; learning rate and epoch chosen on
# validation) and logistic regression. At 0 shots the zero-shot-initialised head equals
# zero-shot.
# ```
#
# **On a task the captions taught** (world shapes in photos here; CIFAR-100 in the `full`
# profile), the source's claim {glue:md}`source_claim_contrast`. Zero-shot is at
# {glue:text}`zs_contrast:.1f` %; with one example per class the random-init head reaches
# {glue:text}`random_contrast_1shot:.1f` % and logistic regression
# {glue:text}`logreg_contrast_1shot:.1f` % ({glue:md}`dip_contrast`), and at
# {glue:text}`max_shots:.0f` shots they are at {glue:text}`random_contrast_max:.1f` % and
# {glue:text}`logreg_contrast_max:.1f` %. The zero-shot-initialised head starts at zero-shot and
# {glue:md}`zsinit_path_contrast` ({glue:text}`zsinit_contrast_1shot:.1f` % at one shot,
# {glue:text}`zsinit_contrast_max:.1f` % at {glue:text}`max_shots:.0f`):
# {glue:md}`zsinit_contrast_verdict`.
#
# **On the out-of-distribution digits** (scikit-learn's handwritten digits here, MNIST in the
# `full` profile), {glue:md}`focus_dip_verdict`. Zero-shot is at {glue:text}`zs_focus:.1f` %, and
# with one example per class the random-init head reaches {glue:text}`random_focus_1shot:.1f` %,
# logistic regression {glue:text}`logreg_focus_1shot:.1f` % and the zero-shot-initialised head
# {glue:text}`zsinit_focus_1shot:.1f` % (the table gives the spread over seeds, which is
# {glue:md}`focus_spread_verdict`). At {glue:text}`max_shots:.0f` shots:
# {glue:text}`random_focus_max:.1f` %, {glue:text}`logreg_focus_max:.1f` % and
# {glue:text}`zsinit_focus_max:.1f` %.
#
# Over all {glue:text}`n_cells:.0f` (dataset, shots) cells, the random-init head is below
# zero-shot in {glue:text}`n_random_below_zs:.0f` ({glue:text}`n_random_below_zs_small:.0f` of the
# {glue:text}`n_small_cells:.0f` cells at 1–2 shots) and the zero-shot-initialised head in
# {glue:text}`n_zsinit_below_zs:.0f`, {glue:md}`zsinit_below_verdict`.
#
# ## The one-shot overfitting curve
#
# The source trained its zero-shot-initialised head on one example per class of CIFAR-100, where
# zero-shot is strong, and watched validation accuracy fall almost from the first epoch. Here the
# same one-shot heads, learning rate {glue:text}`curve_lr:.2f`, {glue:text}`curve_epochs:.0f`
# epochs, one curve per seed, on two datasets: one where zero-shot works (world shapes in the photo
# style here; CIFAR-100 in the `full` profile) and the out-of-distribution digits, where it does
# not. A dot marks the epoch that validation chooses.

# %%
curves, curve_glue = {}, {}
fig, axes = plt.subplots(1, 2, figsize=(11, 3.8), sharey=False)
for key, name, ax in (("contrast", contrast_dataset, axes[0]), ("focus", focus_dataset, axes[1])):
    task = tasks[name]
    runs = {"zero-shot init": [], "random init": []}
    for seed in seeds:
        problem = few_shot.few_shot_problem(task, 1, seed)
        for init, done in runs.items():
            if init == "zero-shot init":
                head = LinearHead.zero_shot(problem.class_weights, problem.logit_scale)
            else:
                head = LinearHead.random(problem.class_weights.shape[1], problem.n_classes, seed)
            split = (problem.train.x, problem.train.y, problem.val.x, problem.val.y)
            done.append(train_head(head, *split, epochs=curve_epochs, lr=curve_lr, seed=seed)[1])
    zs_val = accuracy(
        zero_shot_logits(task.val.x, task.class_weights, task.logit_scale), task.val.y
    )
    plot_val_curves(runs, zs_val, title=f"1-shot heads, {name}", ax=ax)
    zs_runs = curves[key] = runs["zero-shot init"]
    report.glue(f"curve_{key}_zs_val", zs_val)
    report.glue(f"curve_{key}_best_epoch", np.mean([r.best_epoch for r in zs_runs]))
    report.glue(f"curve_{key}_best_val", np.mean([r.best_val for r in zs_runs]))
    report.glue(f"curve_{key}_final_val", np.mean([r.val_accuracy[-1] for r in zs_runs]))
    report.glue(
        f"curve_{key}_epoch5", np.mean([r.val_accuracy[min(5, curve_epochs)] for r in zs_runs])
    )
fig.tight_layout()
report.glue("fig_curve", fig)
plt.close(fig)
report.glue("curve_lr", curve_lr)
report.glue("curve_epochs", curve_epochs)
one_shot = results[(results["method"] == "zero-shot init") & (results["shots"] == shots[0])]
for key, name in (("contrast", contrast_dataset), ("focus", focus_dataset)):
    report.glue(f"chosen_epoch_{key}", one_shot.loc[one_shot["dataset"] == name, "epoch"].mean())

# Verdicts for the prose about the curves (means over seeds of the zero-shot-initialised head).
c_runs = curves["contrast"]
c_start = float(np.mean([r.val_accuracy[0] for r in c_runs]))
c_best_epoch = float(np.mean([r.best_epoch for r in c_runs]))
c_final = float(np.mean([r.val_accuracy[-1] for r in c_runs]))
source_like = c_best_epoch <= 5 and c_final < c_start
report.glue_words(
    "curve_contrast_verdict",
    "That is the source's curve (validation chooses an epoch within the first five and ends below"
    " where it started): one example per class pulls the classifier towards those particular"
    ' images (the source\'s "sleeping dog" for the class dog) and away from what the class name'
    " covers"
    if source_like
    else "That is not the source's curve, where validation accuracy fell almost from the first"
    " epoch (here validation does not both choose an epoch within the first five and end below"
    " where it started)",
)
f_runs = curves["focus"]
f_start = float(np.mean([r.val_accuracy[0] for r in f_runs]))
f_best = float(np.mean([r.best_val for r in f_runs]))
f_final = float(np.mean([r.val_accuracy[-1] for r in f_runs]))
report.glue_words(
    "curve_focus_climb",
    "climbs" if f_best > f_start + 1e-9 else "does not climb; it goes",
)
report.glue_words(
    "curve_focus_after",
    "and only then slides" if f_final < f_best - 1e-9 else "and stays there",
)
report.glue_words(
    "curve_focus_reason",
    "the text knows little about the digits, so training has something to add"
    if f_best > f_start + 1e-9
    else "training adds nothing the text did not already give",
)

# %% [markdown]
# ```{glue:figure} fig_curve
# :name: fig-overfitting-curve
#
# Validation accuracy per epoch of one-shot linear heads (thin: one seed each; bold: mean; dots:
# the epoch chosen on validation); dashed: zero-shot. Epoch 0 is the initial head. Left: a task
# where zero-shot works; right: the out-of-distribution digits.
# ```
#
# Where zero-shot works (left), the zero-shot-initialised head starts at
# {glue:text}`curve_contrast_zs_val:.1f` % validation accuracy, is at
# {glue:text}`curve_contrast_epoch5:.1f` % after five epochs and ends at
# {glue:text}`curve_contrast_final_val:.1f` % after {glue:text}`curve_epochs:.0f`; validation
# chooses epoch {glue:text}`curve_contrast_best_epoch:.1f` on average.
# {glue:md}`curve_contrast_verdict`. On the digits (right), validation accuracy
# {glue:md}`curve_focus_climb` from {glue:text}`curve_focus_zs_val:.1f` % to
# {glue:text}`curve_focus_best_val:.1f` % (best epoch {glue:text}`curve_focus_best_epoch:.1f` on
# average) {glue:md}`curve_focus_after`, ending at {glue:text}`curve_focus_final_val:.1f` %: here
# {glue:md}`curve_focus_reason`. In the shots experiment, with the learning rate also
# chosen on validation, the one-shot zero-shot-initialised head stops at epoch
# {glue:text}`chosen_epoch_contrast:.1f` (shapes) and {glue:text}`chosen_epoch_focus:.1f` (digits)
# on average.
#
# ## Limits
#
# - Epoch and learning rate are chosen on a validation split much larger than the $k$-shot
#   training set. That is what makes "never below zero-shot" hold on validation: epoch 0 is always
#   a candidate. On the test split it can still dip below, and a user without a validation set
#   has no such guard.
# - The heads train for a fixed {glue:text}`epochs:.0f` epochs. At {glue:text}`max_shots:.0f` shots
#   on the digits, validation picks epoch {glue:text}`chosen_epoch_focus_max:.0f` on average for
#   the random-init head, {glue:md}`still_improving` (a pick in the last tenth of the epochs is
#   read as still improving); logistic regression, fitted to convergence with a tuned penalty,
#   {glue:md}`logreg_reference`.
# - The heads are linear on frozen features; whatever the image tower cannot separate, no head
#   recovers (compare the probe on the full train split in the previous chapter).
# - The embedded CLIP is small and its world synthetic; the source's experiment is on CIFAR-100
#   with ViT-B/32 (the `full` profile runs it there).
