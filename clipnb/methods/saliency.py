"""Which saliency map to trust: CAM methods and layers scored against exact object masks.

The source reports read Grad-CAM maps by eye. Here every candidate (a pytorch-grad-cam method
at one block of the image tower) is scored on validation images whose object masks are known:

* **pointing game** — is the map's maximum inside the mask? With several pixels tied at the
  maximum the hit counts fractionally (the expected hit of a random tie-break), so a uniform map
  scores exactly the mask's share of the image;
* **mass in mask** — the share of the map's mass inside the mask; a uniform map scores the
  mask's share too (the baseline every score is read against);
* **model randomisation** (Adebayo et al., 2018) — the Spearman rank correlation between the
  maps of the trained model and of copies whose weights are redrawn, cascading from the top of
  the tower down. A method whose maps barely change is explaining the input, not the model.

:func:`validate` builds the method × layer table, :func:`choose` picks one setting from it
(validation only), and :class:`CamSetting` carries that choice to every chapter's CAM figure;
:func:`reading` tells a chapter whether its maps may be read as evidence. The protocol's own
table, figures and verdicts belong to the embedded CLIP chapter (:mod:`clipnb.studies.embedded_clip`).
"""

from __future__ import annotations

import copy
import pickle
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np
import pandas as pd
import torch
from open_clip.modified_resnet import ModifiedResNet
from open_clip.transformer import VisionTransformer
from pytorch_grad_cam import (
    EigenCAM,
    GradCAM,
    GradCAMPlusPlus,
    HiResCAM,
    LayerCAM,
    ScoreCAM,
)
from pytorch_grad_cam.base_cam import BaseCAM
from scipy.stats import rankdata
from torch import nn
from tqdm.auto import tqdm

from clipnb.core.models import ClipBundle
from clipnb.core.utils import array_hash, atomic_write_bytes, cache_dir, stable_hash

__all__ = [
    "CAM_METHODS",
    "CamSetting",
    "cam_layers",
    "cascade_stages",
    "choose",
    "mass_in_mask",
    "pointing_game",
    "randomised_cascade",
    "rank_correlation",
    "validate",
]

#: The candidate methods (pytorch-grad-cam classes), in the order the table lists them.
CAM_METHODS: dict[str, type[BaseCAM]] = {
    "GradCAM": GradCAM,
    "HiResCAM": HiResCAM,
    "GradCAM++": GradCAMPlusPlus,
    "LayerCAM": LayerCAM,
    "EigenCAM": EigenCAM,
    "ScoreCAM": ScoreCAM,
}

#: A setting passes the sanity check when its maps' rank correlation with the fully randomised
#: tower's maps stays below this (Adebayo et al. read "high" similarity as a failed check).
MAX_RANDOM_CORRELATION = 0.5


@dataclass(frozen=True)
class CamSetting:
    """A CAM method and the image-tower layer it explains (a key of :func:`cam_layers`)."""

    method: str = "GradCAM"
    layer: str = ""  # "" = the last block

    def __post_init__(self) -> None:
        if self.method not in CAM_METHODS:
            raise ValueError(
                f"Unknown CAM method {self.method!r}. Known: {', '.join(CAM_METHODS)}."
            )

    @property
    def cam_class(self) -> type[BaseCAM]:
        return CAM_METHODS[self.method]

    def label(self) -> str:
        return f"{self.method} at {self.layer or 'the last block'}"

    def to_dict(self) -> dict[str, str]:
        return asdict(self)


# --------------------------------------------------------------------------------------------
# Layers and randomisation
# --------------------------------------------------------------------------------------------


def _tower(model: nn.Module) -> nn.Module:
    visual = getattr(model, "visual", model)
    if not isinstance(visual, VisionTransformer | ModifiedResNet):
        raise ValueError(
            f"Saliency needs a ViT or ModifiedResNet image tower; got {type(visual).__name__}."
        )
    return visual


def cam_layers(model: nn.Module) -> dict[str, nn.Module]:
    """The candidate layers, bottom to top: each residual block's output.

    ViT: ``"block 1"`` … ``"block L"`` (the residual stream after each transformer block; its
    patch tokens are laid back on the patch grid). ModifiedResNet: ``"layer1"`` … ``"layer4"``.
    """
    visual = _tower(model)
    if isinstance(visual, VisionTransformer):
        blocks = visual.transformer.resblocks
        return {f"block {i + 1}": block for i, block in enumerate(blocks)}
    return {f"layer{i}": getattr(visual, f"layer{i}") for i in range(1, 5)}


def layer_module(model: nn.Module, layer: str) -> nn.Module:
    """The module ``layer`` names ("" = the top candidate); a clear error lists the others."""
    layers = cam_layers(model)
    if not layer:
        return list(layers.values())[-1]
    if layer not in layers:
        raise ValueError(f"Unknown layer {layer!r} for this tower. Known: {', '.join(layers)}.")
    return layers[layer]


def cascade_stages(model: nn.Module) -> list[tuple[str, list[nn.Module]]]:
    """What the cascading randomisation redraws, top first: the output head, then each block
    down to the first, then the patch embedding. Each stage adds its modules to the ones above.

    The head of a ViT is ``ln_post`` plus the ``proj`` matrix (a bare parameter, so the tower
    itself stands for it and :func:`randomised_cascade` redraws only ``proj`` there).
    """
    visual = _tower(model)
    if isinstance(visual, VisionTransformer):
        blocks = list(visual.transformer.resblocks)
        stages: list[tuple[str, list[nn.Module]]] = [("head", [visual.ln_post])]
        stages += [(f"block {i + 1}", [blocks[i]]) for i in reversed(range(len(blocks)))]
        stages.append(("embedding", [visual.conv1, visual.ln_pre]))
        return stages
    stages = [("head", [visual.attnpool])]
    stages += [(f"layer{i}", [getattr(visual, f"layer{i}")]) for i in (4, 3, 2, 1)]
    stem = [m for name, m in visual.named_children() if name.startswith(("conv", "bn"))]
    stages.append(("embedding", stem))
    return stages


def _redraw_(tensor: torch.Tensor, generator: torch.Generator) -> None:
    """Replace ``tensor`` by Gaussian noise with its own mean and standard deviation (so the
    activations keep their scale: the randomised tower neither explodes nor goes flat)."""
    flat = tensor.detach().float()
    std = float(flat.std()) if flat.numel() > 1 else 0.0
    noise = torch.randn(tensor.shape, generator=generator) * std + float(flat.mean())
    tensor.data.copy_(noise.to(tensor.dtype))


@torch.no_grad()
def randomised_cascade(model: nn.Module, seed: int) -> Iterator[tuple[str, nn.Module]]:
    """Copies of ``model`` with its image tower randomised cumulatively from the top.

    Yields ``(stage, model)`` for every stage of :func:`cascade_stages`; the model yielded at a
    stage has that stage and all the stages above redrawn (each copy is independent of the
    caller's model, which is never modified).
    """
    generator = torch.Generator().manual_seed(int(seed))
    randomised = copy.deepcopy(model).eval()
    visual = _tower(randomised)
    for name, modules in cascade_stages(randomised):
        if name == "head" and isinstance(visual, VisionTransformer) and visual.proj is not None:
            _redraw_(visual.proj, generator)
        for module in modules:
            for param in module.parameters():
                _redraw_(param, generator)
        if name == "embedding" and isinstance(visual, VisionTransformer):
            _redraw_(visual.positional_embedding, generator)
            _redraw_(visual.class_embedding, generator)
        yield name, randomised


# --------------------------------------------------------------------------------------------
# Scores
# --------------------------------------------------------------------------------------------


def _check_pair(cams: np.ndarray, masks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    cams = np.asarray(cams, dtype=np.float64)
    masks = np.asarray(masks).astype(bool)
    if cams.ndim != 3 or masks.shape != cams.shape:
        raise ValueError(
            f"cams and masks must both be [N, H, W] with the same shape; got {cams.shape} and "
            f"{masks.shape}. Align the masks with the model's preprocess first."
        )
    if not masks.reshape(len(masks), -1).any(axis=1).all():
        raise ValueError("every mask must contain at least one object pixel.")
    return cams, masks


def pointing_game(cams: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """Per map, the share of its maximal pixels that lie inside the mask ``[N]``.

    One maximum gives a hit (1) or a miss (0); a plateau counts fractionally, so a flat map
    scores exactly the mask's area (what a random guess of the point would score).
    """
    cams, masks = _check_pair(cams, masks)
    flat, inside = cams.reshape(len(cams), -1), masks.reshape(len(masks), -1)
    peak = flat >= flat.max(axis=1, keepdims=True) - 1e-9
    return (peak & inside).sum(axis=1) / peak.sum(axis=1)


def mass_in_mask(cams: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """Per map, the share of its (non-negative) mass inside the mask ``[N]``.

    A map that is zero everywhere points nowhere: it scores the mask's area, like a uniform
    map, rather than being dropped (dropping it would flatter a method that often gives up).
    """
    cams, masks = _check_pair(cams, masks)
    if (cams < 0).any():
        raise ValueError("CAMs must be non-negative; clip them with np.maximum(cams, 0).")
    flat, inside = cams.reshape(len(cams), -1), masks.reshape(len(masks), -1)
    total = flat.sum(axis=1)
    area = inside.mean(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        share = (flat * inside).sum(axis=1) / total
    return np.where(total > 0, share, area)


def rank_correlation(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Spearman's rank correlation between maps ``a[i]`` and ``b[i]`` ``[N]``.

    Ties take their average rank; a constant map has no ranking and scores 0 (it carries none
    of the other map's structure).
    """
    a = np.asarray(a, dtype=np.float64).reshape(len(a), -1)
    b = np.asarray(b, dtype=np.float64).reshape(len(b), -1)
    if a.shape != b.shape:
        raise ValueError(f"maps must have the same shape; got {a.shape} and {b.shape}.")
    ra = rankdata(a, axis=1) - (a.shape[1] + 1) / 2
    rb = rankdata(b, axis=1) - (b.shape[1] + 1) / 2
    denom = np.sqrt((ra**2).sum(axis=1) * (rb**2).sum(axis=1))
    with np.errstate(invalid="ignore", divide="ignore"):
        rho = (ra * rb).sum(axis=1) / denom
    return np.where(denom > 0, rho, 0.0)


def centre_prior(shape: tuple[int, int], n: int) -> np.ndarray:
    """A map that ignores the image: a Gaussian bump at the centre (sigma = a quarter side).

    It is the "no model" baseline for datasets whose objects sit near the middle.
    """
    h, w = shape
    yy, xx = np.mgrid[0:h, 0:w]
    bump = np.exp(-(((yy - (h - 1) / 2) / (h / 4)) ** 2 + ((xx - (w - 1) / 2) / (w / 4)) ** 2) / 2)
    return np.broadcast_to(bump, (n, h, w)).copy()


# --------------------------------------------------------------------------------------------
# The protocol
# --------------------------------------------------------------------------------------------

#: ``(model, setting, pixels [N,3,H,W], classes [N]) -> maps [N,H,W]`` (e.g. ClipGradCAM).
CamFn = Callable[[nn.Module, CamSetting, torch.Tensor, np.ndarray], np.ndarray]


def validate(
    model: nn.Module,
    cam_fn: CamFn,
    pixels: torch.Tensor,
    classes: np.ndarray,
    masks: np.ndarray,
    seeds: Sequence[int],
    methods: Sequence[str] = tuple(CAM_METHODS),
    layers: Sequence[str] | None = None,
    progress: bool = True,
) -> pd.DataFrame:
    """The method × layer table on validation images, one row per (method, layer, seed).

    Each seed scores its own disjoint share of the images and redraws the randomised towers
    from its own generator. Columns: ``pointing`` and ``mass`` (%; the uniform map scores
    ``area``), ``rho_<stage>`` (mean rank correlation with the maps of the tower randomised
    down to that stage) and ``rho_random`` (the fully randomised tower's).
    """
    layers = list(layers or cam_layers(model))
    classes = np.asarray(classes, dtype=np.int64)
    masks = np.asarray(masks).astype(bool)
    if not (len(pixels) == len(classes) == len(masks)):
        raise ValueError("pixels, classes and masks must have one row per image.")
    if len(pixels) < len(seeds):
        raise ValueError(f"{len(pixels)} images cannot be shared among {len(seeds)} seeds.")
    shares = np.array_split(np.arange(len(pixels)), len(seeds))
    stages = [name for name, _ in cascade_stages(model)]
    rows = []
    bar = tqdm(
        total=len(seeds) * len(methods) * len(layers) * (1 + len(stages)),
        desc="saliency validation",
        disable=not progress,
    )
    for seed, rows_of_seed in zip(seeds, shares, strict=True):
        x, y, m = pixels[rows_of_seed], classes[rows_of_seed], masks[rows_of_seed]
        trained: dict[CamSetting, np.ndarray] = {}
        for method in methods:
            for layer in layers:
                setting = CamSetting(method, layer)
                trained[setting] = cam_fn(model, setting, x, y)
                bar.update()
        rhos: dict[CamSetting, dict[str, float]] = {s: {} for s in trained}
        for stage, randomised in randomised_cascade(model, seed):
            for setting, maps in trained.items():
                rnd = cam_fn(randomised, setting, x, y)
                rhos[setting][f"rho_{stage}"] = float(rank_correlation(maps, rnd).mean())
                bar.update()
        for setting, maps in trained.items():
            rows.append(
                {
                    "method": setting.method,
                    "layer": setting.layer,
                    "seed": int(seed),
                    "pointing": 100 * float(pointing_game(maps, m).mean()),
                    "mass": 100 * float(mass_in_mask(maps, m).mean()),
                    "area": 100 * float(m.mean()),
                    "flat": 100 * float((np.ptp(maps.reshape(len(maps), -1), axis=1) == 0).mean()),
                    **rhos[setting],
                    "rho_random": rhos[setting][f"rho_{stages[-1]}"],
                }
            )
    bar.close()
    return pd.DataFrame(rows)


def baselines(masks: np.ndarray, seeds: Sequence[int]) -> pd.DataFrame:
    """The uniform and centre-prior maps scored like :func:`validate`'s rows (no model)."""
    masks = np.asarray(masks).astype(bool)
    shares = np.array_split(np.arange(len(masks)), len(seeds))
    rows = []
    for seed, idx in zip(seeds, shares, strict=True):
        m = masks[idx]
        for name, maps in (
            ("uniform map", np.ones(m.shape)),
            ("centre prior", centre_prior(m.shape[1:], len(m))),
        ):
            rows.append(
                {
                    "method": name,
                    "layer": "",
                    "seed": int(seed),
                    "pointing": 100 * float(pointing_game(maps, m).mean()),
                    "mass": 100 * float(mass_in_mask(maps, m).mean()),
                    "area": 100 * float(m.mean()),
                }
            )
    return pd.DataFrame(rows)


def choose(
    table: pd.DataFrame, max_random_correlation: float = MAX_RANDOM_CORRELATION
) -> CamSetting:
    """The setting with the most mass in mask (mean over seeds) among those that pass the
    randomisation check; if none passes, the one whose maps depend most on the weights.

    Pointing is reported but not used to choose: on a coarse patch grid its maximum is one
    upsampled patch, a noisier score than the mass.
    """
    means = table.groupby(["method", "layer"], sort=False)[["mass", "rho_random"]].mean()
    passing = means[means.rho_random < max_random_correlation]
    pick = passing.mass.idxmax() if len(passing) else means.rho_random.idxmin()
    return CamSetting(*pick)


# --------------------------------------------------------------------------------------------
# The protocol per profile, cached
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Protocol:
    """Where and how widely the candidates are scored (validation images with object masks)."""

    dataset: str
    per_seed: int
    seeds: tuple[int, ...] = (0, 1, 2)
    methods: tuple[str, ...] = tuple(CAM_METHODS)
    #: score every ``layer_stride``-th block counted down from the top (ViT-B/32 has 12)
    layer_stride: int = 1

    @property
    def n_images(self) -> int:
        return self.per_seed * len(self.seeds)


#: The world's shapes have exact masks; on real data Oxford-IIIT Pet's trimaps stand in.
PROTOCOLS: dict[str, Protocol] = {
    "embedded": Protocol("world-shape-photo", per_seed=32),
    "smoke": Protocol("world-shape-photo", per_seed=4),
    "full": Protocol("oxford_pets", per_seed=16, layer_stride=3),
}


@dataclass
class MaskedImages:
    """Preprocessed validation images, their classes, their object masks on the model's grid."""

    name: str
    pixels: torch.Tensor
    classes: np.ndarray
    masks: np.ndarray
    class_names: list[str]
    fingerprint: str


def masked_images(bundle: ClipBundle, protocol: Protocol) -> MaskedImages:
    """``protocol.n_images`` validation images of ``protocol.dataset``, spread evenly over the
    split, with masks: the world's object masks, or the pet and its border from a trimap."""
    from clipnb.core.features import image_tensors
    from clipnb.core.imagesets import mask_geometry
    from clipnb.data.full import trimap
    from clipnb.data.registry import load_dataset

    world = protocol.dataset.startswith("world-")
    if world:
        n_classes = len(load_dataset(protocol.dataset, per_class=(1, 1, 1)).class_names)
        per_class = -(-protocol.n_images // n_classes)
        split = load_dataset(protocol.dataset, per_class=(1, per_class, 1)).val
    else:
        split = load_dataset(protocol.dataset).val
    if len(split) < protocol.n_images:
        raise ValueError(
            f"{protocol.dataset}'s validation split has {len(split)} images; the saliency "
            f"protocol needs {protocol.n_images} (lower per_seed)."
        )
    rows = np.linspace(0, len(split) - 1, protocol.n_images).round().astype(np.int64)
    if world:
        raw = [split.masks[i].astype(np.uint8) for i in rows]
    else:  # trimap: 1 pet, 2 background, 3 border (the border is part of the pet's outline)
        raw = [np.isin(trimap(split, int(i)), (1, 3)).astype(np.uint8) for i in rows]
    masks = np.stack([mask_geometry(bundle.preprocess, m) for m in raw]) > 0
    return MaskedImages(
        name=protocol.dataset,
        pixels=image_tensors(bundle, split, rows),
        classes=split.labels[rows],
        masks=masks,
        class_names=list(split.class_names),
        fingerprint=stable_hash([split.fingerprint, array_hash(rows)]),
    )


def candidate_layers(model: nn.Module, stride: int) -> list[str]:
    """Every ``stride``-th layer of :func:`cam_layers`, counted down from the top."""
    names = list(cam_layers(model))
    return names[::-1][::stride][::-1]


@dataclass
class SaliencyValidation:
    """The method × layer table, the no-model baselines and the chosen setting."""

    protocol: Protocol
    table: pd.DataFrame
    baselines: pd.DataFrame
    setting: CamSetting
    seconds: float

    def row(self, setting: CamSetting | None = None) -> pd.Series:
        """Mean scores over seeds of ``setting`` (default: the chosen one)."""
        s = setting or self.setting
        rows = self.table[(self.table.method == s.method) & (self.table.layer == s.layer)]
        return rows.mean(numeric_only=True)

    def baseline(self, name: str = "uniform map") -> pd.Series:
        return self.baselines[self.baselines.method == name].mean(numeric_only=True)


#: Bump when the scores' definitions change (the cache key includes it).
PROTOCOL_VERSION = 1


def validated_setting(
    bundle: ClipBundle, profile: str, progress: bool = True, **changes: Any
) -> SaliencyValidation:
    """The profile's protocol run on ``bundle`` (cached on disk: every chapter asks for it).

    ``changes`` replace fields of the profile's :class:`Protocol` (a chapter's ``cam_protocol``
    parameter, e.g. a one-image, one-method protocol for a dry run of the full profile).
    """
    from clipnb.methods.gradcam import clip_cams

    if profile not in PROTOCOLS:
        raise ValueError(f"No saliency protocol for profile {profile!r}: {', '.join(PROTOCOLS)}.")
    fields = {k: tuple(v) if isinstance(v, list) else v for k, v in changes.items()}
    protocol = replace(PROTOCOLS[profile], **fields)
    images = masked_images(bundle, protocol)
    key = stable_hash([bundle.fingerprint, images.fingerprint, asdict(protocol), PROTOCOL_VERSION])
    path = cache_dir() / "saliency" / f"{key}.pkl"
    if path.exists():
        with open(path, "rb") as f:
            return pickle.load(f)
    from clipnb.core.features import class_embeddings

    class_features = class_embeddings(bundle, images.class_names)

    def cam_fn(model: nn.Module, setting: CamSetting, x: torch.Tensor, y: np.ndarray) -> np.ndarray:
        return clip_cams(model, class_features, setting, x, y)

    start = time.perf_counter()
    table = validate(
        bundle.model,
        cam_fn,
        images.pixels,
        images.classes,
        images.masks,
        seeds=protocol.seeds,
        methods=protocol.methods,
        layers=candidate_layers(bundle.model, protocol.layer_stride),
        progress=progress,
    )
    result = SaliencyValidation(
        protocol=protocol,
        table=table,
        baselines=baselines(images.masks, protocol.seeds),
        setting=choose(table),
        seconds=time.perf_counter() - start,
    )
    atomic_write_bytes(path, pickle.dumps(result))
    return result


# --------------------------------------------------------------------------------------------
# What a chapter may read from the choice (the tables, figures and verdicts of the protocol are
# the embedded CLIP chapter's: clipnb.studies.embedded_clip)
# --------------------------------------------------------------------------------------------


def interpretable(result: SaliencyValidation) -> bool:
    """Whether the chosen maps pass the check and localise above a uniform map."""
    chosen = result.row()
    return bool(chosen.rho_random < MAX_RANDOM_CORRELATION and chosen.mass > result.baseline().mass)


def reading(result: SaliencyValidation) -> str:
    """One sentence for a chapter's CAM figures: may they be read as evidence?"""
    if interpretable(result):
        row, uniform = result.row(), result.baseline()
        return (
            f"The maps use {result.setting.label()}, the setting the embedded CLIP chapter chose on "
            f"validation masks ({row.mass:.1f} % of its mass on the object against "
            f"{uniform.mass:.1f} % for a uniform map, and it passes the randomisation check)."
        )
    return (
        f"The embedded CLIP chapter found no CAM setting that passes the randomisation check and "
        f"localises above a uniform map on this model, so these maps ({result.setting.label()}) "
        "are not interpretable at this scale and are shown only for comparison with the source."
    )
