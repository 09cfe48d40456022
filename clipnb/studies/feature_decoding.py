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
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps
from torch import Tensor, nn
from tqdm.auto import tqdm

from clipnb.core import spatial
from clipnb.core.evaluation import select_on_validation
from clipnb.core.features import image_tensors
from clipnb.core.imagesets import ImageSet, mask_geometry
from clipnb.core.models import ClipBundle
from clipnb.core.utils import atomic_torch_save, cache_dir, file_hash, stable_hash
from clipnb.methods.decoders import codebook_perplexity, miou, psnr, train_decoder, vqvae_loss

__all__ = [
    "PET_TRIMAP_CLASSES",
    "fit_on_validation",
    "label_map_grid",
    "mask_geometry",
    "pixel_tensors",
    "plot_curves",
    "segmentation_scores",
    "segmentation_targets",
    "spatial_feature_cache",
    "to_uint8_images",
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
