"""The baselines every later chapter compares against: zero-shot, linear probes, zero-shot heads.

* :func:`evaluate_linear_probe` — logistic regression on frozen features, C chosen on the
  validation split, then the test split read once;
* :func:`probe_records` — that probe on the full train split and on k-shot draws, as long-format
  records for :func:`clipnb.core.report.mean_std_table`;
* :func:`label_probs` / :func:`plot_label_probs` — CLIP's "label probs" example: one image, a few
  texts, the softmax over their similarities;
* :func:`plot_val_curves` — validation accuracy per epoch of linear heads (the overfitting curve).

Few-shot heads themselves are :mod:`clipnb.methods.heads` and :mod:`clipnb.methods.few_shot`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch
from tqdm.auto import tqdm

from clipnb.core.evaluation import PROBE_CS, accuracy, fit_linear_probe
from clipnb.core.features import SplitFeatures, encode_images, encode_texts
from clipnb.core.imagesets import ImageSet, few_shot_indices
from clipnb.core.models import ClipBundle
from clipnb.methods.heads import HeadTraining

__all__ = [
    "ProbeEvaluation",
    "evaluate_linear_probe",
    "label_probs",
    "pick_classes",
    "plot_label_probs",
    "plot_val_curves",
    "probe_records",
    "shot_subset",
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
):
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
):
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
