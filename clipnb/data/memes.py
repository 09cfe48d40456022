"""Synthetic Hateful-Memes-style data: emblems, invented caption words and hidden links.

Each meme is a small image of the generated world: an *emblem* (a shape the pretraining world
contains, always in the same colour) at the top and a caption *word* printed meme-style
underneath; the same word is the meme's text. Hidden *concepts* (invented words that no pretraining caption contains) link some
emblems to some words, and a meme is labelled "hateful" exactly when its emblem's concept and its
word's concept are the same. Every entity is invented and neutral: the data only reproduces the
logical roles of the real dataset (an image, a caption, and an implicit link between them that
neither states).

Confounders are balanced by construction: every emblem and every word appears as often in
"hateful" as in "not hateful" memes, so neither the image alone nor the text alone predicts the
label. Each concept's words have roles: ``n_shown`` words appear in the training memes, one word
only in the validation memes and one only in the test memes. A hidden-word meme's link is
therefore stated nowhere in the labelled data; only the auxiliary knowledge (emblem images paired
with the concept's name, and chain sentences "{concept} ... {word}") says it.

The module registers the embedded dataset ``"memes"``; it also reads the full profile's
user-supplied auxiliary files (an image folder with a captions CSV, and a YAML of chain sentences).
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from clipnb.core.imagesets import (
    DatasetNotFoundError,
    DatasetSplits,
    ImageSet,
    ImageSource,
    array_imageset,
)
from clipnb.core.utils import atomic_write_bytes, cache_dir, file_hash, stable_hash
from clipnb.data import world
from clipnb.data.registry import DatasetSpec, register_dataset

#: Class order of the memes (the same as the full profile's Hateful Memes).
CLASS_NAMES: list[str] = ["not hateful", "hateful"]
#: Values of the memes' ``masks``: 0 background, 1 emblem, 2 the caption's text region.
MASK_EMBLEM, MASK_TEXT = 1, 2
#: ``domains`` codes of the val/test memes: words seen in training memes, or held out.
GROUPS: tuple[str, ...] = ("shown", "hidden")
#: The default chain sentence: the second node of the chain ("{concept} ... {word}").
CHAIN_TEMPLATE = "the {concept} keep the {word}"
#: Alignment text of an emblem image (the source's "Hitler, hateful"): the concept's name.
ALIGN_TEMPLATE = "{concept}"

_STREAM_MEMES = 0x3E3E
_STREAM_ALIGN = 0xA11


@dataclass(frozen=True)
class LinkWorld:
    """Which emblems and words each hidden concept links.

    ``words[k]`` lists concept ``k``'s caption words by role: the first ``n_shown`` appear in
    training memes, the next one only in validation memes, the next one only in test memes.
    """

    concepts: tuple[str, ...]
    emblems: tuple[tuple[str, ...], ...]
    words: tuple[tuple[str, ...], ...]
    n_shown: int = 2
    chain_template: str = CHAIN_TEMPLATE

    def __post_init__(self) -> None:
        k = len(self.concepts)
        if k < 2 or len(self.emblems) != k or len(self.words) != k:
            raise ValueError("need >= 2 concepts, each with its own emblems and words")
        flat_emblems = [e for group in self.emblems for e in group]
        for e in flat_emblems:
            emblem_parts(e)
        if len(set(flat_emblems)) != len(flat_emblems):
            raise ValueError("an emblem belongs to exactly one concept")
        sizes = {len(g) for g in self.emblems}
        word_sizes = {len(g) for g in self.words}
        if len(sizes) != 1 or len(word_sizes) != 1:
            raise ValueError(
                "every concept needs as many emblems and words as the others (balance)"
            )
        if word_sizes.pop() != self.n_shown + 2:
            raise ValueError(f"each concept needs n_shown + 2 = {self.n_shown + 2} words")
        flat_words = self.all_words
        if len(set(flat_words)) != len(flat_words):
            raise ValueError("a word belongs to exactly one concept")

    @property
    def all_emblems(self) -> list[str]:
        return [e for group in self.emblems for e in group]

    @property
    def all_words(self) -> list[str]:
        return [w for group in self.words for w in group]

    def words_for(self, role: str) -> list[str]:
        """Words of a role: ``"train"`` (shown), ``"val"`` or ``"test"`` (hidden), or ``"all"``."""
        if role == "all":
            return self.all_words
        picks = {"train": slice(0, self.n_shown), "val": slice(self.n_shown, self.n_shown + 1)}
        picks["test"] = slice(self.n_shown + 1, self.n_shown + 2)
        if role not in picks:
            raise ValueError(f"role must be train, val, test or all, not {role!r}")
        return [w for group in self.words for w in group[picks[role]]]

    def concept_of_emblem(self, emblem: str) -> int:
        for k, group in enumerate(self.emblems):
            if emblem in group:
                return k
        raise ValueError(f"emblem {emblem!r} is not linked to any concept")

    def concept_of_word(self, word: str) -> int:
        for k, group in enumerate(self.words):
            if word in group:
                return k
        raise ValueError(f"word {word!r} is not linked to any concept")

    def linked(self, emblem: str, word: str) -> bool:
        """The label: emblem and word belong to the same hidden concept."""
        return self.concept_of_emblem(emblem) == self.concept_of_word(word)

    def chain_sentences(self, words: Sequence[str] | None = None, shift: int = 0) -> list[str]:
        """One chain sentence per (concept, word) link, for ``words`` (default: all words).

        ``shift`` != 0 pairs each word with another concept instead: sentences stating a link
        that does not exist (a control for what the self-learning step learned).
        """
        words = self.all_words if words is None else list(words)
        k = len(self.concepts)
        return [
            self.chain_template.format(
                concept=self.concepts[(self.concept_of_word(w) + shift) % k], word=w
            )
            for w in words
        ]

    def table(self) -> pd.DataFrame:
        """The links as a table: one row per concept."""
        n = self.n_shown
        return pd.DataFrame(
            {
                "hidden concept": self.concepts,
                "emblems": [", ".join(g) for g in self.emblems],
                "words in training memes": [", ".join(g[:n]) for g in self.words],
                "val-only word": [g[n] for g in self.words],
                "test-only word": [g[n + 1] for g in self.words],
            }
        )


def emblem_parts(emblem: str) -> tuple[str, str]:
    """An emblem's (colour, shape): emblems are named "{colour} {shape}" with world names."""
    colour, _, shape = emblem.partition(" ")
    if colour not in world.COLOURS or shape not in world.SHAPES:
        raise ValueError(
            f"emblem {emblem!r} must be '<colour> <shape>' with a colour of {tuple(world.COLOURS)} "
            f"and a shape of {world.SHAPES}"
        )
    return colour, shape


#: The default links: 4 invented concepts, each linking 2 emblems (a world shape in a fixed
#: colour) and 4 invented words.
DEFAULT_LINKS = LinkWorld(
    concepts=("vornak", "quilleth", "brastel", "yomprit"),
    emblems=(
        ("red star", "blue circle"),
        ("green square", "yellow heart"),
        ("purple triangle", "orange cross"),
        ("pink hexagon", "cyan diamond"),
    ),
    words=(
        ("zib", "plendo", "grelm", "fip"),
        ("quorv", "taffle", "dobix", "wozzle"),
        ("brindo", "skree", "mavo", "trund"),
        ("yaffo", "klent", "snorf", "drib"),
    ),
)


# --- planning: which emblem and word each meme gets -------------------------------------------------


def plan_memes(
    links: LinkWorld, words: Sequence[str], n: int, seed: int
) -> list[tuple[str, str, int]]:
    """``n`` (emblem, word, label) triples, half linked, with balanced confounders.

    Half the memes are linked (label 1), half not (label 0), in a shuffled order. Each class is
    planned greedily: the next meme takes the allowed (emblem, word) pair whose emblem and word
    have been used least so far in that class (then the least-used pair; ties broken at random).
    So every emblem and every word appears about equally often in both classes, also in small sets.
    """
    words = list(words)
    if n < 2:
        raise ValueError(f"n must be >= 2 (one meme per class), got {n}")
    rng = np.random.default_rng([seed, _STREAM_MEMES])
    emblems = links.all_emblems
    n_pos = n // 2
    labels = rng.permutation(np.r_[np.ones(n_pos, dtype=np.int64), np.zeros(n - n_pos, np.int64)])
    queues: dict[int, list[tuple[str, str]]] = {}
    for label, count in ((1, n_pos), (0, n - n_pos)):
        pairs = [(e, w) for e in emblems for w in words if links.linked(e, w) == bool(label)]
        used_e = dict.fromkeys(emblems, 0)
        used_w = dict.fromkeys(words, 0)
        used_p = dict.fromkeys(pairs, 0)
        out: list[tuple[str, str]] = []
        for _ in range(count):
            noise = rng.random(len(pairs))
            k = min(
                range(len(pairs)),
                key=lambda i: (
                    used_e[pairs[i][0]] + used_w[pairs[i][1]],
                    used_p[pairs[i]],
                    noise[i],
                ),
            )
            e, w = pairs[k]
            used_e[e], used_w[w], used_p[(e, w)] = used_e[e] + 1, used_w[w] + 1, used_p[(e, w)] + 1
            out.append((e, w))
        queues[label] = list(reversed(out))
    return [(*queues[int(y)].pop(), int(y)) for y in labels]


# --- rendering ----------------------------------------------------------------------------------------


def text_box(image_size: int) -> tuple[int, int, int, int]:
    """Where the caption is printed: a band along the bottom of the image."""
    s = image_size
    margin = max(1, round(s / 32))
    return (margin, round(21 * s / 32), s - margin, s)


def _emblem_scene(
    emblem: str, rng: np.random.Generator, styles: Sequence[str], position: str | None
) -> world.Scene:
    """A random one-object scene (size, background, style) showing ``emblem`` in its colour.

    Scenes are drawn from the world's sampler until its object has the emblem's colour, so the
    background is one the world itself pairs with that colour (enough contrast).
    """
    colour, shape = emblem_parts(emblem)
    for _ in range(1000):
        scene = world.sample_scene(rng, styles=styles, p_two=0.0, p_digit=0.0)
        if scene.objects[0].colour == colour:
            break
    else:  # pragma: no cover - probability (7/8)^1000
        raise RuntimeError(f"no scene with colour {colour} drawn")
    obj = replace(scene.objects[0], name=shape, position=position or scene.objects[0].position)
    return replace(scene, objects=(obj,))


def render_meme(
    emblem: str,
    word: str,
    rng: np.random.Generator,
    image_size: int = world.IMAGE_SIZE,
    styles: Sequence[str] = ("photo", "cartoon"),
) -> tuple[np.ndarray, np.ndarray]:
    """One meme: ``emblem`` ("{colour} {shape}") at the top, ``word`` printed underneath.

    Returns the image (HxWx3 uint8) and its mask (0 background, 1 emblem, 2 the text's region:
    the bounding box of the printed word's ink).
    """
    scene = _emblem_scene(emblem, rng, styles, "top")
    image, obj_mask = world.render(scene, rng, image_size=image_size)
    image, ink = world.render_text(
        image, word, text_box(image_size), "white", stroke_colour="black", stroke=1
    )
    mask = np.where(obj_mask == 1, MASK_EMBLEM, 0).astype(np.uint8)
    rows, cols = np.flatnonzero(ink.any(axis=1)), np.flatnonzero(ink.any(axis=0))
    if rows.size:
        mask[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1] = MASK_TEXT
    return image, mask


def _render_plan(
    plan: Sequence[tuple[str, str, int]], seed: int, image_size: int, styles: Sequence[str]
) -> tuple[np.ndarray, np.ndarray]:
    s = image_size
    images = np.empty((len(plan), s, s, 3), np.uint8)
    masks = np.empty((len(plan), s, s), np.uint8)
    for i, (emblem, word, _) in enumerate(plan):
        rng = np.random.default_rng([seed, _STREAM_MEMES, i])
        images[i], masks[i] = render_meme(emblem, word, rng, image_size, styles)
    return images, masks


def _cached_arrays(key: str, build) -> dict[str, np.ndarray]:
    """Generated arrays, from the cache when this exact generator and setting made them before."""
    path = cache_dir() / "memes" / f"{key}.npz"
    if path.exists():
        with np.load(path, allow_pickle=False) as data:
            return {k: data[k] for k in data.files}
    arrays = build()
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    atomic_write_bytes(path, buffer.getvalue())
    return arrays


def _generator_id(image_size: int) -> list[str]:
    """What the memes depend on: the world's output (its fingerprint) and this module's code."""
    return [world.fingerprint(image_size), file_hash(__file__)]


def generate_split(
    links: LinkWorld,
    groups: Sequence[tuple[str, str, int]],
    seed: int,
    name: str,
    image_size: int = world.IMAGE_SIZE,
    styles: Sequence[str] = ("photo", "cartoon"),
) -> ImageSet:
    """One split made of groups ``(group name, word role, n memes)``; ``domains`` = group index."""
    plan: list[tuple[str, str, int]] = []
    domains: list[int] = []
    for g, (group, role, n) in enumerate(groups):
        if group not in GROUPS:
            raise ValueError(f"group must be one of {GROUPS}, not {group!r}")
        plan += plan_memes(links, links.words_for(role), n, seed=seed * 1000 + g)
        domains += [GROUPS.index(group)] * n
    fingerprint = [
        "memes",
        links,
        list(groups),
        seed,
        image_size,
        list(styles),
        *_generator_id(image_size),
    ]
    key = stable_hash(fingerprint)
    arrays = _cached_arrays(
        key,
        lambda: dict(
            zip(("images", "masks"), _render_plan(plan, seed, image_size, styles), strict=True)
        ),
    )
    emblems = np.array([p[0] for p in plan])
    return array_imageset(
        name,
        arrays["images"],
        np.array([p[2] for p in plan], dtype=np.int64),
        list(CLASS_NAMES),
        [key, name],
        masks=arrays["masks"],
        domains=np.array(domains, dtype=np.int64),
        texts=[p[1] for p in plan],
        meta={"emblems": emblems, "links": links, "groups": GROUPS},
    )


def load_memes(
    n_train: int = 512,
    n_val: int = 128,
    n_test: int = 256,
    image_size: int = world.IMAGE_SIZE,
    seed: int = 0,
    links: LinkWorld = DEFAULT_LINKS,
    styles: Sequence[str] = ("photo", "cartoon"),
) -> DatasetSplits:
    """The embedded meme dataset: ``texts`` are the captions, ``masks`` mark emblem (1) and text (2).

    Train holds ``n_train`` memes with the concepts' shown words. Val and test each hold
    ``n_val``/``n_test`` memes with shown words (new renderings: ``domains`` 0, "shown") plus as
    many with their split's held-out word (``domains`` 1, "hidden").
    """
    base = 7_100_000 + seed * 10
    splits = [
        generate_split(
            links, [("shown", "train", n_train)], base + 1, "memes/train", image_size, styles
        ),
        generate_split(
            links,
            [("shown", "train", n_val), ("hidden", "val", n_val)],
            base + 2,
            "memes/val",
            image_size,
            styles,
        ),
        generate_split(
            links,
            [("shown", "train", n_test), ("hidden", "test", n_test)],
            base + 3,
            "memes/test",
            image_size,
            styles,
        ),
    ]
    return DatasetSplits(
        "memes",
        list(CLASS_NAMES),
        *splits,
        description="synthetic memes: emblem + invented caption word, label = hidden link",
    )


def register() -> None:
    """Register the memes dataset (called once by :func:`clipnb.data.registry.register_all`)."""
    register_dataset(
        DatasetSpec(
            "memes",
            "embedded",
            load_memes,
            "synthetic Hateful-Memes-style set: a world emblem and an invented caption word; "
            "hateful iff a hidden concept links them",
        )
    )


def without_caption(split: ImageSet, grey: int = 128) -> ImageSet:
    """The same memes with the caption band painted flat grey: what the emblem alone shows."""
    images = np.asarray(split.images).copy()
    _, y0, _, _ = text_box(images.shape[1])
    images[:, y0:] = grey
    masks = None if split.masks is None else np.where(split.masks == MASK_TEXT, 0, split.masks)
    return array_imageset(
        f"{split.name}/no-caption",
        images,
        split.labels,
        split.class_names,
        [split.fingerprint, "no-caption", grey],
        masks=masks,
        domains=split.domains,
        texts=split.texts,
        meta=dict(split.meta),
    )


# --- per-meme facts and auxiliary data ---------------------------------------------------------------


def row_indices(split: ImageSet) -> np.ndarray:
    """Rows of ``split`` in its root set (for per-meme facts stored on the root)."""
    return np.arange(len(split)) if split.indices is None else split.indices


def meme_table(split: ImageSet) -> pd.DataFrame:
    """One row per meme: emblem, word, their concepts, label and group (where known)."""
    emblems = split.meta.get("emblems")
    links: LinkWorld | None = split.meta.get("links")
    out = pd.DataFrame({"word": split.texts or [""] * len(split), "label": split.labels})
    if split.domains is not None:
        out["group"] = [GROUPS[d] for d in split.domains]
    else:
        out["group"] = "all"
    if emblems is not None and links is not None:
        out["emblem"] = np.asarray(emblems)[row_indices(split)]
        out["emblem concept"] = [links.concepts[links.concept_of_emblem(e)] for e in out.emblem]
        out["word concept"] = [links.concepts[links.concept_of_word(w)] for w in out.word]
    return out


def alignment_images(
    links: LinkWorld,
    n_per_emblem: int,
    seed: int = 0,
    image_size: int = world.IMAGE_SIZE,
    styles: Sequence[str] = ("photo", "cartoon"),
    template: str = ALIGN_TEMPLATE,
) -> ImageSet:
    """``n_per_emblem`` images of every emblem alone (no caption), text = its concept's name.

    The images of emblem ``e`` are the same for every ``n`` (image ``j`` has its own seed), so
    the sets are nested: 2 images per emblem are the first 2 of the 4.
    """
    emblems = links.all_emblems
    rows = [(e, j) for j in range(n_per_emblem) for e in emblems]
    s = image_size
    key = stable_hash(
        ["memes-align", links, n_per_emblem, seed, s, list(styles), *_generator_id(s)]
    )

    def build() -> dict[str, np.ndarray]:
        images = np.empty((len(rows), s, s, 3), np.uint8)
        masks = np.empty((len(rows), s, s), np.uint8)
        for i, (e, j) in enumerate(rows):
            rng = np.random.default_rng([seed, _STREAM_ALIGN, emblems.index(e), j])
            image, obj = world.render(_emblem_scene(e, rng, styles, None), rng, image_size=s)
            images[i], masks[i] = image, (obj == 1).astype(np.uint8) * MASK_EMBLEM
        return {"images": images, "masks": masks}

    if not rows:
        raise ValueError("n_per_emblem must be >= 1")
    arrays = _cached_arrays(key, build)
    concept = [links.concepts[links.concept_of_emblem(e)] for e, _ in rows]
    return array_imageset(
        f"memes/align-{n_per_emblem}",
        arrays["images"],
        np.ones(len(rows), dtype=np.int64),
        list(CLASS_NAMES),
        [key],
        masks=arrays["masks"],
        texts=[template.format(concept=c) for c in concept],
        meta={"emblems": np.array([e for e, _ in rows])},
    )


def first_per_emblem(aux: ImageSet, n: int) -> ImageSet:
    """The first ``n`` images of each emblem of an :func:`alignment_images` set (nested subsets).

    A set without emblems (the full profile's folder) gives its first ``n`` images.
    """
    if "emblems" not in aux.meta:
        return aux.subset(np.arange(min(n, len(aux))), name=f"{aux.name}[{n}]")
    n_emblems = len(np.unique(np.asarray(aux.meta["emblems"])))
    return aux.subset(np.arange(n * n_emblems), name=f"{aux.name}[{n}/emblem]")


# --- the full profile's user-supplied auxiliary files ---------------------------------------------

AUX_LAYOUT = """\
<aux_dir>/captions.csv   (columns: image, text; one row per image, e.g. "img001.jpg,<subject>")
<aux_dir>/<image files>  (the images the CSV names)"""

CHAIN_LAYOUT = """\
target: hateful                 # the anchor the chain sentences must be classified as
contrast: [positive, happy]     # anchors the target is kept apart from
sentences:                      # the chain sentences, one per link
  - "<subject> ... <caption word>\""""


@dataclass
class ChainSpec:
    """Chain sentences and the anchor words of the text self-learning step."""

    sentences: list[str]
    anchors: tuple[str, ...] = ("hateful", "positive", "happy")
    extra: dict[str, Any] = field(default_factory=dict)


def load_chain_yaml(path: str | os.PathLike) -> ChainSpec:
    """Read the chain sentences (and optional anchors) from a small YAML file."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise DatasetNotFoundError(
            f"chain sentences: {path} is missing. Expected YAML:\n{CHAIN_LAYOUT}"
        )
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    if (
        not isinstance(data, dict)
        or not isinstance(data.get("sentences"), list)
        or not data["sentences"]
    ):
        raise DatasetNotFoundError(
            f"chain sentences: {path} has no 'sentences' list. Expected:\n{CHAIN_LAYOUT}"
        )
    anchors = (
        str(data.get("target", "hateful")),
        *(str(c) for c in data.get("contrast", ["positive", "happy"])),
    )
    return ChainSpec([str(s) for s in data["sentences"]], anchors)


class _Files(ImageSource):
    def __init__(self, paths: Sequence[Path]) -> None:
        from clipnb.data.full import open_rgb

        super().__init__(lambda i: open_rgb(paths[i], "aux images"), len(paths))


def load_alignment_folder(folder: str | os.PathLike, csv_name: str = "captions.csv") -> ImageSet:
    """The full profile's auxiliary images: a folder with a CSV of (image, text) rows."""
    folder = Path(folder)
    table = folder / csv_name
    if not table.is_file():
        raise DatasetNotFoundError(
            f"aux images: {table} is missing. Expected layout:\n{AUX_LAYOUT}"
        )
    with table.open(newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    if not rows or not {"image", "text"} <= set(rows[0]):
        raise DatasetNotFoundError(
            f"aux images: {table} needs the columns image,text.\n{AUX_LAYOUT}"
        )
    paths = [folder / r["image"] for r in rows]
    missing = [p for p in paths if not p.is_file()]
    if missing:
        raise DatasetNotFoundError(
            f"aux images: {missing[0]} (and {len(missing) - 1} more) missing."
        )
    return ImageSet(
        name=f"aux:{folder.name}",
        images=_Files(paths),
        labels=np.ones(len(rows), dtype=np.int64),
        class_names=list(CLASS_NAMES),
        fingerprint=stable_hash(["aux", [file_hash(p) for p in paths], [r["text"] for r in rows]]),
        texts=[r["text"] for r in rows],
    )


def world_caption_vocabulary(n_scenes: int = 4000, seed: int = 0) -> set[str]:
    """Every word of a large sample of pretraining captions (all styles, one- and two-object scenes)."""
    words: set[str] = set()
    for i in range(n_scenes):
        rng = np.random.default_rng([seed, 0x70CA, i])
        scene = world.sample_scene(rng, styles=world.STYLES)
        words.update(world.caption(scene, rng).replace(",", " ").split())
    return words
