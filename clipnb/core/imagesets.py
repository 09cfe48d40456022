"""Image sets and the one way to split and sample them: every study reads data through these."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torchvision.transforms as T
from PIL import Image

from clipnb.core.utils import array_hash, stable_hash

#: Fixed seed that carves validation sets out of datasets that ship without one.
SPLIT_SEED = 0


class DatasetNotFoundError(FileNotFoundError):
    """A dataset folder is missing or not in the expected layout."""


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


def mask_geometry(preprocess: Callable, mask: np.ndarray) -> np.ndarray:
    """Apply the resize/crop steps of an image ``preprocess`` to a label map (nearest neighbour).

    ``preprocess`` is a torchvision ``Compose`` such as ``bundle.preprocess``; its ``Resize`` and
    ``CenterCrop`` steps are replayed on ``mask`` [H, W] so labels stay aligned with the pixels
    the model sees. Other steps (tensor conversion, normalisation) do not move pixels.
    """
    if mask.ndim != 2:
        raise ValueError(f"mask must be [H, W], got shape {mask.shape}")
    img = Image.fromarray(mask.astype(np.uint8), mode="L")
    for step in getattr(preprocess, "transforms", []):
        if isinstance(step, T.Resize):
            img = T.Resize(
                step.size, interpolation=T.InterpolationMode.NEAREST, max_size=step.max_size
            )(img)
        elif isinstance(step, T.CenterCrop):
            img = T.CenterCrop(step.size)(img)
        elif isinstance(step, T.RandomResizedCrop | T.RandomCrop):
            raise ValueError(f"random crop {step} cannot be replayed on a mask")
    return np.asarray(img, dtype=np.uint8)
