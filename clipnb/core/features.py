"""Encode images and prompts once, L2-normalised, cached on disk.

The cache key holds everything that changes the features: the model fingerprint (architecture,
weights tag or checkpoint hash, quick-gelu, preprocessing) and the data fingerprint (dataset,
split, sample indices). A changed checkpoint therefore never reuses stale features.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import open_clip
import torch
import torch.nn.functional as F
from open_clip.transformer import text_global_pool
from open_clip.zero_shot_metadata import OPENAI_IMAGENET_TEMPLATES
from torch import nn
from tqdm.auto import tqdm

from clipnb.core.imagesets import DatasetSplits, ImageSet
from clipnb.core.models import ClipBundle
from clipnb.core.utils import array_hash, atomic_torch_save, cache_dir, stable_hash

#: The single prompt of the source documents.
SINGLE_TEMPLATE: tuple[str, ...] = ("a photo of a {}.",)
#: CLIP's 80 ImageNet prompt templates (from open_clip's metadata), as format strings.
ENSEMBLE_TEMPLATES: tuple[str, ...] = tuple(t("{}") for t in OPENAI_IMAGENET_TEMPLATES)


def _feature_path(kind: str, key: str) -> Path:
    return cache_dir() / "features" / kind / f"{key}.pt"


def image_tensors(
    bundle: ClipBundle, images: ImageSet, indices: np.ndarray | None = None
) -> torch.Tensor:
    """The preprocessed pixel tensor ``[N,3,H,W]`` of (some rows of) a set."""
    rows = range(len(images)) if indices is None else indices
    if not len(rows):
        raise ValueError(
            f"{images.name}: no images to preprocess. An empty split means the dataset has too "
            "few images per class for its train/val/test fractions; add images or pick another."
        )
    return torch.stack([bundle.preprocess(images.image(int(i))) for i in rows])


def _encode_rows(
    encode: Callable[[torch.Tensor], torch.Tensor],
    bundle: ClipBundle,
    images: ImageSet,
    rows: np.ndarray,
    batch_size: int,
    desc: str,
) -> torch.Tensor:
    out = []
    device = next(bundle.model.parameters()).device
    # inference_mode for speed; the result is cloned outside it so that it can feed training.
    with torch.inference_mode():
        for start in tqdm(
            range(0, len(rows), batch_size), desc=desc, leave=False, disable=len(rows) <= batch_size
        ):
            batch = image_tensors(bundle, images, rows[start : start + batch_size]).to(device)
            out.append(F.normalize(encode(batch).float(), dim=-1).cpu())
    if not out:
        raise ValueError(f"{images.name}: no images to encode")
    return torch.cat(out).clone()


def encode_images(
    bundle: ClipBundle,
    images: ImageSet,
    *,
    batch_size: int = 256,
    cache: bool = True,
    encode: Callable[[torch.Tensor], torch.Tensor] | None = None,
    tag: str = "image",
) -> torch.Tensor:
    """L2-normalised image embeddings ``[N,D]`` of a set, from the cache when possible.

    A subset reads its rows from the root set's cached features when those exist, so few-shot
    draws never re-encode an image. ``encode`` swaps in another image function (e.g. a baseline
    tower) and ``tag`` names it in the cache key. With ``cache=False`` (finetuned models) nothing
    is read or written.
    """
    encode = encode or bundle.model.encode_image
    bundle.model.eval()
    if not cache:
        return _encode_rows(
            encode, bundle, images, np.arange(len(images)), batch_size, f"encode {images.name}"
        )
    root = images.root or images
    root_path = _feature_path(tag, stable_hash([bundle.fingerprint, root.fingerprint, tag]))
    if images.root is not None:
        if root_path.exists():
            return torch.load(root_path)[torch.as_tensor(images.indices)]
        key = stable_hash([bundle.fingerprint, root.fingerprint, array_hash(images.indices), tag])
        path = _feature_path(tag, key)
    else:
        path = root_path
    if path.exists():
        return torch.load(path)
    feats = _encode_rows(
        encode, bundle, images, np.arange(len(images)), batch_size, f"encode {images.name}"
    )
    atomic_torch_save(feats, path)
    return feats


def text_features(model: nn.Module, tokens: torch.Tensor) -> torch.Tensor:
    """``model.encode_text(tokens)`` (unnormalised), cut to the batch's longest prompt when exact.

    CLIP's text tower is causal and reads its output at the end-of-text token (the highest id),
    so the padding after that token never reaches the output. Cutting the 77-token context to the
    longest prompt of the batch (about 15 tokens for the 80 prompt templates) gives the same
    embeddings at a fraction of the cost. Models of another kind run their own ``encode_text``.
    """
    if not (
        isinstance(model, open_clip.CLIP)
        and model.attn_mask is not None
        and model.text_pool_type == "argmax"
    ):
        return model.encode_text(tokens)
    n = int(tokens.argmax(dim=-1).max()) + 1
    tokens = tokens[:, :n]
    cast = model.transformer.get_cast_dtype()
    x = model.token_embedding(tokens).to(cast) + model.positional_embedding[:n].to(cast)
    x = model.ln_final(model.transformer(x, attn_mask=model.attn_mask[:n, :n]))
    x = text_global_pool(x, tokens, "argmax")
    if isinstance(model.text_projection, nn.Linear):
        return model.text_projection(x)
    return x if model.text_projection is None else x @ model.text_projection


def encode_texts(
    bundle: ClipBundle, texts: Sequence[str], *, cache: bool = True, batch_size: int = 256
) -> torch.Tensor:
    """L2-normalised text embeddings ``[T,D]``, in batches, cached on the model fingerprint.

    Prompts are encoded shortest first, so each batch is cut to a similar length (see
    :func:`text_features`); a prompt ensemble over many classes shows a progress bar.
    """
    texts = list(texts)
    path = _feature_path("text", stable_hash([bundle.fingerprint, texts]))
    if cache and path.exists():
        return torch.load(path)
    if not texts:
        raise ValueError("no texts to encode")
    device = next(bundle.model.parameters()).device
    bundle.model.eval()
    tokens = bundle.tokenize(texts)
    order = torch.argsort(tokens.argmax(dim=-1), stable=True)
    feats = torch.empty(0)
    with torch.inference_mode():
        for start in tqdm(
            range(0, len(texts), batch_size),
            desc=f"encode {len(texts)} prompts",
            leave=False,
            disable=len(texts) <= batch_size,
        ):
            rows = order[start : start + batch_size]
            out = F.normalize(text_features(bundle.model, tokens[rows].to(device)).float(), dim=-1)
            if not len(feats):
                feats = torch.empty(len(texts), out.shape[1])
            feats[rows] = out.cpu()
    feats = feats.clone()
    if cache:
        atomic_torch_save(feats, path)
    return feats


def prompts(class_names: Sequence[str], templates: Sequence[str]) -> list[str]:
    """Every template filled with every class name, class-major: ``[c0t0, c0t1, ..., c1t0, ...]``."""
    return [t.format(c) for c in class_names for t in templates]


def class_embeddings(
    bundle: ClipBundle,
    class_names: Sequence[str],
    templates: Sequence[str] = SINGLE_TEMPLATE,
    *,
    cache: bool = True,
) -> torch.Tensor:
    """The zero-shot classifier ``[C,D]``: per class, the normalised mean of its normalised prompt embeddings."""
    feats = encode_texts(bundle, prompts(class_names, templates), cache=cache)
    per_class = feats.view(len(class_names), len(templates), -1)
    return F.normalize(per_class.mean(dim=1), dim=-1)


@dataclass
class SplitFeatures:
    """Normalised image features and labels of one split."""

    x: torch.Tensor
    y: torch.Tensor
    class_names: list[str]

    def __len__(self) -> int:
        return len(self.y)


def encode_dataset(bundle: ClipBundle, data: DatasetSplits, **kwargs) -> dict[str, SplitFeatures]:
    """Features of a dataset's train, val and test splits (each from the cache when possible)."""
    return {
        split: SplitFeatures(
            encode_images(bundle, data.split(split), **kwargs),
            torch.as_tensor(data.split(split).labels),
            data.class_names,
        )
        for split in ("train", "val", "test")
    }
