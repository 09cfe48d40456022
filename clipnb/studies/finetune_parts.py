"""Finetune each part of CLIP across shot counts, and measure where Grad-CAM says it looks.

The pieces of the ``finetune_parts`` study:

* :class:`SplitScorer` scores a model with one finetuned part on a fixed split, re-encoding only
  the side that changed (cached image embeddings for a text part, cached pooled features for the
  image projection, pixels only for the image encoder);
* :func:`select_setting` picks a part's learning rate and step count on the validation split;
* :func:`sweep_part` finetunes one part for every (shots, seed) and scores it on the test split;
* :class:`CamProbe` takes Grad-CAM measurements on fixed test images of every finetuned model:
  the fraction of CAM mass inside the object mask, and maps kept for the figures;
* the chapter itself, in the order it runs: :func:`prepare` (model, data, scorers),
  :func:`run_selection` (each part's schedule on validation), :func:`run_sweep` (every part,
  shot count and seed on test, with the CAM measurements) or :func:`run` for all three; then the
  tables, figures, :func:`numbers` and :func:`verdicts` the prose cites.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import matplotlib.figure
import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from clipnb.core import executor, report
from clipnb.core.evaluation import accuracy, select_on_validation
from clipnb.core.features import encode_images, encode_texts, image_tensors, text_features
from clipnb.core.imagesets import DatasetSplits, ImageSet, few_shot, mask_geometry
from clipnb.core.models import ClipBundle
from clipnb.core.utils import seed_everything
from clipnb.data.registry import DATASETS, DIGIT_WORDS, load_dataset
from clipnb.methods import saliency
from clipnb.methods.backbones import load_model
from clipnb.methods.finetune import (
    IMAGE_PARTS,
    PARTS,
    TEXT_PARTS,
    FinetuneResult,
    finetune,
    image_pre_projection,
    prompt_texts,
)
from clipnb.methods.gradcam import cam_mass_in_mask, clip_cams
from clipnb.methods.saliency import CamSetting
from clipnb.studies.verdicts import compare, join_words

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


@dataclass
class SelectionInputs:
    """What every selection run reads (shared by the trials, sent to Ray's object store once).

    ``train[role]`` is the role's training split and ``shots[role]`` its representative shot count
    (each seed draws its own few-shot set); ``val[role]`` scores the runs.
    """

    bundle: ClipBundle
    train: dict[str, ImageSet]
    shots: dict[str, int]
    val: dict[str, SplitScorer]
    batch_size: int


def _finetune_run(
    bundle: ClipBundle,
    part: str,
    subset: ImageSet,
    prompts: Sequence[str],
    spec: Mapping[str, Any],
    batch_size: int,
    **evaluation: Any,
) -> FinetuneResult:
    """The one finetuning run every trial makes: ``spec``'s lr, steps and seed, seeded first."""
    seed = int(spec["seed"])
    seed_everything(seed)
    return finetune(
        bundle,
        part,
        subset,
        prompts,
        steps=int(spec["steps"]),
        lr=float(spec["lr"]),
        batch_size=batch_size,
        seed=seed,
        features=frozen_features(bundle, part, subset),
        fused=True,
        **evaluation,
    )


def selection_trial(spec: dict[str, Any], inputs: SelectionInputs) -> list[dict[str, Any]]:
    """One selection run: ``spec`` (role, part, lr, seed, steps, every) trained on the seed's
    few-shot draw to ``steps`` steps, scored on validation every ``every`` steps."""
    role, part, seed = spec["dataset"], spec["part"], int(spec["seed"])
    val = inputs.val[role]
    k = inputs.shots[role]
    subset = few_shot(inputs.train[role], k, seed) if k else inputs.train[role]
    result = _finetune_run(
        inputs.bundle, part, subset, val.prompts, spec, inputs.batch_size,
        evaluator=lambda model: {"val": val.accuracy(model, part)},
        eval_every=int(spec["every"]),
    )  # fmt: skip
    return [
        {"dataset": role, "part": part, "lr": float(spec["lr"]), "steps": step, "seed": seed}
        | {"val": scores["val"]}
        for step, scores in result.evals
    ]


def selection_records(
    inputs: SelectionInputs,
    parts: Mapping[str, Sequence[str]],
    lrs: Mapping[str, Sequence[float]],
    step_grid: Sequence[int],
    seeds: Sequence[int],
    progress: bool = True,
) -> list[dict[str, Any]]:
    """Every (role, part, lr, seed) selection run as one sweep of trials; one record per step count.

    One run per (lr, seed) of ``max(step_grid)`` steps, scored on validation at every step count of
    the grid (the run to fewer steps is the same run stopped earlier).
    """
    steps_sorted = sorted({int(s) for s in step_grid})
    every = math.gcd(*steps_sorted)
    specs = [
        {"dataset": role, "part": part, "lr": float(lr), "seed": int(seed)}
        | {"steps": steps_sorted[-1], "every": every}
        for role, role_parts in parts.items()
        for part in role_parts
        for lr in lrs[part]
        for seed in seeds
    ]
    runs = executor.map_trials(
        selection_trial,
        specs,
        inputs,
        desc="choose schedules on validation",
        progress=progress,
        journal=_journal_key(
            inputs.bundle, inputs.train, inputs.val, inputs.batch_size, inputs.shots
        ),
    )
    return [r for run in runs for r in run if r["steps"] in steps_sorted]


def best_setting(records: Sequence[Mapping[str, Any]]) -> Setting:
    """The (lr, steps) with the best mean validation accuracy over seeds (first best in order)."""
    frame = pd.DataFrame.from_records(list(records))
    means = frame.groupby(["lr", "steps"], sort=False)["val"].mean()
    candidates = [Setting(float(lr), int(steps)) for lr, steps in means.index]
    best, _ = select_on_validation(candidates, lambda c: float(means[(c.lr, c.steps)]))
    return best


def select_setting(
    bundle: ClipBundle,
    part: str,
    train: ImageSet,
    val: SplitScorer,
    lrs: Sequence[float],
    step_grid: Sequence[int],
    *,
    shots: int = 0,
    seeds: Sequence[int] = (0,),
    batch_size: int = 16,
    progress: bool = False,
) -> tuple[Setting, list[dict[str, Any]]]:
    """The (lr, steps) of ``part`` with the best mean validation accuracy over ``seeds``.

    Each seed trains on its ``shots``-per-class draw of ``train`` (``shots=0``: all of ``train``).
    Returns the chosen setting and one record per candidate and seed.
    """
    inputs = SelectionInputs(bundle, {"data": train}, {"data": shots}, {"data": val}, batch_size)
    records = selection_records(
        inputs, {"data": [part]}, {part: lrs}, step_grid, seeds, progress=progress
    )
    records = [{k: v for k, v in r.items() if k != "dataset"} for r in records]
    return best_setting(records), records


@dataclass
class SweepInputs:
    """What every sweep run reads: the model, per role the train split, test scorer, CAM probe."""

    bundle: ClipBundle
    train: dict[str, ImageSet]
    test: dict[str, SplitScorer]
    probes: dict[str, CamProbe | None]
    batch_size: int


def sweep_trial(
    spec: dict[str, Any], inputs: SweepInputs
) -> tuple[dict[str, Any], CamMeasurement | None]:
    """One sweep run: ``spec`` (role, part, shots, seed, lr, steps) finetuned on the seed's
    few-shot draw, scored once on test, measured by the role's probe (maps returned, not kept)."""
    role, part = spec["dataset"], spec["part"]
    k, seed = int(spec["shots"]), int(spec["seed"])
    test = inputs.test[role]
    start = time.perf_counter()
    subset = few_shot(inputs.train[role], k, seed)
    result = _finetune_run(inputs.bundle, part, subset, test.prompts, spec, inputs.batch_size)
    record = {"part": part, "shots": k, "seed": seed}
    record["accuracy"] = test.accuracy(result.bundle.model, part)
    record["seconds"] = time.perf_counter() - start
    probe = inputs.probes.get(role)
    if probe is None:
        return record, None
    measured = probe.measure(result.bundle.model, part, k, seed)
    return record | measured.fields, measured


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
    probe: CamProbe | None = None,
    progress: bool = True,
) -> list[dict[str, Any]]:
    """Finetune ``part`` with ``setting`` on every ``shots``-per-class draw of every seed.

    Each finetuned model is scored once on ``test`` and measured by ``probe``, which keeps the
    figure maps; only the records are returned. Records: part, shots, seed, accuracy (%),
    seconds (training + scoring) and the probe's fields.
    """
    inputs = SweepInputs(bundle, {"data": train}, {"data": test}, {"data": probe}, batch_size)
    records = sweep_records(
        inputs, {"data": [part]}, {("data", part): setting}, {"data": shots}, seeds, progress
    )
    return [{k: v for k, v in r.items() if k != "dataset"} for r in records]


def sweep_records(
    inputs: SweepInputs,
    parts: Mapping[str, Sequence[str]],
    settings: Mapping[tuple[str, str], Setting],
    shots: Mapping[str, Sequence[int]],
    seeds: Sequence[int],
    progress: bool = True,
) -> list[dict[str, Any]]:
    """Every (role, part, shots, seed) run as one sweep of trials, in that order; each probe
    keeps the maps of its runs."""
    specs = [
        {"dataset": role, "part": part, "shots": int(k), "seed": int(seed)}
        | {"lr": settings[role, part].lr, "steps": settings[role, part].steps}
        for role, role_parts in parts.items()
        for part in role_parts
        for k in shots[role]
        for seed in seeds
    ]
    runs = executor.map_trials(
        sweep_trial,
        specs,
        inputs,
        desc="finetune parts",
        progress=progress,
        journal=_journal_key(inputs.bundle, inputs.train, inputs.test, inputs.batch_size),
    )
    records = []
    for spec, (record, measured) in zip(specs, runs, strict=True):
        if measured is not None:
            inputs.probes[spec["dataset"]].keep(spec["part"], spec["shots"], spec["seed"], measured)
        records.append({"dataset": spec["dataset"]} | record)
    return records


def _journal_key(
    bundle: ClipBundle,
    train: Mapping[str, ImageSet],
    scorers: Mapping[str, SplitScorer],
    *fixed: Any,
) -> list[Any]:
    # What a run's result depends on besides its spec and the package's code.
    return [
        bundle.fingerprint,
        {role: split.fingerprint for role, split in train.items()},
        {role: [sc.split.fingerprint, sc.prompts] for role, sc in scorers.items()},
        *fixed,
    ]


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
class CamMeasurement:
    """What a :class:`CamProbe` measured on one model: record fields and, for the kept seed,
    the figure maps and the forced-target maps."""

    fields: dict[str, float]
    maps: np.ndarray | None = None
    wrong_maps: dict[str, np.ndarray] | None = None


@dataclass
class CamProbe:
    """Grad-CAM measurements on fixed test images, taken on every model of a sweep.

    :meth:`measure` gives, for ``mass_indices`` (true-class targets), the mean fraction of CAM
    mass inside the masks (``cam_mass``) and the mean spread (``cam_spread``); for ``keep_seed``
    also the maps of ``figure_indices`` (true class) and, with a ``wrong_target = (true class,
    forced class)``, the maps of every test image of the true class for both targets. It stores
    nothing, so a sweep's trials can run in any process; :meth:`keep` files the maps under
    ``maps`` and ``wrong_maps`` (for the figures).
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

    def measure(self, model: nn.Module, part: str | None, shots: int, seed: int) -> CamMeasurement:
        """The mass and spread of ``model``'s maps; for ``keep_seed`` also the figure maps
        (and the forced-target maps). Nothing is stored: :meth:`keep` does that."""
        start = time.perf_counter()
        labels = self.scorer.split.labels
        cams = self._cams(model, part, self.mass_indices, labels[self.mass_indices])
        fields = {"cam_spread": float(np.nanmean(cam_spread(cams)))}
        if self.masks is not None:
            fields["cam_mass"] = float(np.nanmean(cam_mass_in_mask(cams, self.masks)))
        measured = CamMeasurement(fields)
        if seed == self.keep_seed:
            measured.maps = self._cams(
                model, part, self.figure_indices, labels[self.figure_indices]
            )
            if self.wrong_target is not None:
                measured.wrong_maps = {
                    name: self._cams(
                        model, part, self.wrong_indices, [target] * len(self.wrong_indices)
                    )
                    for name, target in zip(("true", "forced"), self.wrong_target, strict=True)
                }
        fields["cam_seconds"] = time.perf_counter() - start
        return measured

    def keep(self, part: str | None, shots: int, seed: int, measured: CamMeasurement) -> None:
        """Store the figure maps of a measurement (those of ``keep_seed`` carry them)."""
        if measured.maps is not None:
            self.maps[(part or "zero-shot", shots)] = measured.maps
        if measured.wrong_maps is not None:
            self.wrong_maps[(part or "zero-shot", shots)] = measured.wrong_maps

    def __call__(
        self, model: nn.Module, part: str | None, shots: int, seed: int
    ) -> dict[str, float]:
        """:meth:`measure` then :meth:`keep`: the record fields of one model, maps kept."""
        measured = self.measure(model, part, shots, seed)
        self.keep(part, shots, seed, measured)
        return measured.fields

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


# --------------------------------------------------------------------------------------------
# The chapter: setup, selection, sweep
# --------------------------------------------------------------------------------------------

#: The source's three datasets, in the order of its Tables 2-4; glue keys are named after them.
ROLES: tuple[str, ...] = ("mnist", "flowers", "animals")
#: The source's name for each role (the chapter's first table).
SOURCE_NAMES = {"mnist": "MNIST", "flowers": "Flowers102", "animals": "Animals90"}
#: Which side leads at the most shots in the source's Tables 2-4: the encoders on MNIST, the
#: projections (ahead or tied) on Flowers102 and Animals90.
SOURCE_LEADER = {"mnist": "encoders", "flowers": "projections", "animals": "projections"}
ENCODERS: tuple[str, ...] = ("text_encoder", "image_encoder")
PROJECTIONS: tuple[str, ...] = ("text_projection", "image_projection")
#: The forced-wrong-target models: the pretrained one, then the encoders at the most shots.
WRONG_MODELS: tuple[str, ...] = ("zero-shot", "image_encoder", "text_encoder")
#: Their glue prefixes (``wrong_zs_true_mass``, ...).
WRONG_KEYS: tuple[str, ...] = ("zs", "image_encoder", "text_encoder")
WRONG_COLUMNS: tuple[str, ...] = ("true_mass", "forced_mass", "true_spread", "forced_spread")
#: The issue's budget for finetuning and scoring (minutes on this machine's 2 CPU cores).
BUDGET_MINUTES = 8.0


@dataclass
class Setup:
    """The chapter's inputs: the pretrained model, its CAM setting and, per role, the data.

    ``val`` and ``test`` score any finetuned model on the fixed splits; ``zero_shot`` is the
    pretrained model's test accuracy (%).
    """

    datasets: dict[str, str]
    shots: dict[str, list[int]]
    bundle: ClipBundle
    cam_validation: saliency.SaliencyValidation
    data: dict[str, DatasetSplits]
    val: dict[str, SplitScorer]
    test: dict[str, SplitScorer]
    lrs: dict[str, list[float]]
    zero_shot: dict[str, float]

    @property
    def roles(self) -> list[str]:
        return list(self.datasets)


def prepare(
    profile: str,
    datasets: Sequence[str],
    shots: Sequence[Sequence[int]],
    selection_shots: Sequence[int],
    world_per_class: Sequence[int],
    max_per_split: int,
    seed: int,
    encoder_lrs: Sequence[float],
    projection_lrs: Sequence[float],
    cam_protocol: dict[str, Any] | None = None,
) -> Setup:
    """Seed, load the profile's model and its validated CAM setting, the three datasets (one per
    role of :data:`ROLES`) and their scorers; the learning-rate grid of each part."""
    if not len(datasets) == len(shots) == len(selection_shots) == len(ROLES):
        raise ValueError(
            "datasets, shots and selection_shots need one entry per source dataset (3)"
        )
    seed_everything(seed)
    bundle = load_model(profile)
    cam_validation = saliency.validated_setting(bundle, profile, **(cam_protocol or {}))
    data = {
        role: load_study_dataset(name, world_per_class, max_per_split)
        for role, name in zip(ROLES, datasets, strict=True)
    }
    prompts = {role: prompt_texts(d.class_names) for role, d in data.items()}
    val = {role: SplitScorer(bundle, d.val, prompts[role]) for role, d in data.items()}
    test = {role: SplitScorer(bundle, d.test, prompts[role]) for role, d in data.items()}
    lrs = {
        "text_encoder": list(encoder_lrs),
        "image_encoder": list(encoder_lrs),
        "text_projection": list(projection_lrs),
        "image_projection": list(projection_lrs),
    }
    return Setup(
        datasets=dict(zip(ROLES, datasets, strict=True)),
        shots={role: list(k) for role, k in zip(ROLES, shots, strict=True)},
        bundle=bundle,
        cam_validation=cam_validation,
        data=data,
        val=val,
        test=test,
        lrs=lrs,
        zero_shot={role: test[role].zero_shot() for role in ROLES},
    )


@dataclass
class Selection:
    """Each part's schedule per role, chosen on validation, and every candidate's score."""

    settings: dict[tuple[str, str], Setting]
    records: list[dict[str, Any]]
    shots: dict[str, int]
    seed: int
    seconds: float = 0.0
    cpu_seconds: float = 0.0


def run_selection(
    setup: Setup,
    selection_shots: Sequence[int],
    step_grid: Sequence[int],
    selection_seeds: Sequence[int],
    batch_size: int,
) -> Selection:
    """:func:`select_setting` for every role and part, at the role's representative shot count."""
    started, cpu_started = time.perf_counter(), time.process_time()
    shots = dict(zip(setup.roles, (int(k) for k in selection_shots), strict=True))
    train = {role: setup.data[role].train for role in setup.roles}
    inputs = SelectionInputs(setup.bundle, train, shots, setup.val, batch_size)
    records = selection_records(
        inputs, {role: PARTS for role in setup.roles}, setup.lrs, step_grid, selection_seeds
    )
    frame = pd.DataFrame.from_records(records)
    settings = {
        (role, part): best_setting(
            frame[(frame["dataset"] == role) & (frame["part"] == part)].to_dict("records")
        )
        for role in setup.roles
        for part in PARTS
    }
    return Selection(
        settings=settings,
        records=records,
        shots=shots,
        seed=int(selection_seeds[0]),
        seconds=time.perf_counter() - started,
        cpu_seconds=time.process_time() - cpu_started,
    )


@dataclass
class Results:
    """Everything the chapter reports, as plain data (``probes`` only feed the CAM figures).

    ``records`` has one row per (dataset role, part, shots, seed): test accuracy (%) and the CAM
    measurements of :class:`CamProbe`; shots 0 is the pretrained model, repeated for every part.
    ``wrong`` is the forced-wrong-target table (empty without a forced target); ``mask_area``,
    ``wrong_area`` and the CAM masses are fractions, ``figure_mass`` is in %.
    """

    datasets: dict[str, str]
    shots: dict[str, list[int]]
    seeds: list[int]
    records: pd.DataFrame
    zero_shot: dict[str, float]
    n_classes: dict[str, int]
    selection: Selection
    batch_size: int = 8
    grid_side: int = 0
    cam_setting: str = ""
    cam_reading: str = ""
    class_names: dict[str, list[str]] = field(default_factory=dict)
    mask_area: dict[str, float] = field(default_factory=dict)
    mask_kind: dict[str, str] = field(default_factory=dict)
    n_cam_images: dict[str, int] = field(default_factory=dict)
    figure_mass: dict[str, tuple[float, float]] = field(default_factory=dict)
    wrong: pd.DataFrame = field(default_factory=pd.DataFrame)
    n_wrong_images: int = 0
    wrong_area: float = float("nan")
    sweep_seconds: float = 0.0
    sweep_cpu_seconds: float = 0.0
    probes: dict[str, CamProbe] = field(default_factory=dict)

    @property
    def roles(self) -> list[str]:
        return list(self.datasets)


def make_probes(
    setup: Setup,
    cam_images: int,
    figure_images: int,
    wrong_target: Sequence[str],
    keep_seed: int,
) -> dict[str, CamProbe]:
    """A :class:`CamProbe` per role on ``cam_images`` evenly spaced test images, with the first
    test image of ``figure_images`` evenly spaced classes for the figures; on the digits, the
    forced target ``wrong_target = (true class, forced class)`` when both are classes there."""
    probes = {}
    for role, d in setup.data.items():
        n_fig = min(figure_images, d.test.n_classes)
        figure_classes = np.linspace(0, d.test.n_classes, n_fig, endpoint=False).astype(int)
        wrong = None
        if role == "mnist" and all(c in d.class_names for c in wrong_target):
            wrong = tuple(d.class_names.index(c) for c in wrong_target)
        probes[role] = CamProbe(
            setup.test[role],
            np.linspace(0, len(d.test) - 1, min(cam_images, len(d.test))).astype(int),
            first_of_classes(d.test.labels, figure_classes),
            setting=setup.cam_validation.setting,
            wrong_target=wrong,
            keep_seed=keep_seed,
        )
    return probes


def wrong_target_rows(probe: CamProbe, shots: int) -> pd.DataFrame:
    """The forced-target summary of :data:`WRONG_MODELS` (the encoders at ``shots``): one row
    each, mass and spread of the true and forced maps; empty without a forced target."""
    if probe.wrong_target is None:
        return pd.DataFrame([])
    keys = [(model, 0 if model == "zero-shot" else shots) for model in WRONG_MODELS]
    return pd.DataFrame(
        [{"model": m, "shots": k} | probe.wrong_target_summary((m, k)) for m, k in keys]
    )


def run_sweep(
    setup: Setup,
    selection: Selection,
    seeds: Sequence[int],
    batch_size: int,
    cam_images: int,
    figure_images: int,
    wrong_target: Sequence[str],
) -> Results:
    """Every part at every shot count and seed with its chosen schedule, scored on test and
    measured by the role's :class:`CamProbe`; the pretrained model is the shots-0 row."""
    probes = make_probes(setup, cam_images, figure_images, wrong_target, seeds[0])
    started, cpu_started = time.perf_counter(), time.process_time()
    zero_shot = {}
    for role in setup.roles:
        zero_shot[role] = {"accuracy": setup.test[role].zero_shot()}
        zero_shot[role] |= probes[role](setup.bundle.model, None, 0, seeds[0])
    train = {role: setup.data[role].train for role in setup.roles}
    inputs = SweepInputs(setup.bundle, train, setup.test, dict(probes), batch_size)
    parts = {role: PARTS for role in setup.roles}
    finetuned = sweep_records(inputs, parts, selection.settings, setup.shots, seeds)
    records = []
    for role in setup.roles:  # per part: the pretrained model's rows (shots 0), then its runs
        for part in PARTS:
            records += [
                {"dataset": role, "part": part, "shots": 0, "seed": s} | zero_shot[role]
                for s in seeds
            ]
            records += [r for r in finetuned if r["dataset"] == role and r["part"] == part]
    sweep_seconds = time.perf_counter() - started
    sweep_cpu_seconds = time.process_time() - cpu_started
    digits = probes["mnist"]
    wrong_masks = getattr(digits, "wrong_masks", None)
    return Results(
        datasets=dict(setup.datasets),
        shots=setup.shots,
        seeds=[int(s) for s in seeds],
        records=pd.DataFrame.from_records(records),
        zero_shot=dict(setup.zero_shot),
        n_classes={role: d.test.n_classes for role, d in setup.data.items()},
        selection=selection,
        batch_size=batch_size,
        grid_side=setup.bundle.model.visual.grid_size[0],
        cam_setting=setup.cam_validation.setting.label(),
        cam_reading=saliency.reading(setup.cam_validation),
        class_names={role: list(d.class_names) for role, d in setup.data.items()},
        mask_area={role: p.mask_area for role, p in probes.items()},
        mask_kind={role: p.mask_kind for role, p in probes.items()},
        n_cam_images={role: len(p.mass_indices) for role, p in probes.items()},
        figure_mass={role: p.figure_mass() for role, p in probes.items()},
        wrong=wrong_target_rows(digits, max(setup.shots["mnist"])),
        n_wrong_images=len(getattr(digits, "wrong_indices", [])),
        wrong_area=float(wrong_masks.mean()) if wrong_masks is not None else float("nan"),
        sweep_seconds=sweep_seconds,
        sweep_cpu_seconds=sweep_cpu_seconds,
        probes=probes,
    )


def run(
    *,
    profile: str,
    datasets: Sequence[str],
    shots: Sequence[Sequence[int]],
    selection_shots: Sequence[int],
    world_per_class: Sequence[int],
    max_per_split: int,
    seeds: Sequence[int],
    selection_seeds: Sequence[int],
    encoder_lrs: Sequence[float],
    projection_lrs: Sequence[float],
    step_grid: Sequence[int],
    batch_size: int,
    cam_images: int,
    figure_images: int,
    wrong_target: Sequence[str],
) -> Results:
    """The whole chapter from its parameters: :func:`prepare`, :func:`run_selection`,
    :func:`run_sweep` (the notebook calls the three in turn to show what each chose)."""
    setup = prepare(
        profile,
        datasets,
        shots,
        selection_shots,
        world_per_class,
        max_per_split,
        seeds[0],
        encoder_lrs,
        projection_lrs,
    )
    selection = run_selection(setup, selection_shots, step_grid, selection_seeds, batch_size)
    return run_sweep(setup, selection, seeds, batch_size, cam_images, figure_images, wrong_target)


# --------------------------------------------------------------------------------------------
# Tables
# --------------------------------------------------------------------------------------------


def overview_table(setup: Setup) -> pd.DataFrame:
    """The three datasets beside the source's: sizes, shot counts, zero-shot and chance (%)."""
    roles = setup.roles
    data = setup.data
    return pd.DataFrame(
        {
            "source's dataset": [SOURCE_NAMES[r] for r in roles],
            "here": [setup.datasets[r] for r in roles],
            "classes": [data[r].test.n_classes for r in roles],
            "train / val / test": [
                f"{len(data[r].train)} / {len(data[r].val)} / {len(data[r].test)}" for r in roles
            ],
            "shots per class": [", ".join(map(str, setup.shots[r])) for r in roles],
            "zero-shot test %": [round(setup.zero_shot[r], 1) for r in roles],
            "chance %": [round(100 / data[r].test.n_classes, 1) for r in roles],
        }
    )


def chosen_table(setup: Setup, selection: Selection) -> pd.DataFrame:
    """The chosen learning rate and step count: one row per part, one column per dataset."""
    return pd.DataFrame(
        {
            f"{setup.datasets[role]} ({k} shots)": [
                f"lr {selection.settings[role, p].lr:g}, {selection.settings[role, p].steps} steps"
                for p in PARTS
            ]
            for role, k in selection.shots.items()
        },
        index=PARTS,
    )


def selection_grid_table(setup: Setup, selection: Selection) -> pd.DataFrame:
    """Validation accuracy (%) of every candidate: rows (lr, steps), columns (dataset, part)."""
    grid = pd.DataFrame.from_records(selection.records)
    grid["dataset"] = grid["dataset"].map(setup.datasets)
    return grid.pivot_table(
        index=["lr", "steps"], columns=["dataset", "part"], values="val", aggfunc="mean", sort=False
    ).round(1)


def accuracy_table(results: Results, role: str) -> pd.DataFrame:
    """Test accuracy (%, mean ± std over seeds) of one role: rows parts, columns shots."""
    records = results.records
    return report.mean_std_table(records[records.dataset == role], index="part", columns="shots")


def wrong_target_table(results: Results) -> pd.DataFrame:
    """Mass on the ink and spread of the true and forced maps (3 decimals)."""
    return results.wrong.round(3)


def cam_mass_table(results: Results) -> pd.DataFrame:
    """CAM mass inside the mask (mean ± std over seeds) of each part, zero-shot and at the most
    shots, per dataset."""
    records = results.records
    most = records.shots == records.dataset.map({r: max(results.shots[r]) for r in results.roles})
    chosen = records[most | (records.shots == 0)]
    return report.mean_std_table(
        chosen.assign(
            dataset=chosen.dataset.map(results.datasets),
            shots=np.where(chosen.shots == 0, "zero-shot", "most shots"),
        ),
        index=["dataset", "part"],
        columns="shots",
        value="cam_mass",
        digits=3,
    )


# --------------------------------------------------------------------------------------------
# The chapter's figures
# --------------------------------------------------------------------------------------------


def accuracy_figure(results: Results) -> matplotlib.figure.Figure:
    """Test accuracy against shots, one panel per dataset, one line per part; chance dotted."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(12, 3.6), sharey=False)
    records = results.records
    for ax, (role, name) in zip(axes, results.datasets.items(), strict=True):
        plot_vs_shots(
            ax,
            records=records[records.dataset == role].to_dict("records"),
            value="accuracy",
            parts=PARTS,
            baseline=100 / results.n_classes[role],
            baseline_label="chance",
        )
        ax.set(title=name, ylabel="test accuracy (%)")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    return fig


def cam_figures(results: Results) -> dict[str, matplotlib.figure.Figure]:
    """``fig_cam_<role>``: the kept maps of :func:`cam_grid_figure` for every role."""
    return {
        f"fig_cam_{role}": cam_grid_figure(
            probe, probe.scorer.bundle, PARTS, results.shots[role], results.class_names[role]
        )
        for role, probe in results.probes.items()
    }


def wrong_target_figures(results: Results) -> dict[str, matplotlib.figure.Figure]:
    """``fig_wrong_target`` (:func:`wrong_target_figure` of :data:`WRONG_MODELS` on the digits),
    or nothing without a forced target."""
    probe = results.probes.get("mnist")
    if probe is None or probe.wrong_target is None:
        return {}
    keys = [
        (m, int(k)) for m, k in zip(results.wrong["model"], results.wrong["shots"], strict=True)
    ]
    fig = wrong_target_figure(probe, probe.scorer.bundle, keys, results.class_names["mnist"])
    return {"fig_wrong_target": fig}


def cam_mass_figure(results: Results) -> matplotlib.figure.Figure:
    """CAM mass inside the mask against shots, one panel per dataset with masks; a uniform map
    dotted."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(12, 3.6))
    records = results.records
    for ax, (role, name) in zip(axes, results.datasets.items(), strict=True):
        if not results.mask_kind.get(role):
            ax.set_axis_off()
            continue
        plot_vs_shots(
            ax,
            records=records[records.dataset == role].to_dict("records"),
            value="cam_mass",
            parts=PARTS,
            baseline=results.mask_area[role],
            baseline_label="uniform map",
        )
        ax.set(title=f"{name} ({results.mask_kind[role]})", ylabel="CAM mass inside the mask")
    axes[-1].legend(fontsize=8)
    fig.tight_layout()
    return fig


def figures(results: Results) -> dict[str, matplotlib.figure.Figure]:
    """Every figure of the chapter by its glue name."""
    return (
        {"fig_accuracy": accuracy_figure(results)}
        | cam_figures(results)
        | wrong_target_figures(results)
        | {"fig_cam_mass": cam_mass_figure(results)}
    )


# --------------------------------------------------------------------------------------------
# What the prose cites
# --------------------------------------------------------------------------------------------


def _stat(records: pd.DataFrame, value: str, how: str) -> pd.Series:
    """``how`` ("mean", "std") of ``value`` per (dataset, part, shots); empty if never measured."""
    if value not in records:
        return pd.Series(dtype=float)
    return records.groupby(["dataset", "part", "shots"])[value].agg(how)


def finetune_minutes(results: Results) -> float:
    """Finetuning and scoring alone: selection and sweep without the CAMs (the issue's budget)."""
    records = results.records
    cam_seconds = records.loc[records.shots > 0, "cam_seconds"].sum()
    return (results.selection.seconds + results.sweep_seconds - cam_seconds) / 60


def numbers(results: Results) -> dict[str, float]:
    """Every number the prose glues, by its glue name."""
    records, roles = results.records, results.roles
    out: dict[str, float] = {"grid_side": results.grid_side}
    for role in roles:
        out[f"zs_{role}"] = results.zero_shot[role]
        out[f"chance_{role}"] = 100 / results.n_classes[role]
        out[f"max_shots_{role}"] = max(results.shots[role])
    out["selection_seed"] = results.selection.seed
    out["batch_size"] = results.batch_size
    cam_seconds = records.loc[records.shots > 0, "cam_seconds"].sum()
    out["selection_minutes"] = results.selection.seconds / 60
    out["sweep_minutes"] = results.sweep_seconds / 60
    out["cam_minutes"] = cam_seconds / 60
    out["finetune_minutes"] = finetune_minutes(results)
    out["cpu_minutes"] = (results.selection.cpu_seconds + results.sweep_cpu_seconds) / 60
    out["n_models"] = int((records.shots > 0).sum())
    out["n_seeds"] = len(results.seeds)
    means = _stat(records, "accuracy", "mean")
    for role in roles:
        for part in PARTS:
            out[f"first_{role}_{part}"] = means[role, part, min(results.shots[role])]
            out[f"max_{role}_{part}"] = means[role, part, max(results.shots[role])]
    for role in roles:
        out[f"fig_cam_{role}_mass"], out[f"fig_cam_{role}_area"] = results.figure_mass.get(
            role, (float("nan"), float("nan"))
        )
    wrong = results.wrong
    for i, key in enumerate(WRONG_KEYS):
        for col in WRONG_COLUMNS:
            out[f"wrong_{key}_{col}"] = wrong[col].iloc[i] if col in wrong else float("nan")
    out["n_wrong_images"] = results.n_wrong_images
    out["wrong_area_pct"] = 100 * results.wrong_area
    zs_true = wrong["true_mass"].iloc[0] if "true_mass" in wrong else float("nan")
    out["wrong_zs_true_mass_pct"] = 100 * zs_true
    out["n_cam_images"] = results.n_cam_images.get("animals", 0)
    mass_means = _stat(records, "cam_mass", "mean")
    for role in roles:
        out[f"mask_area_{role}"] = results.mask_area.get(role, float("nan"))
        out[f"mass_{role}_zs"] = mass_means.get((role, PARTS[0], 0), float("nan"))
        for part in PARTS:
            key = (role, part, max(results.shots[role]))
            out[f"mass_{role}_{part}"] = mass_means.get(key, float("nan"))
    return out


def part_name(part: str) -> str:
    """``"text_encoder"`` -> ``"the text encoder"``."""
    return "the " + part.replace("_", " ")


def order_verdict(at_max: Mapping[str, float], source_leader: str) -> str:
    """The best part, whether both encoders are ahead of both projections (or the reverse), and
    whether that is the source's ordering (``source_leader``: "encoders" or "projections")."""
    if min(at_max[p] for p in ENCODERS) > max(at_max[p] for p in PROJECTIONS):
        leader, order = "encoders", "both encoders are ahead of both projections"
    elif min(at_max[p] for p in PROJECTIONS) > max(at_max[p] for p in ENCODERS):
        leader, order = "projections", "both projections are ahead of both encoders"
    else:
        leader, order = None, "encoders and projections are interleaved"
    source = "as in the source" if leader == source_leader else "unlike in the source"
    best_part = max(at_max, key=lambda p: at_max[p])
    return f"the best part is {part_name(best_part)}; {order}, {source}"


def forced_vs_true(row: Mapping[str, float] | None) -> str:
    """The forced map against the true one, in the source's terms (diffuse, off the object).

    A spread gap within 0.01 (of a scale where 1 is a flat map) counts as as diffuse.
    """
    cols = ["true_spread", "true_mass", "forced_spread", "forced_mass"]
    if row is None or not np.isfinite([float(row.get(c, np.nan)) for c in cols]).all():
        return "not measured (no forced target on this dataset)"
    spread = compare(
        row["forced_spread"],
        row["true_spread"],
        0.01,
        ("more diffuse than", "less diffuse than", "as diffuse as"),
    )
    mass = "less" if row["forced_mass"] < row["true_mass"] else "no less"
    return f"{spread} the true map, with {mass} of its mass on the ink"


def mass_movers(
    at_max: Mapping[str, float], at_max_std: Mapping[str, float], zero_shot: float
) -> str:
    """The parts whose CAM mass at the most shots exceeds the pretrained model's by more than
    one standard deviation over seeds (a part moves the map onto the object)."""
    if not np.isfinite(zero_shot):
        return "not measured (no masks)"
    movers = [
        part_name(p)
        for p in PARTS
        if at_max.get(p, float("nan")) > zero_shot + at_max_std.get(p, float("nan"))
    ]
    return join_words(movers, empty="none")


def budget_verdict(minutes: float, budget: float = BUDGET_MINUTES) -> str:
    """Whether finetuning and scoring stayed within the issue's budget."""
    return "stays within" if minutes <= budget else "goes over"


def verdicts(results: Results) -> dict[str, str]:
    """Every computed phrase the prose glues with ``{glue:md}``, by its glue name."""
    records = results.records
    out = {"cam_reading": results.cam_reading, "cam_setting": results.cam_setting}
    out["budget_verdict"] = budget_verdict(finetune_minutes(results))
    means = _stat(records, "accuracy", "mean")
    for role in results.roles:
        at_max = {p: means[role, p, max(results.shots[role])] for p in PARTS}
        out[f"order_{role}"] = order_verdict(at_max, SOURCE_LEADER[role])
    wrong = results.wrong
    for i, key in enumerate(WRONG_KEYS[:2]):
        row = wrong.iloc[i] if len(wrong) > i else None
        out[f"wrong_{key}_verdict"] = forced_vs_true(row)
    mass_means = _stat(records, "cam_mass", "mean")
    mass_std = _stat(records, "cam_mass", "std").fillna(0.0)
    for role in results.roles:
        most = max(results.shots[role])
        out[f"mass_movers_{role}"] = mass_movers(
            {p: mass_means.get((role, p, most), float("nan")) for p in PARTS},
            {p: mass_std.get((role, p, most), float("nan")) for p in PARTS},
            mass_means.get((role, PARTS[0], 0), float("nan")),
        )
    return out


__all__ = [
    "IMAGE_PARTS",
    "PARTS",
    "ROLES",
    "TEXT_PARTS",
    "CamProbe",
    "Results",
    "Selection",
    "Setting",
    "Setup",
    "SplitScorer",
    "accuracy_figure",
    "accuracy_table",
    "budget_verdict",
    "cam_figures",
    "cam_grid_figure",
    "cam_mass_figure",
    "cam_mass_table",
    "cam_spread",
    "chosen_table",
    "figures",
    "first_of_classes",
    "forced_vs_true",
    "frozen_features",
    "ink_masks",
    "load_study_dataset",
    "mass_movers",
    "numbers",
    "object_masks",
    "order_verdict",
    "overview_table",
    "plot_vs_shots",
    "prepare",
    "run",
    "run_selection",
    "run_sweep",
    "select_setting",
    "selection_grid_table",
    "sweep_part",
    "verdicts",
    "wrong_target_figure",
    "wrong_target_figures",
    "wrong_target_table",
]
