"""Pretrain the embedded CLIP on the generated world with CLIP's contrastive loss.

Training draws its batches from a pool of pre-rendered world images (cached on disk under the
world's fingerprint and shared by the CLIP and its label-supervised twin), re-captioned on every
pass, so rendering stays off the training loop. The checkpoint is cached under a key of (config,
model config, world output); ``ensure_pretrained`` trains only when it is missing, and the result
loads through :func:`clipnb.core.models.create_model` like any local checkpoint.
"""

from __future__ import annotations

import fcntl
import functools
import json
import math
import pickle
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from open_clip.loss import ClipLoss
from torch import nn
from torch.utils.flop_counter import FlopCounterMode
from tqdm.auto import tqdm

from clipnb.core.models import MODEL_CONFIG_DIR, ClipBundle, create_model
from clipnb.core.utils import (
    Stopwatch,
    atomic_torch_save,
    atomic_write_bytes,
    atomic_write_json,
    cache_dir,
    seed_everything,
    stable_hash,
)
from clipnb.data import world


@dataclass(frozen=True)
class PretrainConfig:
    """Everything that defines a pretraining run (and so its cache key)."""

    model: str = "clipnb-ViT-32px"
    steps: int = 1500
    batch_size: int = 256
    lr: float = 1e-3
    weight_decay: float = 0.1
    warmup_steps: int = 100
    world_seed: int = 0
    image_size: int = 32
    styles: tuple[str, ...] = world.PRETRAIN_STYLES
    #: pre-rendered images the batches are drawn from (re-captioned on every pass)
    pool_size: int = 150_000
    #: steps of the label-supervised twin (same pool, same order, its own cosine schedule)
    supervised_steps: int = 600
    #: the twin's peak learning rate, chosen on the validation views (mean linear-probe accuracy
    #: on shapes, printed digits and colours; 1e-3, 2e-3, 3e-3, 4e-3 and 6e-3 were tried)
    supervised_lr: float = 3e-3
    n_heldout: int = 512
    seed: int = 0

    def key(self) -> str:
        return stable_hash(
            [
                asdict(self),
                (MODEL_CONFIG_DIR / f"{self.model}.json").read_text(),
                world.fingerprint(self.image_size),
                "clip-v3",  # v3: batches from a re-captioned pool
            ]
        )

    def pool_key(self) -> str:
        """What the pool's images depend on (not the schedule: every run shares one pool)."""
        return stable_hash(
            [
                self.world_seed,
                self.image_size,
                list(self.styles),
                self.pool_size,
                world.fingerprint(self.image_size),
                "pool-v1",
            ]
        )


#: Wall-time budget (minutes) of the embedded CLIP's pretraining on the 2-core build machine.
BUDGET_MINUTES = 8.0


def budget_verdict(record: PretrainRecord, budget: float = BUDGET_MINUTES) -> str:
    """One sentence: did the run fit the wall-time budget, and if not, was it the machine?"""
    minutes = record.seconds / 60
    if minutes <= budget:
        return f"That is within the profile's {budget:.0f}-minute budget."
    return (
        f"That is over the profile's {budget:.0f}-minute budget by {minutes - budget:.1f} minutes"
        f" on this machine, whose fp32 matmul peak measured {record.peak_flops / 1e9:.0f} GFLOP/s"
        " during the run: the speed of this shared machine drifts, so the CPU time and the share"
        " of peak below are the steadier measures, and `make bench` measures the rate at any time."
    )


#: The pretraining run behind each offline profile.
PRETRAIN_CONFIGS: dict[str, PretrainConfig] = {
    "embedded": PretrainConfig(),
    "smoke": PretrainConfig(
        model="clipnb-ViT-tiny",
        steps=40,
        batch_size=64,
        warmup_steps=5,
        pool_size=2_048,
        supervised_steps=40,
        n_heldout=128,
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
    #: seconds spent on each part of the steps: batch assembly, forward + backward, optimizer
    time_split: dict[str, float] = field(default_factory=dict)
    #: training FLOPs (forward + backward) per image, counted by torch's FlopCounterMode
    flops_per_image: float = float("nan")
    #: this machine's fp32 matmul peak (FLOP/s, torch.mm, all threads), measured after the run
    peak_flops: float = float("nan")
    threads: int = 0

    def finish(self, clock: Stopwatch) -> None:
        """Store the run's wall time, CPU time and the host's steal share."""
        lap = clock.read()
        self.seconds, self.cpu_seconds = lap["seconds"], lap["cpu_seconds"]
        self.steal_percent = lap["steal_percent"]

    @property
    def images_per_second(self) -> float:
        return self.images_seen / self.seconds if self.seconds else float("nan")

    @property
    def achieved_flops(self) -> float:
        """Useful training FLOP/s: FLOPs per image times images per second."""
        return self.flops_per_image * self.images_per_second

    @property
    def peak_fraction(self) -> float:
        """The share of the measured matmul peak that training reached."""
        return self.achieved_flops / self.peak_flops

    def time_split_table(self) -> pd.DataFrame:
        """Seconds and share of the step time per part of the steps, for the chapter."""
        split = pd.Series(self.time_split, dtype=float)
        names = {
            "batch": "waiting for the batch",
            "forward_backward": "forward + backward",
            "optimizer": "AdamW step",
        }
        return pd.DataFrame(
            {"seconds": split, "share of step time (%)": 100 * split / split.sum()}
        ).rename(index=names)

    def summary(self) -> dict[str, float]:
        """The derived numbers saved beside the raw record."""
        return {
            "images_per_second": self.images_per_second,
            "achieved_flops": self.achieved_flops,
            "peak_fraction": self.peak_fraction,
        }


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


def adamw(model: nn.Module, config: PretrainConfig, lr: float) -> torch.optim.AdamW:
    """CLIP's AdamW (beta2 0.98, eps 1e-6), fused: the same update, one kernel for all parameters."""
    return torch.optim.AdamW(
        param_groups(model, config.weight_decay),
        lr=lr,
        betas=(0.9, 0.98),
        eps=1e-6,
        fused=True,
    )


# The pool's images use seeds world_seed * 10_000_000 + i (i < pool_size); held-out pairs one far
# above, so they never share a random stream.
_HELDOUT_SEED_OFFSET = 9_999_999
_CAPTION_STREAM = 0xCA
_ORDER_STREAM = 0x0D


def heldout_batch(config: PretrainConfig) -> world.CaptionedBatch:
    """Image–caption pairs never used for training (their seed is outside the pool's)."""
    return world.generate_captioned(
        config.n_heldout,
        seed=config.world_seed * 10_000_000 + _HELDOUT_SEED_OFFSET,
        styles=config.styles,
        image_size=config.image_size,
    )


@dataclass
class ImagePool:
    """Pre-rendered world images and the scenes they show (captions are drawn per pass)."""

    images: np.ndarray  # [N, H, W, 3] uint8
    scenes: list[world.Scene]


def pool_path(config: PretrainConfig) -> Path:
    return cache_dir() / "pools" / f"world-{config.pool_key()}.pkl"


def load_pool(config: PretrainConfig, progress: bool = True) -> ImagePool:
    """The config's image pool, rendered once and cached on disk under the world's fingerprint.

    The CLIP and its supervised twin share it; a change in what the world draws changes the key.
    """
    path = pool_path(config)
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path.with_suffix(".lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if not path.exists():
                pool = _render_pool(config, progress)
                atomic_write_bytes(path, pickle.dumps(pool, protocol=pickle.HIGHEST_PROTOCOL))
                return pool
    with open(path, "rb") as fh:
        return pickle.load(fh)


def _render_pool(config: PretrainConfig, progress: bool) -> ImagePool:
    # Rendered in chunks (each its own seed) so the bar moves; the pool is fixed by its key.
    chunk = 10_000
    seed = config.world_seed * 10_000_000
    images = np.empty((config.pool_size, config.image_size, config.image_size, 3), np.uint8)
    scenes: list[world.Scene] = []
    bar = tqdm(
        total=config.pool_size,
        desc="render pretraining pool",
        unit="img",
        disable=not progress,
        mininterval=2,
    )
    for start in range(0, config.pool_size, chunk):
        n = min(chunk, config.pool_size - start)
        batch = world.generate_captioned(
            n, seed=seed + start, styles=config.styles, image_size=config.image_size
        )
        images[start : start + n] = batch.images
        scenes += batch.scenes
        bar.update(n)
    bar.close()
    return ImagePool(images, scenes)


@functools.lru_cache(maxsize=8)
def _epoch_order(world_seed: int, pool_size: int, epoch: int) -> np.ndarray:
    return np.random.default_rng([world_seed, _ORDER_STREAM, epoch]).permutation(pool_size)


def batch_indices(config: PretrainConfig, step: int) -> tuple[np.ndarray, np.ndarray]:
    """Pool indices of a step's batch and the pass (epoch) each was drawn in.

    Every pass visits the pool once in its own random order; a batch may span two passes.
    """
    flat = step * config.batch_size + np.arange(config.batch_size)
    epochs, within = np.divmod(flat, config.pool_size)
    indices = np.empty_like(flat)
    for epoch in np.unique(epochs):
        sel = epochs == epoch
        indices[sel] = _epoch_order(config.world_seed, config.pool_size, int(epoch))[within[sel]]
    return indices, epochs


def pool_captions(
    config: PretrainConfig, pool: ImagePool, indices: np.ndarray, epochs: np.ndarray
) -> list[str]:
    """A fresh caption per image and pass: the text side sees new phrasings on every pass."""
    return [
        world.caption(
            pool.scenes[i], np.random.default_rng([config.world_seed, _CAPTION_STREAM, e, i])
        )
        for i, e in zip(indices.tolist(), epochs.tolist(), strict=True)
    ]


@dataclass
class StepTimer:
    """Seconds spent per part of the training steps (wall clock; on CPU no sync is needed)."""

    seconds: dict[str, float] = field(default_factory=dict)

    def add(self, part: str, since: float) -> float:
        now = time.perf_counter()
        self.seconds[part] = self.seconds.get(part, 0.0) + now - since
        return now


def _schedule(
    opt: torch.optim.Optimizer, config: PretrainConfig, lr: float, step: int, total: int
) -> None:
    for group in opt.param_groups:
        group["lr"] = cosine_lr(step, lr, config.warmup_steps, total)


def clip_step_loss(
    bundle: ClipBundle, images: torch.Tensor, texts: torch.Tensor, loss_fn: ClipLoss
) -> torch.Tensor:
    image_features, text_features, logit_scale = bundle.model(images, texts)[:3]
    return loss_fn(image_features, text_features, logit_scale)


class CachedTokenizer:
    """The bundle's tokenizer, memoised per caption string.

    Templated captions repeat, and open_clip's tokenizer (text clean-up, BPE) costs more than a
    batch's images; a caption's tokens do not depend on the rest of its batch, so this is exact.
    """

    def __init__(self, bundle: ClipBundle) -> None:
        self.bundle = bundle
        self.rows: dict[str, torch.Tensor] = {}

    def __call__(self, captions: list[str]) -> torch.Tensor:
        new = [c for c in dict.fromkeys(captions) if c not in self.rows]
        if new:
            self.rows.update(zip(new, self.bundle.tokenize(new), strict=True))
        return torch.stack([self.rows[c] for c in captions])


class _ClipObjective:
    """One contrastive training step of a CLIP bundle on a pool batch."""

    def __init__(self, bundle: ClipBundle, config: PretrainConfig, pool: ImagePool) -> None:
        self.bundle, self.config, self.pool = bundle, config, pool
        self.loss_fn = ClipLoss()
        self.module = bundle.model
        self.tokenize = CachedTokenizer(bundle)

    def inputs(self, step: int) -> tuple[torch.Tensor, ...]:
        indices, epochs = batch_indices(self.config, step)
        captions = pool_captions(self.config, self.pool, indices, epochs)
        return (to_tensor(self.pool.images[indices], self.bundle), self.tokenize(captions))

    def loss(self, images: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        return clip_step_loss(self.bundle, images, tokens, self.loss_fn)

    def after_step(self) -> None:
        with torch.no_grad():  # CLIP clamps the temperature at 100
            self.module.logit_scale.clamp_(0, math.log(100))


class _SupervisedObjective:
    """One multi-label step of the image tower on the world's labels (names and colours)."""

    def __init__(self, bundle: ClipBundle, config: PretrainConfig, pool: ImagePool) -> None:
        self.bundle, self.config, self.pool = bundle, config, pool
        self.head = nn.Linear(bundle.model.text_projection.shape[1], len(attribute_names()))
        self.module = nn.ModuleList([bundle.model.visual, self.head])

    def inputs(self, step: int) -> tuple[torch.Tensor, ...]:
        indices, _ = batch_indices(self.config, step)
        return (
            to_tensor(self.pool.images[indices], self.bundle),
            scene_targets([self.pool.scenes[i] for i in indices.tolist()]),
        )

    def loss(self, images: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        logits = self.head(F.normalize(self.bundle.model.visual(images), dim=-1) * 10.0)
        return F.binary_cross_entropy_with_logits(logits, targets)

    def after_step(self) -> None:
        pass


def _train(
    objective: _ClipObjective | _SupervisedObjective,
    config: PretrainConfig,
    steps: int,
    lr: float,
    record: PretrainRecord,
    desc: str,
    progress: bool,
    on_checkpoint: Callable[[int], None] | None = None,
) -> None:
    """The training loop both towers share: schedule, timed batch / forward+backward / optimizer."""
    objective.module.train()
    opt = adamw(objective.module, config, lr)
    timer = StepTimer()
    clock = Stopwatch()
    bar = tqdm(range(steps), desc=desc, disable=not progress, mininterval=2)
    # Batches are assembled inline: a prefetch thread doing this Python work held the GIL that
    # torch's op dispatch needs and made steps slower, not faster.
    for step in bar:
        _schedule(opt, config, lr, step, steps)
        t = time.perf_counter()
        inputs = objective.inputs(step)
        t = timer.add("batch", t)
        loss = objective.loss(*inputs)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        t = timer.add("forward_backward", t)
        opt.step()
        objective.after_step()
        timer.add("optimizer", t)
        record.losses.append(float(loss.item()))
        record.images_seen += config.batch_size
        if on_checkpoint is not None and (step % 100 == 99 or step == steps - 1):
            on_checkpoint(step)
            objective.module.train()
        if step % 50 == 49:
            bar.set_postfix(loss=f"{record.losses[-1]:.3f}")
    record.finish(clock)
    record.time_split = timer.seconds
    record.threads = torch.get_num_threads()
    objective.module.eval()


def training_flops_per_image(
    config: PretrainConfig, pool: ImagePool, supervised: bool = False
) -> float:
    """Forward + backward FLOPs of one training step per image (matmuls, convolutions, attention)."""
    with torch.random.fork_rng():
        bundle = create_model(config.model, pretrained=None)
    objective_cls = _SupervisedObjective if supervised else _ClipObjective
    objective = objective_cls(bundle, config, pool)
    objective.module.train()
    inputs = objective.inputs(0)
    counter = FlopCounterMode(display=False)
    with counter:
        objective.loss(*inputs).backward()
    return counter.get_total_flops() / config.batch_size


#: Side of the square fp32 matrices whose product measures the machine's peak.
PEAK_MATRIX_SIZE = 2048


def matmul_peak_flops(n: int = PEAK_MATRIX_SIZE, repeats: int = 5) -> float:
    """This machine's fp32 matmul rate (FLOP/s): the best of ``repeats`` ``torch.mm`` of n x n."""
    a = torch.ones(n, n)
    b = torch.ones(n, n)
    torch.mm(a, b)  # warm-up: thread pool and caches
    best = math.inf
    for _ in range(repeats):
        t = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best


def pretrain(config: PretrainConfig, progress: bool = True) -> tuple[ClipBundle, PretrainRecord]:
    """Train an open_clip model from scratch on world captions with ``ClipLoss``."""
    pool = load_pool(config, progress=progress)
    seed_everything(config.seed)
    bundle = create_model(config.model, pretrained=None)
    record = PretrainRecord(
        asdict(config), parameters=sum(p.numel() for p in bundle.model.parameters())
    )
    held = heldout_batch(config)
    held_x, held_t = to_tensor(held.images, bundle), bundle.tokenize(held.captions)

    def evaluate(step: int) -> None:
        record.heldout_losses.append((step + 1, heldout_loss(bundle, held_x, held_t)))

    objective = _ClipObjective(bundle, config, pool)
    _train(
        objective,
        config,
        config.steps,
        config.lr,
        record,
        f"pretrain {config.model}",
        progress,
        evaluate,
    )
    _measure_machine(record, config, pool, supervised=False)
    return bundle, record


def _measure_machine(
    record: PretrainRecord, config: PretrainConfig, pool: ImagePool, supervised: bool
) -> None:
    """FLOPs per image and the matmul peak, after training (neither touches the trained model)."""
    record.flops_per_image = training_flops_per_image(config, pool, supervised)
    record.peak_flops = matmul_peak_flops()


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
            atomic_write_json(path.with_suffix(".json"), asdict(record) | record.summary())
            # The checkpoint is written last: its presence means the run finished.
            atomic_torch_save({"state_dict": bundle.model.state_dict()}, path)
    return path


def load_record(config: PretrainConfig) -> PretrainRecord:
    """The measurements of the cached pretraining run."""
    return _read_record(checkpoint_path(config))


def load_supervised_record(config: PretrainConfig) -> PretrainRecord:
    """The measurements of the cached supervised-twin run."""
    return _read_record(supervised_checkpoint_path(config))


def _read_record(path: Path) -> PretrainRecord:
    data = json.loads(path.with_suffix(".json").read_text())
    known = set(PretrainRecord.__dataclass_fields__)
    data = {k: v for k, v in data.items() if k in known}
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

    The first ``supervised_steps`` batches of the CLIP run (same pool, same images in the same
    order), with its own warm-up + cosine schedule; a linear head predicts which object names and
    colours a scene contains (multi-label BCE). Only the image tower is meaningful afterwards.
    """
    pool = load_pool(config, progress=progress)
    seed_everything(config.seed)
    bundle = create_model(config.model, pretrained=None)
    objective = _SupervisedObjective(bundle, config, pool)
    record = PretrainRecord(
        asdict(config) | {"objective": "supervised"},
        parameters=sum(p.numel() for p in objective.module.parameters()),
    )
    _train(
        objective,
        config,
        config.supervised_steps,
        config.supervised_lr,
        record,
        f"supervised twin {config.model}",
        progress,
    )
    _measure_machine(record, config, pool, supervised=True)
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


# --- what `make book` and `make bench` call --------------------------------------------------------


def prepare(profile: str, progress: bool = True) -> list[Path]:
    """Train whatever checkpoints of an offline profile are missing (CLIP, then its twin)."""
    config = PRETRAIN_CONFIGS[profile]
    return [
        ensure_pretrained(config, progress=progress),
        ensure_supervised(config, progress=progress),
    ]


def benchmark(config: PretrainConfig, steps: int = 30, progress: bool = True) -> dict[str, float]:
    """Pretraining throughput on this machine: images/s, where a step's time goes, training
    FLOPs per image, and the achieved FLOP/s against the fp32 matmul peak measured in this run.

    Runs ``steps`` CLIP steps of ``config`` on a fresh model (the first few, warm-up, are timed
    too: the rate is what a real run gets per step).
    """
    pool = load_pool(config, progress=progress)
    seed_everything(config.seed)
    bundle = create_model(config.model, pretrained=None)
    record = PretrainRecord(asdict(config))
    bench_config = PretrainConfig(**(asdict(config) | {"steps": steps}))
    _train(
        _ClipObjective(bundle, bench_config, pool),
        bench_config,
        steps,
        config.lr,
        record,
        "bench",
        progress,
    )
    _measure_machine(record, config, pool, supervised=False)
    total = sum(record.time_split.values())
    return {
        "threads": record.threads,
        "steps": steps,
        "batch_size": config.batch_size,
        "images_per_second": record.images_per_second,
        "seconds_per_step": record.seconds / steps,
        "cpu_seconds_per_step": record.cpu_seconds / steps,
        **{f"share_{k}": v / total for k, v in record.time_split.items()},
        "flops_per_image": record.flops_per_image,
        "achieved_flops": record.achieved_flops,
        "peak_flops": record.peak_flops,
        "peak_fraction": record.peak_fraction,
    }
