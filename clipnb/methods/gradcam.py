"""Grad-CAM saliency maps for open_clip CLIP models, built on pytorch-grad-cam.

The pieces compose the way pytorch-grad-cam's own examples do:

* :class:`ClipClassifier` turns a CLIP image tower plus a fixed matrix of class text embeddings
  into an ordinary ``images -> scores[B, C]`` classifier, so pytorch-grad-cam targets such as
  ``ClassifierOutputTarget`` apply unchanged;
* :func:`target_layers_for` and :func:`reshape_transform_for` pick the layer to explain and
  turn ViT token activations into a spatial grid;
* :class:`ClipGradCAM` wires these together in a context manager that releases its hooks and
  leaves the model exactly as it found it (parameters, ``requires_grad`` flags, ``.grad``,
  train/eval mode);
* :func:`cam_mass_in_mask` and :func:`overlay` score and draw the resulting maps.

Example::

    with ClipGradCAM(model, text_features) as cam:
        maps = cam(images, classes=[3, 7])  # np.ndarray [2, H, W] in [0, 1]
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence

import matplotlib
import numpy as np
import pytorch_grad_cam.score_cam
import torch
import torch.nn.functional as F
from open_clip.modified_resnet import ModifiedResNet
from open_clip.transformer import VisionTransformer
from pytorch_grad_cam import GradCAM
from pytorch_grad_cam.base_cam import BaseCAM
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

from clipnb.methods.saliency import CamSetting, layer_module

__all__ = [
    "ClipClassifier",
    "ClipGradCAM",
    "ViTReshapeTransform",
    "cam_mass_in_mask",
    "clip_cams",
    "overlay",
    "reshape_transform_for",
    "target_layers_for",
]

LogitFn = Callable[[torch.Tensor], torch.Tensor]

_SUPPORTED_TOWERS = (
    "open_clip.transformer.VisionTransformer (ViT) or "
    "open_clip.modified_resnet.ModifiedResNet (RN50 and friends)"
)


# --------------------------------------------------------------------------------------------
# Classifier head
# --------------------------------------------------------------------------------------------


class ClipClassifier(torch.nn.Module):
    """A CLIP image tower with a fixed zero-shot head: ``images -> scores [B, C]``.

    By default ``forward`` returns *cosine similarities*
    ``normalize(model.encode_image(images)) @ text_features.T``. They are deliberately **not**
    multiplied by ``model.logit_scale.exp()``: the score of class ``c`` is exactly the cosine
    similarity between the image and the class-``c`` text embedding (the usual zero-shot logit
    divided by the logit scale). Grad-CAM is invariant to this positive scale anyway.

    Args:
        model: an open_clip ``CLIP`` / ``CustomTextCLIP`` (anything with ``encode_image``).
        text_features: class text embeddings ``[C, D]``. They are L2-normalised here (a no-op for
            already normalised rows) and stored as a non-persistent buffer. May be ``None`` only
            when ``logit_fn`` is given.
        logit_fn: optional replacement head. It receives the **L2-normalised** image embedding
            ``[B, D]`` and must return logits ``[B, C]`` (e.g. Tip-Adapter's cache + zero-shot
            logits). When given, ``text_features`` is not used by ``forward``.
    """

    text_features: torch.Tensor | None

    def __init__(
        self,
        model: torch.nn.Module,
        text_features: torch.Tensor | None,
        logit_fn: LogitFn | None = None,
        scale: float = 1.0,
    ) -> None:
        super().__init__()
        if not callable(getattr(model, "encode_image", None)):
            raise ValueError(
                "ClipClassifier needs an open_clip model with an `encode_image` method "
                f"(e.g. from open_clip.create_model); got {type(model).__name__}."
            )
        if logit_fn is not None and not callable(logit_fn):
            raise ValueError("logit_fn must be a callable image_features[B, D] -> logits[B, C].")
        if text_features is None:
            if logit_fn is None:
                raise ValueError(
                    "Pass text_features [C, D] (class text embeddings) or a logit_fn; got neither."
                )
            feats = None
        else:
            if not isinstance(text_features, torch.Tensor) or text_features.ndim != 2:
                shape = getattr(text_features, "shape", None)
                raise ValueError(
                    f"text_features must be a 2-D tensor [num_classes, embed_dim]; got shape {shape}. "
                    "Stack one embedding per class, e.g. torch.stack(per_class_embeddings)."
                )
            if text_features.shape[0] == 0:
                raise ValueError("text_features is empty: pass at least one class embedding.")
            norms = text_features.detach().float().norm(dim=-1)
            if not bool(torch.isfinite(norms).all()) or bool((norms == 0).any()):
                raise ValueError(
                    "text_features has zero or non-finite rows; recompute the class embeddings "
                    "(model.encode_text) before building the classifier."
                )
            feats = F.normalize(text_features.detach().float(), dim=-1)
            try:
                device = next(model.parameters()).device
            except StopIteration:
                device = feats.device
            feats = feats.to(device)
        if not scale > 0:
            raise ValueError(f"scale must be positive; got {scale}.")
        self.model = model
        self.logit_fn = logit_fn
        self.scale = float(scale)
        self.register_buffer("text_features", feats, persistent=False)

    @property
    def num_classes(self) -> int | None:
        """Number of classes of the cosine head (``None`` when only ``logit_fn`` is known)."""
        return None if self.text_features is None else int(self.text_features.shape[0])

    def image_features(self, images: torch.Tensor) -> torch.Tensor:
        """L2-normalised image embeddings ``[B, D]``."""
        feats = self.model.encode_image(images)
        if isinstance(feats, tuple):  # towers built with output_tokens=True return (pooled, tokens)
            feats = feats[0]
        return F.normalize(feats, dim=-1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Scores ``[B, C]``: cosine similarities, or ``logit_fn(image_features)`` if set."""
        feats = self.image_features(images)
        if self.logit_fn is not None:
            logits = self.logit_fn(feats)
            if not isinstance(logits, torch.Tensor) or logits.ndim != 2:
                raise ValueError(
                    "logit_fn must return a 2-D tensor [batch, num_classes]; got "
                    f"{getattr(logits, 'shape', type(logits).__name__)}."
                )
            if logits.shape[0] != feats.shape[0]:
                raise ValueError(
                    f"logit_fn returned {logits.shape[0]} rows for a batch of {feats.shape[0]} "
                    "images; it must return one row of logits per image."
                )
            return logits
        assert self.text_features is not None  # guaranteed by __init__
        if feats.shape[-1] != self.text_features.shape[-1]:
            raise ValueError(
                f"text_features have dimension {self.text_features.shape[-1]} but the image "
                f"embedding has {feats.shape[-1]}: encode the class prompts with the same model."
            )
        return self.scale * (feats @ self.text_features.to(feats.dtype).T)


# --------------------------------------------------------------------------------------------
# Target layers and reshape transforms
# --------------------------------------------------------------------------------------------


def _visual_tower(model: torch.nn.Module) -> torch.nn.Module:
    visual = getattr(model, "visual", None)
    if isinstance(visual, VisionTransformer | ModifiedResNet):
        return visual
    got = type(visual).__name__ if visual is not None else f"{type(model).__name__} without .visual"
    raise ValueError(
        f"Unsupported image tower {got}: Grad-CAM here supports model.visual being "
        f"{_SUPPORTED_TOWERS}. For other towers build pytorch_grad_cam objects by hand."
    )


def target_layers_for(model: torch.nn.Module, layer: str | None = None) -> list[torch.nn.Module]:
    """The layer(s) Grad-CAM should explain for an open_clip model.

    ``layer`` names a block of :func:`clipnb.methods.saliency.cam_layers` (``"block 3"``, ``"layer4"``;
    ``""`` = the top one). Without it, pytorch-grad-cam's usual choice for ViTs: the first
    LayerNorm of the last residual block (``resblocks[-1].ln_1``), whose output still holds one
    token per patch; for ModifiedResNet the last bottleneck of ``layer4``.
    Raises ValueError for any other image tower.
    """
    visual = _visual_tower(model)
    if layer is not None:
        return [layer_module(model, layer)]
    if isinstance(visual, VisionTransformer):
        return [visual.transformer.resblocks[-1].ln_1]
    return [visual.layer4[-1]]


class ViTReshapeTransform:
    """Turn ViT token activations into a spatial map ``[B, D, gh, gw]``.

    Accepts batch-first ``[B, L, D]`` or sequence-first ``[L, B, D]`` tensors, where
    ``L = prefix + gh * gw``; the prefix tokens (class token, any register tokens) come first and
    are dropped. ``batch_first=None`` infers the layout from which axis can hold the patch tokens
    (ambiguous shapes are treated as batch-first, open_clip's default since 2.x).
    """

    def __init__(self, grid_size: tuple[int, int], batch_first: bool | None = True) -> None:
        gh, gw = (int(g) for g in grid_size)
        if gh <= 0 or gw <= 0:
            raise ValueError(f"grid_size must be two positive ints; got {grid_size}.")
        self.grid_size = (gh, gw)
        self.batch_first = batch_first

    def _is_batch_first(self, tensor: torch.Tensor) -> bool:
        if self.batch_first is not None:
            return self.batch_first
        n = self.grid_size[0] * self.grid_size[1]
        fits_1 = tensor.shape[1] >= n
        fits_0 = tensor.shape[0] >= n
        return fits_1 or not fits_0

    def __call__(self, tensor: torch.Tensor) -> torch.Tensor:
        if tensor.ndim != 3:
            raise ValueError(
                f"ViT activations must be 3-D ([B, L, D] or [L, B, D]); got shape {tuple(tensor.shape)}."
            )
        if not self._is_batch_first(tensor):
            tensor = tensor.transpose(0, 1)
        gh, gw = self.grid_size
        batch, length, dim = tensor.shape
        if length < gh * gw:
            raise ValueError(
                f"Got {length} tokens but the patch grid {gh}x{gw} needs {gh * gw}: the input "
                "image size must match model.visual.image_size."
            )
        patches = tensor[:, length - gh * gw :, :]
        return patches.reshape(batch, gh, gw, dim).permute(0, 3, 1, 2)

    def __repr__(self) -> str:
        return f"ViTReshapeTransform(grid_size={self.grid_size}, batch_first={self.batch_first})"


def reshape_transform_for(model: torch.nn.Module) -> Callable[[torch.Tensor], torch.Tensor] | None:
    """Reshape transform for :func:`target_layers_for`'s layer: a ViTReshapeTransform, or None.

    The grid comes from ``model.visual.grid_size`` and the token layout from
    ``model.visual.transformer.batch_first`` (open_clip 3.x: batch-first; inferred if absent).
    ResNet activations are already ``[B, C, h, w]``, so ResNets get ``None``.
    """
    visual = _visual_tower(model)
    if isinstance(visual, VisionTransformer):
        batch_first = getattr(visual.transformer, "batch_first", None)
        return ViTReshapeTransform(tuple(visual.grid_size), batch_first=batch_first)
    return None


def _expected_image_size(model: torch.nn.Module) -> tuple[int, int] | None:
    size = getattr(getattr(model, "visual", None), "image_size", None)
    if size is None:
        return None
    if isinstance(size, int):
        return (size, size)
    return (int(size[0]), int(size[1]))


# --------------------------------------------------------------------------------------------
# Model state bookkeeping
# --------------------------------------------------------------------------------------------


@contextlib.contextmanager
def _preserve_state(module: torch.nn.Module) -> Iterator[None]:
    """Restore ``requires_grad``, ``.grad``, train/eval modes and grad checkpointing on exit."""
    params = list(module.parameters())
    saved_flags = [p.requires_grad for p in params]
    saved_grads = [p.grad for p in params]
    saved_modes = [(m, m.training) for m in module.modules()]
    saved_ckpt = [
        (m, m.grad_checkpointing) for m in module.modules() if hasattr(m, "grad_checkpointing")
    ]
    try:
        yield
    finally:
        for p, flag, grad in zip(params, saved_flags, saved_grads, strict=True):
            p.requires_grad_(flag)
            p.grad = grad
        for m, training in saved_modes:
            m.training = training
        for m, ckpt in saved_ckpt:
            m.grad_checkpointing = ckpt


# --------------------------------------------------------------------------------------------
# Grad-CAM
# --------------------------------------------------------------------------------------------


class ClipGradCAM:
    """Grad-CAM (or any pytorch-grad-cam method) for an open_clip model's zero-shot head.

    Use as a context manager (or call :meth:`close`) so the forward hooks that pytorch-grad-cam
    registers on the target layer are removed afterwards::

        with ClipGradCAM(model, text_features) as cam:
            maps = cam(images, classes)  # [B, H, W], float32 in [0, 1]

    During a call every parameter is temporarily frozen and the *input* is made to require grad,
    so gradients reach the target activations even when the model is fully frozen, and no
    ``.grad`` is accumulated on the weights. Parameters, ``requires_grad`` flags, existing
    ``.grad`` tensors, train/eval modes and grad checkpointing are all restored afterwards.

    Args:
        model: open_clip ``CLIP`` / ``CustomTextCLIP`` with a ViT or ModifiedResNet image tower.
        text_features: class text embeddings ``[C, D]`` (see :class:`ClipClassifier`).
        method: a pytorch-grad-cam CAM class (``GradCAM``, ``HiResCAM``, ``GradCAMPlusPlus``...).
        logit_fn: optional head on the normalised image embedding (see :class:`ClipClassifier`).
        layer: the block to explain (see :func:`target_layers_for`).
    """

    def __init__(
        self,
        model: torch.nn.Module,
        text_features: torch.Tensor | None,
        method: type[BaseCAM] = GradCAM,
        logit_fn: LogitFn | None = None,
        layer: str | None = None,
        scale: float = 1.0,
    ) -> None:
        if not (isinstance(method, type) and issubclass(method, BaseCAM)):
            raise ValueError(
                "method must be a pytorch-grad-cam CAM class such as pytorch_grad_cam.GradCAM "
                f"(the class itself, not an instance); got {method!r}."
            )
        self.model = model
        self.target_layers = target_layers_for(model, layer)
        self.reshape_transform = reshape_transform_for(model)
        self.classifier = ClipClassifier(model, text_features, logit_fn=logit_fn, scale=scale)
        self.image_size = _expected_image_size(model)
        with _preserve_state(self.classifier):  # BaseCAM.__init__ switches the model to eval()
            self.cam = method(
                model=self.classifier,
                target_layers=self.target_layers,
                reshape_transform=self.reshape_transform,
            )
        self.scores: torch.Tensor | None = None
        self._closed = False

    def _check_inputs(self, images: torch.Tensor, classes: Sequence[int] | int) -> list[int]:
        if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(
                "images must be a preprocessed float tensor [B, 3, H, W]; got "
                f"{getattr(images, 'shape', type(images).__name__)}. Add a batch axis with "
                "images.unsqueeze(0) for a single image."
            )
        if not images.is_floating_point():
            raise ValueError("images must be floating point: apply the model's preprocess first.")
        if self.image_size is not None and tuple(images.shape[-2:]) != self.image_size:
            raise ValueError(
                f"images are {tuple(images.shape[-2:])} but the model expects {self.image_size}: "
                "resize with the model's preprocess transform."
            )
        batch = images.shape[0]
        if isinstance(classes, int | np.integer):
            class_list = [int(classes)] * batch
        else:
            class_list = [int(c) for c in classes]
        if len(class_list) != batch:
            raise ValueError(
                f"Got {len(class_list)} classes for {batch} images: pass one class index per image "
                "(or a single int for all)."
            )
        n = self.classifier.num_classes
        for c in class_list:
            if c < 0 or (n is not None and c >= n):
                raise ValueError(
                    f"class index {c} is out of range: use 0 <= class < {n if n is not None else 'C'}."
                )
        return class_list

    def __call__(self, images: torch.Tensor, classes: Sequence[int] | int) -> np.ndarray:
        """CAMs ``[B, H, W]`` (float32, each map min-max scaled to [0, 1]) for ``classes[b]``.

        The classifier scores of that same forward pass are kept in ``self.scores`` ``[B, C]``.
        """
        if self._closed:
            raise ValueError("This ClipGradCAM was closed; create a new one to compute more CAMs.")
        class_list = self._check_inputs(images, classes)
        targets = [ClassifierOutputTarget(c) for c in class_list]
        device = self.cam.device
        inputs = images.detach().to(device).clone().requires_grad_(True)
        with _preserve_state(self.classifier), torch.enable_grad():
            for p in self.classifier.parameters():
                p.requires_grad_(False)
            for m in self.classifier.modules():
                if hasattr(m, "grad_checkpointing"):  # recomputation would re-fire the hooks
                    m.grad_checkpointing = False
            self.classifier.eval()
            try:
                with _quiet_score_cam():
                    maps = self.cam(input_tensor=inputs, targets=targets)
            except IndexError as err:  # a logit_fn with fewer classes than requested
                outputs = getattr(self.cam, "outputs", None)
                if outputs is not None and max(class_list) >= outputs.shape[-1]:
                    raise ValueError(
                        f"class index {max(class_list)} is out of range for logit_fn's "
                        f"{outputs.shape[-1]} classes."
                    ) from err
                raise
            finally:
                outputs = getattr(self.cam, "outputs", None)
                self.scores = None if outputs is None else outputs.detach().clone()
                self.cam.outputs = None
                self.cam.activations_and_grads.clear()
        return np.clip(np.asarray(maps, dtype=np.float32), 0.0, 1.0)

    def close(self) -> None:
        """Remove the forward hooks from the target layers (idempotent)."""
        if not self._closed:
            self.cam.activations_and_grads.release()
            self._closed = True

    def __enter__(self) -> ClipGradCAM:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        self.close()

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self.close()


@contextlib.contextmanager
def _quiet_score_cam() -> Iterator[None]:
    """pytorch-grad-cam's ScoreCAM draws a tqdm bar per image; the caller's bar is enough."""
    module = pytorch_grad_cam.score_cam
    saved = module.tqdm

    class _Silent:
        @staticmethod
        def tqdm(iterable, *args, **kwargs):
            return iterable

    module.tqdm = _Silent
    try:
        yield
    finally:
        module.tqdm = saved


def clip_cams(
    model: torch.nn.Module,
    class_features: torch.Tensor | None,
    setting: CamSetting,
    pixels: torch.Tensor,
    classes: Sequence[int],
    logit_fn: LogitFn | None = None,
    batch_size: int = 64,
) -> np.ndarray:
    """Maps ``[N, H, W]`` of ``setting`` (method and layer) for ``classes[i]`` on ``pixels[i]``:
    the one way every chapter computes its CAMs. Without a ``logit_fn`` the maps explain the
    zero-shot logits (cosines times the model's logit scale)."""
    classes = [int(c) for c in classes]
    scale = getattr(model, "logit_scale", None)
    scale = float(scale.detach().exp()) if isinstance(scale, torch.Tensor) else 1.0
    out = []
    with ClipGradCAM(
        model,
        class_features,
        setting.cam_class,
        logit_fn=logit_fn,
        layer=setting.layer,
        scale=scale,
    ) as cam:
        if isinstance(cam.cam, pytorch_grad_cam.ScoreCAM):  # all channels in one forward pass
            cam.cam.batch_size = 256
        for i in range(0, len(pixels), batch_size):
            out.append(cam(pixels[i : i + batch_size], classes[i : i + batch_size]))
    return np.concatenate(out)


# --------------------------------------------------------------------------------------------
# Scoring and drawing
# --------------------------------------------------------------------------------------------


def _as_bool_mask(mask: np.ndarray) -> np.ndarray:
    mask = np.asarray(mask)
    if mask.dtype == bool:
        return mask
    if np.issubdtype(mask.dtype, np.number) and np.isin(mask, (0, 1)).all():
        return mask.astype(bool)
    raise ValueError(
        f"mask must be boolean (or contain only 0/1); got dtype {mask.dtype}. "
        "Threshold it first, e.g. mask > 0.5."
    )


def cam_mass_in_mask(cam: np.ndarray, mask: np.ndarray) -> np.ndarray | float:
    """Fraction of the total CAM mass that falls inside ``mask``.

    ``cam`` is ``[H, W]`` or ``[B, H, W]`` with non-negative values; ``mask`` is boolean with the
    same shape (a single ``[H, W]`` mask is broadcast over the batch). Returns a float for one map
    and a float64 array ``[B]`` for a batch. A map that is zero outside the mask scores 1.0, one
    that is zero inside scores 0.0. A map that is zero everywhere has no mass to distribute and
    scores ``nan`` (use ``np.nanmean`` to aggregate).
    """
    cam = np.asarray(cam, dtype=np.float64)
    bool_mask = _as_bool_mask(mask)
    if cam.ndim not in (2, 3):
        raise ValueError(f"cam must be [H, W] or [B, H, W]; got shape {cam.shape}.")
    if bool_mask.shape != cam.shape and bool_mask.shape != cam.shape[-2:]:
        raise ValueError(
            f"mask shape {bool_mask.shape} does not match cam shape {cam.shape}: resize the mask "
            "to the CAM's H x W (the CAM has the input image's size)."
        )
    if not np.isfinite(cam).all():
        raise ValueError("cam contains nan/inf values; compute it again or np.nan_to_num it.")
    if (cam < 0).any():
        raise ValueError(
            "cam must be non-negative (a saliency mass); clip it with np.maximum(cam, 0)."
        )
    total = cam.sum(axis=(-2, -1))
    inside = np.where(bool_mask, cam, 0.0).sum(axis=(-2, -1))
    with np.errstate(invalid="ignore", divide="ignore"):
        frac = np.where(total > 0, inside / np.where(total > 0, total, 1.0), np.nan)
    if cam.ndim == 2:
        return float(frac)
    return frac.astype(np.float64)


def overlay(image_uint8: np.ndarray, cam: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """Blend a "jet" heatmap of ``cam`` ([H, W] in [0, 1]) over an RGB uint8 image [H, W, 3].

    Returns an RGB uint8 image ``(1 - alpha) * image + alpha * jet(cam)``.
    """
    image = np.asarray(image_uint8)
    cam = np.asarray(cam)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[-1] != 3:
        raise ValueError(
            f"image_uint8 must be an RGB uint8 array [H, W, 3]; got {image.dtype} {image.shape}. "
            "Convert with np.asarray(pil_image.convert('RGB'))."
        )
    if cam.shape != image.shape[:2]:
        raise ValueError(
            f"cam shape {cam.shape} must equal the image's H x W {image.shape[:2]}: compute the "
            "CAM on the same (preprocessed) image size or resize the image."
        )
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1]; got {alpha}.")
    if not np.isfinite(cam).all() or cam.min() < 0.0 or cam.max() > 1.0:
        raise ValueError("cam values must be finite and in [0, 1]: min-max scale it first.")
    heat = matplotlib.colormaps["jet"](cam.astype(np.float64))[..., :3] * 255.0
    blended = (1.0 - alpha) * image.astype(np.float64) + alpha * heat
    return np.clip(np.rint(blended), 0, 255).astype(np.uint8)
