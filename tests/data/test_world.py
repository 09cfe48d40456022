"""Tests for the procedural captioned-image world (clipnb.world)."""

from __future__ import annotations

import re
import time
from collections import Counter

import numpy as np
import pytest

from clipnb.data import world as w


def _plain_background(colour: str) -> int:
    """Index of a plain background that contrasts with ``colour``."""
    plain = [i for i in w._ok_backgrounds((colour,)) if w._BG_RECIPES[i].kind == "plain"]
    assert plain, f"no plain background for {colour}"
    return plain[0]


def _erode(m: np.ndarray) -> np.ndarray:
    out = m.copy()
    out[1:] &= m[:-1]
    out[:-1] &= m[1:]
    out[:, 1:] &= m[:, :-1]
    out[:, :-1] &= m[:, 1:]
    return out


def _two_object_scenes(style: str) -> list[w.Scene]:
    scenes = []
    for a, (pos1, pos2) in enumerate([("left", "right"), ("top", "bottom"), ("right", "left")]):
        for size1 in w.SIZES:
            for size2 in w.SIZES:
                o1 = w.WorldObject("shape", w.SHAPES[a % 8], "red", size1, pos1)
                o2 = w.WorldObject("digit", "eight", "blue", size2, pos2)
                bg = _plain_background("red")
                assert bg in w._ok_backgrounds(("blue", "red"))
                scenes.append(w.Scene((o1, o2), bg, style))
    return scenes


# --------------------------------------------------------------------------- content


def test_vocabulary() -> None:
    assert len(w.SHAPES) >= 8 and len(set(w.SHAPES)) == len(w.SHAPES)
    assert len(w.COLOURS) >= 8
    assert w.DIGIT_NAMES[0] == "zero" and w.DIGIT_NAMES[7] == "seven" and len(w.DIGIT_NAMES) == 10
    assert set(w.PRETRAIN_STYLES) | {w.HELD_OUT_STYLE} == set(w.STYLES)
    assert w.HELD_OUT_STYLE not in w.PRETRAIN_STYLES
    assert w.class_names("shape") == list(w.SHAPES)
    assert w.class_names("colour") == list(w.COLOURS)
    assert w.class_names("digit") == list(w.DIGIT_NAMES)
    # Colours are clearly distinct hues.
    rgb = np.array(list(w.COLOURS.values()), dtype=float)
    dists = np.linalg.norm(rgb[:, None] - rgb[None], axis=-1)
    assert dists[~np.eye(len(rgb), dtype=bool)].min() > 80


def test_every_colour_has_contrasting_backgrounds() -> None:
    for colour in w.COLOURS:
        ok = w._ok_backgrounds((colour,))
        assert len(ok) >= 4, colour
        for i in ok:
            assert w._contrast(w.COLOURS[colour], w._bg_mean(i)) >= w._MIN_CONTRAST


# --------------------------------------------------------------------------- determinism


def test_captioned_deterministic_and_seed_dependent() -> None:
    a = w.generate_captioned(40, seed=7)
    b = w.generate_captioned(40, seed=7)
    c = w.generate_captioned(40, seed=8)
    assert a.images.dtype == np.uint8 and a.images.shape == (40, 32, 32, 3)
    assert a.masks.dtype == np.uint8 and a.masks.shape == (40, 32, 32)
    assert a.images.tobytes() == b.images.tobytes()
    assert a.masks.tobytes() == b.masks.tobytes()
    assert a.captions == b.captions and a.scenes == b.scenes
    assert not np.array_equal(a.images, c.images)
    assert a.captions != c.captions


def test_image_i_does_not_depend_on_n() -> None:
    big = w.generate_captioned(140, seed=3)  # spans two render chunks
    small = w.generate_captioned(7, seed=3)
    mid = w.generate_captioned(133, seed=3)
    assert np.array_equal(small.images, big.images[:7])
    assert np.array_equal(small.masks, big.masks[:7])
    assert small.captions == big.captions[:7]
    assert np.array_equal(mid.images[128:], big.images[128:133])
    assert mid.captions[128:] == big.captions[128:133]


def test_public_api_replays_generate_captioned() -> None:
    batch = w.generate_captioned(12, seed=11)
    for i in (0, 5, 11):
        rng = np.random.default_rng([11, w._STREAM_CAPTIONED, i])
        scene = w.sample_scene(rng)
        image, mask = w.render(scene, rng)
        assert scene == batch.scenes[i]
        assert np.array_equal(image, batch.images[i])
        assert np.array_equal(mask, batch.masks[i])
        assert w.caption(scene, rng) == batch.captions[i]


def test_render_deterministic_given_rng_state() -> None:
    scene = w.Scene((w.WorldObject("shape", "star", "red", "large", "centre"),), 0, "noisy")
    a = w.render(scene, np.random.default_rng(1))
    b = w.render(scene, np.random.default_rng(1))
    c = w.render(scene, np.random.default_rng(2))
    assert a[0].tobytes() == b[0].tobytes() and a[1].tobytes() == b[1].tobytes()
    assert not np.array_equal(a[0], c[0])


# --------------------------------------------------------------------------- styles & masks


def test_held_out_style_never_in_default_pretraining() -> None:
    batch = w.generate_captioned(400, seed=0)
    styles = Counter(s.style for s in batch.scenes)
    assert set(styles) == set(w.PRETRAIN_STYLES)
    assert w.HELD_OUT_STYLE not in styles
    for cap in batch.captions:
        assert "sketch" not in cap and "doodle" not in cap and "line drawing" not in cap
    n_two = sum(len(s.objects) == 2 for s in batch.scenes)
    n_digit = sum(o.kind == "digit" for s in batch.scenes for o in s.objects)
    n_obj = sum(len(s.objects) for s in batch.scenes)
    assert 0.25 < n_two / 400 < 0.45
    assert 0.15 < n_digit / n_obj < 0.35


def test_sketch_only_batch() -> None:
    batch = w.generate_captioned(30, seed=2, styles=("sketch",))
    assert {s.style for s in batch.scenes} == {"sketch"}
    # White-ish paper: the median pixel is light.
    assert np.median(batch.images) > 200


@pytest.mark.parametrize("style", ["photo", "cartoon"])
def test_mask_pixels_differ_from_plain_background(style: str) -> None:
    rng = np.random.default_rng(0)
    for shape in (*w.SHAPES, "seven", "one"):
        kind = "digit" if shape in w.DIGIT_NAMES else "shape"
        for colour in w.COLOURS:
            obj = w.WorldObject(kind, shape, colour, "small", "centre")
            bg = _plain_background(colour)
            image, mask = w.render(w.Scene((obj,), bg, style), rng)
            assert set(np.unique(mask)) == {0, 1}
            assert (mask == 1).sum() >= 12, (shape, colour)
            bg_rgb = np.asarray(w._BG_RECIPES[bg].colour_a, dtype=float)
            inside = mask > 0
            if style == "cartoon" and kind == "shape" and w._BG_RECIPES[bg].tone == "dark":
                # A shape's black outline (~1.5 px anti-aliased, inside the mask; digits get
                # it outside) may be as dark as the background: check the fill only.
                inside = _erode(_erode(inside))
            diff = np.abs(image[inside].astype(float) - bg_rgb).max(axis=1)
            assert inside.sum() >= 1 and diff.min() > 25, (style, shape, colour)
            # Far from the object the background is untouched (up to +-8 brightness).
            far = np.ones_like(mask, dtype=bool)
            ys, xs = np.nonzero(mask)
            far[max(ys.min() - 3, 0) : ys.max() + 4, max(xs.min() - 3, 0) : xs.max() + 4] = False
            far_diff = np.abs(image[far].astype(float) - bg_rgb).max(axis=1)
            assert far_diff.max() <= 9


@pytest.mark.parametrize("style", w.STYLES)
def test_two_object_masks_do_not_overlap(style: str) -> None:
    scenes = _two_object_scenes(style)
    chunk = w._Chunk(len(scenes), 32)
    rng = np.random.default_rng(5)
    for i, scene in enumerate(scenes):
        chunk.prepare(i, scene, rng)
    _, masks = chunk.finish()
    cover = w._reduce2(chunk.sil)
    # Not even anti-aliased edges touch.
    assert not ((cover[:, 0] > 0) & (cover[:, 1] > 0)).any()
    for scene, mask in zip(scenes, masks, strict=True):
        assert set(np.unique(mask)) == {0, 1, 2}
        for idx, obj in enumerate(scene.objects, start=1):
            ys, xs = np.nonzero(mask == idx)
            assert ys.size >= 10
            cy, cx = ys.mean(), xs.mean()
            expected = {"left": cx < 16, "right": cx > 16, "top": cy < 16, "bottom": cy > 16}
            assert expected[obj.position], (obj, cx, cy)


def test_mask_is_same_silhouette_in_every_style() -> None:
    obj = w.WorldObject("shape", "heart", "green", "large", "left")
    masks = [w.render(w.Scene((obj,), 0, s), np.random.default_rng(9))[1] for s in w.STYLES]
    for m in masks[1:]:
        assert np.array_equal(m, masks[0])
    # Sketch: mask is the filled silhouette, far larger than the drawn outline.
    image, mask = w.render(w.Scene((obj,), 0, "sketch"), np.random.default_rng(9))
    ink = np.abs(image.astype(int) - np.median(image, axis=(0, 1))).max(axis=2) > 40
    assert ink.sum() > 10 and mask.sum() > 1.8 * ink.sum()
    assert ink[mask == 0].sum() < 0.25 * ink.sum()  # the outline lies on the silhouette


def test_large_objects_are_larger_than_small_ones() -> None:
    for shape in w.SHAPES:
        areas = {}
        for size in w.SIZES:
            obj = w.WorldObject("shape", shape, "blue", size, "centre")
            areas[size] = (w.render(w.Scene((obj,), 0, "photo"), np.random.default_rng(0))[1]).sum()
        assert areas["large"] > 1.6 * areas["small"], shape


def test_shapes_have_distinct_silhouettes() -> None:
    masks = []
    for shape in w.SHAPES:
        obj = w.WorldObject("shape", shape, "red", "large", "centre")
        masks.append(w.render(w.Scene((obj,), 0, "photo"), np.random.default_rng(0))[1] > 0)
    for i in range(len(masks)):
        for j in range(i + 1, len(masks)):
            iou = (masks[i] & masks[j]).sum() / (masks[i] | masks[j]).sum()
            assert iou < 0.9, (w.SHAPES[i], w.SHAPES[j], iou)


def test_image_size_64() -> None:
    batch = w.generate_captioned(20, seed=4, styles=w.STYLES, image_size=64)
    assert batch.images.shape == (20, 64, 64, 3) and batch.masks.shape == (20, 64, 64)
    for scene, mask in zip(batch.scenes, batch.masks, strict=True):
        for idx in range(1, len(scene.objects) + 1):
            assert (mask == idx).sum() >= 40
    lab = w.generate_labelled("digit", "cartoon", 10, seed=0, image_size=64)
    assert lab.images.shape == (10, 64, 64, 3)


# --------------------------------------------------------------------------- captions


def test_captions_name_every_object() -> None:
    batch = w.generate_captioned(300, seed=5, styles=w.STYLES)
    for cap, scene in zip(batch.captions, batch.scenes, strict=True):
        words = cap.split()
        for obj in scene.objects:
            assert obj.name in words, (cap, scene)
        if any(o.kind == "digit" for o in scene.objects):
            assert not re.search(r"\d", cap)


def test_captions_are_varied_and_grammatical() -> None:
    batch = w.generate_captioned(600, seed=6)
    vocab = set(w.SHAPES) | set(w.DIGIT_NAMES) | set(w.COLOURS)
    forms = {" ".join("X" if t in vocab else t for t in c.split()) for c in batch.captions}
    assert len(forms) >= 40
    for cap in batch.captions:
        assert not re.search(r"\ba (?!one\b)[aeiou]", cap), cap
        assert not re.search(r"\ban [^aeiou]", cap), cap
        assert "  " not in cap and cap == cap.strip()
    # Style, colour and position words only sometimes.
    for style, word in (("cartoon", "cartoon"), ("noisy", "blurry")):
        caps = [c for c, s in zip(batch.captions, batch.scenes, strict=True) if s.style == style]
        frac = np.mean([word in c for c in caps])
        assert 0.03 < frac < 0.6, (style, frac)
    single = [
        (c, s) for c, s in zip(batch.captions, batch.scenes, strict=True) if len(s.objects) == 1
    ]
    colour_frac = np.mean([s.objects[0].colour in c for c, s in single])
    position_frac = np.mean(
        [
            any(p in c for p in ("left", "right", "top", "bottom", "centre", "middle"))
            for c, _ in single
        ]
    )
    assert 0.4 < colour_frac < 0.95
    assert 0.1 < position_frac < 0.6


def test_digit_phrasings() -> None:
    rng = np.random.default_rng(0)
    scene = w.Scene((w.WorldObject("digit", "seven", "purple", "small", "top"),), 0, "photo")
    caps = {w.caption(scene, rng) for _ in range(300)}
    joined = " | ".join(caps)
    for phrase in ("the number seven", "the digit seven", "a seven", "in purple", "a purple seven"):
        assert phrase in joined, phrase


# --------------------------------------------------------------------------- labelled


@pytest.mark.parametrize("task", w.LABEL_TASKS)
def test_labelled_balanced(task: str) -> None:
    n = 53
    batch = w.generate_labelled(task, "photo", n, seed=1)
    k = len(w.class_names(task))
    assert batch.class_names == w.class_names(task) and batch.task == task
    assert batch.labels.dtype == np.int64 and batch.labels.shape == (n,)
    counts = np.bincount(batch.labels, minlength=k)
    assert counts.tolist() == [n // k + (c < n % k) for c in range(k)]
    assert not np.array_equal(batch.labels, np.sort(batch.labels))  # shuffled
    assert batch.masks.max() == 1 and (batch.masks.reshape(n, -1).sum(1) >= 12).all()
    again = w.generate_labelled(task, "photo", n, seed=1)
    assert again.images.tobytes() == batch.images.tobytes()
    assert np.array_equal(again.labels, batch.labels)
    other = w.generate_labelled(task, "photo", n, seed=2)
    assert not np.array_equal(other.images, batch.images)


@pytest.mark.parametrize(("style", "min_hits"), [("photo", 78), ("cartoon", 78), ("noisy", 70)])
def test_labelled_colour_labels_match_pixels(style: str, min_hits: int) -> None:
    batch = w.generate_labelled("colour", style, 80, seed=3)
    palette = np.array(list(w.COLOURS.values()), dtype=float)
    hits = 0
    for image, mask, label in zip(batch.images, batch.masks, batch.labels, strict=True):
        core = _erode(_erode(mask > 0))
        inside = image[core if core.any() else mask > 0].astype(float)
        rgb = np.median(inside, axis=0)
        hits += int(np.argmin(np.linalg.norm(palette - rgb, axis=1)) == label)
    assert hits >= min_hits


def test_labelled_shape_labels_match_silhouettes() -> None:
    # A square fills its bounding box, a diamond/star/triangle about half of it.
    batch = w.generate_labelled("shape", "photo", 160, seed=4)
    fill = {}
    for mask, label in zip(batch.masks, batch.labels, strict=True):
        ys, xs = np.nonzero(mask)
        box = (ys.max() - ys.min() + 1) * (xs.max() - xs.min() + 1)
        fill.setdefault(w.SHAPES[label], []).append(len(ys) / box)
    assert min(fill["square"]) > 0.9
    assert max(fill["diamond"]) < 0.7 and max(fill["star"]) < 0.65
    assert max(fill["triangle"]) < 0.7


def test_labelled_same_seed_same_scenes_across_styles() -> None:
    photo = w.generate_labelled("digit", "photo", 30, seed=9)
    sketch = w.generate_labelled("digit", "sketch", 30, seed=9)
    assert np.array_equal(photo.labels, sketch.labels)
    assert np.array_equal(photo.masks, sketch.masks)
    assert not np.array_equal(photo.images, sketch.images)


# --------------------------------------------------------------------------- text


def test_render_text_and_mask() -> None:
    image = np.full((32, 32, 3), 40, dtype=np.uint8)
    box = (2, 18, 30, 30)
    out, mask = w.render_text(image, "cat", box, "yellow")
    assert out.shape == image.shape and out.dtype == np.uint8
    assert np.array_equal(image, np.full((32, 32, 3), 40, dtype=np.uint8))  # not modified
    assert mask.sum() >= 20
    ys, xs = np.nonzero(mask)
    assert ys.min() >= 18 and ys.max() < 30 and xs.min() >= 2 and xs.max() < 30
    assert (out[:17] == 40).all() and (out[31:] == 40).all()  # nothing outside the box
    assert (out[mask].astype(int) - 40).max() > 150
    alpha = w.text_mask("cat", box, (32, 32))
    assert np.array_equal(alpha >= 0.5, mask)
    again = w.render_text(image, "cat", box, "yellow")
    assert again[0].tobytes() == out.tobytes()
    outlined, omask = w.render_text(image, "cat", box, "white", stroke_colour="black")
    assert omask.sum() > 0 and outlined.min() < 40
    with pytest.raises(ValueError, match="empty"):
        w.render_text(image, "", box, "red")
    with pytest.raises(ValueError, match="HxWx3 uint8"):
        w.render_text(image.astype(float), "a", box, "red")


# --------------------------------------------------------------------------- errors


def test_errors_name_the_fix() -> None:
    with pytest.raises(ValueError, match=r"shape.*colour.*digit"):
        w.generate_labelled("texture", "photo", 4, seed=0)
    with pytest.raises(ValueError, match=r"photo.*sketch.*cartoon.*noisy"):
        w.generate_labelled("shape", "oil painting", 4, seed=0)
    with pytest.raises(ValueError, match="photo"):
        w.generate_captioned(4, seed=0, styles=("watercolour",))
    with pytest.raises(ValueError, match="sequence"):
        w.generate_captioned(4, seed=0, styles="photo")
    with pytest.raises(ValueError, match="image_size"):
        w.generate_captioned(4, seed=0, image_size=8)
    with pytest.raises(ValueError, match="seed"):
        w.generate_captioned(4, seed=-1)
    with pytest.raises(ValueError, match="p_two"):
        w.sample_scene(np.random.default_rng(0), p_two=1.5)
    with pytest.raises(ValueError, match="task"):
        w.class_names("size")
    bad = w.Scene((w.WorldObject("shape", "blob", "red", "small", "left"),), 0, "photo")
    with pytest.raises(ValueError, match="circle"):
        w.render(bad, np.random.default_rng(0))
    overlap = w.Scene(
        (
            w.WorldObject("shape", "star", "red", "small", "left"),
            w.WorldObject("shape", "star", "red", "small", "top"),
        ),
        0,
        "photo",
    )
    with pytest.raises(ValueError, match="left\\+right or top\\+bottom"):
        w.render(overlap, np.random.default_rng(0))


# --------------------------------------------------------------------------- speed


def test_generation_speed() -> None:
    w.generate_captioned(64, seed=99)  # warm caches (fonts, backgrounds)
    n = 2000
    cpu, wall = time.process_time(), time.perf_counter()
    w.generate_captioned(n, seed=0)
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    # CPU time of this process: robust to other jobs sharing the two cores.
    rate = n / cpu
    print(f"generate_captioned: {rate:.0f} images/s (cpu), {n / wall:.0f} images/s (wall)")
    assert rate >= 1000
