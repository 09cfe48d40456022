"""A procedural world of captioned images: coloured shapes and printed digits.

This module replaces the internet for a small CLIP pretrained on CPU. Every image is
rendered with numpy + PIL from a :class:`Scene` (objects, background recipe, style) and
comes with a per-pixel object mask and a randomly phrased caption.

Styles: ``photo`` (shaded fill with a soft shadow), ``cartoon`` (flat fill, thick black
outline), ``noisy`` (photo + blur + strong gaussian noise) and ``sketch`` (coloured
outline on white-ish paper). ``sketch`` is held out of pretraining (a true OOD domain).

Everything is deterministic: image ``i`` of a batch uses ``np.random.default_rng([seed,
stream, i])`` so it does not depend on the batch size. Glyphs are drawn with the DejaVu
font bundled with matplotlib (basic layout) so pixels match on every machine that ships
the same FreeType version.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import numpy as np
from PIL import Image, ImageDraw, ImageFont

__all__ = [
    "BACKGROUNDS",
    "COLOURS",
    "DIGIT_NAMES",
    "HELD_OUT_STYLE",
    "IMAGE_SIZE",
    "LABEL_TASKS",
    "POSITIONS",
    "PRETRAIN_STYLES",
    "SHAPES",
    "SIZES",
    "STYLES",
    "CaptionedBatch",
    "LabelledBatch",
    "Scene",
    "WorldObject",
    "caption",
    "class_names",
    "generate_captioned",
    "generate_labelled",
    "render",
    "render_text",
    "sample_scene",
    "text_mask",
]

IMAGE_SIZE = 32

SHAPES: tuple[str, ...] = (
    "circle",
    "square",
    "triangle",
    "star",
    "hexagon",
    "diamond",
    "cross",
    "heart",
)

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (222, 30, 30),
    "green": (30, 165, 50),
    "blue": (35, 75, 235),
    "yellow": (245, 215, 20),
    "purple": (135, 45, 190),
    "orange": (250, 125, 15),
    "pink": (250, 120, 195),
    "cyan": (20, 200, 225),
}

DIGIT_NAMES: tuple[str, ...] = (
    "zero",
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
)

SIZES: tuple[str, ...] = ("small", "large")
POSITIONS: tuple[str, ...] = ("left", "right", "top", "bottom", "centre")
STYLES: tuple[str, ...] = ("photo", "sketch", "cartoon", "noisy")
PRETRAIN_STYLES: tuple[str, ...] = ("photo", "cartoon", "noisy")
HELD_OUT_STYLE = "sketch"
LABEL_TASKS: tuple[str, ...] = ("shape", "colour", "digit")
KINDS: tuple[str, ...] = ("shape", "digit")


@dataclass(frozen=True)
class _Background:
    """A background recipe: ``kind`` in plain / vgrad / hgrad / noise / stripes."""

    name: str
    kind: str
    tone: str  # "light" | "dark"
    colour_a: tuple[int, int, int]
    colour_b: tuple[int, int, int]


_BG_RECIPES: tuple[_Background, ...] = (
    _Background("plain white", "plain", "light", (236, 236, 232), (236, 236, 232)),
    _Background("plain cream", "plain", "light", (238, 228, 205), (238, 228, 205)),
    _Background("plain pale blue", "plain", "light", (212, 226, 240), (212, 226, 240)),
    _Background("plain pale green", "plain", "light", (218, 236, 214), (218, 236, 214)),
    _Background("plain charcoal", "plain", "dark", (38, 38, 42), (38, 38, 42)),
    _Background("plain navy", "plain", "dark", (24, 32, 58), (24, 32, 58)),
    _Background("plain brown", "plain", "dark", (62, 44, 32), (62, 44, 32)),
    _Background("sky gradient", "vgrad", "light", (190, 212, 245), (246, 246, 242)),
    _Background("night gradient", "vgrad", "dark", (16, 16, 28), (78, 78, 100)),
    _Background("sand gradient", "hgrad", "light", (246, 232, 196), (196, 196, 196)),
    _Background("dusk gradient", "hgrad", "dark", (64, 30, 62), (28, 58, 60)),
    _Background("grey texture", "noise", "light", (205, 205, 200), (14, 14, 14)),
    _Background("slate texture", "noise", "dark", (56, 62, 70), (12, 12, 12)),
    _Background("linen stripes", "stripes", "light", (226, 220, 204), (9, 9, 9)),
    _Background("dark stripes", "stripes", "dark", (44, 40, 52), (8, 8, 8)),
)

BACKGROUNDS: tuple[str, ...] = tuple(b.name for b in _BG_RECIPES)
_COLOUR_NAMES: tuple[str, ...] = tuple(COLOURS)

# Minimum contrast (weighted RGB distance) between an object colour and its background.
_MIN_CONTRAST = 110.0

# Object extent as a fraction of the image side, per (number of objects, size).
_EXTENT = {(1, "small"): 0.44, (1, "large"): 0.58, (2, "small"): 0.38, (2, "large"): 0.46}
_SINGLE_CENTRES = {
    "centre": (0.5, 0.5),
    "left": (0.29, 0.5),
    "right": (0.71, 0.5),
    "top": (0.5, 0.29),
    "bottom": (0.5, 0.71),
}
_PAIR_CENTRES = {
    "left": (0.25, 0.5),
    "right": (0.75, 0.5),
    "top": (0.5, 0.25),
    "bottom": (0.5, 0.75),
}
_PAIRS = (("left", "right"), ("top", "bottom"))
_P_TWO = 0.25  # default probability of a two-object scene
_P_DIGIT = 0.25  # default probability that an object is a digit

# Seed streams so captioned and labelled generators never share random numbers.
_STREAM_CAPTIONED = 0xC1
_STREAM_LABELLED = 0x1B


@dataclass(frozen=True)
class WorldObject:
    """One object in a scene."""

    kind: str  # "shape" or "digit"
    name: str  # shape name, or digit name e.g. "seven"
    colour: str
    size: str  # "small" | "large"
    position: str  # "left" | "right" | "top" | "bottom" | "centre"


@dataclass(frozen=True)
class Scene:
    """What an image shows: objects, a background recipe index and a rendering style."""

    objects: tuple[WorldObject, ...]
    background: int  # index into BACKGROUNDS
    style: str


@dataclass
class CaptionedBatch:
    """Images with masks, captions and the scenes they were rendered from."""

    images: np.ndarray  # [n, H, W, 3] uint8
    masks: np.ndarray  # [n, H, W] uint8, 0 = background, i = object i (1-based)
    captions: list[str]
    scenes: list[Scene]


@dataclass
class LabelledBatch:
    """One object per image with an integer class label for ``task``."""

    images: np.ndarray  # [n, H, W, 3] uint8
    labels: np.ndarray  # [n] int64
    masks: np.ndarray  # [n, H, W] uint8, 0 = background, 1 = object
    class_names: list[str]
    task: str
    style: str


# --------------------------------------------------------------------------- validation


def _check_style(style: str) -> str:
    if style not in STYLES:
        raise ValueError(f"unknown style {style!r}; use one of {STYLES}")
    return style


def _check_styles(styles: Sequence[str]) -> tuple[str, ...]:
    if isinstance(styles, str):
        raise ValueError(f"styles must be a sequence of style names, e.g. ({styles!r},)")
    styles = tuple(styles)
    if not styles:
        raise ValueError(f"styles is empty; pass at least one of {STYLES}")
    for s in styles:
        _check_style(s)
    return styles


def _check_task(task: str) -> str:
    if task not in LABEL_TASKS:
        raise ValueError(f"unknown task {task!r}; use one of {LABEL_TASKS}")
    return task


def _check_size(image_size: int) -> int:
    if not isinstance(image_size, (int, np.integer)) or image_size < 16:
        raise ValueError(f"image_size must be an int >= 16 (e.g. 32 or 64), got {image_size!r}")
    return int(image_size)


def _check_seed(seed: int) -> int:
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    return int(seed)


def _check_n(n: int) -> int:
    if not isinstance(n, (int, np.integer)) or n < 0:
        raise ValueError(f"n must be a non-negative int, got {n!r}")
    return int(n)


def _check_object(obj: WorldObject) -> None:
    if obj.kind == "shape":
        if obj.name not in SHAPES:
            raise ValueError(f"unknown shape {obj.name!r}; use one of {SHAPES}")
    elif obj.kind == "digit":
        if obj.name not in DIGIT_NAMES:
            raise ValueError(f"unknown digit {obj.name!r}; use one of {DIGIT_NAMES}")
    else:
        raise ValueError(f"unknown object kind {obj.kind!r}; use one of {KINDS}")
    if obj.colour not in COLOURS:
        raise ValueError(f"unknown colour {obj.colour!r}; use one of {tuple(COLOURS)}")
    if obj.size not in SIZES:
        raise ValueError(f"unknown size {obj.size!r}; use one of {SIZES}")
    if obj.position not in POSITIONS:
        raise ValueError(f"unknown position {obj.position!r}; use one of {POSITIONS}")


def _check_scene(scene: Scene) -> None:
    _check_style(scene.style)
    if not 0 <= scene.background < len(_BG_RECIPES):
        raise ValueError(
            f"background index {scene.background} out of range; use 0..{len(_BG_RECIPES) - 1}"
        )
    if len(scene.objects) not in (1, 2):
        raise ValueError(f"a scene holds 1 or 2 objects, got {len(scene.objects)}")
    for obj in scene.objects:
        _check_object(obj)
    if len(scene.objects) == 2:
        pair = (scene.objects[0].position, scene.objects[1].position)
        if pair not in _PAIRS and pair[::-1] not in _PAIRS:
            raise ValueError(
                f"two-object positions must be left+right or top+bottom, got {pair[0]}+{pair[1]}"
            )


# --------------------------------------------------------------------------- fonts & text


@functools.cache
def _font_path(bold: bool = True) -> str:
    import matplotlib

    name = "DejaVuSans-Bold.ttf" if bold else "DejaVuSans.ttf"
    path = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / name
    if not path.exists():
        raise ValueError(f"DejaVu font not found at {path}; reinstall matplotlib")
    return str(path)


@functools.cache
def _font(size: int, bold: bool = True) -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(_font_path(bold), size, layout_engine=ImageFont.Layout.BASIC)


@functools.cache
def _ink_bbox(text: str, size: int, bold: bool = True) -> tuple[int, int, int, int]:
    """Pixel bbox (x_lo, y_lo, x_hi, y_hi) of the text's ink when drawn at (0, 0)."""
    font = _font(size, bold)
    _, _, right, bottom = font.getbbox(text)
    pad = 4 + size // 2  # room for glyph parts left of / above the origin
    canvas = Image.new("L", (right + 2 * pad, bottom + 2 * pad), 0)
    ImageDraw.Draw(canvas).text((pad, pad), text, font=font, fill=255)
    box = canvas.getbbox()
    if box is None:
        return (0, 0, 1, 1)
    return (box[0] - pad, box[1] - pad, box[2] - pad, box[3] - pad)


@functools.cache
def _fit_font_size(text: str, width: int, height: int, bold: bool = True) -> int:
    """Largest font size whose ink fits in width x height (at least 4)."""
    lo, hi = 4, max(4, 2 * height + 4)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        x_lo, y_lo, x_hi, y_hi = _ink_bbox(text, mid, bold)
        if x_hi - x_lo <= width and y_hi - y_lo <= height:
            lo = mid
        else:
            hi = mid - 1
    return lo


def _text_alpha(
    text: str,
    box: tuple[int, int, int, int],
    shape: tuple[int, int],
    bold: bool,
    reserve: int,
    stroke: int,
) -> np.ndarray:
    """Glyph alpha: font fitted to ``box`` minus ``reserve`` px per side, drawn thickened
    by ``stroke`` px (0 <= stroke <= reserve keeps it inside the box)."""
    if not text:
        raise ValueError("text is empty; pass at least one character")
    x0, y0, x1, y1 = (int(v) for v in box)
    if x1 - x0 - 2 * reserve < 2 or y1 - y0 - 2 * reserve < 2:
        raise ValueError(
            f"box {box} is too small; use (x0, y0, x1, y1) at least {2 * reserve + 2} px wide/high"
        )
    h, w = int(shape[0]), int(shape[1])
    size = _fit_font_size(text, x1 - x0 - 2 * reserve, y1 - y0 - 2 * reserve, bold)
    x_lo, y_lo, x_hi, y_hi = _ink_bbox(text, size, bold)
    origin = (round((x0 + x1 - x_lo - x_hi) / 2), round((y0 + y1 - y_lo - y_hi) / 2))
    canvas = Image.new("L", (w, h), 0)
    ImageDraw.Draw(canvas).text(
        origin, text, font=_font(size, bold), fill=255, stroke_width=stroke, stroke_fill=255
    )
    return np.asarray(canvas, dtype=np.float32) * np.float32(1 / 255)


def text_mask(
    text: str,
    box: tuple[int, int, int, int],
    shape: tuple[int, int],
    *,
    bold: bool = True,
    stroke: int = 0,
) -> np.ndarray:
    """Anti-aliased alpha (float32 in [0, 1], ``shape`` = (H, W)) of ``text`` (DejaVu Sans)
    fitted into ``box`` = (x0, y0, x1, y1) and centred; ``stroke`` adds an outline of that
    many px (kept inside the box). ``alpha >= 0.5`` is the text's pixel mask."""
    return _text_alpha(text, box, shape, bold, stroke, stroke)


def render_text(
    image: np.ndarray,
    text: str,
    box: tuple[int, int, int, int],
    colour: str | tuple[int, int, int],
    *,
    stroke_colour: str | tuple[int, int, int] | None = None,
    stroke: int = 1,
    bold: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """Draw ``text`` (DejaVu Sans) fitted into ``box`` = (x0, y0, x1, y1) on a copy of
    ``image`` (HxWx3 uint8). Returns (new image, bool mask of the text's pixels).

    With ``stroke_colour`` the glyphs get an outline of ``stroke`` px (meme style)."""
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"image must be HxWx3 uint8, got shape {image.shape} {image.dtype}")
    shape = (image.shape[0], image.shape[1])
    out = image.astype(np.float32)
    reserve = stroke if stroke_colour is not None else 0
    if stroke_colour is not None:
        outer = _text_alpha(text, box, shape, bold, reserve, stroke)[..., None]
        out = out * (1 - outer) + outer * np.asarray(_rgb(stroke_colour), dtype=np.float32)
    alpha = _text_alpha(text, box, shape, bold, reserve, 0)
    out = out * (1 - alpha[..., None]) + alpha[..., None] * np.asarray(
        _rgb(colour), dtype=np.float32
    )
    covered = outer[..., 0] if stroke_colour is not None else alpha
    return _to_uint8(out), covered >= 0.5


def _rgb(colour: str | tuple[int, int, int]) -> tuple[int, int, int]:
    if isinstance(colour, str):
        if colour in COLOURS:
            return COLOURS[colour]
        named = {"white": (255, 255, 255), "black": (0, 0, 0)}
        if colour in named:
            return named[colour]
        raise ValueError(
            f"unknown colour {colour!r}; use one of {(*COLOURS, 'white', 'black')} or an RGB tuple"
        )
    if len(colour) != 3:
        raise ValueError(f"colour must be a name or an (r, g, b) tuple, got {colour!r}")
    return (int(colour[0]), int(colour[1]), int(colour[2]))


def _to_uint8(x: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(x), 0, 255).astype(np.uint8)


# --------------------------------------------------------------------------- geometry


def _normalise(points: np.ndarray) -> np.ndarray:
    """Centre a polygon's bbox on 0 and scale its larger half-extent to 1."""
    lo, hi = points.min(axis=0), points.max(axis=0)
    centred = points - (lo + hi) / 2
    return centred / (np.abs(centred).max())


def _regular(n: int, start_deg: float, radii: Sequence[float] = (1.0,)) -> np.ndarray:
    k = np.arange(n * len(radii))
    angles = np.deg2rad(start_deg) + k * 2 * np.pi / (n * len(radii))
    r = np.asarray(radii)[k % len(radii)]
    return np.stack([r * np.cos(angles), r * np.sin(angles)], axis=1)


@functools.cache
def _unit_polygon(name: str) -> np.ndarray:
    """Vertices (y down) of a shape in [-1, 1]^2."""
    if name == "circle":
        pts = _regular(40, 0.0)
    elif name == "square":  # a bit smaller than its box so it looks as big as the others
        return np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]], dtype=float) * 0.86
    elif name == "triangle":
        pts = _regular(3, -90.0)
    elif name == "star":
        pts = _regular(5, -90.0, (1.0, 0.46))
    elif name == "hexagon":
        pts = _regular(6, 0.0)
    elif name == "diamond":
        pts = np.array([[0, -1], [0.78, 0], [0, 1], [-0.78, 0]], dtype=float)
    elif name == "cross":
        a = 0.36
        pts = np.array(
            [
                [-a, -1], [a, -1], [a, -a], [1, -a], [1, a], [a, a],
                [a, 1], [-a, 1], [-a, a], [-1, a], [-1, -a], [-a, -a],
            ],
            dtype=float,
        )  # fmt: skip
    elif name == "heart":
        t = np.linspace(0, 2 * np.pi, 48, endpoint=False)
        x = 16 * np.sin(t) ** 3
        y = -(13 * np.cos(t) - 5 * np.cos(2 * t) - 2 * np.cos(3 * t) - np.cos(4 * t))
        pts = np.stack([x, y], axis=1)
    else:
        raise ValueError(f"unknown shape {name!r}; use one of {SHAPES}")
    return _normalise(pts)


@functools.cache
def _glyph(text: str, size: int) -> Image.Image:
    """The text's anti-aliased ink (mode L) cropped to its ink bbox (cached)."""
    x_lo, y_lo, x_hi, y_hi = _ink_bbox(text, size)
    canvas = Image.new("L", (x_hi - x_lo, y_hi - y_lo), 0)
    ImageDraw.Draw(canvas).text((-x_lo, -y_lo), text, font=_font(size), fill=255)
    return canvas


@functools.cache
def _digit_font_size(ink_height: int) -> int:
    """Font size at which digit glyphs are ``ink_height`` px tall."""
    ref = 200
    _, y_lo, _, y_hi = _ink_bbox("8", ref)
    return max(4, round(ink_height * ref / (y_hi - y_lo)))


# --------------------------------------------------------------------------- random draws

_DRAW_BLOCK = 16
T = TypeVar("T")


class _Draws:
    """Uniform numbers fetched from a Generator in blocks and consumed in order.

    One ``rng.random(16)`` call is far cheaper than many scalar calls; every value (hence
    every result) is still fully determined by the generator's state."""

    __slots__ = ("_buf", "_i", "_rng")

    def __init__(self, rng: np.random.Generator) -> None:
        if not isinstance(rng, np.random.Generator):
            raise ValueError(
                f"rng must be a numpy Generator, e.g. np.random.default_rng(0), got {type(rng)}"
            )
        self._rng = rng
        self._buf: list[float] = rng.random(_DRAW_BLOCK).tolist()
        self._i = 0

    def u(self) -> float:
        if self._i == len(self._buf):
            self._buf = self._rng.random(_DRAW_BLOCK).tolist()
            self._i = 0
        x = self._buf[self._i]
        self._i += 1
        return x

    def uniform(self, lo: float, hi: float) -> float:
        return lo + (hi - lo) * self.u()

    def pick(self, seq: Sequence[T]) -> T:
        return seq[min(int(self.u() * len(seq)), len(seq) - 1)]


# --------------------------------------------------------------------------- backgrounds


@functools.cache
def _coords(s: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pixel-centre x, y and x^2 + y^2 grids (float32, s x s)."""
    y, x = np.mgrid[0:s, 0:s].astype(np.float32) + np.float32(0.5)
    return x, y, x * x + y * y


@functools.cache
def _bg_base(index: int, s: int) -> np.ndarray:
    """Float32 HxWx3 base image of a background recipe (cached, read-only)."""
    rec = _BG_RECIPES[index]
    a = np.asarray(rec.colour_a, dtype=np.float32)
    b = np.asarray(rec.colour_b, dtype=np.float32)
    x, y, _ = _coords(s)
    if rec.kind == "plain":
        img = np.broadcast_to(a, (s, s, 3)).copy()
    elif rec.kind in ("vgrad", "hgrad"):
        t = (y if rec.kind == "vgrad" else x) / s
        img = a + (b - a) * t[..., None]
    elif rec.kind == "noise":
        # Smooth blotches (random low-frequency waves with integer frequencies, so the
        # texture is periodic and rolls without seams) plus a little grain; fixed seed.
        rng = np.random.default_rng([index, 77])
        t = np.zeros((s, s))
        for _ in range(6):
            fx, fy = rng.integers(-3, 4, size=2)
            t += np.sin(2 * np.pi * (fx * x + fy * y) / s + rng.uniform(0, 2 * np.pi))
        t = t / max(float(np.abs(t).max()), 1e-6) + rng.uniform(-0.4, 0.4, size=(s, s))
        img = a + b * t[..., None].astype(np.float32)
    elif rec.kind == "stripes":
        t = np.sin((x + y) * (2 * np.pi / (s / 6)))
        img = a + b * t[..., None]
    else:  # pragma: no cover - recipes are static
        raise ValueError(f"unknown background kind {rec.kind!r}")
    img = img.astype(np.float32)
    img.setflags(write=False)
    return img


@functools.cache
def _bg_planar(index: int, s: int, tiled: bool = False) -> np.ndarray:
    """Channel-first [3, s, s] base image; ``tiled``: 2x2 tiling (any roll is a slice)."""
    planar = np.ascontiguousarray(_bg_base(index, s).transpose(2, 0, 1))
    if tiled:
        planar = np.tile(planar, (1, 2, 2))
    planar.setflags(write=False)
    return planar


@functools.cache
def _bg_mean(index: int) -> np.ndarray:
    return _bg_base(index, 32).reshape(-1, 3).mean(axis=0)


def _contrast(c1: np.ndarray | Sequence[float], c2: np.ndarray | Sequence[float]) -> float:
    """Perceptually weighted RGB distance ("redmean" approximation), roughly 0..255."""
    c1 = np.asarray(c1, dtype=float)
    c2 = np.asarray(c2, dtype=float)
    rmean = (c1[0] + c2[0]) / 2
    d = c1 - c2
    w = np.array([2 + rmean / 256, 4.0, 2 + (255 - rmean) / 256])
    return float(np.sqrt((w * d * d).sum()) / 3.0)


@functools.cache
def _ok_backgrounds(colours: tuple[str, ...]) -> tuple[int, ...]:
    """Backgrounds whose contrast with every colour is >= _MIN_CONTRAST. Some two-colour
    combinations (e.g. green + pink) have none: then the threshold is lowered in steps of
    10 until at least two backgrounds qualify (the single best one as a last resort)."""

    def worst(i: int) -> float:
        return min(_contrast(COLOURS[c], _bg_mean(i)) for c in colours)

    for threshold in range(int(_MIN_CONTRAST), 0, -10):
        ok = tuple(i for i in range(len(_BG_RECIPES)) if worst(i) >= threshold)
        if len(ok) >= (1 if threshold == int(_MIN_CONTRAST) else 2):
            return ok
    return (max(range(len(_BG_RECIPES)), key=worst),)


# --------------------------------------------------------------------------- rendering

_STYLE_ID = {s: i for i, s in enumerate(STYLES)}
_NOISE_TABLE_BITS = 16
_BLUR_STEPS = 9  # blur sigma = (0.7 + 0.05 k) * size / 32, k < _BLUR_STEPS


@functools.cache
def _gauss_table() -> np.ndarray:
    """Fixed bank of 2^16 standard-normal values (see _gauss_noise)."""
    bank = np.random.default_rng(20240601).standard_normal(1 << _NOISE_TABLE_BITS)
    bank = ((bank - bank.mean()) / bank.std()).astype(np.float32)
    bank.setflags(write=False)
    return bank


@functools.cache
def _noise_offsets(size: int) -> np.ndarray:
    """Fixed random bank offsets (2 * size of them, fixed seed)."""
    rng = np.random.default_rng(20240602)
    offsets = rng.integers(0, 1 << _NOISE_TABLE_BITS, size=2 * size, dtype=np.int64)
    offsets.setflags(write=False)
    return offsets


def _gauss_noise(keys: np.ndarray, starts: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Standard-normal noise [len(keys), *shape]. Element p of image i is
    bank[(offset[start_i + p] + key_i) mod 2^16] with key_i < 2^16 and start_i < prod(shape)
    drawn per image: ~2e8 distinct noise fields at 32 px, for a few cheap vectorised
    gathers instead of a normal draw per pixel. Elementwise, so batch-independent."""
    size = math.prod(shape)
    offsets = _noise_offsets(size)[starts[:, None] + np.arange(size)]
    index = (offsets + keys[:, None]) & ((1 << _NOISE_TABLE_BITS) - 1)
    return _gauss_table()[index].reshape(len(keys), *shape)


def _blur_radius(s: int) -> int:
    return math.ceil(1.8 * (0.7 + 0.05 * (_BLUR_STEPS - 1)) * s / 32)


@functools.cache
def _blur_kernel(step: int, s: int) -> np.ndarray:
    sigma = (0.7 + 0.05 * step) * s / 32
    r = _blur_radius(s)
    k = np.exp(-0.5 * (np.arange(-r, r + 1) / sigma) ** 2)
    return (k / k.sum()).astype(np.float32)


# Line widths: radii (px) of square min/max filters on the alpha, per image side.
_CARTOON_OUTLINE = 1 / 32  # 1 px at 32 px, inside a shape's silhouette
_CARTOON_DIGIT_OUTLINE = 1 / 32  # around a digit's (thin) strokes instead
_SKETCH_LINE = 1 / 32


def _radius(s: int, frac: float) -> int:
    return max(1, round(s * frac))


def _morph(a: np.ndarray, r: int, op: np.ufunc) -> np.ndarray:
    """Separable square erosion (op=np.minimum) or dilation (np.maximum) over the last
    two axes, radius ``r`` (edges: only the pixels inside the image count)."""
    h = a.copy()
    for k in range(1, r + 1):
        op(h[..., k:], a[..., :-k], out=h[..., k:])
        op(h[..., :-k], a[..., k:], out=h[..., :-k])
    v = h.copy()
    for k in range(1, r + 1):
        op(v[..., k:, :], h[..., :-k, :], out=v[..., k:, :])
        op(v[..., :-k, :], h[..., k:, :], out=v[..., :-k, :])
    return v


def _reduce2(a: np.ndarray) -> np.ndarray:
    """2x2 box-sum of a uint8 [..., 2s, 2s] array -> uint16 [..., s, s] (0..1020)."""
    out = a[..., 0::2, 0::2].astype(np.uint16)
    out += a[..., 0::2, 1::2]
    out += a[..., 1::2, 0::2]
    out += a[..., 1::2, 1::2]
    return out


def _place(obj: WorldObject, n_objects: int, d: _Draws, s: int) -> tuple[float, float, float]:
    """Centre (x, y) and half-extent (px) of an object, with a little jitter."""
    half = 0.5 * _EXTENT[(n_objects, obj.size)] * s * d.uniform(0.93, 1.07)
    jx, jy = d.uniform(-1.0, 1.0), d.uniform(-1.0, 1.0)
    if n_objects == 1:
        fx, fy = _SINGLE_CENTRES[obj.position]
        cx, cy = (fx + 0.04 * jx) * s, (fy + 0.04 * jy) * s
    else:
        fx, fy = _PAIR_CENTRES[obj.position]
        # Jitter only across the pair axis so the two objects never touch.
        if obj.position in ("left", "right"):
            cx, cy = fx * s, (fy + 0.06 * jy) * s
        else:
            cx, cy = (fx + 0.06 * jx) * s, fy * s
    margin = half + 0.02 * s
    cx = min(max(cx, margin), s - margin)
    cy = min(max(cy, margin), s - margin)
    return cx, cy, half


def _draw_silhouette(
    draw: ImageDraw.ImageDraw, top: int, obj: WorldObject, cx: float, cy: float, half: float
) -> None:
    """Draw the filled silhouette (255 on 0) at 2x resolution, ``top`` px down the canvas."""
    if obj.kind == "shape":
        k, ox, oy = 2 * half, 2 * cx, 2 * cy + top
        draw.polygon((_unit_polygon(obj.name) * k + (ox, oy)).ravel().tolist(), fill=255)
    else:
        digit = str(DIGIT_NAMES.index(obj.name))
        size = _digit_font_size(round(4 * half))
        x_lo, y_lo, x_hi, y_hi = _ink_bbox(digit, size)
        x0 = round(2 * cx - (x_lo + x_hi) / 2) + x_lo
        y0 = round(2 * cy - (y_lo + y_hi) / 2) + y_lo + top
        draw.bitmap((x0, y0), _glyph(digit, size), fill=255)


class _Chunk:
    """Render buffers for a batch: per-image preparation (all random draws and PIL drawing),
    then vectorised compositing. Every operation is elementwise per image, so an image's
    bytes never depend on which other images share its batch."""

    def __init__(self, n: int, s: int) -> None:
        self.n, self.s = n, s
        # Silhouettes at 2x: object slot k of image i in the cell starting (2i + k) * 2s px
        # down one tall canvas (one PIL image and one numpy conversion per batch).
        self.canvas = Image.new("L", (2 * s, 4 * s * n), 0)
        self.draw = ImageDraw.Draw(self.canvas)
        self.sil = np.empty((0,), dtype=np.uint8)
        self.bg = np.zeros((n, 3, s, s), dtype=np.float32)  # channel-first for speed
        # Per-image parameters, collected as Python values (cheap) and turned into arrays
        # by finish(): per object slot (cx, cy, 1/half, light x, light y), RGB, is-digit.
        empty_slot = (0.0, 0.0, 1.0, 0.0, 0.0)
        self._geom = [[empty_slot, empty_slot] for _ in range(n)]
        self._colour = [[(0.0, 0.0, 0.0), (0.0, 0.0, 0.0)] for _ in range(n)]
        self._is_digit = [[False, False] for _ in range(n)]
        # n_objects, style id, tone (brightness offset or paper level), blur step,
        # noise sigma, noise key, noise start
        self._scalars = [(1, 0, 0.0, 0, 0.0, 0, 0)] * n

    def prepare(self, i: int, scene: Scene, rng: np.random.Generator) -> None:
        """Make every random choice for image ``i`` and draw its silhouettes."""
        s = self.s
        d = _Draws(rng)
        style = scene.style
        n_obj = len(scene.objects)
        # Geometry and colours first, so a scene has the same layout in every style.
        for k, obj in enumerate(scene.objects):
            cx, cy, half = _place(obj, n_obj, d, s)
            base = COLOURS[obj.colour]
            rgb = [min(255.0, max(0.0, c + d.uniform(-14.0, 14.0))) for c in base]
            theta = d.uniform(-2.6, -0.5)
            if style == "cartoon":  # flat, a little more saturated
                m = sum(rgb) / 3
                rgb = [min(255.0, max(0.0, (c - m) * 1.15 + m)) for c in rgb]
            elif style == "sketch":  # ink: dark enough to read on white paper
                luma = 0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2]
                rgb = [c * min(1.0, 140.0 / max(luma, 1.0)) for c in rgb]
            self._colour[i][k] = tuple(rgb)
            self._geom[i][k] = (cx, cy, 1.0 / half, math.cos(theta), math.sin(theta))
            self._is_digit[i][k] = obj.kind == "digit"
            _draw_silhouette(self.draw, (2 * i + k) * 2 * s, obj, cx, cy, half)
        # Background: roll (textures) or flip (gradients), then brightness or paper level.
        rec = _BG_RECIPES[scene.background]
        roll_x, roll_y, flip = int(d.u() * s), int(d.u() * s), d.u() < 0.5
        tone = d.uniform(238.0, 252.0) if style == "sketch" else d.uniform(-8.0, 8.0)
        if rec.kind in ("noise", "stripes"):
            tiled = _bg_planar(scene.background, s, tiled=True)
            view = tiled[:, roll_y : roll_y + s, roll_x : roll_x + s]
        elif rec.kind == "vgrad" and flip:
            view = _bg_planar(scene.background, s)[:, ::-1]
        elif rec.kind == "hgrad" and flip:
            view = _bg_planar(scene.background, s)[:, :, ::-1]
        else:
            view = _bg_planar(scene.background, s)
        self.bg[i] = view
        # Noise parameters (used by the noisy style only).
        blur_step = min(int(d.u() * _BLUR_STEPS), _BLUR_STEPS - 1)
        noise_sigma = d.uniform(18.0, 30.0)
        noise_key = int(d.u() * (1 << _NOISE_TABLE_BITS))
        noise_start = int(d.u() * 3 * s * s)
        self._scalars[i] = (
            n_obj,
            _STYLE_ID[style],
            tone,
            blur_step,
            noise_sigma,
            noise_key,
            noise_start,
        )

    def finish(self) -> tuple[np.ndarray, np.ndarray]:
        """Composite all prepared images: (images [n,H,W,3] uint8, masks [n,H,W] uint8)."""
        s = self.s
        self.geom = np.array(self._geom, dtype=np.float64).reshape(self.n, 2, 5)
        self.colour = np.array(self._colour, dtype=np.float32).reshape(self.n, 2, 3)
        self.is_digit = np.array(self._is_digit, dtype=bool).reshape(self.n, 2)
        scalars = list(zip(*self._scalars, strict=True))
        self.n_objects = np.array(scalars[0], dtype=np.int64)
        self.style = np.array(scalars[1], dtype=np.int64)
        self.tone = np.array(scalars[2], dtype=np.float32)
        self.blur_step = np.array(scalars[3], dtype=np.int64)
        self.noise_sigma = np.array(scalars[4], dtype=np.float32)
        self.noise_key = np.array(scalars[5], dtype=np.int64)
        self.noise_start = np.array(scalars[6], dtype=np.int64)
        self.sil = np.asarray(self.canvas).reshape(self.n, 2, 2 * s, 2 * s)
        cover = _reduce2(self.sil)  # [n, 2, s, s], 0..1020
        masks = np.where(cover[:, 1] >= 510, 2, np.where(cover[:, 0] >= 510, 1, 0))
        masks = masks.astype(np.uint8)
        alpha = cover.astype(np.float32) * np.float32(1 / 1020)
        images = np.empty((self.n, s, s, 3), dtype=np.uint8)
        for style, sid in _STYLE_ID.items():
            idx = np.flatnonzero(self.style == sid)
            if idx.size:
                planar = _to_uint8(self._composite(style, idx, alpha[idx]))
                images[idx] = planar.transpose(0, 2, 3, 1)
        return images, masks

    def _composite(self, style: str, idx: np.ndarray, alpha: np.ndarray) -> np.ndarray:
        """Float images [g, 3, s, s] of the images ``idx`` (all in ``style``); ``alpha`` is
        [g, 2, s, s]. Channel-first keeps numpy's inner loops long (s*s, not 3)."""
        tone = self.tone[idx][:, None, None, None]
        if style == "sketch":
            img = np.float32(0.88) * tone + np.float32(0.12) * self.bg[idx]
        else:
            img = self.bg[idx] + tone
        # Object 1 in every image, object 2 only where there is one.
        two = np.flatnonzero(self.n_objects[idx] == 2)
        img = self._paint(style, img, idx, alpha[:, 0], 0)
        if two.size:
            img[two] = self._paint(style, img[two], idx[two], alpha[two, 1], 1)
        if style == "noisy":
            img = self._blur(img, idx)
            noise = _gauss_noise(self.noise_key[idx], self.noise_start[idx], img.shape[1:])
            img += noise * self.noise_sigma[idx][:, None, None, None]
        return img

    def _paint(
        self, style: str, img: np.ndarray, idx: np.ndarray, alpha: np.ndarray, k: int
    ) -> np.ndarray:
        """Composite object slot ``k`` of images ``idx`` onto ``img`` [g, 3, s, s]."""
        s = self.s
        colour = self.colour[idx, k][:, :, None, None]  # [g, 3, 1, 1]
        a = alpha[:, None]
        if style in ("photo", "noisy"):
            # Soft drop shadow, then a fill lit from a random upper direction.
            sh = max(1, s // 32)
            img[:, :, sh:, sh:] *= (1 - np.float32(0.35) * alpha[:, :-sh, :-sh])[:, None]
            # shade = 1 + 0.22 u - 0.12 d2 with u = ((x, y) - c).l / half and
            # d2 = |(x, y) - c|^2 / half^2, expanded into per-image coefficients of x, y, r2.
            g = self.geom[idx, k]
            cx, cy, ih, lx, ly = g.T
            cu, cd = 0.22 * ih, 0.12 * ih * ih
            c0 = 1 - cu * (cx * lx + cy * ly) - cd * (cx * cx + cy * cy)
            cxs, cys = cu * lx + 2 * cd * cx, cu * ly + 2 * cd * cy
            coef = np.stack([c0, cxs, cys, -cd], axis=1).astype(np.float32)[:, :, None, None]
            x, y, r2 = _coords(s)
            shade = coef[:, 0] + x * coef[:, 1] + y * coef[:, 2] + r2 * coef[:, 3]
            fill = colour * shade[:, None]
            fill -= img
            fill *= a
            img += fill
        elif style == "cartoon":
            inner = _morph(alpha, _radius(s, _CARTOON_OUTLINE), np.minimum)
            outer = _morph(alpha, _radius(s, _CARTOON_DIGIT_OUTLINE), np.maximum)
            # Shapes: black outline inside the silhouette; digits (thin strokes): around it.
            digit = self.is_digit[idx, k][:, None, None]
            o = np.where(digit, outer, alpha)[:, None]
            n = np.where(digit, alpha, inner)[:, None]
            img += o * (np.float32(12.0) - img) + n * (colour - np.float32(12.0))
        else:  # sketch: a thin line in ink along the silhouette's border
            inner = _morph(alpha, _radius(s, _SKETCH_LINE), np.minimum)
            line = (alpha - inner)[:, None]
            img += line * (colour - img)
        return img

    def _blur(self, img: np.ndarray, idx: np.ndarray) -> np.ndarray:
        """Per-image separable gaussian blur (edge padding), vectorised over the group."""
        s = self.s
        r = _blur_radius(s)
        kern = np.stack([_blur_kernel(int(b), s) for b in self.blur_step[idx]])
        kern = kern[:, :, None, None, None]  # [g, taps, 1, 1, 1]
        # Vertical pass (axis 2), then horizontal (axis 3), each with edge padding.
        p = np.concatenate([img[:, :, :1].repeat(r, 2), img, img[:, :, -1:].repeat(r, 2)], axis=2)
        tmp = kern[:, 0] * p[:, :, 0:s]
        for j in range(1, 2 * r + 1):
            tmp += kern[:, j] * p[:, :, j : j + s]
        p = np.concatenate([tmp[..., :1].repeat(r, 3), tmp, tmp[..., -1:].repeat(r, 3)], axis=3)
        out = kern[:, 0] * p[..., 0:s]
        for j in range(1, 2 * r + 1):
            out += kern[:, j] * p[..., j : j + s]
        return out


def render(
    scene: Scene, rng: np.random.Generator, image_size: int = IMAGE_SIZE
) -> tuple[np.ndarray, np.ndarray]:
    """Render a scene. Returns (image HxWx3 uint8, mask HxW uint8 with 0 = background and
    i = object i, 1-based). Fine details (jitter, shading, noise) come from ``rng``."""
    _check_scene(scene)
    chunk = _Chunk(1, _check_size(image_size))
    chunk.prepare(0, scene, rng)
    images, masks = chunk.finish()
    return images[0], masks[0]


# --------------------------------------------------------------------------- sampling


def _random_object(
    d: _Draws,
    *,
    kind: str,
    position: str,
    name: str | None = None,
    colour: str | None = None,
) -> WorldObject:
    if name is None:
        name = d.pick(SHAPES if kind == "shape" else DIGIT_NAMES)
    if colour is None:
        colour = d.pick(_COLOUR_NAMES)
    return WorldObject(kind, name, colour, d.pick(SIZES), position)


def _pick_background(d: _Draws, objects: Sequence[WorldObject]) -> int:
    return d.pick(_ok_backgrounds(tuple(sorted({o.colour for o in objects}))))


def _check_probability(name: str, p: float) -> None:
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"{name} must be a probability in [0, 1], got {p}")


def _sample_scene(d: _Draws, styles: tuple[str, ...], p_two: float, p_digit: float) -> Scene:
    style = d.pick(styles)
    if d.u() < p_two:
        positions = d.pick(_PAIRS)
        if d.u() < 0.5:
            positions = positions[::-1]
    else:
        positions = (d.pick(POSITIONS),)
    objects = tuple(
        _random_object(d, kind="digit" if d.u() < p_digit else "shape", position=pos)
        for pos in positions
    )
    return Scene(objects=objects, background=_pick_background(d, objects), style=style)


def sample_scene(
    rng: np.random.Generator,
    styles: Sequence[str] = PRETRAIN_STYLES,
    p_two: float = _P_TWO,
    p_digit: float = _P_DIGIT,
) -> Scene:
    """Sample a random scene: 1 object (any position) or, with prob ``p_two``, 2 objects
    (left+right or top+bottom); each object is a digit with prob ``p_digit``. The
    background is drawn among those contrasting with every object colour."""
    styles = _check_styles(styles)
    _check_probability("p_two", p_two)
    _check_probability("p_digit", p_digit)
    return _sample_scene(_Draws(rng), styles, p_two, p_digit)


# --------------------------------------------------------------------------- captions

_STYLE_PREFIXES = {
    "photo": ("a photo of", "a photograph of", "a close-up photo of", "a real photo of"),
    "cartoon": ("a cartoon of", "a cartoon drawing of", "an illustration of", "a clipart of"),
    "noisy": (
        "a blurry photo of",
        "a noisy photo of",
        "a grainy photo of",
        "a low quality photo of",
    ),
    "sketch": ("a sketch of", "a pencil sketch of", "a line drawing of", "a doodle of"),
}
_STYLE_SUFFIXES = {
    "photo": "in a photo",
    "cartoon": "in cartoon style",
    "noisy": "in a blurry photo",
    "sketch": "in a sketch",
}
_GENERIC_PREFIXES = ("a picture of", "an image of", "a rendering of")
_SIZE_WORDS = {"small": ("small", "little", "tiny"), "large": ("large", "big")}
_POSITION_PHRASES = {
    "left": ("on the left", "at the left"),
    "right": ("on the right", "at the right"),
    "top": ("at the top", "near the top"),
    "bottom": ("at the bottom", "near the bottom"),
    "centre": ("in the centre", "in the middle"),
}


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" and word != "one" else "a"


def _with_article(words: Sequence[str | None]) -> str:
    kept = [w for w in words if w]
    return f"{_article(kept[0])} {' '.join(kept)}"


def _object_phrase(obj: WorldObject, d: _Draws) -> str:
    """Noun phrase naming the object; colour and size are mentioned only sometimes."""
    form, u_size, u_colour = d.u(), d.u(), d.u()
    size = d.pick(_SIZE_WORDS[obj.size]) if u_size < 0.3 else None
    if obj.kind == "shape":
        if form < 0.12:
            return f"{_with_article([obj.name])} that is {obj.colour}"
        return _with_article([size, obj.colour if u_colour < 0.8 else None, obj.name])
    # Digits are named with words: "the number seven", "a seven", "the digit seven", ...
    colour = obj.colour if u_colour < 0.7 else None
    in_colour = f" in {colour}" if colour else ""
    variant = int(form * 5)
    if variant == 0:
        return f"the number {obj.name}{in_colour}"
    if variant == 1:
        return f"the digit {obj.name}{in_colour}"
    if variant == 2:
        return _with_article([size, colour, "number", obj.name])
    if variant == 3:
        return _with_article([size, colour, "digit", obj.name])
    return _with_article([size, colour, obj.name])


def _style_prefix(style: str, d: _Draws) -> str:
    """Style-specific prefix (sometimes), a generic one, or nothing."""
    u = d.u()
    if u < 0.4:
        return d.pick(_STYLE_PREFIXES[style]) + " "
    if u < 0.7:
        return d.pick(_GENERIC_PREFIXES) + " "
    return ""


def caption(scene: Scene, rng: np.random.Generator) -> str:
    """A random caption for the scene (one of 13 templates). It always names every object's
    shape or digit; style, colour, size, position and background only sometimes."""
    _check_scene(scene)
    return _caption(scene, _Draws(rng))


def _caption(scene: Scene, d: _Draws) -> str:
    style = scene.style
    objs = scene.objects
    if len(objs) == 1:
        obj = objs[0]
        phrase = _object_phrase(obj, d)
        template = d.pick(range(7))
        if template == 0:
            return _style_prefix(style, d) + phrase
        if template == 1:
            return phrase
        if template == 2:
            return f"{_style_prefix(style, d)}{phrase} {d.pick(_POSITION_PHRASES[obj.position])}"
        if template == 3:
            return f"there is {phrase} {d.pick(_POSITION_PHRASES[obj.position])}"
        if template == 4:
            tone = "white" if style == "sketch" else _BG_RECIPES[scene.background].tone
            return f"{_style_prefix(style, d)}{phrase} on a {tone} background"
        if template == 5:
            return f"{phrase} {_STYLE_SUFFIXES[style]}"
        return f"{d.pick(_STYLE_PREFIXES[style])} {phrase}"
    # Two objects, ordered left->right or top->bottom for the spatial templates.
    first, second = sorted(objs, key=lambda o: POSITIONS.index(o.position))
    a, b = _object_phrase(first, d), _object_phrase(second, d)
    horizontal = first.position == "left"
    template = d.pick(range(6))
    if template == 0:
        return f"{a} and {b}" if d.u() < 0.5 else f"{b} and {a}"
    if template == 1:
        return f"{_style_prefix(style, d)}{a} and {b}"
    if template == 2:
        if horizontal:
            return f"{a} on the left and {b} on the right"
        return f"{a} at the top and {b} at the bottom"
    if template == 3:
        relation = "next to" if horizontal else "above"
        return f"{_style_prefix(style, d)}{a} {relation} {b}"
    if template == 4:
        return f"{b} to the right of {a}" if horizontal else f"{b} below {a}"
    return f"{d.pick(_STYLE_PREFIXES[style])} {a} and {b}"


# --------------------------------------------------------------------------- batches

_CHUNK = 128


def generate_captioned(
    n: int,
    seed: int,
    styles: Sequence[str] = PRETRAIN_STYLES,
    image_size: int = IMAGE_SIZE,
) -> CaptionedBatch:
    """``n`` random captioned scenes. Image ``i`` uses ``default_rng([seed, stream, i])``
    for its scene, rendering and caption, so it does not depend on ``n``."""
    n, seed = _check_n(n), _check_seed(seed)
    styles = _check_styles(styles)
    s = _check_size(image_size)
    images = np.empty((n, s, s, 3), dtype=np.uint8)
    masks = np.empty((n, s, s), dtype=np.uint8)
    captions: list[str] = []
    scenes: list[Scene] = []
    for start in range(0, n, _CHUNK):
        stop = min(n, start + _CHUNK)
        chunk = _Chunk(stop - start, s)
        for j, i in enumerate(range(start, stop)):
            rng = np.random.default_rng([seed, _STREAM_CAPTIONED, i])
            scene = _sample_scene(_Draws(rng), styles, _P_TWO, _P_DIGIT)
            chunk.prepare(j, scene, rng)
            captions.append(_caption(scene, _Draws(rng)))
            scenes.append(scene)
        images[start:stop], masks[start:stop] = chunk.finish()
    return CaptionedBatch(images=images, masks=masks, captions=captions, scenes=scenes)


def class_names(task: str) -> list[str]:
    """Class names of a labelled task: shape -> SHAPES, colour -> COLOURS, digit -> DIGIT_NAMES."""
    _check_task(task)
    if task == "shape":
        return list(SHAPES)
    if task == "colour":
        return list(COLOURS)
    return list(DIGIT_NAMES)


def _balanced_labels(n: int, k: int, rng: np.random.Generator) -> np.ndarray:
    """n // k of each class, one more for the first n % k classes; then shuffled."""
    labels = np.concatenate(
        [np.repeat(np.arange(k, dtype=np.int64), n // k), np.arange(n % k, dtype=np.int64)]
    )
    return rng.permutation(labels)


def generate_labelled(
    task: str, style: str, n: int, seed: int, image_size: int = IMAGE_SIZE
) -> LabelledBatch:
    """One object per image with balanced labels for ``task`` ("shape", "colour", "digit").

    Scenes depend on (task, seed, n, i) but not on ``style``: the same seed gives the same
    objects at the same places in every style, so styles can be compared image by image."""
    _check_task(task)
    _check_style(style)
    n, seed = _check_n(n), _check_seed(seed)
    s = _check_size(image_size)
    names = class_names(task)
    task_id = LABEL_TASKS.index(task)
    labels = _balanced_labels(
        n, len(names), np.random.default_rng([seed, _STREAM_LABELLED, task_id, n])
    )
    images = np.empty((n, s, s, 3), dtype=np.uint8)
    masks = np.empty((n, s, s), dtype=np.uint8)
    for start in range(0, n, _CHUNK):
        stop = min(n, start + _CHUNK)
        chunk = _Chunk(stop - start, s)
        for j, i in enumerate(range(start, stop)):
            rng = np.random.default_rng([seed, _STREAM_LABELLED, task_id, i])
            d = _Draws(rng)
            label = names[int(labels[i])]
            position = d.pick(POSITIONS)
            if task == "shape":
                obj = _random_object(d, kind="shape", position=position, name=label)
            elif task == "colour":
                obj = _random_object(d, kind="shape", position=position, colour=label)
            else:
                obj = _random_object(d, kind="digit", position=position, name=label)
            scene = Scene(objects=(obj,), background=_pick_background(d, [obj]), style=style)
            chunk.prepare(j, scene, rng)
        images[start:stop], masks[start:stop] = chunk.finish()
    return LabelledBatch(
        images=images, labels=labels, masks=masks, class_names=names, task=task, style=style
    )


@functools.lru_cache(maxsize=4)
def fingerprint(image_size: int = IMAGE_SIZE) -> str:
    """A hash of what the generator draws (a fixed sample of images, masks and captions).

    Caches of generated data and of models pretrained on it are keyed on this, so they are
    invalidated exactly when the world's output changes, not when its source is merely edited.
    """
    import hashlib

    digest = hashlib.sha256()
    for styles in (PRETRAIN_STYLES, (HELD_OUT_STYLE,)):
        batch = generate_captioned(48, seed=2_024, styles=styles, image_size=image_size)
        digest.update(batch.images.tobytes())
        digest.update(batch.masks.tobytes())
        digest.update("\n".join(batch.captions).encode())
    for task in LABEL_TASKS:
        labelled = generate_labelled(
            task, STYLES[0], 2 * len(class_names(task)), seed=7, image_size=image_size
        )
        digest.update(labelled.images.tobytes())
    return digest.hexdigest()[:16]
