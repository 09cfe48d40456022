"""Frozen spatial (pre-pooling) features from an open_clip image tower.

``spatial_features`` returns a feature map ``[B, C, gh, gw]``:

* ViT (``open_clip.transformer.VisionTransformer``): the tokens leaving the last transformer
  block (before ``ln_post``, pooling and projection), prefix tokens (class token) dropped,
  reshaped to ``visual.grid_size``. They are captured with a forward hook on
  ``visual.transformer``; open_clip itself is not modified.
* ModifiedResNet (``open_clip.modified_resnet.ModifiedResNet``): the output of ``layer4``, i.e.
  the tower's own stem and residual stages run in order, without the attention pool.

The tower runs in eval mode under ``torch.no_grad()``; its weights, buffers (BatchNorm running
statistics) and train/eval flag are left exactly as they were.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["spatial_features", "tower_kind"]


def tower_kind(visual: nn.Module) -> str:
    """Return ``"vit"`` or ``"resnet"`` for an open_clip image tower, else raise ValueError."""
    from open_clip.modified_resnet import ModifiedResNet
    from open_clip.transformer import VisionTransformer

    if isinstance(visual, VisionTransformer):
        return "vit"
    if isinstance(visual, ModifiedResNet):
        return "resnet"
    raise ValueError(
        f"spatial_features supports open_clip VisionTransformer and ModifiedResNet towers, "
        f"got {type(visual).__name__}; pass `model.visual` of a ViT-* or RN* open_clip model."
    )


def _to_batch_first(tokens: Tensor, tower_input: Tensor, batch: int) -> Tensor:
    """Return ``tokens`` as ``[B, L, D]`` whether the transformer ran batch- or sequence-first.

    The layout is read from the shapes; if ``B == L`` makes them ambiguous, it is read from the
    transformer's input, where the class token is the same vector for every image (so it is
    constant along the batch axis).
    """
    if tokens.ndim != 3:
        raise ValueError(f"expected transformer tokens of rank 3, got shape {tuple(tokens.shape)}")
    first, second = tokens.shape[0] == batch, tokens.shape[1] == batch
    if first and not second:
        return tokens
    if second and not first:
        return tokens.transpose(0, 1)
    if not (first or second):
        raise ValueError(
            f"transformer output {tuple(tokens.shape)} has no axis of batch size {batch}"
        )
    # Ambiguous (B == L): the class token is identical across images in the input.
    cls_nld = tower_input[:, 0, :]  # batch-first: token 0 of every image
    cls_lnd = tower_input[0, :, :]  # seq-first: token 0 of every image
    nld_const = torch.allclose(cls_nld, cls_nld[:1].expand_as(cls_nld))
    lnd_const = torch.allclose(cls_lnd, cls_lnd[:1].expand_as(cls_lnd))
    if nld_const and not lnd_const:
        return tokens
    if lnd_const and not nld_const:
        return tokens.transpose(0, 1)
    raise ValueError(
        "cannot tell whether the transformer runs batch- or sequence-first (batch size equals "
        f"the token count {batch}); call spatial_features with a different batch_size."
    )


def _vit_tokens(visual: nn.Module, images: Tensor) -> Tensor:
    """Tokens after the last block of ``visual.transformer`` as ``[B, L, D]``."""
    captured: dict[str, Tensor] = {}

    def hook(_module: nn.Module, args: tuple, output: Tensor) -> None:
        captured["input"] = args[0]
        captured["output"] = output[0] if isinstance(output, tuple) else output

    handle = visual.transformer.register_forward_hook(hook)
    try:
        visual(images)
    finally:
        handle.remove()
    if "output" not in captured:
        raise ValueError("visual.transformer was not called by the tower's forward")
    return _to_batch_first(captured["output"], captured["input"], images.shape[0])


def _vit_features(visual: nn.Module, images: Tensor) -> Tensor:
    tokens = _vit_tokens(visual, images)
    gh, gw = visual.grid_size
    n_prefix = tokens.shape[1] - gh * gw
    if n_prefix < 0:
        raise ValueError(
            f"the tower produced {tokens.shape[1]} tokens but its grid is {gh}x{gw}; "
            f"resize images to visual.image_size={visual.image_size}."
        )
    patches = tokens[:, n_prefix:, :]
    return patches.reshape(tokens.shape[0], gh, gw, -1).permute(0, 3, 1, 2).contiguous()


def _resnet_features(visual: nn.Module, images: Tensor) -> Tensor:
    x = visual.stem(images)
    for layer in (visual.layer1, visual.layer2, visual.layer3, visual.layer4):
        x = layer(x)
    return x


def spatial_features(visual: nn.Module, images: Tensor, batch_size: int | None = None) -> Tensor:
    """Frozen pre-pooling feature map ``[B, C, gh, gw]`` of an open_clip image tower.

    ``images`` are ``[B, 3, H, W]`` normalised with the model's mean/std. ``batch_size`` splits
    the forward into chunks (``None``: one pass). The result is float32 on ``images.device``.
    """
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"images must be [B, 3, H, W], got {tuple(images.shape)}")
    if batch_size is not None and batch_size < 1:
        raise ValueError(f"batch_size must be a positive int or None, got {batch_size}")
    kind = tower_kind(visual)
    extract = _vit_features if kind == "vit" else _resnet_features
    param = next(visual.parameters())
    step = batch_size or images.shape[0]
    was_training = visual.training
    visual.eval()
    try:
        with torch.no_grad():
            chunks = [
                extract(visual, chunk.to(device=param.device, dtype=param.dtype))
                for chunk in images.split(step)
            ]
    finally:
        visual.train(was_training)
    return torch.cat(chunks).to(device=images.device, dtype=torch.float32)
