"""Finetune one part of CLIP as a zero-shot classifier, with everything else frozen.

The model being trained is CLIP's own zero-shot classifier: logits are the logit scale times the
cosine similarity between image embeddings and the class prompts' text embeddings, and the loss is
cross-entropy over them (or any ``loss_fn`` with the same inputs, e.g. CLIPood's margin metric
softmax). Whatever side is frozen is computed once: with a frozen image side, training runs on
cached image features; with a frozen text side, the class embeddings are encoded once.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from .data import ImageSet
from .evaluation import accuracy
from .features import image_tensors
from .models import ClipBundle, model_parts

PARTS: tuple[str, ...] = ("text_encoder", "image_encoder", "text_projection", "image_projection")
IMAGE_PARTS = ("image_encoder", "image_projection")
TEXT_PARTS = ("text_encoder", "text_projection")

#: ``loss_fn(image_features, text_features, labels, logit_scale)``, features L2-normalised.
LossFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, float], torch.Tensor]


class WeightAverager(Protocol):
    def update(self, model_or_state_dict, step: int): ...
    def state_dict(self) -> dict[str, torch.Tensor]: ...


def cross_entropy_loss(
    image_features: torch.Tensor,
    text_features: torch.Tensor,
    labels: torch.Tensor,
    logit_scale: float,
) -> torch.Tensor:
    """Cross-entropy over CLIP's scaled cosine logits (the plain finetuning objective, 'ERM')."""
    return F.cross_entropy(logit_scale * image_features @ text_features.T, labels)


def set_trainable(model: nn.Module, parts: Sequence[str]) -> list[nn.Parameter]:
    """Freeze every parameter, then unfreeze those of ``parts``; returns the trainable ones."""
    unknown = [p for p in parts if p not in PARTS]
    if unknown:
        raise ValueError(f"Unknown part(s) {unknown}; choose from {', '.join(PARTS)}.")
    groups = model_parts(model)
    for p in model.parameters():
        p.requires_grad_(False)
    trainable = [p for part in parts for p in groups[part]]
    for p in trainable:
        p.requires_grad_(True)
    return trainable


def trainable_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The trainable parameters by name (what a weight average needs to track)."""
    return {n: p.detach() for n, p in model.named_parameters() if p.requires_grad}


@dataclass
class FinetuneResult:
    """A finetuned copy of the model and what happened on the way."""

    bundle: ClipBundle
    parts: tuple[str, ...]
    train_loss: list[float] = field(default_factory=list)
    #: (step, {eval set name: accuracy}) for the raw model and, if averaging, the averaged one
    evals: list[tuple[int, dict[str, float]]] = field(default_factory=list)


class ClipZeroShotModel(nn.Module):
    """CLIP as a classifier over fixed prompts, with cached frozen sides."""

    def __init__(self, model: nn.Module, tokens: torch.Tensor, parts: Sequence[str]) -> None:
        super().__init__()
        self.model = model
        self.tokens = tokens
        self.text_frozen = not any(p in TEXT_PARTS for p in parts)
        self.image_frozen = not any(p in IMAGE_PARTS for p in parts)
        self._text_cache: torch.Tensor | None = None

    def text_features(self) -> torch.Tensor:
        if self.text_frozen:
            if self._text_cache is None:
                with torch.no_grad():
                    self._text_cache = F.normalize(self.model.encode_text(self.tokens), dim=-1)
            return self._text_cache
        return F.normalize(self.model.encode_text(self.tokens), dim=-1)

    def image_features(self, pixels: torch.Tensor) -> torch.Tensor:
        if self.image_frozen:
            with torch.no_grad():
                return F.normalize(self.model.encode_image(pixels), dim=-1)
        return F.normalize(self.model.encode_image(pixels), dim=-1)

    @torch.no_grad()
    def predict_features(self, pixels: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
        out = [
            F.normalize(self.model.encode_image(pixels[i : i + batch_size]), dim=-1)
            for i in range(0, len(pixels), batch_size)
        ]
        return torch.cat(out)


def prompt_texts(class_names: Sequence[str], template: str = "a photo of a {}.") -> list[str]:
    return [template.format(c) for c in class_names]


@torch.no_grad()
def evaluate_pixels(
    model: nn.Module, tokens: torch.Tensor, pixels: torch.Tensor, labels: torch.Tensor
) -> float:
    """Zero-shot accuracy of ``model`` on preprocessed pixels against prompt ``tokens``."""
    was_training = model.training
    model.eval()
    text = F.normalize(model.encode_text(tokens), dim=-1)
    feats = torch.cat(
        [
            F.normalize(model.encode_image(pixels[i : i + 512]), dim=-1)
            for i in range(0, len(pixels), 512)
        ]
    )
    model.train(was_training)
    return accuracy(feats @ text.T, labels)


def finetune(
    bundle: ClipBundle,
    parts: str | Sequence[str],
    train: ImageSet,
    prompts: Sequence[str],
    *,
    steps: int,
    lr: float,
    batch_size: int = 32,
    seed: int = 0,
    weight_decay: float = 0.0,
    loss_fn: LossFn = cross_entropy_loss,
    averager: WeightAverager | None = None,
    eval_sets: dict[str, ImageSet] | None = None,
    eval_every: int = 0,
    progress: bool = False,
) -> FinetuneResult:
    """Finetune ``parts`` of a copy of ``bundle.model`` on ``train`` for ``steps`` Adam steps.

    ``prompts`` holds one text per class (index = label). The pretrained bundle is not modified.
    With an ``averager`` (e.g. :class:`clipnb.losses.BetaMovingAverage`), it sees the pretrained
    weights at step 0 and every step after, and the returned model carries the averaged weights.
    ``eval_sets`` are evaluated every ``eval_every`` steps (0: only at the end) for curves; pass
    validation sets here for selection, the test set only for reporting.
    """
    parts = (parts,) if isinstance(parts, str) else tuple(parts)
    model = copy.deepcopy(bundle.model)
    trainable = set_trainable(model, parts)
    tokens = bundle.tokenize(list(prompts))
    clf = ClipZeroShotModel(model, tokens, parts)
    logit_scale = float(model.logit_scale.exp().item())
    pixels = image_tensors(bundle, train)
    labels = torch.as_tensor(train.labels)
    if clf.image_frozen:  # encode the training images once
        model.eval()
        cached = clf.predict_features(pixels)
    eval_data = {
        name: (image_tensors(bundle, s), torch.as_tensor(s.labels))
        for name, s in (eval_sets or {}).items()
    }
    result = FinetuneResult(bundle=bundle, parts=parts)
    generator = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(trainable, lr=lr, weight_decay=weight_decay)
    if averager is not None:
        averager.update(trainable_state(model), 0)

    def record(step: int) -> None:
        scores = {name: evaluate_pixels(model, tokens, x, y) for name, (x, y) in eval_data.items()}
        if averager is not None:
            averaged = _with_average(model, averager)
            scores |= {
                f"{name}/avg": evaluate_pixels(averaged, tokens, x, y)
                for name, (x, y) in eval_data.items()
            }
        result.evals.append((step, scores))

    # Dropout-free towers: train mode only matters for BatchNorm (ResNet), kept frozen in eval.
    model.eval()
    order = torch.empty(0, dtype=torch.long)
    for step in tqdm(
        range(1, steps + 1), desc=f"finetune {'+'.join(parts)}", disable=not progress, leave=False
    ):
        if len(order) < batch_size:
            order = torch.cat([order, torch.randperm(len(labels), generator=generator)])
        idx, order = order[:batch_size], order[batch_size:]
        image_feats = cached[idx] if clf.image_frozen else clf.image_features(pixels[idx])
        loss = loss_fn(image_feats, clf.text_features(), labels[idx], logit_scale)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        result.train_loss.append(float(loss.item()))
        if averager is not None:
            averager.update(trainable_state(model), step)
        if eval_every and step % eval_every == 0 and step != steps:
            record(step)
    if averager is not None:
        model = _with_average(model, averager)
    if eval_data:
        record(steps)
    for p in model.parameters():
        p.requires_grad_(False)
    result.bundle = ClipBundle(
        model=model,
        preprocess=bundle.preprocess,
        tokenizer=bundle.tokenizer,
        name=bundle.name,
        pretrained=bundle.pretrained,
        fingerprint=f"{bundle.fingerprint}+finetuned",
    )
    return result


def _with_average(model: nn.Module, averager: WeightAverager) -> nn.Module:
    averaged = copy.deepcopy(model)
    _missing, unexpected = averaged.load_state_dict(averager.state_dict(), strict=False)
    if unexpected:
        raise RuntimeError(f"averaged state has unknown keys: {unexpected[:3]}")
    return averaged
