"""Finetune each part of CLIP across shot counts, and measure where Grad-CAM says it looks.

The pieces of the ``finetune_parts`` study:

* :class:`SplitScorer` scores a model with one finetuned part on a fixed split, re-encoding only
  the side that changed (cached image embeddings for a text part, cached pooled features for the
  image projection, pixels only for the image encoder);
* :func:`select_setting` picks a part's learning rate and step count on the validation split;
* :func:`sweep_part` finetunes one part for every (shots, seed) and scores it on the test split;
* :class:`CamProbe` takes Grad-CAM measurements on fixed test images of every finetuned model:
  the fraction of CAM mass inside the object mask, and maps kept for the figures.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from clipnb.core import report
from clipnb.core.evaluation import accuracy, select_on_validation
from clipnb.core.features import encode_images, encode_texts, image_tensors, text_features
from clipnb.core.imagesets import DatasetSplits, ImageSet, few_shot, mask_geometry
from clipnb.core.models import ClipBundle
from clipnb.core.utils import seed_everything
from clipnb.data.registry import DATASETS, DIGIT_WORDS, load_dataset
from clipnb.methods.finetune import IMAGE_PARTS, TEXT_PARTS, finetune, image_pre_projection
from clipnb.methods.gradcam import cam_mass_in_mask, clip_cams
from clipnb.methods.saliency import CamSetting

#: Cache tag of the pooled image features before the projection.
PRE_PROJECTION_TAG = "image-preproj"


@dataclass(frozen=True)
class Setting:
    """A part's training schedule: Adam learning rate and number of steps."""

    lr: float
    steps: int


def load_study_dataset(
    name: str, world_per_class: Sequence[int] = (32, 32, 48), max_per_split: int = 0
) -> DatasetSplits:
    """A registered dataset with the study's sizes: ``per_class=(train, val, test)`` for the
    generated world's tasks, ``max_per_split`` (0 = all) for the full profile's datasets."""
    if name.startswith("world-"):
        return load_dataset(name, per_class=tuple(int(n) for n in world_per_class))
    if max_per_split and DATASETS[name].profile == "full":
        return load_dataset(name, max_per_split=int(max_per_split))
    return load_dataset(name)


def frozen_features(bundle: ClipBundle, part: str, images: ImageSet) -> torch.Tensor | None:
    """Cached features of ``images`` from the part of the image tower that ``part`` leaves frozen.

    A text part: the normalised image embeddings. The image projection: the (normalised) pooled
    features before the projection. The image encoder: None (nothing on the image side is frozen).
    """
    if part in TEXT_PARTS:
        kwargs = {}
    elif part == "image_projection" and image_pre_projection(bundle.model) is not None:
        kwargs = {"encode": image_pre_projection(bundle.model), "tag": PRE_PROJECTION_TAG}
    else:
        return None
    # Encode (and cache) the whole root split once; few-shot draws are rows of it.
    feats = encode_images(bundle, images.root or images, **kwargs)
    return feats if images.root is None else feats[torch.as_tensor(images.indices)]


class SplitScorer:
    """Zero-shot accuracy on one fixed split of a model in which one part was finetuned.

    Built once from the pretrained ``bundle``; only the side that a part changes is re-encoded:
    a text part re-encodes the prompts against the split's cached image embeddings, the image
    projection re-projects cached pooled features, the image encoder re-encodes the pixels.
    """

    def __init__(self, bundle: ClipBundle, split: ImageSet, prompts: Sequence[str]) -> None:
        self.bundle = bundle
        self.split = split
        self.prompts = list(prompts)
        self.labels = torch.as_tensor(split.labels)
        self.tokens = bundle.tokenize(self.prompts)
        self.text = encode_texts(bundle, self.prompts)
        self.image = encode_images(bundle, split)
        self._pre: torch.Tensor | None = None
        self._pixels: torch.Tensor | None = None

    @property
    def pixels(self) -> torch.Tensor:
        """The split's preprocessed pixels (built on first use)."""
        if self._pixels is None:
            self._pixels = image_tensors(self.bundle, self.split)
        return self._pixels

    def class_features(self, model: nn.Module, part: str | None) -> torch.Tensor:
        """Normalised class text embeddings ``[C, D]`` of ``model`` (``part=None``: pretrained)."""
        if part in TEXT_PARTS:
            return F.normalize(text_features(model, self.tokens), dim=-1)
        return self.text

    def image_features(self, model: nn.Module, part: str | None) -> torch.Tensor:
        """Normalised image embeddings ``[N, D]`` of the split under ``model``."""
        if part is None or part in TEXT_PARTS:
            return self.image
        if part == "image_projection" and image_pre_projection(model) is not None:
            if self._pre is None:
                self._pre = frozen_features(self.bundle, part, self.split)
            return F.normalize(self._pre @ model.visual.proj, dim=-1)
        model.eval()
        return torch.cat(
            [
                F.normalize(model.encode_image(self.pixels[i : i + 256]), dim=-1)
                for i in range(0, len(self.pixels), 256)
            ]
        )

    @torch.no_grad()
    def accuracy(self, model: nn.Module, part: str | None) -> float:
        """Top-1 accuracy (%) of ``model``'s zero-shot classifier over the split's prompts."""
        logits = self.image_features(model, part) @ self.class_features(model, part).T
        return accuracy(logits, self.labels)

    def zero_shot(self) -> float:
        """Top-1 accuracy (%) of the pretrained model."""
        return accuracy(self.image @ self.text.T, self.labels)


def select_setting(
    bundle: ClipBundle,
    part: str,
    train: ImageSet | Callable[[int], ImageSet],
    val: SplitScorer,
    lrs: Sequence[float],
    step_grid: Sequence[int],
    *,
    seeds: Sequence[int] = (0,),
    batch_size: int = 16,
) -> tuple[Setting, list[dict[str, Any]]]:
    """The (lr, steps) of ``part`` with the best mean validation accuracy over ``seeds``.

    One run per (lr, seed) of ``max(step_grid)`` steps, scored on ``val`` at every step count of
    the grid (the run to fewer steps is the same run stopped earlier). ``train`` is the few-shot
    training set of the representative shot count for each seed: a callable ``seed -> ImageSet``
    is also accepted. Returns the chosen setting and one record per candidate and seed.
    """
    steps_sorted = sorted({int(s) for s in step_grid})
    every = math.gcd(*steps_sorted)
    records: list[dict[str, Any]] = []
    for lr in lrs:
        for seed in seeds:
            subset = train(seed) if callable(train) else train
            seed_everything(seed)
            result = finetune(
                bundle,
                part,
                subset,
                val.prompts,
                steps=steps_sorted[-1],
                lr=float(lr),
                batch_size=batch_size,
                seed=seed,
                features=frozen_features(bundle, part, subset),
                evaluator=lambda model: {"val": val.accuracy(model, part)},
                eval_every=every,
                fused=True,
            )
            by_step = {step: scores["val"] for step, scores in result.evals}
            records += [
                {"part": part, "lr": float(lr), "steps": s, "seed": seed, "val": by_step[s]}
                for s in steps_sorted
            ]
    candidates = [Setting(float(lr), s) for lr in lrs for s in steps_sorted]

    def val_score(c: Setting) -> float:
        return float(
            np.mean([r["val"] for r in records if r["lr"] == c.lr and r["steps"] == c.steps])
        )

    best, _ = select_on_validation(candidates, val_score)
    return best, records


#: ``on_model(model, part, shots, seed) -> extra record fields`` (e.g. a :class:`CamProbe`).
ModelHook = Callable[[nn.Module, str, int, int], dict[str, Any] | None]


def sweep_part(
    bundle: ClipBundle,
    part: str,
    setting: Setting,
    train: ImageSet,
    shots: Sequence[int],
    seeds: Sequence[int],
    test: SplitScorer,
    *,
    batch_size: int = 16,
    on_model: ModelHook | None = None,
    progress: bool = True,
) -> list[dict[str, Any]]:
    """Finetune ``part`` with ``setting`` on every ``shots``-per-class draw of every seed.

    Each finetuned model is scored once on ``test`` and handed to ``on_model``; only the records
    are kept. Records: part, shots, seed, accuracy (%), seconds (training + scoring).
    """
    records = []
    grid = [(k, s) for k in shots for s in seeds]
    for k, seed in tqdm(grid, desc=f"{part}", disable=not progress, leave=False):
        start = time.perf_counter()
        seed_everything(seed)
        subset = few_shot(train, int(k), seed)
        result = finetune(
            bundle,
            part,
            subset,
            test.prompts,
            steps=setting.steps,
            lr=setting.lr,
            batch_size=batch_size,
            seed=seed,
            features=frozen_features(bundle, part, subset),
            fused=True,
        )
        record = {
            "part": part,
            "shots": int(k),
            "seed": int(seed),
            "accuracy": test.accuracy(result.bundle.model, part),
        }
        record["seconds"] = time.perf_counter() - start
        if on_model is not None:
            record |= on_model(result.bundle.model, part, int(k), int(seed)) or {}
        records.append(record)
    return records


# --------------------------------------------------------------------------------------------
# Grad-CAM measurements
# --------------------------------------------------------------------------------------------


def ink_masks(images: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    """Object masks of light-on-dark digit images ``[N, H, W, 3]``: pixels brighter than
    ``threshold`` of the image's own maximum (the ink)."""
    gray = np.asarray(images, dtype=np.float64).mean(axis=-1)
    peak = gray.reshape(len(gray), -1).max(axis=1).reshape(-1, 1, 1)
    return gray > threshold * np.maximum(peak, 1e-9)


def object_masks(
    split: ImageSet, indices: Sequence[int], preprocess: Callable | None = None
) -> tuple[np.ndarray | None, str]:
    """Masks of ``split``'s rows ``indices`` and what they are.

    The set's own object masks when it has them (the generated world); the ink for a digit set
    without masks (class names are the digit words); otherwise ``(None, "")``. With the model's
    ``preprocess``, its resize and crop are replayed on the masks, so they line up with the CAMs
    (e.g. 28-pixel MNIST digits under a 224-pixel model).
    """
    idx = np.asarray(indices, dtype=np.int64)
    if split.masks is not None:
        masks, kind = np.asarray(split.masks)[idx].astype(bool), "object mask"
    elif list(split.class_names) == DIGIT_WORDS and len(idx):
        masks, kind = ink_masks(np.stack([split.array(int(i)) for i in idx])), "ink"
    else:
        return None, ""
    if preprocess is not None:
        masks = np.stack([mask_geometry(preprocess, m.astype(np.uint8)) for m in masks]) > 0
    return masks, kind


def cam_spread(cams: np.ndarray) -> np.ndarray:
    """How diffuse each map is: the entropy of the map as a distribution over pixels, divided by
    the entropy of a uniform map (1 = spread evenly, 0 = all mass on one pixel). ``[B]``."""
    cams = np.asarray(cams, dtype=np.float64)
    flat = cams.reshape(len(cams), -1)
    total = flat.sum(axis=1, keepdims=True)
    p = np.divide(flat, total, out=np.zeros_like(flat), where=total > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        ent = -np.where(p > 0, p * np.log(p), 0.0).sum(axis=1)
    out = ent / np.log(flat.shape[1])
    out[total[:, 0] <= 0] = np.nan
    return out


@dataclass
class CamProbe:
    """Grad-CAM measurements on fixed test images, taken on every model of a sweep.

    Called as a :data:`ModelHook`: for ``mass_indices`` (true-class targets) it returns the mean
    fraction of CAM mass inside the masks (``cam_mass``) and the mean spread (``cam_spread``).
    For ``keep_seed`` it also keeps the maps of ``figure_indices`` (true class) in ``maps`` and,
    with a ``wrong_target = (true class, forced class)``, the maps of every test image of the
    true class for both targets in ``wrong_maps`` (for the forced-wrong-target figure).
    """

    scorer: SplitScorer
    mass_indices: np.ndarray
    figure_indices: np.ndarray
    setting: CamSetting
    wrong_target: tuple[int, int] | None = None
    keep_seed: int = 0
    masks: np.ndarray | None = field(init=False, default=None)
    mask_kind: str = field(init=False, default="")
    maps: dict[tuple[str, int], np.ndarray] = field(init=False, default_factory=dict)
    wrong_maps: dict[tuple[str, int], dict[str, np.ndarray]] = field(
        init=False, default_factory=dict
    )

    def __post_init__(self) -> None:
        self.mass_indices = np.asarray(self.mass_indices, dtype=np.int64)
        self.figure_indices = np.asarray(self.figure_indices, dtype=np.int64)
        preprocess = self.scorer.bundle.preprocess
        self.masks, self.mask_kind = object_masks(self.scorer.split, self.mass_indices, preprocess)
        if self.wrong_target is not None:
            true_class = self.wrong_target[0]
            self.wrong_indices = np.flatnonzero(self.scorer.split.labels == true_class)
            self.wrong_masks, _ = object_masks(self.scorer.split, self.wrong_indices, preprocess)

    @property
    def mask_area(self) -> float:
        """Mean fraction of the image the masks cover: the mass a uniform map puts inside."""
        return float("nan") if self.masks is None else float(self.masks.mean())

    def _cams(self, model: nn.Module, part: str | None, rows: np.ndarray, classes) -> np.ndarray:
        feats = self.scorer.class_features(model, part)
        pixels = self.scorer.pixels[torch.as_tensor(rows)]
        return clip_cams(model, feats.detach(), self.setting, pixels, classes)

    def __call__(
        self, model: nn.Module, part: str | None, shots: int, seed: int
    ) -> dict[str, float]:
        start = time.perf_counter()
        labels = self.scorer.split.labels
        cams = self._cams(model, part, self.mass_indices, labels[self.mass_indices])
        out = {"cam_spread": float(np.nanmean(cam_spread(cams)))}
        if self.masks is not None:
            out["cam_mass"] = float(np.nanmean(cam_mass_in_mask(cams, self.masks)))
        if seed == self.keep_seed:
            self.maps[(part or "zero-shot", shots)] = self._cams(
                model, part, self.figure_indices, labels[self.figure_indices]
            )
            if self.wrong_target is not None:
                kept = {}
                for name, target in zip(("true", "forced"), self.wrong_target, strict=True):
                    maps = self._cams(
                        model, part, self.wrong_indices, [target] * len(self.wrong_indices)
                    )
                    kept[name] = maps
                self.wrong_maps[(part or "zero-shot", shots)] = kept
        out["cam_seconds"] = time.perf_counter() - start
        return out

    def figure_mass(self) -> tuple[float, float]:
        """Mean mass in mask (%) of every kept figure map, and the figure masks' area (%)."""
        masks, _ = object_masks(
            self.scorer.split, self.figure_indices, self.scorer.bundle.preprocess
        )
        if masks is None or not self.maps:
            return float("nan"), float("nan")
        mass = [np.nanmean(cam_mass_in_mask(m, masks)) for m in self.maps.values()]
        return 100 * float(np.mean(mass)), 100 * float(masks.mean())

    def wrong_target_summary(self, key: tuple[str, int]) -> dict[str, float]:
        """Mean mass in mask and spread of the kept true- and forced-target maps of ``key``."""
        out = {}
        for name, maps in self.wrong_maps[key].items():
            out[f"{name}_spread"] = float(np.nanmean(cam_spread(maps)))
            if self.wrong_masks is not None:
                out[f"{name}_mass"] = float(np.nanmean(cam_mass_in_mask(maps, self.wrong_masks)))
        return out


def first_of_classes(labels: np.ndarray, classes: Sequence[int]) -> np.ndarray:
    """The index of the first row of each class in ``classes`` (fixed figure images)."""
    labels = np.asarray(labels)
    return np.asarray([int(np.flatnonzero(labels == c)[0]) for c in classes], dtype=np.int64)


# --------------------------------------------------------------------------------------------
# Figures
# --------------------------------------------------------------------------------------------


def plot_vs_shots(
    ax,
    records: list[dict[str, Any]],
    value: str,
    parts: Sequence[str],
    *,
    baseline: float | None = None,
    baseline_label: str = "",
) -> None:
    """One line per part: mean of ``value`` over seeds against shots, with a ±1 std band."""
    import pandas as pd

    df = pd.DataFrame.from_records(records)
    for i, part in enumerate(parts):
        g = df[df["part"] == part].groupby("shots")[value]
        mean, std = g.mean(), g.agg(lambda v: float(np.std(v)))
        ax.plot(mean.index, mean.values, "o-", ms=3, color=f"C{i}", label=part.replace("_", " "))
        ax.fill_between(mean.index, mean - std, mean + std, color=f"C{i}", alpha=0.15, lw=0)
    if baseline is not None:
        ax.axhline(baseline, ls=":", color="grey", label=baseline_label)
    ax.set_xlabel("shots per class")


def cam_grid_figure(
    probe: CamProbe,
    bundle: ClipBundle,
    parts: Sequence[str],
    shots: Sequence[int],
    class_names: Sequence[str],
    size: float = 0.85,
):
    """Rows: each part × each figure image; columns: the image, zero-shot, then each shot count."""
    import matplotlib.pyplot as plt

    from clipnb.methods.gradcam import overlay

    rows = probe.scorer.pixels[torch.as_tensor(probe.figure_indices)]
    images = report.display_images(bundle, rows)
    labels = probe.scorer.split.labels[probe.figure_indices]
    n_img, n_cols = len(images), 2 + len(shots)
    fig, axes = plt.subplots(
        len(parts) * n_img,
        n_cols,
        figsize=(n_cols * size + 0.9, len(parts) * n_img * size + 0.5),
        squeeze=False,
    )
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    for p, part in enumerate(parts):
        for i, image in enumerate(images):
            r = p * n_img + i
            axes[r, 0].imshow(image)
            keys = [("zero-shot", 0)] + [(part, int(k)) for k in shots]
            for c, key in enumerate(keys):
                axes[r, c + 1].imshow(overlay(image, probe.maps[key][i]))
            name = part.replace("_", " ")
            axes[r, 0].set_ylabel(f"{name}\n{class_names[labels[i]]}", fontsize=7)
    titles = ["image", "0"] + [str(k) for k in shots]
    for c, title in enumerate(titles):
        axes[0, c].set_title(title, fontsize=8)
    fig.supxlabel("shots per class (0 = zero-shot)", fontsize=8)
    fig.tight_layout(pad=0.3, h_pad=0.2, w_pad=0.2)
    return fig


def wrong_target_figure(
    probe: CamProbe,
    bundle: ClipBundle,
    keys: Sequence[tuple[str, int]],
    class_names: Sequence[str],
    n_images: int = 3,
    size: float = 1.1,
):
    """Rows: test images of the true class; per model in ``keys``, the map for the true class
    beside the map for the forced (wrong) class."""
    import matplotlib.pyplot as plt

    from clipnb.methods.gradcam import overlay

    if probe.wrong_target is None:
        raise ValueError("this CamProbe has no wrong_target")
    true_name, forced_name = (class_names[c] for c in probe.wrong_target)
    n = min(n_images, len(probe.wrong_indices))
    images = report.display_images(
        bundle, probe.scorer.pixels[torch.as_tensor(probe.wrong_indices[:n])]
    )
    fig, axes = plt.subplots(
        n, 1 + 2 * len(keys), figsize=((1 + 2 * len(keys)) * size, n * size + 0.6), squeeze=False
    )
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    for r, image in enumerate(images):
        axes[r, 0].imshow(image)
        for k, key in enumerate(keys):
            for j, which in enumerate(("true", "forced")):
                axes[r, 1 + 2 * k + j].imshow(overlay(image, probe.wrong_maps[key][which][r]))
    axes[0, 0].set_title("image", fontsize=8)
    for k, (part, shots) in enumerate(keys):
        model = "zero-shot\n" if shots == 0 else f"{part.replace('_', ' ')}\n{shots} shots"
        axes[0, 1 + 2 * k].set_title(f"{model}\n“{true_name}”", fontsize=7)
        axes[0, 2 + 2 * k].set_title(f"{model}\n“{forced_name}” (forced)", fontsize=7)
    fig.tight_layout(pad=0.3)
    return fig


__all__ = [
    "IMAGE_PARTS",
    "TEXT_PARTS",
    "CamProbe",
    "Setting",
    "SplitScorer",
    "cam_grid_figure",
    "cam_spread",
    "first_of_classes",
    "frozen_features",
    "ink_masks",
    "load_study_dataset",
    "object_masks",
    "plot_vs_shots",
    "select_setting",
    "sweep_part",
    "wrong_target_figure",
]
