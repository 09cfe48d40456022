"""Finetune one part of CLIP as a zero-shot classifier, with everything else frozen.

The model being trained is CLIP's own zero-shot classifier: logits are the logit scale times the
cosine similarity between image embeddings and the class prompts' text embeddings, and the loss is
cross-entropy over them (or any ``loss_fn`` with the same inputs, e.g. CLIPood's margin metric
softmax). Whatever side is frozen is computed once: with a frozen image side, training runs on
cached image features; with a frozen text side, the class embeddings are encoded once.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from clipnb.core.evaluation import accuracy
from clipnb.core.features import image_tensors, text_features
from clipnb.core.imagesets import ImageSet
from clipnb.core.models import ClipBundle, model_parts

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
                    self._text_cache = F.normalize(text_features(self.model, self.tokens), dim=-1)
            return self._text_cache
        return F.normalize(text_features(self.model, self.tokens), dim=-1)

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


def image_pre_projection(model: nn.Module) -> Callable[[torch.Tensor], torch.Tensor] | None:
    """``pixels -> pooled image features before the projection`` for a ViT tower, else None.

    ``image_pre_projection(model)(x) @ model.visual.proj == model.encode_image(x)``. Used to cache
    the (frozen) input of the image projection when only the projection is trained.
    """
    visual = getattr(model, "visual", None)
    if not isinstance(getattr(visual, "proj", None), nn.Parameter):
        return None

    def encode(pixels: torch.Tensor) -> torch.Tensor:
        proj = visual.proj
        visual.proj = None  # open_clip's ViT skips a missing projection
        try:
            return visual(pixels)
        finally:
            visual.proj = proj

    return encode


def prompt_texts(class_names: Sequence[str], template: str = "a photo of a {}.") -> list[str]:
    return [template.format(c) for c in class_names]


@torch.no_grad()
def evaluate_pixels(
    model: nn.Module, tokens: torch.Tensor, pixels: torch.Tensor, labels: torch.Tensor
) -> float:
    """Zero-shot accuracy of ``model`` on preprocessed pixels against prompt ``tokens``."""
    was_training = model.training
    model.eval()
    text = F.normalize(text_features(model, tokens), dim=-1)
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
    averager: WeightAverager | Mapping[str, WeightAverager] | None = None,
    eval_sets: dict[str, ImageSet] | None = None,
    eval_every: int = 0,
    progress: bool = False,
    features: torch.Tensor | None = None,
    evaluator: Callable[[nn.Module], dict[str, float]] | None = None,
    fused: bool = False,
) -> FinetuneResult:
    """Finetune ``parts`` of a copy of ``bundle.model`` on ``train`` for ``steps`` Adam steps.

    ``prompts`` holds one text per class (index = label). The pretrained bundle is not modified.
    With an ``averager`` (e.g. :class:`clipnb.methods.clipood.BetaMovingAverage`), it sees the pretrained
    weights at step 0 and every step after, and the returned model carries the averaged weights.
    A mapping of averagers tracks several at once: each is evaluated as ``"<set>/<key>"`` and the
    returned model carries the first one's weights.
    ``eval_sets`` are evaluated every ``eval_every`` steps (0: only at the end) for curves; pass
    validation sets here for selection, the test set only for reporting.

    Speed-ups (results equal up to float rounding): ``features`` are ``train``'s precomputed
    features from the frozen part of the image tower, e.g. from the feature cache, so its images
    are not encoded again: the normalised image embeddings when no image part trains, the
    :func:`image_pre_projection` output when only the image projection trains (a ViT's
    projection then runs on cached pooled features; rows may be normalised, the direction of the
    projected feature does not change). ``evaluator(model) -> {name: score}`` adds scores to every
    evaluation point (e.g. a scorer reusing cached validation features). ``fused`` uses PyTorch's
    fused Adam (one kernel per step; much faster for the text encoder's token embedding on CPU).
    """
    parts = (parts,) if isinstance(parts, str) else tuple(parts)
    model = copy.deepcopy(bundle.model)
    trainable = set_trainable(model, parts)
    tokens = bundle.tokenize(list(prompts))
    clf = ClipZeroShotModel(model, tokens, parts)
    logit_scale = float(model.logit_scale.exp().item())
    labels = torch.as_tensor(train.labels)
    pre_projection = None if "image_encoder" in parts else image_pre_projection(model)
    if features is not None and len(features) != len(labels):
        raise ValueError(f"features has {len(features)} rows but train has {len(labels)} images.")
    if features is None or not (clf.image_frozen or pre_projection is not None):
        pixels = image_tensors(bundle, train)
    if clf.image_frozen:  # encode the training images once
        model.eval()
        cached = features if features is not None else clf.predict_features(pixels)
    elif pre_projection is not None:  # only the image projection trains: cache its input
        model.eval()
        if features is not None:
            cached = features
        else:
            with torch.no_grad():
                cached = torch.cat(
                    [pre_projection(pixels[i : i + 512]) for i in range(0, len(pixels), 512)]
                )
    eval_data = {
        name: (image_tensors(bundle, s), torch.as_tensor(s.labels))
        for name, s in (eval_sets or {}).items()
    }
    result = FinetuneResult(bundle=bundle, parts=parts)
    generator = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(trainable, lr=lr, weight_decay=weight_decay, fused=fused or None)
    if averager is None:
        averagers: dict[str, WeightAverager] = {}
    elif isinstance(averager, Mapping):
        averagers = dict(averager)
    else:
        averagers = {"avg": averager}
    for avg in averagers.values():
        avg.update(trainable_state(model), 0)

    def record(step: int) -> None:
        scores = {name: evaluate_pixels(model, tokens, x, y) for name, (x, y) in eval_data.items()}
        for key, avg in averagers.items():
            averaged = _with_average(model, avg)
            scores |= {
                f"{name}/{key}": evaluate_pixels(averaged, tokens, x, y)
                for name, (x, y) in eval_data.items()
            }
        if evaluator is not None:
            with torch.no_grad():
                scores |= evaluator(model)
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
        if clf.image_frozen:
            image_feats = cached[idx]
        elif pre_projection is not None:
            image_feats = F.normalize(cached[idx] @ model.visual.proj, dim=-1)
        else:
            image_feats = clf.image_features(pixels[idx])
        loss = loss_fn(image_feats, clf.text_features(), labels[idx], logit_scale)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        result.train_loss.append(float(loss.item()))
        for avg in averagers.values():
            avg.update(trainable_state(model), step)
        if eval_every and step % eval_every == 0 and step != steps:
            record(step)
    if (
        eval_data or evaluator is not None
    ):  # before swapping in the average: the raw entry is the raw model
        record(steps)
    if averagers:
        model = _with_average(model, next(iter(averagers.values())))
    for p in model.parameters():
        p.requires_grad_(False)
    result.bundle = bundle.with_model(model, "finetuned")
    return result


def _with_average(model: nn.Module, averager: WeightAverager) -> nn.Module:
    averaged = copy.deepcopy(model)
    _missing, unexpected = averaged.load_state_dict(averager.state_dict(), strict=False)
    if unexpected:
        raise RuntimeError(f"averaged state has unknown keys: {unexpected[:3]}")
    return averaged
