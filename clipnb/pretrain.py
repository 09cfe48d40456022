"""Pretrain the embedded CLIP on the generated world with CLIP's contrastive loss.

The checkpoint is cached under a key of (config, model config, world generator source, schedule);
``ensure_pretrained`` trains only when it is missing, and the result loads through
:func:`clipnb.models.create_model` like any local checkpoint.
"""

from __future__ import annotations

import fcntl
import json
import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from open_clip.loss import ClipLoss
from torch import nn
from tqdm.auto import tqdm

from . import world
from .models import MODEL_CONFIG_DIR, ClipBundle, create_model
from .utils import (
    Stopwatch,
    atomic_torch_save,
    atomic_write_json,
    cache_dir,
    seed_everything,
    stable_hash,
)


@dataclass(frozen=True)
class PretrainConfig:
    """Everything that defines a pretraining run (and so its cache key)."""

    model: str = "clipnb-ViT-32px"
    steps: int = 900
    batch_size: int = 128
    lr: float = 5e-4
    weight_decay: float = 0.1
    warmup_steps: int = 80
    world_seed: int = 0
    image_size: int = 32
    styles: tuple[str, ...] = world.PRETRAIN_STYLES
    n_heldout: int = 512
    seed: int = 0

    def key(self) -> str:
        return stable_hash(
            [
                asdict(self),
                (MODEL_CONFIG_DIR / f"{self.model}.json").read_text(),
                world.fingerprint(self.image_size),
                "clip-v2",  # v2: fused AdamW
            ]
        )


#: The pretraining run behind each offline profile.
PRETRAIN_CONFIGS: dict[str, PretrainConfig] = {
    "embedded": PretrainConfig(),
    "smoke": PretrainConfig(
        model="clipnb-ViT-tiny", steps=40, batch_size=64, warmup_steps=5, n_heldout=128
    ),
}


@dataclass
class PretrainRecord:
    """What a pretraining run measured (saved beside the checkpoint as JSON)."""

    config: dict[str, Any]
    losses: list[float] = field(default_factory=list)
    heldout_losses: list[tuple[int, float]] = field(default_factory=list)
    seconds: float = 0.0
    cpu_seconds: float = float("nan")
    steal_percent: float = float("nan")
    images_seen: int = 0
    parameters: int = 0

    def finish(self, clock: Stopwatch) -> None:
        """Store the run's wall time, CPU time and the host's steal share."""
        lap = clock.read()
        self.seconds, self.cpu_seconds = lap["seconds"], lap["cpu_seconds"]
        self.steal_percent = lap["steal_percent"]

    @property
    def images_per_second(self) -> float:
        return self.images_seen / self.seconds if self.seconds else float("nan")


def to_tensor(images: np.ndarray, bundle: ClipBundle) -> torch.Tensor:
    """uint8 ``[N,H,W,3]`` at the model's size -> normalised ``[N,3,H,W]`` (equals ``bundle.preprocess``)."""
    if images.shape[1] != bundle.image_size or images.shape[2] != bundle.image_size:
        raise ValueError(f"images are {images.shape[1:3]}, the model expects {bundle.image_size}px")
    norm = bundle.preprocess.transforms[-1]
    x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float().div_(255.0)
    mean = torch.tensor(norm.mean).view(1, 3, 1, 1)
    std = torch.tensor(norm.std).view(1, 3, 1, 1)
    return (x - mean) / std


def cosine_lr(step: int, base_lr: float, warmup: int, total: int) -> float:
    """Linear warm-up then cosine decay to zero (open_clip's schedule)."""
    if step < warmup:
        return base_lr * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * base_lr * (1 + math.cos(math.pi * progress))


def param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """No weight decay on gains, biases, embeddings of rank < 2 and the logit scale (as CLIP)."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (
            no_decay
            if p.ndim < 2 or "logit_scale" in name or "ln" in name or "bn" in name
            else decay
        ).append(p)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def adamw(model: nn.Module, config: PretrainConfig) -> torch.optim.AdamW:
    """CLIP's AdamW (beta2 0.98, eps 1e-6), fused: the same update, one kernel for all parameters."""
    return torch.optim.AdamW(
        param_groups(model, config.weight_decay),
        lr=config.lr,
        betas=(0.9, 0.98),
        eps=1e-6,
        fused=True,
    )


def _batch_seed(config: PretrainConfig, step: int) -> int:
    return config.world_seed * 10_000_000 + step


def heldout_batch(config: PretrainConfig) -> world.CaptionedBatch:
    """Image–caption pairs never used for training (their seed is outside the training stream)."""
    return world.generate_captioned(
        config.n_heldout,
        seed=config.world_seed * 10_000_000 + 9_999_999,
        styles=config.styles,
        image_size=config.image_size,
    )


def _scheduled_batches(
    config: PretrainConfig, opt: torch.optim.Optimizer, steps: Iterable[int]
) -> Iterator[tuple[int, world.CaptionedBatch]]:
    """Each step's world batch, after setting the warm-up + cosine learning rate for that step.

    Both towers (CLIP and the supervised twin) see the same images in the same order.
    """
    for step in steps:
        for group in opt.param_groups:
            group["lr"] = cosine_lr(step, config.lr, config.warmup_steps, config.steps)
        yield (
            step,
            world.generate_captioned(
                config.batch_size,
                seed=_batch_seed(config, step),
                styles=config.styles,
                image_size=config.image_size,
            ),
        )


def clip_step_loss(
    bundle: ClipBundle, images: torch.Tensor, texts: torch.Tensor, loss_fn: ClipLoss
) -> torch.Tensor:
    image_features, text_features, logit_scale = bundle.model(images, texts)[:3]
    return loss_fn(image_features, text_features, logit_scale)


def pretrain(config: PretrainConfig, progress: bool = True) -> tuple[ClipBundle, PretrainRecord]:
    """Train an open_clip model from scratch on world captions with ``ClipLoss``."""
    seed_everything(config.seed)
    bundle = create_model(config.model, pretrained=None)
    model = bundle.model.train()
    loss_fn = ClipLoss()
    opt = adamw(model, config)
    record = PretrainRecord(asdict(config), parameters=sum(p.numel() for p in model.parameters()))
    held = heldout_batch(config)
    held_x, held_t = to_tensor(held.images, bundle), bundle.tokenize(held.captions)
    clock = Stopwatch()
    bar = tqdm(
        range(config.steps), desc=f"pretrain {config.model}", disable=not progress, mininterval=2
    )
    for step, batch in _scheduled_batches(config, opt, bar):
        loss = clip_step_loss(
            bundle, to_tensor(batch.images, bundle), bundle.tokenize(batch.captions), loss_fn
        )
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        with torch.no_grad():  # CLIP clamps the temperature at 100
            model.logit_scale.clamp_(0, math.log(100))
        record.losses.append(float(loss.item()))
        record.images_seen += config.batch_size
        if step % 100 == 99 or step == config.steps - 1:
            record.heldout_losses.append((step + 1, heldout_loss(bundle, held_x, held_t)))
            model.train()
            bar.set_postfix(
                loss=f"{record.losses[-1]:.3f}", heldout=f"{record.heldout_losses[-1][1]:.3f}"
            )
    record.finish(clock)
    model.eval()
    return bundle, record


@torch.no_grad()
def heldout_loss(
    bundle: ClipBundle, images: torch.Tensor, tokens: torch.Tensor, batch: int = 128
) -> float:
    """Mean contrastive loss over held-out batches of ``batch`` pairs (comparable to the training loss)."""
    bundle.model.eval()
    loss_fn = ClipLoss()
    batch = min(batch, len(images))
    losses = [
        float(clip_step_loss(bundle, images[i : i + batch], tokens[i : i + batch], loss_fn))
        for i in range(0, len(images) - batch + 1, batch)
    ]
    return float(np.mean(losses))


def checkpoint_path(config: PretrainConfig) -> Path:
    return cache_dir() / "checkpoints" / f"{config.model}-{config.key()}.pt"


def ensure_pretrained(config: PretrainConfig, progress: bool = True) -> Path:
    """The cached checkpoint for ``config``, pretraining first if it is missing."""
    return _ensure(checkpoint_path(config), lambda: pretrain(config, progress=progress))


def _ensure(path: Path, train: Callable[[], tuple[ClipBundle, PretrainRecord]]) -> Path:
    """Train and save once; other processes asking for the same checkpoint wait on a file lock."""
    if path.exists() and path.with_suffix(".json").exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not path.exists():
            bundle, record = train()
            atomic_write_json(
                path.with_suffix(".json"),
                asdict(record) | {"images_per_second": record.images_per_second},
            )
            # The checkpoint is written last: its presence means the run finished.
            atomic_torch_save({"state_dict": bundle.model.state_dict()}, path)
    return path


def load_record(config: PretrainConfig) -> PretrainRecord:
    """The measurements of the cached pretraining run."""
    data = json.loads(checkpoint_path(config).with_suffix(".json").read_text())
    data.pop("images_per_second", None)
    data["heldout_losses"] = [tuple(x) for x in data["heldout_losses"]]
    return PretrainRecord(**data)


def load_pretrained(profile: str, progress: bool = True) -> ClipBundle:
    """The embedded (or smoke) CLIP for a profile, pretraining it once if needed."""
    if profile not in PRETRAIN_CONFIGS:
        raise ValueError(
            f"No embedded model for profile {profile!r}; known: {', '.join(PRETRAIN_CONFIGS)}."
        )
    config = PRETRAIN_CONFIGS[profile]
    return create_model(config.model, pretrained=ensure_pretrained(config, progress=progress))


@torch.no_grad()
def retrieval_recall(
    image_features: torch.Tensor, text_features: torch.Tensor, ks: tuple[int, ...] = (1, 5)
) -> dict[str, float]:
    """Image→text and text→image recall@k (%) for aligned pairs (row i of each is a pair)."""
    sims = F.normalize(image_features, dim=-1) @ F.normalize(text_features, dim=-1).T
    target = torch.arange(len(sims))
    out = {}
    for direction, s in (("image_to_text", sims), ("text_to_image", sims.T)):
        ranks = (s > s[target, target].unsqueeze(1)).sum(
            dim=1
        )  # number of candidates ranked above the pair
        for k in ks:
            out[f"{direction}_R@{k}"] = float((ranks < k).float().mean() * 100)
    return out


# --- the label-supervised baseline tower -----------------------------------------------------------


def attribute_names() -> list[str]:
    """The world's labels a supervised tower learns: object names (shapes, digits) and colours."""
    return [*world.SHAPES, *world.DIGIT_NAMES, *world.COLOURS]


def scene_targets(scenes: list[world.Scene]) -> torch.Tensor:
    """Multi-hot targets ``[N, A]``: which names and colours appear in each scene."""
    index = {name: i for i, name in enumerate(attribute_names())}
    targets = torch.zeros(len(scenes), len(index))
    for row, scene in enumerate(scenes):
        for obj in scene.objects:
            targets[row, index[obj.name]] = 1.0
            targets[row, index[obj.colour]] = 1.0
    return targets


def supervised_checkpoint_path(config: PretrainConfig) -> Path:
    return cache_dir() / "checkpoints" / f"{config.model}-supervised-{config.key()}.pt"


def pretrain_supervised(
    config: PretrainConfig, progress: bool = True
) -> tuple[ClipBundle, PretrainRecord]:
    """The same image tower trained on the world's labels instead of captions (no language).

    Same images, steps and schedule as the CLIP run; a linear head predicts which object names and
    colours a scene contains (multi-label BCE). Only the image tower is meaningful afterwards.
    """
    seed_everything(config.seed)
    bundle = create_model(config.model, pretrained=None)
    visual = bundle.model.visual.train()
    n_attr = len(attribute_names())
    head = nn.Linear(bundle.model.text_projection.shape[1], n_attr)
    params = [*visual.parameters(), *head.parameters()]
    opt = adamw(nn.ModuleList([visual, head]), config)
    record = PretrainRecord(
        asdict(config) | {"objective": "supervised"}, parameters=sum(p.numel() for p in params)
    )
    clock = Stopwatch()
    bar = tqdm(
        range(config.steps), desc=f"supervised {config.model}", disable=not progress, mininterval=2
    )
    for step, batch in _scheduled_batches(config, opt, bar):
        logits = head(F.normalize(visual(to_tensor(batch.images, bundle)), dim=-1) * 10.0)
        loss = F.binary_cross_entropy_with_logits(logits, scene_targets(batch.scenes))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        record.losses.append(float(loss.item()))
        record.images_seen += config.batch_size
        if step % 100 == 99:
            bar.set_postfix(loss=f"{record.losses[-1]:.3f}")
    record.finish(clock)
    bundle.model.eval()
    return bundle, record


def ensure_supervised(config: PretrainConfig, progress: bool = True) -> Path:
    """The cached supervised-baseline checkpoint (a full open_clip state dict; text tower untrained)."""
    return _ensure(
        supervised_checkpoint_path(config), lambda: pretrain_supervised(config, progress=progress)
    )


def load_supervised(profile: str, progress: bool = True) -> ClipBundle:
    """The label-supervised image tower for an offline profile, behind the same model interface."""
    if profile not in PRETRAIN_CONFIGS:
        raise ValueError(
            f"No embedded model for profile {profile!r}; known: {', '.join(PRETRAIN_CONFIGS)}."
        )
    config = PRETRAIN_CONFIGS[profile]
    return create_model(config.model, pretrained=ensure_supervised(config, progress=progress))


def random_tower(profile: str) -> ClipBundle:
    """A randomly initialised copy of the profile's CLIP (the control for 'what pretraining adds')."""
    config = PRETRAIN_CONFIGS[profile]
    with torch.random.fork_rng():
        torch.manual_seed(config.seed)
        return create_model(config.model, pretrained=None)
