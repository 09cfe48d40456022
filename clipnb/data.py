"""Datasets with one common shape, fixed splits and a few-shot sampler.

Every study sees a dataset as :class:`DatasetSplits`: ``train``/``val``/``test`` :class:`ImageSet`
objects with integer labels and class names (optionally masks, domains and texts). Splits are fixed
by the dataset (or carved from its train set with a fixed seed); study seeds only change which
few-shot examples are drawn, so that every study evaluates on the same test images.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from .utils import array_hash, stable_hash

#: Fixed seed that carves validation sets out of datasets that ship without one.
SPLIT_SEED = 0


class DatasetNotFoundError(FileNotFoundError):
    """A dataset folder is missing or not in the expected layout."""


class UnknownDatasetError(ValueError):
    """A dataset name that is not registered."""


class ImageSource:
    """Lazy random access to images: an ``(index) -> PIL.Image`` function and a length."""

    def __init__(self, load: Callable[[int], Image.Image], length: int) -> None:
        self._load = load
        self._length = length

    def __len__(self) -> int:
        return self._length

    def __getitem__(self, index: int) -> Image.Image:
        return self._load(int(index))


@dataclass
class ImageSet:
    """One split: images (a uint8 ``[N,H,W,3]`` array or an :class:`ImageSource`) and labels.

    ``fingerprint`` identifies the content (the feature cache is keyed on it). A subset keeps a
    reference to its root set and its row indices, so cached features of the root are reused.
    """

    name: str
    images: np.ndarray | ImageSource
    labels: np.ndarray
    class_names: list[str]
    fingerprint: str
    masks: np.ndarray | None = None
    domains: np.ndarray | None = None
    texts: list[str] | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    root: ImageSet | None = None
    indices: np.ndarray | None = None

    def __post_init__(self) -> None:
        self.labels = np.asarray(self.labels, dtype=np.int64)
        if len(self.images) != len(self.labels):
            raise ValueError(
                f"{self.name}: {len(self.images)} images but {len(self.labels)} labels"
            )

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def n_classes(self) -> int:
        return len(self.class_names)

    def image(self, i: int) -> Image.Image:
        """Image ``i`` as an RGB PIL image."""
        item = self.images[i]
        if isinstance(item, np.ndarray):
            return Image.fromarray(item).convert("RGB")
        return item.convert("RGB")

    def array(self, i: int) -> np.ndarray:
        """Image ``i`` as a uint8 ``[H,W,3]`` array (for figures)."""
        if isinstance(self.images, np.ndarray):
            return self.images[i]
        return np.asarray(self.image(i))

    def subset(self, indices: Sequence[int] | np.ndarray, name: str | None = None) -> ImageSet:
        """The rows ``indices`` of this set, as a new set that remembers its root."""
        idx = np.asarray(indices, dtype=np.int64)
        root = self.root or self
        root_idx = idx if self.indices is None else self.indices[idx]
        images = (
            self.images[idx]
            if isinstance(self.images, np.ndarray)
            else _IndexedSource(self.images, idx)
        )
        return ImageSet(
            name=name or f"{self.name}[{len(idx)}]",
            images=images,
            labels=self.labels[idx],
            class_names=self.class_names,
            fingerprint=stable_hash([root.fingerprint, array_hash(root_idx)]),
            masks=None if self.masks is None else self.masks[idx],
            domains=None if self.domains is None else self.domains[idx],
            texts=None if self.texts is None else [self.texts[i] for i in idx],
            meta=dict(self.meta),
            root=root,
            indices=root_idx,
        )

    def with_labels(
        self, labels: np.ndarray, class_names: list[str], name: str | None = None
    ) -> ImageSet:
        """The same images under another labelling (e.g. base/new class splits)."""
        return replace(
            self, labels=np.asarray(labels), class_names=class_names, name=name or self.name
        )


class _IndexedSource(ImageSource):
    def __init__(self, source: ImageSource | Sequence, indices: np.ndarray) -> None:
        super().__init__(lambda i: source[int(indices[i])], len(indices))


@dataclass
class DatasetSplits:
    """A dataset's fixed train/val/test splits."""

    name: str
    class_names: list[str]
    train: ImageSet
    val: ImageSet
    test: ImageSet
    description: str = ""

    def split(self, which: str) -> ImageSet:
        if which not in ("train", "val", "test"):
            raise ValueError(f"split must be 'train', 'val' or 'test', not {which!r}")
        return getattr(self, which)


@dataclass(frozen=True)
class DatasetSpec:
    """A registered dataset: how to build it, for which profile, and (full) its on-disk layout."""

    name: str
    profile: str
    build: Callable[..., DatasetSplits]
    description: str
    layout: str = ""
    reference_key: str | None = None


DATASETS: dict[str, DatasetSpec] = {}


def register_dataset(spec: DatasetSpec) -> DatasetSpec:
    DATASETS[spec.name] = spec
    return spec


def list_datasets(profile: str | None = None) -> list[str]:
    return [n for n, s in DATASETS.items() if profile is None or s.profile == profile]


def data_root(root: str | os.PathLike | None = None) -> Path:
    """The folder holding the full profile's datasets: ``root``, else ``$CLIPNB_DATA``."""
    value = root if root is not None else os.environ.get("CLIPNB_DATA")
    if not value:
        raise DatasetNotFoundError(
            "No data root given. Pass DATA=/path/to/datasets to make (or set CLIPNB_DATA); "
            "the full profile reads its datasets from there."
        )
    return Path(value).expanduser()


def load_dataset(
    name: str, *, root: str | os.PathLike | None = None, **options: Any
) -> DatasetSplits:
    """Build a registered dataset by name. Full-profile datasets read from ``root``/``$CLIPNB_DATA``."""
    if name not in DATASETS:
        raise UnknownDatasetError(
            f"Unknown dataset {name!r}. Known: {', '.join(sorted(DATASETS))}."
        )
    spec = DATASETS[name]
    if spec.profile == "full":
        return spec.build(data_root(root), **options)
    return spec.build(**options)


def require_folder(path: Path, dataset: str, layout: str) -> Path:
    """Raise a :class:`DatasetNotFoundError` naming the expected layout if ``path`` is missing."""
    if not path.exists():
        raise DatasetNotFoundError(
            f"{dataset}: expected folder {path} is missing. Expected layout under the data root:\n"
            f"{layout}"
        )
    return path


# --- splitting and sampling ---------------------------------------------------------------------


def stratified_split(
    labels: np.ndarray, fractions: Sequence[float], seed: int = SPLIT_SEED
) -> list[np.ndarray]:
    """Split indices per class by ``fractions`` (summing to 1), deterministic for a seed."""
    if abs(sum(fractions) - 1.0) > 1e-9:
        raise ValueError(f"fractions must sum to 1, got {fractions}")
    rng = np.random.default_rng(seed)
    parts: list[list[int]] = [[] for _ in fractions]
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        idx = idx[rng.permutation(len(idx))]
        bounds = np.round(np.cumsum(fractions) * len(idx)).astype(int)
        start = 0
        for p, stop in enumerate(bounds):
            parts[p].extend(idx[start:stop].tolist())
            start = stop
    return [np.sort(np.asarray(p, dtype=np.int64)) for p in parts]


def few_shot_indices(
    labels: np.ndarray, shots: int, seed: int, class_names: Sequence[str] | None = None
) -> np.ndarray:
    """``shots`` indices per class, drawn without replacement; deterministic for a seed.

    The draw for class c depends only on (seed, c), so adding shots keeps earlier ones
    (the 2-shot set contains the 1-shot set): curves over shots compare like with like.
    """
    if shots < 1:
        raise ValueError(f"shots must be >= 1, got {shots}")
    labels = np.asarray(labels)
    chosen = []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        if len(idx) < shots:
            cname = class_names[c] if class_names is not None else str(c)
            raise ValueError(
                f"Class {cname!r} has only {len(idx)} training examples, fewer than shots={shots}. "
                f"Lower the shot count to at most {len(idx)} or use a larger train split."
            )
        order = np.random.default_rng([seed, int(c)]).permutation(len(idx))
        chosen.append(idx[order[:shots]])
    return np.sort(np.concatenate(chosen))


def few_shot(split: ImageSet, shots: int, seed: int) -> ImageSet:
    """A k-shot subset of ``split`` (k per class)."""
    idx = few_shot_indices(split.labels, shots, seed, split.class_names)
    return split.subset(idx, name=f"{split.name}/{shots}shot/seed{seed}")


def array_imageset(
    name: str,
    images: np.ndarray,
    labels: np.ndarray,
    class_names: list[str],
    fingerprint: Any,
    **extra: Any,
) -> ImageSet:
    """An :class:`ImageSet` over an in-memory uint8 array."""
    return ImageSet(
        name=name,
        images=images,
        labels=labels,
        class_names=class_names,
        fingerprint=stable_hash(fingerprint),
        **extra,
    )


# --- embedded datasets --------------------------------------------------------------------------

DIGIT_WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]


def load_handwritten_digits(
    fractions: Sequence[float] = (0.6, 0.2, 0.2), image_size: int = 32
) -> DatasetSplits:
    """scikit-learn's 1,797 real handwritten digits (8×8), white ink on black like MNIST.

    The world the embedded CLIP is pretrained on has printed digits only, so these are
    out of distribution by construction (as MNIST is for internet-trained CLIP).
    """
    from sklearn.datasets import load_digits

    digits = load_digits()
    ink = (digits.images / 16.0 * 255.0).round().astype(np.uint8)
    # Upsample once here (bilinear) so every model sees the same pixels; the model's own
    # preprocessing then only normalises.
    big = np.stack(
        [
            np.asarray(Image.fromarray(im).resize((image_size, image_size), Image.BILINEAR))
            for im in ink
        ]
    )
    rgb = np.repeat(big[..., None], 3, axis=-1)
    labels = digits.target.astype(np.int64)
    base = ["sklearn-digits", image_size, array_hash(rgb)]
    parts = stratified_split(labels, fractions)
    sets = [
        array_imageset(f"digits/{s}", rgb[i], labels[i], DIGIT_WORDS, [*base, s, array_hash(i)])
        for s, i in zip(("train", "val", "test"), parts, strict=True)
    ]
    return DatasetSplits(
        "digits", DIGIT_WORDS, *sets, description="scikit-learn handwritten digits"
    )


register_dataset(
    DatasetSpec(
        "digits",
        "embedded",
        load_handwritten_digits,
        "scikit-learn's real handwritten digits (1,797 images, 8×8 upsampled): the MNIST-like OOD set",
        reference_key="MNIST",
    )
)

#: Seeds of the world's labelled splits: far from the pretraining stream's seeds.
_WORLD_SPLIT_SEEDS = {"train": 7_000_001, "val": 7_000_002, "test": 7_000_003}


def load_world_task(
    task: str,
    style: str,
    per_class: Sequence[int] = (32, 16, 64),
    image_size: int = 32,
) -> DatasetSplits:
    """A class-labelled view of the generated world: ``task`` in shape/colour/digit, one style.

    ``per_class`` gives the train/val/test images per class; each split is generated from its own
    fixed seed, disjoint from the seeds used for pretraining.
    """
    from . import world

    names = world.class_names(task)
    sets = []
    for split, n in zip(("train", "val", "test"), per_class, strict=True):
        seed = (
            _WORLD_SPLIT_SEEDS[split]
            + 1000 * world.LABEL_TASKS.index(task)
            + 100 * world.STYLES.index(style)
        )
        batch = world.generate_labelled(
            task, style, n * len(names), seed=seed, image_size=image_size
        )
        sets.append(
            array_imageset(
                f"world-{task}-{style}/{split}",
                batch.images,
                batch.labels,
                list(batch.class_names),
                ["world", task, style, split, n, image_size, seed, world.fingerprint(image_size)],
                masks=batch.masks,
                meta={"task": task, "style": style},
            )
        )
    return DatasetSplits(
        f"world-{task}-{style}", list(names), *sets, description=f"world {task}s, {style} style"
    )


def _register_world() -> None:
    from . import world

    for task in world.LABEL_TASKS:
        for style in world.STYLES:
            held = " (held out of pretraining)" if style == world.HELD_OUT_STYLE else ""
            register_dataset(
                DatasetSpec(
                    f"world-{task}-{style}",
                    "embedded",
                    lambda task=task, style=style, **kw: load_world_task(task, style, **kw),
                    f"generated world: {task} classification, {style} style{held}",
                )
            )


_register_world()
