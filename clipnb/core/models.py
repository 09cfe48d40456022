"""Load CLIP models through open_clip: a weights tag, a local checkpoint, or random init.

The project's own configs (``model_configs/*.json``) are registered with open_clip, so the embedded
models are ordinary open_clip models and every study treats them like ``ViT-B-32-quickgelu``.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass

import open_clip
import torch
from torch import nn

from clipnb.core.utils import PACKAGE_DIR, file_hash, stable_hash

MODEL_CONFIG_DIR = PACKAGE_DIR / "model_configs"
open_clip.add_model_config(MODEL_CONFIG_DIR)

#: Models defined by this project (pretrained on the generated world by :mod:`clipnb.methods.pretrain`).
PROJECT_MODELS = tuple(sorted(p.stem for p in MODEL_CONFIG_DIR.glob("*.json")))


class UnknownModelError(ValueError):
    """An architecture name open_clip does not know."""


class WeightsNotFoundError(FileNotFoundError):
    """A weights tag or checkpoint path that cannot be loaded offline."""


@dataclass
class ClipBundle:
    """An open_clip model with its preprocessing and tokenizer.

    ``fingerprint`` identifies everything that changes the features (architecture, weights,
    quick-gelu, preprocessing); caches are keyed on it.
    """

    model: nn.Module
    preprocess: Callable
    tokenizer: Callable
    name: str
    pretrained: str | None
    fingerprint: str

    @property
    def visual(self) -> nn.Module:
        return self.model.visual

    @property
    def image_size(self) -> int:
        size = self.model.visual.image_size
        return int(size[0] if isinstance(size, tuple | list) else size)

    @property
    def logit_scale(self) -> float:
        return float(self.model.logit_scale.exp().item())

    def tokenize(self, texts: list[str]) -> torch.Tensor:
        return self.tokenizer(texts)

    def with_model(self, model: nn.Module, tag: str) -> ClipBundle:
        """``model`` (e.g. a finetuned copy) behind this bundle's preprocessing and tokenizer.

        ``tag`` extends the fingerprint, so caches never mix the two models' features.
        """
        return ClipBundle(
            model=model,
            preprocess=self.preprocess,
            tokenizer=self.tokenizer,
            name=self.name,
            pretrained=self.pretrained,
            fingerprint=f"{self.fingerprint}+{tag}",
        )


def list_models() -> list[str]:
    """Every architecture name open_clip knows, including the project's own."""
    return open_clip.list_models()


def state_hash(model: nn.Module, length: int = 16) -> str:
    """sha256 of a model's state dict (names, shapes and bytes)."""
    digest = hashlib.sha256()
    for key, value in model.state_dict().items():
        digest.update(key.encode())
        digest.update(str(tuple(value.shape)).encode())
        digest.update(value.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:length]


def _weights_identity(model: nn.Module, pretrained: str | None) -> str:
    if pretrained is None:
        # Random init has no file: hash the weights so two inits never share cached features.
        return f"random:{state_hash(model)}"
    if os.path.isfile(pretrained):
        return f"file:{file_hash(pretrained)}"
    return f"tag:{pretrained}"


def create_model(
    name: str,
    pretrained: str | os.PathLike | None = None,
    *,
    device: str | torch.device = "cpu",
    force_quick_gelu: bool = False,
    cache_dir: str | None = None,
) -> ClipBundle:
    """Build an open_clip model by architecture name, in eval mode.

    ``pretrained`` is a weights tag (``"openai"``; the full profile), a path to a local checkpoint
    (the embedded model, or a user's offline copy), or ``None`` for random init (tests).
    """
    known = list_models()
    if name not in known:
        close = [m for m in known if name.lower().split("-")[0] in m.lower()][:12]
        raise UnknownModelError(
            f"Unknown model {name!r}. The project's own models: {', '.join(PROJECT_MODELS)}. "
            f"Similar open_clip names: {', '.join(close) or '(none)'}. "
            "See clipnb.core.models.list_models() for all of them."
        )
    pretrained_str = os.fspath(pretrained) if pretrained is not None else None
    if (
        pretrained_str is not None
        and os.sep in pretrained_str
        and not os.path.isfile(pretrained_str)
    ):
        raise WeightsNotFoundError(
            f"Checkpoint file {pretrained_str!r} does not exist. Pass an existing file, a weights tag "
            f"({', '.join(open_clip.list_pretrained_tags_by_model(name)) or 'none for this model'}), or None."
        )
    try:
        model, _, preprocess = open_clip.create_model_and_transforms(
            name,
            pretrained=pretrained_str,
            device=device,
            force_quick_gelu=force_quick_gelu,
            cache_dir=cache_dir,
        )
    except RuntimeError as err:
        if pretrained_str is None:
            raise
        tags = open_clip.list_pretrained_tags_by_model(name)
        raise WeightsNotFoundError(
            f"Could not load weights {pretrained_str!r} for {name!r}: {err}\n"
            f"Known tags for {name}: {', '.join(tags) or '(none)'}. Offline, a tag loads only from a "
            "warm cache (cache_dir / HF_HUB_CACHE); otherwise download the checkpoint once and pass its "
            "file path as pretrained=."
        ) from err
    model.eval()
    tokenizer = open_clip.get_tokenizer(name)
    quick_gelu = force_quick_gelu or name.endswith("quickgelu")
    fingerprint = stable_hash(
        {
            "name": name,
            "weights": _weights_identity(model, pretrained_str),
            "quick_gelu": quick_gelu,
            "preprocess": repr(preprocess),
        }
    )
    return ClipBundle(
        model=model,
        preprocess=preprocess,
        tokenizer=tokenizer,
        name=name,
        pretrained=pretrained_str,
        fingerprint=fingerprint,
    )


def model_parts(model: nn.Module) -> dict[str, list[nn.Parameter]]:
    """The four parts a study can finetune, each as its list of parameters.

    ``image_encoder``/``text_encoder`` are the towers without their final projection;
    ``image_projection``/``text_projection`` the linear maps into the joint space.
    """
    visual = model.visual
    image_proj = [visual.proj] if getattr(visual, "proj", None) is not None else []
    if not image_proj and hasattr(visual, "attnpool"):
        image_proj = list(visual.attnpool.c_proj.parameters())
    image_proj_ids = {id(p) for p in image_proj}
    image_encoder = [p for p in visual.parameters() if id(p) not in image_proj_ids]

    text_proj = (
        [model.text_projection]
        if isinstance(model.text_projection, nn.Parameter)
        else list(model.text_projection.parameters())
    )
    text_proj_ids = {id(p) for p in text_proj}
    visual_ids = {id(p) for p in visual.parameters()}
    text_encoder = [
        p
        for n, p in model.named_parameters()
        if id(p) not in visual_ids
        and id(p) not in text_proj_ids
        and n != "logit_scale"
        and not n.startswith("logit_bias")
    ]
    return {
        "text_encoder": text_encoder,
        "image_encoder": image_encoder,
        "text_projection": text_proj,
        "image_projection": image_proj,
    }
