"""The baselines every later chapter compares against: zero-shot, linear probes, zero-shot heads.

* :func:`evaluate_linear_probe` — logistic regression on frozen features, C chosen on the
  validation split, then the test split read once;
* :func:`probe_records` — that probe on the full train split and on k-shot draws, as long-format
  records for :func:`clipnb.core.report.mean_std_table`;
* :func:`label_probs` / :func:`plot_label_probs` — CLIP's "label probs" example: one image, a few
  texts, the softmax over their similarities;
* :func:`plot_val_curves` — validation accuracy per epoch of linear heads (the overfitting curve);
* :func:`run` — the chapter "Zero-shot and linear probes": zero-shot with one prompt and the
  ensemble, the probes on CLIP's and the baseline towers' features, the label-probs examples;
  :func:`baseline_table`, :func:`kshot_table`, :func:`baselines_figure`, :func:`numbers` and
  :func:`verdicts` turn its results into what the chapter shows and cites.

Few-shot heads themselves are :mod:`clipnb.methods.heads` and :mod:`clipnb.methods.few_shot`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from clipnb.core import report
from clipnb.core.evaluation import PROBE_CS, accuracy, fit_linear_probe, zero_shot_logits
from clipnb.core.features import (
    ENSEMBLE_TEMPLATES,
    SINGLE_TEMPLATE,
    SplitFeatures,
    class_embeddings,
    encode_dataset,
    encode_images,
    encode_texts,
)
from clipnb.core.imagesets import DatasetSplits, ImageSet, few_shot_indices
from clipnb.core.models import ClipBundle
from clipnb.core.utils import seed_everything
from clipnb.data import reference
from clipnb.data.registry import load_dataset
from clipnb.methods.backbones import backbone_label, load_backbone, load_model
from clipnb.methods.heads import HeadTraining
from clipnb.studies.verdicts import compare, join_words

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = [
    "ProbeEvaluation",
    "ZeroShotResults",
    "baseline_table",
    "baselines_figure",
    "dataset_options",
    "evaluate_linear_probe",
    "kshot_table",
    "label_probs",
    "numbers",
    "pick_classes",
    "plot_label_probs",
    "plot_val_curves",
    "probe_records",
    "run",
    "shot_subset",
    "verdicts",
]


class Split(Protocol):
    """Anything with features ``x [N,D]`` and labels ``y [N]`` (e.g. :class:`SplitFeatures`)."""

    x: Any
    y: Any


@dataclass
class ProbeEvaluation:
    """A linear probe's choice on validation and its one test number."""

    C: float
    val_scores: list[float]
    val_accuracy: float
    test_accuracy: float


def evaluate_linear_probe(
    train: Split,
    val: Split,
    test: Split,
    Cs: Sequence[float] = PROBE_CS,
    max_iter: int = 1000,
) -> ProbeEvaluation:
    """Logistic regression on ``train``; C chosen on ``val`` only; then ``test`` is read once.

    The test split is not touched until the probe is fitted and its C chosen (a test checks it).
    """
    probe = fit_linear_probe(
        np.asarray(train.x), np.asarray(train.y), np.asarray(val.x), np.asarray(val.y), Cs, max_iter
    )
    test_x, test_y = np.asarray(test.x), np.asarray(test.y)
    return ProbeEvaluation(
        C=probe.C,
        val_scores=probe.val_scores,
        val_accuracy=max(probe.val_scores),
        test_accuracy=accuracy(probe.classifier.predict(test_x), test_y),
    )


def shot_subset(split: SplitFeatures, shots: int, seed: int) -> SplitFeatures:
    """The k-shot rows of a feature split: the same draw as :func:`clipnb.few_shot` makes."""
    labels = np.asarray(split.y)
    idx = torch.as_tensor(few_shot_indices(labels, shots, seed, split.class_names))
    return SplitFeatures(split.x[idx], split.y[idx], split.class_names)


def probe_records(
    dataset: str,
    features: str,
    splits: Mapping[str, SplitFeatures],
    shots: Sequence[int] = (),
    seeds: Sequence[int] = (0,),
    *,
    full: bool = True,
    Cs: Sequence[float] = PROBE_CS,
    progress: bool = True,
) -> list[dict[str, Any]]:
    """Linear-probe test accuracy on the full train split and on k-shot draws, as records.

    Each record holds ``dataset, features, shots`` (``"all"`` for the full train split), ``seed``,
    ``accuracy`` (test, %), the chosen ``C`` and ``val_accuracy``. The full-split probe involves no
    sampling, so it is fitted once (seed 0).
    """
    grid: list[tuple[int | str, int]] = [("all", 0)] if full else []
    grid += [(int(k), int(s)) for k in shots for s in seeds]
    records = []
    for k, seed in tqdm(
        grid, desc=f"probe {dataset} ({features})", leave=False, disable=not progress
    ):
        train = splits["train"] if k == "all" else shot_subset(splits["train"], int(k), seed)
        ev = evaluate_linear_probe(train, splits["val"], splits["test"], Cs)
        records.append(
            {
                "dataset": dataset,
                "features": features,
                "shots": k,
                "seed": seed,
                "accuracy": ev.test_accuracy,
                "C": ev.C,
                "val_accuracy": ev.val_accuracy,
            }
        )
    return records


# --- the "label probs" example ------------------------------------------------------------------


def pick_classes(n_classes: int, true_class: int, n: int, seed: int = 0) -> list[int]:
    """``n`` class ids including ``true_class``, the others drawn at random, in class order."""
    others = [c for c in range(n_classes) if c != true_class]
    rng = np.random.default_rng(seed)
    chosen = rng.choice(others, size=min(n, n_classes) - 1, replace=False).tolist()
    return sorted([true_class, *chosen])


def label_probs(
    bundle: ClipBundle, images: ImageSet, index: int, texts: Sequence[str]
) -> np.ndarray:
    """CLIP's softmax over ``texts`` for image ``index`` of ``images``: ``softmax(s · f Tᵀ)``.

    The image embedding comes from the feature cache when its set was encoded before.
    """
    image = encode_images(bundle, images.subset([index]))
    text = encode_texts(bundle, list(texts))
    logits = bundle.logit_scale * image @ text.T
    return logits.softmax(dim=-1)[0].numpy()


def plot_label_probs(
    panels: Sequence[tuple[np.ndarray, str, Sequence[str], np.ndarray, int]],
) -> Figure:
    """One row per example: the image, then a bar chart of the probabilities over its texts.

    Each panel is ``(uint8 image, title, texts, probabilities, index of the correct text)``; the
    correct text's bar is green, the others grey.
    """
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(
        len(panels),
        2,
        figsize=(7.2, 1.9 * len(panels) + 0.3),
        gridspec_kw={"width_ratios": [1, 3.2]},
        squeeze=False,
    )
    for (image, title, texts, probs, correct), (ax_img, ax_bar) in zip(panels, axes, strict=True):
        ax_img.imshow(image, interpolation="nearest")
        ax_img.set_title(title, fontsize=9)
        ax_img.axis("off")
        colours = ["C2" if i == correct else "0.6" for i in range(len(texts))]
        ax_bar.barh(range(len(texts)), probs, color=colours)
        ax_bar.set_yticks(range(len(texts)), [f'"{t}"' for t in texts], fontsize=8)
        ax_bar.invert_yaxis()
        ax_bar.set_xlim(0, 1)
        for i, p in enumerate(probs):
            ax_bar.text(min(p + 0.02, 0.85), i, f"{p:.2f}", va="center", fontsize=8)
        ax_bar.set_xlabel("probability (softmax over the texts)")
    fig.tight_layout()
    return fig


# --- training curves of linear heads --------------------------------------------------------------


def plot_val_curves(
    curves: Mapping[str, Sequence[HeadTraining]],
    zero_shot_val: float | None = None,
    title: str = "",
    ax=None,
) -> Figure:
    """Validation accuracy per epoch: a thin line per seed, the mean bold, each chosen epoch dotted.

    ``curves`` maps a label (e.g. the initialisation) to the training records of several seeds;
    ``zero_shot_val`` draws zero-shot validation accuracy as a dashed line. Draws on ``ax`` when
    given (for multi-panel figures), else on a new figure; returns the figure.
    """
    import matplotlib.pyplot as plt

    if ax is None:
        fig, ax = plt.subplots(figsize=(6.4, 3.6))
    else:
        fig = ax.figure
    for i, (label, records) in enumerate(curves.items()):
        colour = f"C{i}"
        lengths = {len(r.val_accuracy) for r in records}
        for r in records:
            ax.plot(r.val_accuracy, color=colour, lw=0.8, alpha=0.35)
            ax.plot(r.best_epoch, r.best_val, "o", color=colour, ms=5, mec="white")
        if len(lengths) == 1:
            mean = np.mean([r.val_accuracy for r in records], axis=0)
            n = len(records)
            ax.plot(
                mean, color=colour, lw=2, label=f"{label} (mean of {n} seeds)" if n > 1 else label
            )
    if zero_shot_val is not None:
        ax.axhline(zero_shot_val, ls="--", color="black", lw=1, label="zero-shot")
    ax.set(xlabel="epoch (0 = initial head)", ylabel="validation accuracy (%)", title=title)
    ax.legend(fontsize=8)
    return fig


# --- the chapter -----------------------------------------------------------------------------------

#: One "label probs" example: ``(uint8 image, title, texts, probabilities, index of the true text)``.
LabelProbsPanel = tuple[np.ndarray, str, list[str], np.ndarray, int]

#: The two zero-shot classifiers: one prompt, and CLIP's ImageNet prompt ensemble.
ZERO_SHOT_COLUMNS = ("zero-shot, 1 prompt", "zero-shot, 80 prompts")

#: The baselines the prose cites by name (NaN where a profile does not run one).
NAMED_BASELINES = ("supervised", "pixels", "resnet50")

#: A probe "gains more than" this many points over zero-shot when the features carry the classes.
FEATURES_GAIN = 20

#: :func:`compare`'s words for "strictly above, or not".
_ABOVE_OR_NOT = ("above", "not above", "not above")


def dataset_options(name: str, world_per_class: Sequence[int]) -> dict[str, Any]:
    """The loader options of a chapter's dataset: world datasets take images per class and split."""
    return {"per_class": tuple(world_per_class)} if name.startswith("world-") else {}


@dataclass
class ZeroShotResults:
    """Everything the chapter computes: one accuracy record per (dataset, features, shots, seed)
    (zero-shot rows have ``shots == "—"``, full-split probes ``"all"``), and the label-probs
    examples."""

    profile: str
    datasets: list[str]
    baselines: list[str]
    probe_shots: list[int]
    n_seeds: int
    focus_dataset: str
    contrast_dataset: str
    n_classes: dict[str, int]
    records: pd.DataFrame
    label_probs_texts: int
    panels: list[LabelProbsPanel]

    @property
    def labels(self) -> dict[str, str]:
        """Display names of the probed features: CLIP and each baseline tower."""
        return {"clip": "CLIP", **{name: backbone_label(name) for name in self.baselines}}

    @property
    def baseline_columns(self) -> list[str]:
        return [f"{self.labels[b]} probe" for b in self.baselines]


def zero_shot_records(
    bundle: ClipBundle, name: str, data: DatasetSplits, feats: Mapping[str, SplitFeatures]
) -> list[dict[str, Any]]:
    """Zero-shot test accuracy with one prompt and with the prompt ensemble, as records."""
    records = []
    for column, templates in zip(
        ZERO_SHOT_COLUMNS, (SINGLE_TEMPLATE, ENSEMBLE_TEMPLATES), strict=True
    ):
        weights = class_embeddings(bundle, data.class_names, templates)
        logits = zero_shot_logits(feats["test"].x, weights, bundle.logit_scale)
        records.append(
            {
                "dataset": name,
                "features": column,
                "shots": "—",
                "seed": 0,
                "accuracy": accuracy(logits, feats["test"].y),
            }
        )
    return records


def label_probs_panel(
    bundle: ClipBundle, name: str, data: DatasetSplits, n_texts: int
) -> LabelProbsPanel:
    """The first test image of ``data``, the prompts of ``n_texts`` classes (the true one among
    them) and CLIP's softmax over them."""
    true = int(data.test.labels[0])
    classes = pick_classes(len(data.class_names), true, n_texts)
    texts = [SINGLE_TEMPLATE[0].format(data.class_names[c]) for c in classes]
    probs = label_probs(bundle, data.test, 0, texts)
    title = f"{name}\n(true: {data.class_names[true]})"
    return data.test.array(0), title, texts, probs, classes.index(true)


def run(
    *,
    profile: str,
    datasets: Sequence[str],
    world_per_class: Sequence[int],
    baselines: Sequence[str],
    pixel_size: int,
    probe_shots: Sequence[int],
    seeds: Sequence[int],
    focus_dataset: str,
    contrast_dataset: str,
    label_probs_datasets: Sequence[str],
    label_probs_texts: int,
    progress: bool = True,
) -> ZeroShotResults:
    """The chapter's computation, with the notebook's parameters.

    Every dataset gets zero-shot with one prompt and with the ensemble, the linear probe on
    CLIP's features (full train split, and k-shot draws for each seed), and the probe on each
    baseline tower's features; then the label-probs example on a few datasets.
    """
    seed_everything(seeds[0])
    bundle = load_model(profile)
    towers = {name: load_backbone(name, profile, pixel_size=pixel_size) for name in baselines}
    records: list[dict[str, Any]] = []
    loaded: dict[str, DatasetSplits] = {}
    for name in datasets:
        data = loaded[name] = load_dataset(name, **dataset_options(name, world_per_class))
        feats = encode_dataset(bundle, data)
        records += zero_shot_records(bundle, name, data, feats)
        records += probe_records(name, "clip", feats, probe_shots, seeds, progress=progress)
        for tower_name, tower in towers.items():
            tower_feats = encode_dataset(tower, data)
            records += probe_records(name, tower_name, tower_feats, progress=progress)
    panels = []
    for name in label_probs_datasets:
        data = loaded.get(name) or load_dataset(name, **dataset_options(name, world_per_class))
        panels.append(label_probs_panel(bundle, name, data, label_probs_texts))
    return ZeroShotResults(
        profile=profile,
        datasets=list(datasets),
        baselines=list(baselines),
        probe_shots=list(probe_shots),
        n_seeds=len(seeds),
        focus_dataset=focus_dataset,
        contrast_dataset=contrast_dataset,
        n_classes={name: len(data.class_names) for name, data in loaded.items()},
        records=pd.DataFrame.from_records(records),
        label_probs_texts=label_probs_texts,
        panels=panels,
    )


def _full_rows(results: ZeroShotResults) -> pd.DataFrame:
    """Zero-shot and full-split probe rows, with the column the tables show them under."""
    records = results.records
    full = records[records["shots"].isin(["—", "all"])]
    return full.assign(
        column=[
            f if s == "—" else f"{results.labels[f]} probe"
            for f, s in zip(full["features"], full["shots"], strict=True)
        ]
    )


def _few_rows(results: ZeroShotResults) -> pd.DataFrame:
    """The k-shot probe rows on CLIP's features, under the column ``"<k>-shot"``."""
    records = results.records
    few = records[(records["features"] == "clip") & ~records["shots"].isin(["—", "all"])]
    return few.assign(column=[f"{k}-shot" for k in few["shots"]])


def accuracy_means(results: ZeroShotResults) -> pd.DataFrame:
    """Test accuracy per dataset (rows) and classifier (columns: zero-shot, each probe)."""
    return report.mean_table(_full_rows(results), "dataset", "column")


def few_shot_means(results: ZeroShotResults) -> pd.DataFrame:
    """Mean k-shot probe accuracy over seeds per dataset (rows) and ``"<k>-shot"`` (columns)."""
    return report.mean_table(_few_rows(results), "dataset", "column")


def chosen_cs(results: ZeroShotResults) -> pd.Series:
    """The C that validation chose for the full-split CLIP probe, per dataset."""
    records = results.records
    clip_probe = records[(records["features"] == "clip") & (records["shots"] == "all")]
    return clip_probe.set_index("dataset")["C"]


def _reference_cell(dataset: str) -> str:
    value = reference.reference_for(dataset)
    return "—" if value is None else f"{value:.1f}"


def _source_cell(dataset: str) -> str:
    values = (
        reference.reference_for(dataset, reference.SOURCE_000_ZERO_SHOT),
        reference.reference_for(dataset, reference.SOURCE_000_RESNET50),
    )
    return " / ".join("—" if v is None else f"{v:.1f}" for v in values)


def baseline_table(results: ZeroShotResults) -> pd.DataFrame:
    """Test accuracy per dataset: zero-shot, every full-split probe (and CLIP's chosen C), chance
    and the published references (the source report's Table 1 in the ``full`` profile)."""
    table = report.mean_std_table(_full_rows(results), "dataset", "column")
    cs = chosen_cs(results)
    table.insert(3, "C (CLIP probe)", [f"{cs.loc[d]:.4g}" for d in table.index])
    table["chance"] = [f"{100 / results.n_classes[d]:.1f}" for d in table.index]
    table["reference zero-shot (ViT-B/32)"] = [_reference_cell(d) for d in table.index]
    if results.profile == "full":
        table["source 000: CLIP / ResNet50"] = [_source_cell(d) for d in table.index]
    return table


def kshot_table(results: ZeroShotResults) -> pd.DataFrame:
    """The CLIP probe on k examples per class (mean ± std over seeds), between zero-shot with the
    ensemble and the probe on the full train split."""
    table = baseline_table(results)
    kshot = report.mean_std_table(_few_rows(results), "dataset", "column")
    kshot.insert(0, "zero-shot, 80 prompts", table["zero-shot, 80 prompts"])
    kshot["all"] = table["CLIP probe"]
    return kshot


def baselines_figure(results: ZeroShotResults) -> Figure:
    """The numbers of :func:`baseline_table` as bars: zero-shot, then each full-split probe."""
    import matplotlib.pyplot as plt

    means = accuracy_means(results)
    order = [*ZERO_SHOT_COLUMNS, "CLIP probe", *results.baseline_columns]
    fig, ax = plt.subplots(figsize=(8.5, 0.6 * len(results.datasets) + 1.4))
    means[order].iloc[::-1].plot.barh(ax=ax, width=0.8, color=[f"C{i}" for i in range(len(order))])
    handles, names = ax.get_legend_handles_labels()
    ax.legend(handles[::-1], names[::-1], fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1))
    ax.set(xlabel="test accuracy (%)", ylabel="", xlim=(0, 100))
    fig.tight_layout()
    return fig


def _best_zero_shot(means: pd.DataFrame) -> pd.Series:
    return means[list(ZERO_SHOT_COLUMNS)].max(axis=1)


def _one_shot_below(results: ZeroShotResults) -> pd.Series:
    """Per dataset, whether the probe with the fewest shots is below zero-shot with the ensemble."""
    few = few_shot_means(results)
    return few[f"{results.probe_shots[0]}-shot"] < accuracy_means(results)["zero-shot, 80 prompts"]


def numbers(results: ZeroShotResults) -> dict[str, float]:
    """Every number the chapter's prose cites (NaN for a baseline the profile does not run)."""
    means, cs, few = accuracy_means(results), chosen_cs(results), few_shot_means(results)
    zs_best = _best_zero_shot(means)
    out: dict[str, float] = {
        "n_templates": len(ENSEMBLE_TEMPLATES),
        "n_seeds": results.n_seeds,
        "n_cs": len(PROBE_CS),
        "c_min": min(PROBE_CS),
        "c_max": max(PROBE_CS),
    }
    places = (("focus", results.focus_dataset), ("contrast", results.contrast_dataset))
    best_baseline = means[results.baseline_columns].max(axis=1)
    for key, d in places:
        out[f"zs_{key}_single"] = float(means.loc[d, "zero-shot, 1 prompt"])
        out[f"zs_{key}_ensemble"] = float(means.loc[d, "zero-shot, 80 prompts"])
        out[f"probe_{key}"] = float(means.loc[d, "CLIP probe"])
        out[f"probe_{key}_C"] = cs.loc[d]
        out[f"baseline_{key}"] = best_baseline[d]
        out[f"chance_{key}"] = 100 / results.n_classes[d]
    for b in NAMED_BASELINES:
        col = f"{backbone_label(b)} probe"
        present = col in means
        for key, d in places:
            out[f"{b}_{key}"] = float(means.loc[d, col]) if present else float("nan")
        wins = float((means[col] > means["CLIP probe"]).sum()) if present else float("nan")
        out[f"n_{b}_beats_clip"] = wins
    ensemble_gain = means["zero-shot, 80 prompts"] - means["zero-shot, 1 prompt"]
    out |= {
        "ensemble_gain_mean": ensemble_gain.mean(),
        "ensemble_gain_min": ensemble_gain.min(),
        "ensemble_gain_max": ensemble_gain.max(),
        "probe_gain_mean": (means["CLIP probe"] - zs_best).mean(),
        "n_probe_beats_zs": float((means["CLIP probe"] > zs_best).sum()),
        "n_datasets": len(results.datasets),
        "n_c_0316": float(np.isclose(cs, 0.316, rtol=0.01).sum()),
        "c_chosen_min": cs.min(),
        "c_chosen_max": cs.max(),
        "n_ensemble_helps": float((ensemble_gain > 0).sum()),
        "n_ensemble_hurts": float((ensemble_gain < 0).sum()),
        "zs_focus_best": zs_best[results.focus_dataset],
    }
    first, last = f"{results.probe_shots[0]}-shot", f"{results.probe_shots[-1]}-shot"
    out |= {
        "probe_focus_1shot": few.loc[results.focus_dataset, first],
        "probe_focus_maxshot": few.loc[results.focus_dataset, last],
        "probe_contrast_1shot": few.loc[results.contrast_dataset, first],
        "min_shots": results.probe_shots[0],
        "max_shots": results.probe_shots[-1],
        "n_1shot_below_zs": float(_one_shot_below(results).sum()),
    }
    first_panel, last_panel = results.panels[0], results.panels[-1]
    out |= {
        "n_label_texts": results.label_probs_texts,
        "label_prob_first": first_panel[3][first_panel[4]],
        "label_prob_last": last_panel[3][last_panel[4]],
    }
    return {name: float(value) for name, value in out.items()}


def _supervised_verdict(results: ZeroShotResults, means: pd.DataFrame) -> str:
    """Did captions or labels give the better image features (probe against probe)?"""
    col = f"{backbone_label('supervised')} probe"
    if col not in means:
        return "this profile does not run the label-supervised tower"
    n_sup = int((means[col] > means["CLIP probe"]).sum())
    if n_sup > len(results.datasets) / 2:
        return (
            "on most datasets here, captions bought zero-shot transfer, not better image features"
        )
    if n_sup == 0:
        return (
            "captions gave image features at least as good as the labels on every dataset,"
            " and zero-shot transfer on top"
        )
    return (
        "the verdict is mixed: captions gave image features at least as good on some"
        " datasets and worse on others, and zero-shot transfer on top"
    )


def verdicts(results: ZeroShotResults) -> dict[str, str]:
    """Every phrase the chapter's prose pulls in with ``{glue:md}``, computed from the numbers."""
    means, cs = accuracy_means(results), chosen_cs(results)
    focus = results.focus_dataset
    focus_gain = float(means.loc[focus, "CLIP probe"]) - _best_zero_shot(means)[focus]
    if focus_gain > FEATURES_GAIN:
        digit_features = (
            "The probe gains more than 20 points over zero-shot here, so the image features do"
            " separate the digits, and what zero-shot lacks is the link from those features to the"
            ' words "zero" to "nine"'
        )
    else:
        digit_features = (
            "The probe gains 20 points or less over zero-shot here, so the image features"
            " themselves separate the digits poorly, and the missing link to the words is not the"
            " whole story"
        )
    if cs.nunique() > 1:
        c_verdict = "the best regularisation depends on the dataset, so the sweep is needed"
    else:
        c_verdict = "the same C was chosen on every dataset, so here a fixed C would have done"
    pixels_col = f"{backbone_label('pixels')} probe"
    pixels = (
        compare(means.loc[focus, pixels_col], means.loc[focus, "CLIP probe"], words=_ABOVE_OR_NOT)
        if pixels_col in means
        else "beside"
    )
    below = _one_shot_below(results)
    below_names = [d for d in below.index if below[d]]
    above_names = [d for d in below.index if not below[d]]
    if below_names:
        one_shot_below = (
            f"In this profile those are {join_words(below_names)}: there one example per class is"
            " worth less than the class name, the effect the CLIP paper reported for real CLIP at"
            " 1–2 shots."
        )
    else:
        one_shot_below = (
            "So the effect the CLIP paper reported for real CLIP at 1–2 shots, one example per"
            " class being worth less than the class name, does not appear here."
        )
    if above_names:
        one_shot_above = (
            f"On {join_words(above_names)}, even one labelled example per class matches or beats"
            " the zero-shot ensemble."
        )
    else:
        one_shot_above = (
            "On no dataset does one labelled example per class reach the zero-shot ensemble."
        )
    return {
        "digit_features_verdict": digit_features,
        "c_verdict": c_verdict,
        "pixels_vs_clip": pixels,
        "supervised_verdict": _supervised_verdict(results, means),
        "one_shot_below_sentence": one_shot_below,
        "one_shot_above_sentence": one_shot_above,
    }
