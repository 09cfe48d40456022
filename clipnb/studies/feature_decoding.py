"""Decoding frozen CLIP features: the data, the cached features and the training protocol.

The study "what frozen features contain" trains decoders (``clipnb.methods.decoders``) on the frozen
spatial features of an image tower (``clipnb.core.spatial``). This module prepares what they train on:

* ``spatial_feature_cache``: the tower's pre-pooling feature map of every image of a split,
  computed once and cached on disk under a key of (model fingerprint, split fingerprint), like
  :func:`clipnb.core.features.encode_images`.
* ``pixel_tensors``: the images as ``[0, 1]`` tensors at the reconstruction size.
* ``segmentation_targets``: per-pixel class maps on the model's input grid: the world's exact
  object masks (``mask · (label + 1)``: background + one class per label) or Oxford-IIIT Pet
  trimaps (background / pet / border).
* ``fit_on_validation``: :func:`clipnb.methods.decoders.train_decoder` with the training step chosen on
  the validation loss; ``vqvae_scores`` / ``segmentation_scores`` score a trained decoder.

The chapter runs in three stages, each shown in its own section: :func:`prepare` (the towers'
features and the targets), :func:`run_vqvae` and :func:`run_segmentation` (every decoder for every
seed). :func:`numbers` and :func:`verdicts` read a :class:`DecodingResults` of the three, so the
prose follows the tables.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import matplotlib.figure
import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps
from torch import Tensor, nn
from tqdm.auto import tqdm

from clipnb.core import report, spatial
from clipnb.core.evaluation import select_on_validation
from clipnb.core.features import image_tensors
from clipnb.core.imagesets import ImageSet, mask_geometry
from clipnb.core.models import ClipBundle, create_model
from clipnb.core.utils import (
    atomic_torch_save,
    cache_dir,
    file_hash,
    seed_everything,
    stable_hash,
)
from clipnb.data.registry import load_dataset
from clipnb.methods import pretrain
from clipnb.methods.backbones import FULL_MODEL, load_model
from clipnb.methods.decoders import (
    VQVAE,
    ConvEncoder,
    SegmentationDecoder,
    UNet,
    codebook_perplexity,
    miou,
    psnr,
    train_decoder,
    vqvae_loss,
)
from clipnb.studies.verdicts import count_noun

__all__ = [
    "PET_TRIMAP_CLASSES",
    "DataSummary",
    "DecodingData",
    "DecodingResults",
    "SegResults",
    "VQResults",
    "data_table",
    "figures",
    "fit_on_validation",
    "gap_words",
    "label_map_grid",
    "mask_geometry",
    "masks_figure",
    "numbers",
    "pixel_tensors",
    "plot_curves",
    "prepare",
    "random_codes_figure",
    "ranking",
    "reconstructions_figure",
    "run_segmentation",
    "run_vqvae",
    "seg_table",
    "segmentation_scores",
    "segmentation_targets",
    "spatial_feature_cache",
    "to_uint8_images",
    "val_curves_figure",
    "verdicts",
    "vq_table",
    "vqvae_scores",
]

#: Classes of the Oxford-IIIT Pet trimaps (files store 1 = pet, 2 = background, 3 = border).
PET_TRIMAP_CLASSES: tuple[str, ...] = ("background", "pet", "border")
_TRIMAP_TO_CLASS = np.array([0, 1, 0, 2], dtype=np.int64)  # index: trimap value


def spatial_feature_cache(
    bundle: ClipBundle, split: ImageSet, batch_size: int = 256, cache: bool = True
) -> Tensor:
    """Frozen spatial features ``[N, C, gh, gw]`` of every image of ``split`` (float32, CPU).

    Images go through the model's own preprocessing; the tower runs once per image and the
    result is cached under ``cache_dir()/features/spatial`` keyed on the model's fingerprint,
    the split's fingerprint and the feature extractor's source, so a random tower or another
    checkpoint never reuses stale features.
    """
    key = stable_hash(
        [bundle.fingerprint, split.fingerprint, "spatial", file_hash(spatial.__file__)]
    )
    path = cache_dir() / "features" / "spatial" / f"{key}.pt"
    if cache and path.exists():
        return torch.load(path)
    if len(split) == 0:
        raise ValueError(f"{split.name}: no images to encode")
    device = next(bundle.model.parameters()).device
    chunks = []
    for start in tqdm(
        range(0, len(split), batch_size),
        desc=f"spatial {split.name}",
        leave=False,
        disable=len(split) <= batch_size,
    ):
        rows = np.arange(start, min(start + batch_size, len(split)))
        x = image_tensors(bundle, split, rows).to(device)
        chunks.append(spatial.spatial_features(bundle.visual, x).cpu())
    feats = torch.cat(chunks)
    if cache:
        atomic_torch_save(feats, path)
    return feats


def pixel_tensors(split: ImageSet, size: int) -> Tensor:
    """The images of ``split`` as ``[N, 3, size, size]`` floats in ``[0, 1]`` (centre crop, bicubic).

    These are the reconstruction targets of the VQ-VAEs and the input of their trainable encoder.
    """
    if size < 1:
        raise ValueError(f"size must be >= 1, got {size}")
    out = np.empty((len(split), size, size, 3), dtype=np.uint8)
    for i in range(len(split)):
        img = split.image(i)
        if img.size != (size, size):
            img = ImageOps.fit(img, (size, size), Image.BICUBIC)
        out[i] = np.asarray(img)
    return torch.from_numpy(out).permute(0, 3, 1, 2).float().div_(255.0)


def segmentation_targets(bundle: ClipBundle, split: ImageSet) -> tuple[Tensor, list[str]]:
    """Per-pixel class maps ``[N, S, S]`` (int64, on the model's input grid) and class names.

    A split with masks (the generated world: 0 background, 1 object) gives
    ``mask · (label + 1)``, classes ``["background", *split.class_names]``. A split with
    Oxford-IIIT Pet trimaps gives background / pet / border (:data:`PET_TRIMAP_CLASSES`).
    """
    if split.masks is not None:
        maps = [
            split.masks[i].astype(np.int64) * (int(split.labels[i]) + 1) for i in range(len(split))
        ]
        names = ["background", *split.class_names]
    elif "trimap" in (split.root or split).meta:
        from clipnb.data.full import trimap

        maps = []
        for i in range(len(split)):
            raw = trimap(split, i)
            if raw.max(initial=0) > 3:
                raise ValueError(f"{split.name}: trimap {i} has values above 3 (expected 1, 2, 3)")
            maps.append(_TRIMAP_TO_CLASS[raw])
        names = list(PET_TRIMAP_CLASSES)
    else:
        raise ValueError(
            f"{split.name} has neither object masks nor trimaps: use a world-* dataset or "
            "oxford_pets for segmentation."
        )
    aligned = [mask_geometry(bundle.preprocess, m.astype(np.uint8)) for m in maps]
    if len({a.shape for a in aligned}) != 1:
        raise ValueError(f"{split.name}: label maps have different sizes after preprocessing")
    return torch.from_numpy(np.stack(aligned).astype(np.int64)), names


def _snapshot(model: nn.Module) -> dict[str, Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def fit_on_validation(
    model: nn.Module,
    train: tuple[Tensor, Tensor],
    val: tuple[Tensor, Tensor],
    loss_fn: Callable[[Any, Tensor], Tensor],
    steps: int,
    eval_every: int,
    **kwargs: Any,
) -> dict[str, Any]:
    """Train with :func:`~clipnb.methods.decoders.train_decoder`, then restore the step chosen on ``val``.

    The validation loss is measured every ``eval_every`` steps; the step with the lowest one
    (first on ties, via :func:`clipnb.core.evaluation.select_on_validation`) is restored, weights and
    buffers (codebook, BatchNorm statistics) alike. ``kwargs`` go to ``train_decoder`` (lr,
    batch_size, seed, desc, progress, ...). Returns its history plus ``best_step`` and
    ``best_val_loss``; the model is left in eval mode at the chosen step.
    """
    best: dict[str, Any] = {"loss": float("inf"), "state": None}

    def keep(step: int, val_loss: float) -> None:
        if val_loss < best["loss"]:  # strict: the first of equal losses is kept
            best.update(loss=val_loss, step=step, state=_snapshot(model))

    history = train_decoder(
        model, *train, loss_fn, steps=steps, val=val, eval_every=eval_every, on_eval=keep, **kwargs
    )
    by_step = dict(zip(history["val_step"], history["val_loss"], strict=True))
    chosen, _ = select_on_validation(history["val_step"], lambda s: -by_step[s])
    if best["state"] is None or chosen != best["step"]:
        raise ValueError(
            f"validation losses are not finite ({history['val_loss'][:3]}...); lower lr"
        )
    model.load_state_dict(best["state"])
    model.eval()
    return {**history, "best_step": int(chosen), "best_val_loss": float(by_step[chosen])}


def _outputs(model: nn.Module, inputs: Tensor, batch_size: int) -> Iterator[Any]:
    """The model's outputs batch by batch (eval mode, no gradients)."""
    model.eval()
    device = next(model.parameters()).device
    for chunk in inputs.split(batch_size):
        with torch.no_grad():
            out = model(chunk.to(device))
        yield out


def vqvae_scores(
    model: nn.Module, inputs: Tensor, pixels: Tensor, batch_size: int = 256
) -> dict[str, float]:
    """A trained VQ-VAE on a split: loss (MSE + commitment), MSE, PSNR (dB) and code perplexity."""
    recons, codes, loss_sum = [], [], 0.0
    for (recon, vq_loss, code), target in zip(
        _outputs(model, inputs, batch_size), pixels.split(batch_size), strict=True
    ):
        recons.append(recon.float().cpu())
        codes.append(code.cpu())
        loss_sum += float(vqvae_loss((recons[-1], vq_loss.cpu(), code), target)) * len(target)
    recon = torch.cat(recons)
    return {
        "loss": loss_sum / len(pixels),
        "mse": float(F.mse_loss(recon, pixels)),
        "psnr": psnr(recon.clamp(0, 1), pixels),
        "perplexity": codebook_perplexity(torch.cat(codes), model.quantizer.n_codes),
    }


def segmentation_scores(
    model: nn.Module, inputs: Tensor, targets: Tensor, n_classes: int, batch_size: int = 256
) -> dict[str, float]:
    """A trained segmenter on a split: cross-entropy, mIoU (%) and pixel accuracy (%)."""
    ce_sum, preds = 0.0, []
    for logits, target in zip(
        _outputs(model, inputs, batch_size), targets.split(batch_size), strict=True
    ):
        logits = logits.float().cpu()
        ce_sum += float(F.cross_entropy(logits, target, reduction="sum"))
        preds.append(logits.argmax(1).to(torch.uint8 if n_classes <= 256 else torch.int64))
    pred = torch.cat(preds)
    return {
        "loss": ce_sum / targets.numel(),
        "miou": 100.0 * miou(pred, targets, n_classes),
        "pixel_acc": 100.0 * float((pred.long() == targets).double().mean()),
    }


# --------------------------------------------------------------------------- figures


def to_uint8_images(images: Tensor) -> list[np.ndarray]:
    """``[N, 3, H, W]`` floats in ``[0, 1]`` -> a list of uint8 ``[H, W, 3]`` arrays (for figures)."""
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"expected [N, 3, H, W] images, got {tuple(images.shape)}")
    arrays = images.detach().float().cpu().clamp(0, 1).mul(255).round().byte()
    return list(arrays.permute(0, 2, 3, 1).numpy())


def plot_curves(ax: Any, records: list[dict[str, Any]], key: str, value: str = "val loss") -> None:
    """Mean ± std over seeds of ``value`` against ``step``, one line per ``key`` (first-seen order)."""
    import pandas as pd

    stats = (
        pd.DataFrame.from_records(records)
        .groupby([key, "step"], sort=False)[value]
        .agg(["mean", "std"])
        .reset_index()
    )
    for i, (name, part) in enumerate(stats.groupby(key, sort=False)):
        spread = part["std"].fillna(0.0)
        ax.plot(part["step"], part["mean"], color=f"C{i}", label=name)
        ax.fill_between(
            part["step"], part["mean"] - spread, part["mean"] + spread, color=f"C{i}", alpha=0.2
        )


def label_map_grid(
    images: list[np.ndarray],
    maps: dict[str, Tensor],
    class_names: list[str],
    size: float = 1.2,
) -> Any:
    """A figure: the images in the top row, then one row of label maps ``[N, H, W]`` per entry.

    Classes share one colour each across rows (tab10/tab20), with a legend of ``class_names``.
    """
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    n, n_classes = len(images), len(class_names)
    cmap = plt.get_cmap("tab10" if n_classes <= 10 else "tab20", max(n_classes, 2))
    rows = [("image", None), *maps.items()]
    fig, axes = plt.subplots(
        len(rows), n, figsize=(size * n, (size + 0.25) * len(rows) + 0.4), squeeze=False
    )
    for r, (label, labels) in enumerate(rows):
        for j in range(n):
            ax = axes[r, j]
            if labels is None:
                ax.imshow(images[j], interpolation="nearest")
            else:
                ax.imshow(labels[j].cpu().numpy(), cmap=cmap, vmin=0, vmax=cmap.N - 1,
                          interpolation="nearest")  # fmt: skip
            ax.axis("off")
        axes[r, 0].set_title(label, fontsize=7, loc="left")
    handles = [Patch(color=cmap(k), label=name) for k, name in enumerate(class_names)]
    ncol = min(n_classes, n + 1)
    legend_rows = -(-n_classes // ncol)
    fig.legend(handles=handles, loc="lower center", ncol=ncol, fontsize=7, frameon=False)
    fig.tight_layout(rect=(0, min(0.3, 0.035 * legend_rows * 5 / len(rows)), 1, 1))
    return fig


# --------------------------------------------------------------------------- the chapter

CLIP_VQ, RANDOM_VQ, OWN_VQ = "CLIP (frozen)", "random tower (frozen)", "own encoder (trained)"
CLIP_SEG, RANDOM_SEG, UNET = (
    "CLIP (frozen) + decoder",
    "random tower (frozen) + decoder",
    "UNet from scratch",
)


@dataclass
class DataSummary:
    """What the chapter says about its data: the datasets, their sizes, the feature map's shape."""

    vq_dataset: str
    seg_dataset: str
    ood_dataset: str  # "" when no out-of-distribution segmentation set is scored
    split_sizes: dict[str, tuple[int, int, int]]  # train / val / test images per dataset
    n_ood: int
    grid: tuple[int, int]
    channels: int
    first_seed: int


@dataclass
class DecodingData:
    """Stage 1: what every decoder trains on, the frozen towers' features computed once."""

    summary: DataSummary
    recon_size: int
    device: str
    vq_inputs: dict[str, dict[str, Tensor]]  # encoder -> split -> features (or pixels)
    vq_pixels: dict[str, Tensor]  # split -> reconstruction targets
    seg_inputs: dict[str, dict[str, Tensor]]  # model -> split (and "ood") -> input
    seg_targets: dict[str, Tensor]
    seg_classes: list[str]
    seg_test: ImageSet  # the images the mask figure shows


def prepare(
    *,
    profile: str,
    vq_dataset: str,
    seg_dataset: str,
    ood_dataset: str,
    dataset_options: Mapping[str, Any],
    recon_size: int,
    seed: int,
) -> DecodingData:
    """Load the profile's CLIP and its random twin, the datasets, and every decoder's inputs.

    The random tower is the control for what pretraining adds: the same architecture, untrained.
    Both towers run once per image (:func:`spatial_feature_cache`); the segmentation targets are
    aligned with the model's input grid (:func:`segmentation_targets`).
    """
    seed_everything(seed)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    bundle = load_model(profile)
    control = (
        pretrain.random_tower(profile)
        if profile in pretrain.PRETRAIN_CONFIGS
        else create_model(FULL_MODEL[0], pretrained=None)
    )
    towers = (("CLIP", bundle), ("random tower", control))
    for _, tower in towers:
        tower.model.to(device)
    datasets = {
        name: load_dataset(name, **dataset_options)
        for name in dict.fromkeys([vq_dataset, seg_dataset, ood_dataset])
        if name
    }
    vq_data, seg_data = datasets[vq_dataset], datasets[seg_dataset]
    splits = ("train", "val", "test")

    # Frozen features, once per tower and image set (cached on disk).
    vq_feats = {
        t: {s: spatial_feature_cache(b, vq_data.split(s)) for s in splits} for t, b in towers
    }
    vq_pixels = {s: pixel_tensors(vq_data.split(s), recon_size) for s in splits}
    grid = tuple(vq_feats["CLIP"]["train"].shape[-2:])
    channels = vq_feats["CLIP"]["train"].shape[1]

    seg_sets = {s: seg_data.split(s) for s in splits}
    if ood_dataset:
        seg_sets["ood"] = datasets[ood_dataset].test
    seg_feats = {
        t: {s: spatial_feature_cache(b, split) for s, split in seg_sets.items()} for t, b in towers
    }
    seg_pixels = {s: image_tensors(bundle, split) for s, split in seg_sets.items()}
    seg_targets = {}
    for s, split in seg_sets.items():
        seg_targets[s], seg_classes = segmentation_targets(bundle, split)

    summary = DataSummary(
        vq_dataset=vq_dataset,
        seg_dataset=seg_dataset,
        ood_dataset=ood_dataset,
        split_sizes={n: (len(d.train), len(d.val), len(d.test)) for n, d in datasets.items()},
        n_ood=len(seg_sets["ood"]) if ood_dataset else 0,
        grid=grid,
        channels=channels,
        first_seed=seed,
    )
    return DecodingData(
        summary=summary,
        recon_size=recon_size,
        device=device,
        vq_inputs={
            CLIP_VQ: vq_feats["CLIP"],
            RANDOM_VQ: vq_feats["random tower"],
            OWN_VQ: vq_pixels,
        },
        vq_pixels=vq_pixels,
        seg_inputs={
            CLIP_SEG: seg_feats["CLIP"],
            RANDOM_SEG: seg_feats["random tower"],
            UNET: seg_pixels,
        },
        seg_targets=seg_targets,
        seg_classes=seg_classes,
        seg_test=seg_sets["test"],
    )


@dataclass
class VQResults:
    """Stage 2: every VQ-VAE's scores and validation curve, and seed 0's decoded images."""

    records: list[dict[str, Any]]  # encoder, seed, metric, value
    curves: list[dict[str, Any]]  # encoder, seed, step, val loss
    steps: int
    n_show: int
    reconstructions: list[tuple[str, Tensor]]  # ("original", test images), then per encoder
    random_decodes: list[tuple[str, Tensor]]  # per encoder: random code maps, decoded


def run_vqvae(
    data: DecodingData,
    *,
    seeds: Sequence[int],
    steps: int,
    lr: float,
    batch_size: int,
    eval_every: int,
    n_codes: int,
    code_dim: int,
    decay: float,
    hidden: int,
    n_show: int,
) -> VQResults:
    """Train a VQ-VAE on each encoder's codes for every seed (step chosen on validation).

    All three quantise to the same grid of codes, so they pass the decoder the same number of
    bits; only what the codes can say differs.
    """
    grid, channels, size = data.summary.grid, data.summary.channels, data.recon_size
    pixels = data.vq_pixels

    def make_vqvae(name: str) -> VQVAE:
        if name == OWN_VQ:
            encoder = ConvEncoder(hidden, size, grid, hidden=hidden)
            return VQVAE(
                hidden, grid, size, n_codes, code_dim, encoder=encoder, hidden=hidden, decay=decay
            )
        return VQVAE(channels, grid, size, n_codes, code_dim, hidden=hidden, decay=decay)

    records, curves, models = [], [], {}
    for seed in seeds:
        for name, inputs in data.vq_inputs.items():
            seed_everything(seed)
            model = make_vqvae(name).to(data.device)
            hist = fit_on_validation(
                model, (inputs["train"], pixels["train"]), (inputs["val"], pixels["val"]),
                vqvae_loss, steps, lr=lr, seed=seed, desc=f"VQ {name} {seed}",
                batch_size=batch_size, eval_every=eval_every, progress=True,
            )  # fmt: skip
            scores = {s: vqvae_scores(model, inputs[s], pixels[s]) for s in ("train", "test")}
            for step, loss in zip(hist["val_step"], hist["val_loss"], strict=True):
                curves.append({"encoder": name, "seed": seed, "step": step, "val loss": loss})
            for metric, value in (
                ("train loss ×100", 100 * scores["train"]["loss"]),
                ("test loss ×100", 100 * scores["test"]["loss"]),
                ("test PSNR (dB)", scores["test"]["psnr"]),
                ("codes used (perplexity)", scores["test"]["perplexity"]),
                ("chosen step", hist["best_step"]),
            ):
                records.append({"encoder": name, "seed": seed, "metric": metric, "value": value})
            if seed == seeds[0]:
                models[name] = model

    show = slice(0, n_show)
    reconstructions = [("original", pixels["test"][show])]
    with torch.no_grad():
        for name, model in models.items():
            test = data.vq_inputs[name]["test"][show].to(data.device)
            reconstructions.append((name, model(test)[0]))
    codes = torch.randint(
        n_codes, (n_show, *grid), generator=torch.Generator().manual_seed(seeds[0])
    )
    with torch.no_grad():
        random_decodes = [
            (name, m.decode_codes(codes.to(data.device))) for name, m in models.items()
        ]
    return VQResults(records, curves, steps, n_show, reconstructions, random_decodes)


@dataclass
class SegResults:
    """Stage 3: every segmenter's scores and validation curve, and seed 0's predicted masks."""

    records: list[dict[str, Any]]  # model, seed, metric, value
    curves: list[dict[str, Any]]  # model, seed, step, val loss
    steps: int
    classes: list[str]
    images: list[np.ndarray]  # the test images the mask figure shows
    masks: dict[str, Tensor]  # "ground truth", then per model: label maps of those images


def run_segmentation(
    data: DecodingData,
    *,
    seeds: Sequence[int],
    steps: int,
    lr: float,
    batch_size: int,
    eval_every: int,
    hidden: int,
    unet_base: int,
    n_show: int,
) -> SegResults:
    """Train a segmentation decoder on each frozen tower, and a UNet on the pixels, every seed.

    Each is scored on the test split and, when the data has one, on the out-of-distribution set
    (without it, the OOD column is left out rather than filled with NaN).
    """
    grid, channels = data.summary.grid, data.summary.channels
    targets, n_classes = data.seg_targets, len(data.seg_classes)
    out_size = tuple(targets["train"].shape[-2:])
    has_ood = "ood" in targets

    def make_segmenter(name: str) -> torch.nn.Module:
        if name == UNET:
            return UNet(n_classes, base=unet_base)
        return SegmentationDecoder(channels, n_classes, grid, out_size, hidden=hidden)

    records, curves, models = [], [], {}
    for seed in seeds:
        for name, inputs in data.seg_inputs.items():
            seed_everything(seed)
            model = make_segmenter(name).to(data.device)
            hist = fit_on_validation(
                model, (inputs["train"], targets["train"]), (inputs["val"], targets["val"]),
                F.cross_entropy, steps, lr=lr, seed=seed, desc=f"seg {name} {seed}",
                batch_size=batch_size, eval_every=eval_every, progress=True,
            )  # fmt: skip
            for step, loss in zip(hist["val_step"], hist["val_loss"], strict=True):
                curves.append({"model": name, "seed": seed, "step": step, "val loss": loss})
            test = segmentation_scores(model, inputs["test"], targets["test"], n_classes)
            scores = [("test mIoU %", test["miou"]), ("test pixel acc. %", test["pixel_acc"])]
            if has_ood:  # without an OOD set its column is left out, not filled with NaN
                ood = segmentation_scores(model, inputs["ood"], targets["ood"], n_classes)
                scores.append(("OOD test mIoU %", ood["miou"]))
            scores += [
                ("best val. loss ×100", 100 * hist["best_val_loss"]),
                ("chosen step", hist["best_step"]),
            ]
            for metric, value in scores:
                records.append({"model": name, "seed": seed, "metric": metric, "value": value})
            if seed == seeds[0]:
                models[name] = model

    show = slice(0, n_show)
    masks = {"ground truth": targets["test"][show]}
    with torch.no_grad():
        for name, model in models.items():
            masks[name] = model(data.seg_inputs[name]["test"][show].to(data.device)).argmax(1)
    images = [data.seg_test.array(i) for i in range(min(n_show, len(data.seg_test)))]
    return SegResults(records, curves, steps, list(data.seg_classes), images, masks)


@dataclass
class DecodingResults:
    """The whole chapter: its data, the VQ-VAEs and the segmenters."""

    data: DataSummary
    vq: VQResults
    seg: SegResults


# --- tables --------------------------------------------------------------------------------------


def data_table(summary: DataSummary) -> pd.DataFrame:
    """The datasets, what each is used for and its split sizes."""
    sizes = summary.split_sizes
    rows = [
        (summary.vq_dataset, "VQ-VAE", "{} / {} / {}".format(*sizes[summary.vq_dataset])),
        (summary.seg_dataset, "segmentation", "{} / {} / {}".format(*sizes[summary.seg_dataset])),
    ]
    if summary.ood_dataset:
        rows.append((summary.ood_dataset, "segmentation, OOD test", f"– / – / {summary.n_ood}"))
    return pd.DataFrame(rows, columns=["dataset", "used for", "train / val / test images"])


def vq_table(vq: VQResults) -> pd.DataFrame:
    """The VQ-VAEs' losses, PSNR, codebook use and chosen step, mean ± std over seeds."""
    return report.mean_std_table(
        vq.records, index="encoder", columns="metric", value="value", digits=2
    )


def seg_table(seg: SegResults) -> pd.DataFrame:
    """The segmenters' mIoU, pixel accuracy, validation loss and chosen step, mean ± std."""
    return report.mean_std_table(
        seg.records, index="model", columns="metric", value="value", digits=1
    )


# --- what the prose cites ------------------------------------------------------------------------


def ranking(means: pd.Series) -> str:
    """The rows of ``means``, highest first, as a phrase."""
    order = list(means.sort_values(ascending=False).index)
    return ", then ".join(order)


def gap_words(
    records: list[dict[str, Any]], key: str, metric: str, a: str, b: str, unit: str
) -> str:
    """How row ``a`` differs from row ``b`` on ``metric``, against the spread over seeds."""
    df = pd.DataFrame(records)
    values = df[df["metric"] == metric].groupby(key)["value"]
    gap = values.mean()[a] - values.mean()[b]
    spread = max(values.std(ddof=0).fillna(0)[[a, b]])
    if values.count()[[a, b]].min() < 2:
        return f"{gap:+.2f} {unit} (one seed, so no spread over seeds to compare it with)"
    if abs(gap) <= spread:
        return f"{gap:+.2f} {unit}, within the spread over seeds (± {spread:.2f})"
    direction = "a gain" if gap > 0 else "a loss"
    return f"{gap:+.2f} {unit}, {direction} larger than the spread over seeds (± {spread:.2f})"


def _means(results: DecodingResults) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Mean over seeds of every metric: the VQ-VAEs' and the segmenters' (rows x metrics)."""
    vq = report.mean_table(results.vq.records, index="encoder", columns="metric", value="value")
    seg = report.mean_table(results.seg.records, index="model", columns="metric", value="value")
    return vq, seg


def _seg_gap(seg_mean: pd.DataFrame) -> dict[str, float]:
    """CLIP's decoder minus the random tower's, on every mIoU column (test, and OOD if any)."""
    return {
        metric: seg_mean.loc[CLIP_SEG, metric] - seg_mean.loc[RANDOM_SEG, metric]
        for metric in seg_mean.columns
        if "mIoU" in metric
    }


def numbers(results: DecodingResults) -> dict[str, float]:
    """Every number the prose glues, by its glue key."""
    vq_mean, seg_mean = _means(results)
    loss = vq_mean["train loss ×100"]
    summary, ood = results.data, results.data.ood_dataset
    out = {
        "n_vq_train": summary.split_sizes[summary.vq_dataset][0],
        "n_seg_train": summary.split_sizes[summary.seg_dataset][0],
        "grid_h": summary.grid[0],
        "feat_channels": summary.channels,
        "first_seed": summary.first_seed,
        "vq_psnr_clip": vq_mean.loc[CLIP_VQ, "test PSNR (dB)"],
        "vq_psnr_random": vq_mean.loc[RANDOM_VQ, "test PSNR (dB)"],
        "vq_psnr_own": vq_mean.loc[OWN_VQ, "test PSNR (dB)"],
        "vq_train_clip": loss[CLIP_VQ] / 100,
        "vq_train_random": loss[RANDOM_VQ] / 100,
        "vq_train_own": loss[OWN_VQ] / 100,
        "vq_train_ratio": loss[CLIP_VQ] / loss[OWN_VQ],
    }
    for key, name in (("clip", CLIP_SEG), ("random", RANDOM_SEG), ("unet", UNET)):
        out[f"seg_miou_{key}"] = seg_mean.loc[name, "test mIoU %"]
        out[f"seg_ood_{key}"] = seg_mean.loc[name, "OOD test mIoU %"] if ood else float("nan")
        out[f"seg_val_{key}"] = seg_mean.loc[name, "best val. loss ×100"] / 100
    gap = _seg_gap(seg_mean)
    out["n_seg_classes"] = len(results.seg.classes)
    out["seg_gap_test"] = gap["test mIoU %"]
    out["seg_gap_ood"] = gap.get("OOD test mIoU %", float("nan"))
    return out


def verdicts(results: DecodingResults) -> dict[str, str]:
    """Every computed phrase the prose glues with ``{glue:md}``, by its glue key."""
    vq_mean, seg_mean = _means(results)
    ratio = vq_mean.loc[CLIP_VQ, "train loss ×100"] / vq_mean.loc[OWN_VQ, "train loss ×100"]
    val_loss = seg_mean["best val. loss ×100"]
    # How many runs kept their last step (validation loss still falling when training stopped).
    last = [
        r["value"] >= results.vq.steps for r in results.vq.records if r["metric"] == "chosen step"
    ]
    last += [
        r["value"] >= results.seg.steps for r in results.seg.records if r["metric"] == "chosen step"
    ]
    return {
        "vq_psnr_ranking": ranking(vq_mean["test PSNR (dB)"]),
        "vq_ratio_meaning": (
            "CLIP's features fit the training images less closely than the trained encoder"
            if ratio > 1
            else "CLIP's features fit the training images at least as closely as the trained encoder"
        ),
        "vq_ratio_vs_source": (
            "Our ratio is also above 1, the source's direction"
            if ratio > 1
            else "Our ratio is not above 1: here the source's direction does not reproduce"
        ),
        "vq_pretrain_gap": gap_words(
            results.vq.records, "encoder", "test PSNR (dB)", CLIP_VQ, RANDOM_VQ, "dB"
        ),
        "seg_miou_ranking": ranking(seg_mean["test mIoU %"]),
        "seg_val_vs_unet": "lower than"
        if val_loss[CLIP_SEG] < val_loss[UNET]
        else "not lower than",
        "seg_ood_sentence": _ood_sentence(results.data, seg_mean),
        "seg_pretrain_gap": gap_words(
            results.seg.records, "model", "test mIoU %", CLIP_SEG, RANDOM_SEG, "points"
        ),
        "last_step_share": (
            f"the lowest validation loss came at the last step in {sum(last)} of"
            f" {count_noun(len(last), 'run')}"
            + (
                ", so longer training would likely lower it further"
                if 2 * sum(last) > len(last)
                else ""
            )
        ),
    }


def _ood_sentence(summary: DataSummary, seg_mean: pd.DataFrame) -> str:
    """The segmenters on the out-of-distribution set, or why there is none."""
    ood, seg = summary.ood_dataset, summary.seg_dataset
    gap = _seg_gap(seg_mean)
    if not ood:
        return (
            "This run sets no out-of-distribution segmentation set (`ood_dataset` is empty), so"
            f" only the test split of `{seg}` is scored; there the CLIP decoder's mIoU minus the"
            f" random tower's is {gap['test mIoU %']:+.1f} points."
        )
    miou = seg_mean["OOD test mIoU %"]
    return (
        f"On the test images of `{ood}` (the same classes, out of distribution for the"
        f" tower), the models trained on `{seg}` reach {miou[CLIP_SEG]:.1f} % (CLIP),"
        f" {miou[RANDOM_SEG]:.1f} % (random tower) and {miou[UNET]:.1f} % (UNet) (ranked:"
        f" {ranking(miou)}). The CLIP decoder's mIoU minus the random tower's is"
        f" {gap['test mIoU %']:+.1f} points on `{seg}` and {gap['OOD test mIoU %']:+.1f} points"
        f" on `{ood}`."
    )


# --- figures -------------------------------------------------------------------------------------


def _image_rows(rows: list[tuple[str, Tensor]], n_show: int) -> matplotlib.figure.Figure:
    """Rows of images, each row named by its first title."""
    cells = [im for _, images in rows for im in to_uint8_images(images)]
    titles = [name if i == 0 else "" for name, images in rows for i in range(len(images))]
    return report.image_grid(cells, titles, ncols=n_show, size=1.1, title_size=7)


def reconstructions_figure(vq: VQResults) -> matplotlib.figure.Figure:
    """Test images (top row) and each VQ-VAE's reconstruction of them (seed 0)."""
    return _image_rows(vq.reconstructions, vq.n_show)


def random_codes_figure(vq: VQResults) -> matplotlib.figure.Figure:
    """What each VQ-VAE's decoder draws from uniformly random code maps."""
    return _image_rows(vq.random_decodes, vq.n_show)


def val_curves_figure(results: DecodingResults) -> matplotlib.figure.Figure:
    """Validation loss during training, mean ± std over seeds: VQ-VAEs left, segmenters right."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    for ax, curves, key, title in (
        (axes[0], results.vq.curves, "encoder", "VQ-VAE: validation loss"),
        (axes[1], results.seg.curves, "model", "Segmentation: validation cross-entropy"),
    ):
        plot_curves(ax, curves, key)
        ax.set(xlabel="training step", ylabel="validation loss", title=title, yscale="log")
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def masks_figure(seg: SegResults) -> matplotlib.figure.Figure:
    """Test images, their exact masks and each model's predicted masks (seed 0)."""
    return label_map_grid(seg.images, seg.masks, seg.classes)


def figures(results: DecodingResults) -> dict[str, matplotlib.figure.Figure]:
    """Every figure of the chapter, by its glue key."""
    return {
        "fig_reconstructions": reconstructions_figure(results.vq),
        "fig_random_codes": random_codes_figure(results.vq),
        "fig_val_curves": val_curves_figure(results),
        "fig_masks": masks_figure(results.seg),
    }
