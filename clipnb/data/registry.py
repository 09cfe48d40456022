"""The dataset registry: every dataset is registered by one explicit call,
:func:`register_all` (clipnb's ``__init__`` makes it), and built by name.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from clipnb.core.imagesets import (
    DatasetNotFoundError,
    DatasetSplits,
    array_imageset,
    stratified_split,
)
from clipnb.core.utils import array_hash


class UnknownDatasetError(ValueError):
    """A dataset name that is not registered."""


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
    register_all()
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
    register_all()
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


def _register_digits() -> None:
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
    from clipnb.data import world

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
    from clipnb.data import world

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


_REGISTERED = False


def register_all() -> None:
    """Register every dataset: the generated world's views, the handwritten digits, the memes
    and the full profile's real datasets. Idempotent; ``clipnb``'s ``__init__`` calls it."""
    global _REGISTERED
    if _REGISTERED:
        return
    _REGISTERED = True
    from clipnb.data import full, memes

    _register_digits()
    _register_world()
    memes.register()
    full.register()
