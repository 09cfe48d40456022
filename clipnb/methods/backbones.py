"""Image backbones behind one feature interface: CLIP towers, ImageNet models and raw pixels.

Every backbone is returned as a :class:`~clipnb.core.models.ClipBundle` whose ``model.encode_image``
maps a preprocessed batch to a feature vector, so :func:`clipnb.encode_images` (and its feature
cache, keyed on ``bundle.fingerprint``) works unchanged for all of them:

* ``clip`` — the profile's CLIP image tower (:func:`clipnb.methods.backbones.load_model`);
* ``supervised`` — the same tower trained on the world's labels, no language (offline profiles);
* ``random`` — a randomly initialised copy of the profile's CLIP (what pretraining adds);
* ``pixels`` — the raw pixels at ``pixel_size``², centred (a floor every backbone should beat);
* ``resnet50``, ``vit_b_32``, ``convnext_tiny``, ``efficientnet_b0`` — torchvision's ImageNet
  models (``IMAGENET1K_V1`` weights) with their classification layer removed, so the feature is
  the input of that layer, as in the source study.

ImageNet weights load from a local file: ``weights_dir`` or torch's hub cache
(``$TORCH_HOME/hub/checkpoints``). With ``CLIPNB_OFFLINE=1`` a missing file is an error naming the
file to fetch, never a download.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import torch
from torch import nn

from clipnb.core.models import ClipBundle, WeightsNotFoundError, create_model, state_hash
from clipnb.core.offline import offline_requested
from clipnb.core.profiles import check_profile
from clipnb.core.utils import file_hash, stable_hash

__all__ = [
    "BACKBONE_LABELS",
    "TORCHVISION_BACKBONES",
    "PixelTower",
    "TorchvisionTower",
    "backbone_label",
    "load_backbone",
    "pixel_backbone",
    "torchvision_backbone",
    "torchvision_weights_file",
]


@dataclass(frozen=True)
class _TorchvisionSpec:
    arch: str
    head: str  # dotted path of the classification layer replaced by nn.Identity
    dim: int  # feature size after removing it
    label: str


#: torchvision ImageNet backbones of the full profile (IMAGENET1K_V1 = the source's pretrained=True).
TORCHVISION_BACKBONES: dict[str, _TorchvisionSpec] = {
    "resnet50": _TorchvisionSpec("resnet50", "fc", 2048, "ResNet-50 (ImageNet)"),
    "vit_b_32": _TorchvisionSpec("vit_b_32", "heads", 768, "ViT-B/32 (ImageNet)"),
    "convnext_tiny": _TorchvisionSpec(
        "convnext_tiny", "classifier.2", 768, "ConvNeXt-T (ImageNet)"
    ),
    "efficientnet_b0": _TorchvisionSpec(
        "efficientnet_b0", "classifier", 1280, "EfficientNet-B0 (ImageNet)"
    ),
}

#: Display names of the backbones, for tables and figures.
BACKBONE_LABELS: dict[str, str] = {
    "clip": "CLIP",
    "supervised": "supervised tower",
    "random": "random tower",
    "pixels": "raw pixels",
    **{name: spec.label for name, spec in TORCHVISION_BACKBONES.items()},
}

_TOWER_BACKBONES = ("clip", "supervised", "random", "pixels")


def backbone_label(name: str) -> str:
    """The display name of a backbone (the name itself when it has none)."""
    return BACKBONE_LABELS.get(name, name)


# --- raw pixels ----------------------------------------------------------------------------------


class PixelTower(nn.Module):
    """``encode_image`` = the flattened (preprocessed) pixels: no learned parameters.

    It holds one empty, frozen parameter only so that code asking a model for its device works.
    """

    def __init__(self) -> None:
        super().__init__()
        self.device_anchor = nn.Parameter(torch.empty(0), requires_grad=False)

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        return images.flatten(1)

    forward = encode_image


def pixel_backbone(pixel_size: int = 32) -> ClipBundle:
    """Raw pixels as a backbone: resize (shorter side) + centre crop to ``pixel_size``, scale to [-1, 1].

    Features have ``3 · pixel_size²`` dimensions; :func:`clipnb.encode_images` L2-normalises them,
    so distances between images are cosine distances between centred pixel vectors.
    """
    from torchvision import transforms as T

    if pixel_size < 1:
        raise ValueError(f"pixel_size must be >= 1, got {pixel_size}")
    preprocess = T.Compose(
        [
            T.Resize(pixel_size, interpolation=T.InterpolationMode.BICUBIC),
            T.CenterCrop(pixel_size),
            T.ToTensor(),
            T.Normalize((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
        ]
    )
    return _bundle(PixelTower(), preprocess, "pixels", None, {"pixels": pixel_size})


# --- torchvision ImageNet models -----------------------------------------------------------------


class TorchvisionTower(nn.Module):
    """A torchvision classifier without its last layer; ``encode_image`` returns that layer's input."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.visual = net

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        return self.visual(images)

    forward = encode_image


def _default_weights_dir() -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints"


def torchvision_weights_file(name: str, weights_dir: str | os.PathLike | None = None) -> Path:
    """Where the ImageNet weights of backbone ``name`` are expected (torchvision's file name)."""
    from torchvision.models import get_model_weights

    spec = _torchvision_spec(name)
    url = get_model_weights(spec.arch).IMAGENET1K_V1.url
    folder = Path(weights_dir).expanduser() if weights_dir is not None else _default_weights_dir()
    return folder / os.path.basename(urlparse(url).path)


def _torchvision_spec(name: str) -> _TorchvisionSpec:
    if name not in TORCHVISION_BACKBONES:
        raise ValueError(
            f"Unknown torchvision backbone {name!r}. Known: {', '.join(TORCHVISION_BACKBONES)}."
        )
    return TORCHVISION_BACKBONES[name]


def _replace_head(net: nn.Module, dotted: str) -> None:
    *parents, last = dotted.split(".")
    owner = net
    for part in parents:
        owner = owner[int(part)] if part.isdigit() else getattr(owner, part)
    if last.isdigit():
        owner[int(last)] = nn.Identity()
    else:
        setattr(owner, last, nn.Identity())


def torchvision_backbone(
    name: str,
    pretrained: bool = True,
    *,
    weights_dir: str | os.PathLike | None = None,
    seed: int = 0,
) -> ClipBundle:
    """A torchvision ImageNet model as a feature backbone (classification layer removed).

    ``pretrained=True`` loads ``IMAGENET1K_V1`` from ``weights_dir`` (default: torch's hub cache).
    If the file is missing, it is downloaded there unless ``CLIPNB_OFFLINE=1``, in which case a
    :class:`~clipnb.core.models.WeightsNotFoundError` names the file and URL. ``pretrained=False`` gives a
    random initialisation from ``seed`` (tests). Preprocessing is the weights' own (resize, crop
    224, ImageNet normalisation).
    """
    from torchvision.models import get_model, get_model_weights

    spec = _torchvision_spec(name)
    weights = get_model_weights(spec.arch).IMAGENET1K_V1
    path = torchvision_weights_file(name, weights_dir)
    if pretrained and not path.is_file():
        if offline_requested():
            raise WeightsNotFoundError(
                f"{name}: ImageNet weights {path} are missing and clipnb is offline "
                f"(CLIPNB_OFFLINE=1). Download {weights.url} to that path (or pass "
                "weights_dir= pointing at the folder holding it)."
            )
        torch.hub.load_state_dict_from_url(
            weights.url, model_dir=str(path.parent), progress=True, check_hash=True
        )
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        net = get_model(spec.arch, weights=None)
    if pretrained:
        net.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        identity = f"file:{file_hash(path)}"
    else:
        identity = f"random:{state_hash(net)}"
    _replace_head(net, spec.head)
    net.eval()
    return _bundle(
        TorchvisionTower(net),
        weights.transforms(),
        f"torchvision:{spec.arch}",
        str(path) if pretrained else None,
        {"weights": identity, "features": f"input of {spec.head}"},
    )


def _bundle(
    model: nn.Module,
    preprocess: Callable,
    name: str,
    pretrained: str | None,
    identity: dict,
) -> ClipBundle:
    model.eval()
    fingerprint = stable_hash({"name": name, "preprocess": repr(preprocess), **identity})
    return ClipBundle(
        model=model,
        preprocess=preprocess,
        tokenizer=_no_tokenizer,
        name=name,
        pretrained=pretrained,
        fingerprint=fingerprint,
    )


def _no_tokenizer(texts: list[str]) -> torch.Tensor:
    raise TypeError("this backbone is an image model only: it has no text tower or tokenizer")


# --- one entry point -----------------------------------------------------------------------------


def load_backbone(
    name: str,
    profile: str,
    *,
    pixel_size: int = 32,
    weights_dir: str | os.PathLike | None = None,
) -> ClipBundle:
    """Backbone ``name`` for a profile, ready for :func:`clipnb.encode_images`.

    ``clip``/``supervised``/``random`` are the profile's CLIP tower, its label-supervised twin
    (offline profiles only) and a random copy; ``pixels`` the raw pixels; torchvision names the
    ImageNet models (any profile, but only ``full`` is expected to have their weights).
    """

    check_profile(profile)
    if name == "clip":
        return load_model(profile)
    if name == "supervised":
        if profile == "full":
            raise ValueError(
                "The supervised tower exists for the offline profiles only; in the full profile use "
                f"the ImageNet backbones ({', '.join(TORCHVISION_BACKBONES)})."
            )
        from clipnb.methods.pretrain import load_supervised

        return load_supervised(profile)
    if name == "random":
        if profile == "full":
            with torch.random.fork_rng():
                torch.manual_seed(0)
                return create_model(FULL_MODEL[0], None)
        from clipnb.methods.pretrain import random_tower

        return random_tower(profile)
    if name == "pixels":
        return pixel_backbone(pixel_size)
    if name in TORCHVISION_BACKBONES:
        return torchvision_backbone(name, weights_dir=weights_dir)
    known = [*_TOWER_BACKBONES, *TORCHVISION_BACKBONES]
    raise ValueError(f"Unknown backbone {name!r}. Known: {', '.join(known)}.")


#: Full-profile default: OpenAI weights need QuickGELU (plain ViT-B-32 only warns and scores lower).
FULL_MODEL = ("ViT-B-32-quickgelu", "openai")


def load_model(profile: str, name: str = "", pretrained: str = "") -> ClipBundle:
    """The CLIP model a profile runs on; ``name``/``pretrained`` override it (any open_clip model)."""
    check_profile(profile)
    if name:
        return create_model(name, pretrained or None)
    if profile == "full":
        return create_model(*FULL_MODEL)
    from clipnb.methods.pretrain import load_pretrained

    return load_pretrained(profile)
