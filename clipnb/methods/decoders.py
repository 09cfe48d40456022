"""Decoders probing what CLIP's frozen spatial features keep: VQ-VAE, segmentation, metrics, trainer.

* ``VectorQuantizerEMA`` / ``ema_update``: vector quantiser whose codebook follows the
  exponential-moving-average rule of van den Oord et al. (2017, appendix A.1).
* ``ConvEncoder`` / ``ConvDecoder`` / ``VQVAE``: a VQ-VAE whose encoder is either trainable
  (baseline) or a frozen feature function such as ``partial(spatial_features, visual)``; or
  ``None`` when the inputs already are precomputed features.
* ``SegmentationDecoder`` (frozen features -> per-pixel logits) and ``UNet`` (trained from scratch).
* ``psnr``, ``miou``, ``codebook_perplexity`` and ``train_decoder``, a small deterministic Adam loop.

Spatial sizes are ``int`` (square) or ``(height, width)``. Upsampling doubles the resolution per
stage; when the ratio is not a power of two the last stage overshoots and a bilinear
interpolation lands on the exact size.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterator
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

__all__ = [
    "VQVAE",
    "ConvDecoder",
    "ConvEncoder",
    "SegmentationDecoder",
    "UNet",
    "VectorQuantizerEMA",
    "codebook_perplexity",
    "ema_update",
    "miou",
    "psnr",
    "train_decoder",
    "vqvae_loss",
]

Size = int | tuple[int, int]


def _pair(size: Size, name: str) -> tuple[int, int]:
    if isinstance(size, int):
        size = (size, size)
    if len(size) != 2 or any(int(s) < 1 for s in size):
        raise ValueError(f"{name} must be a positive int or (height, width), got {size!r}")
    return int(size[0]), int(size[1])


def _n_doublings(small: tuple[int, int], large: tuple[int, int], what: str) -> int:
    """Number of ×2 stages to go from ``small`` to at least ``large`` (power of two: exact)."""
    ratio = max(large[0] / small[0], large[1] / small[1])
    if ratio < 1:
        raise ValueError(f"{what}: the output size {large} must not be smaller than {small}")
    return math.ceil(math.log2(ratio) - 1e-9)


def _check_spatial(x: Tensor, size: tuple[int, int], name: str) -> None:
    if x.ndim != 4 or tuple(x.shape[-2:]) != size:
        raise ValueError(
            f"{name} expects [B, C, {size[0]}, {size[1]}] inputs, got {tuple(x.shape)}; "
            f"build it with the matching in_size."
        )


def _resize(x: Tensor, size: tuple[int, int]) -> Tensor:
    if tuple(x.shape[-2:]) == size:
        return x
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


# --------------------------------------------------------------------------- vector quantiser


def ema_update(
    z: Tensor,
    codes: Tensor,
    cluster_size: Tensor,
    embed_sum: Tensor,
    decay: float,
    eps: float = 1e-5,
) -> tuple[Tensor, Tensor, Tensor]:
    """One EMA codebook step (van den Oord et al. 2017, A.1); pure, inputs are not modified.

    ``z`` [M, D] encoder vectors, ``codes`` [M] their nearest code, ``cluster_size`` [K] (N),
    ``embed_sum`` [K, D] (m). With n_i the count and s_i the sum of the vectors assigned to i:
    N_i ← γN_i + (1−γ)n_i, m_i ← γm_i + (1−γ)s_i, Ñ_i = (N_i + ε)/(ΣN + Kε)·ΣN (Laplace),
    e_i = m_i / Ñ_i. Returns ``(N, m, codebook)``; N is stored unsmoothed.
    """
    n_codes = cluster_size.shape[0]
    if z.ndim != 2 or embed_sum.shape != (n_codes, z.shape[1]) or codes.shape != z.shape[:1]:
        raise ValueError(
            f"ema_update shapes disagree: z {tuple(z.shape)}, codes {tuple(codes.shape)}, "
            f"cluster_size {tuple(cluster_size.shape)}, embed_sum {tuple(embed_sum.shape)}; "
            "expected z [M, D], codes [M], cluster_size [K], embed_sum [K, D]."
        )
    if not 0.0 <= decay < 1.0:
        raise ValueError(f"decay must be in [0, 1), got {decay}")
    onehot = F.one_hot(codes.long(), n_codes).to(z.dtype)  # [M, K]
    counts = onehot.sum(0)  # n_i
    sums = onehot.t() @ z  # s_i
    new_size = decay * cluster_size + (1.0 - decay) * counts
    new_sum = decay * embed_sum + (1.0 - decay) * sums
    total = new_size.sum()
    smoothed = (new_size + eps) / (total + n_codes * eps) * total
    return new_size, new_sum, new_sum / smoothed.unsqueeze(1)


class VectorQuantizerEMA(nn.Module):
    """Nearest-neighbour quantiser with an EMA-updated codebook [K, D].

    ``forward(z [B, D, h, w]) -> (quantised, loss, codes [B, h, w])``: ``quantised`` carries the
    straight-through gradient to ``z``, ``loss = commitment_cost · ||z − sg(e)||²``. In training
    mode the codebook moves by ``ema_update``; with ``data_init`` the first training batch
    seeds the codebook with randomly chosen encoder vectors (avoids dead codes).
    """

    codebook: Tensor
    cluster_size: Tensor
    embed_sum: Tensor
    initialised: Tensor

    def __init__(
        self,
        n_codes: int,
        code_dim: int,
        commitment_cost: float = 0.25,
        decay: float = 0.99,
        eps: float = 1e-5,
        data_init: bool = True,
    ) -> None:
        super().__init__()
        if n_codes < 1 or code_dim < 1:
            raise ValueError(f"n_codes and code_dim must be >= 1, got {n_codes}, {code_dim}")
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"decay must be in [0, 1), got {decay}")
        self.n_codes, self.code_dim = n_codes, code_dim
        self.commitment_cost, self.decay, self.eps = commitment_cost, decay, eps
        codebook = torch.empty(n_codes, code_dim).uniform_(-1.0 / n_codes, 1.0 / n_codes)
        self.register_buffer("codebook", codebook)
        self.register_buffer("cluster_size", torch.ones(n_codes))
        self.register_buffer("embed_sum", codebook.clone())
        self.register_buffer("initialised", torch.tensor(not data_init))

    def _init_from(self, flat: Tensor) -> None:
        if flat.shape[0] >= self.n_codes:
            idx = torch.randperm(flat.shape[0], device=flat.device)[: self.n_codes]
        else:  # fewer vectors than codes: sample with replacement
            idx = torch.randint(flat.shape[0], (self.n_codes,), device=flat.device)
        chosen = flat[idx].clone()
        self.codebook.copy_(chosen)
        self.embed_sum.copy_(chosen)
        self.cluster_size.fill_(1.0)
        self.initialised.fill_(True)

    def nearest(self, flat: Tensor) -> Tensor:
        """Index of the nearest code (squared L2) for each row of ``flat`` [M, D]."""
        dist = (
            flat.pow(2).sum(1, keepdim=True)
            - 2.0 * flat @ self.codebook.t()
            + self.codebook.pow(2).sum(1).unsqueeze(0)
        )
        return dist.argmin(1)

    def lookup(self, codes: Tensor) -> Tensor:
        """Codebook vectors for ``codes`` [B, h, w] as a map [B, D, h, w]."""
        if codes.dtype.is_floating_point or codes.min() < 0 or codes.max() >= self.n_codes:
            raise ValueError(f"codes must be integers in [0, {self.n_codes})")
        return self.codebook[codes.long()].permute(0, 3, 1, 2).contiguous()

    def forward(self, z: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        if z.ndim != 4 or z.shape[1] != self.code_dim:
            raise ValueError(f"expected z [B, {self.code_dim}, h, w], got {tuple(z.shape)}")
        b, d, h, w = z.shape
        flat = z.permute(0, 2, 3, 1).reshape(-1, d)
        with torch.no_grad():
            if self.training and not bool(self.initialised):
                self._init_from(flat.detach().float())
            codes = self.nearest(flat.detach().to(self.codebook.dtype))
        quantised = self.codebook[codes].to(z.dtype).view(b, h, w, d).permute(0, 3, 1, 2)
        if self.training:
            with torch.no_grad():
                size, total, book = ema_update(
                    flat.detach().to(self.codebook.dtype),
                    codes,
                    self.cluster_size,
                    self.embed_sum,
                    self.decay,
                    self.eps,
                )
                self.cluster_size.copy_(size)
                self.embed_sum.copy_(total)
                self.codebook.copy_(book)
        loss = self.commitment_cost * F.mse_loss(z, quantised.detach())
        straight_through = z + (quantised - z).detach()
        return straight_through, loss, codes.view(b, h, w)


def codebook_perplexity(codes: Tensor, n_codes: int) -> float:
    """exp(entropy) of the code histogram: 1 if one code is used, ``n_codes`` if all equally."""
    counts = torch.bincount(codes.reshape(-1).long(), minlength=n_codes).double()
    probs = counts / counts.sum()
    nonzero = probs[probs > 0]
    return float(torch.exp(-(nonzero * nonzero.log()).sum()))


# --------------------------------------------------------------------------- encoder / decoder


class ConvDecoder(nn.Module):
    """Features [B, C, h, w] -> image [B, out_channels, H, W] by ×2 transposed-conv stages.

    Channels halve per stage from ``hidden`` down to ``min_channels``; ``out_activation``
    ``"sigmoid"`` maps to [0, 1] images, ``None`` leaves raw values.
    """

    def __init__(
        self,
        in_channels: int,
        out_size: Size,
        in_size: Size,
        hidden: int = 128,
        out_channels: int = 3,
        min_channels: int = 16,
        out_activation: str | None = "sigmoid",
    ) -> None:
        super().__init__()
        if out_activation not in ("sigmoid", None):
            raise ValueError(f"out_activation must be 'sigmoid' or None, got {out_activation!r}")
        self.in_size = _pair(in_size, "in_size")
        self.out_size = _pair(out_size, "out_size")
        self.n_stages = _n_doublings(self.in_size, self.out_size, "ConvDecoder")
        self.out_activation = out_activation
        chans = [max(hidden >> i, min_channels) for i in range(self.n_stages + 1)]
        layers: list[nn.Module] = [nn.Conv2d(in_channels, chans[0], 3, padding=1), nn.ReLU()]
        for cin, cout in itertools.pairwise(chans):
            layers += [nn.ConvTranspose2d(cin, cout, 4, stride=2, padding=1), nn.ReLU()]
        layers.append(nn.Conv2d(chans[-1], out_channels, 3, padding=1))
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        _check_spatial(x, self.in_size, "ConvDecoder")
        y = _resize(self.net(x), self.out_size)
        return torch.sigmoid(y) if self.out_activation == "sigmoid" else y


class ConvEncoder(nn.Module):
    """Trainable image encoder [B, 3, H, W] -> [B, out_channels, h, w] (stride-2 conv stages)."""

    def __init__(
        self,
        out_channels: int,
        in_size: Size,
        out_size: Size,
        hidden: int = 64,
        in_channels: int = 3,
        min_channels: int = 16,
    ) -> None:
        super().__init__()
        self.in_size = _pair(in_size, "in_size")
        self.out_size = _pair(out_size, "out_size")
        self.n_stages = _n_doublings(self.out_size, self.in_size, "ConvEncoder (reversed)")
        chans = [max(hidden >> i, min_channels) for i in range(self.n_stages, -1, -1)]
        layers: list[nn.Module] = [nn.Conv2d(in_channels, chans[0], 3, padding=1), nn.ReLU()]
        for cin, cout in itertools.pairwise(chans):
            layers += [nn.Conv2d(cin, cout, 4, stride=2, padding=1), nn.ReLU()]
        layers.append(nn.Conv2d(chans[-1], out_channels, 3, padding=1))
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        _check_spatial(x, self.in_size, "ConvEncoder")
        y = self.net(x)
        if tuple(y.shape[-2:]) != self.out_size:
            y = F.adaptive_avg_pool2d(y, self.out_size)
        return y


class VQVAE(nn.Module):
    """Encoder -> 1×1 conv to ``code_dim`` -> ``VectorQuantizerEMA`` -> ``ConvDecoder``.

    Give at most one of ``encoder`` (trainable module, e.g. ``ConvEncoder``) and
    ``frozen_encoder`` (any callable run under ``torch.no_grad()`` and kept out of
    ``parameters()``, e.g. ``functools.partial(spatial_features, model.visual)``); with neither,
    ``forward`` takes precomputed features [B, in_channels, *grid_size].
    ``forward(x) -> (recon, vq_loss, codes)``; ``decode_codes(codes)`` decodes any code map.
    """

    def __init__(
        self,
        in_channels: int,
        grid_size: Size,
        image_size: Size,
        n_codes: int = 512,
        code_dim: int = 64,
        encoder: nn.Module | None = None,
        frozen_encoder: Callable[[Tensor], Tensor] | None = None,
        hidden: int = 128,
        commitment_cost: float = 0.25,
        decay: float = 0.99,
        eps: float = 1e-5,
        out_activation: str | None = "sigmoid",
    ) -> None:
        super().__init__()
        if encoder is not None and frozen_encoder is not None:
            raise ValueError("pass either encoder (trainable) or frozen_encoder, not both")
        self.grid_size = _pair(grid_size, "grid_size")
        self.encoder = encoder
        # A tuple keeps a frozen nn.Module out of the registered submodules and parameters.
        self._frozen: tuple[Callable[[Tensor], Tensor], ...] = (
            (frozen_encoder,) if frozen_encoder is not None else ()
        )
        self.pre_quant = nn.Conv2d(in_channels, code_dim, 1)
        self.quantizer = VectorQuantizerEMA(n_codes, code_dim, commitment_cost, decay, eps)
        self.decoder = ConvDecoder(
            code_dim, image_size, self.grid_size, hidden=hidden, out_activation=out_activation
        )

    def features(self, x: Tensor) -> Tensor:
        """Encoder features [B, in_channels, h, w] (identity for precomputed features)."""
        if self.encoder is not None:
            return self.encoder(x)
        if self._frozen:
            with torch.no_grad():
                return self._frozen[0](x).detach()
        return x

    def encode(self, x: Tensor) -> Tensor:
        """Continuous pre-quantisation map [B, code_dim, h, w]."""
        feats = self.features(x)
        _check_spatial(feats, self.grid_size, "VQVAE quantiser")
        return self.pre_quant(feats)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        quantised, loss, codes = self.quantizer(self.encode(x))
        return self.decoder(quantised), loss, codes

    def decode_codes(self, codes: Tensor) -> Tensor:
        """Decode a code map [B, h, w] (e.g. ``torch.randint(n_codes, ...)``) to images."""
        return self.decoder(self.quantizer.lookup(codes))


def vqvae_loss(output: tuple[Tensor, Tensor, Tensor], target: Tensor) -> Tensor:
    """MSE reconstruction + commitment loss, for ``train_decoder(VQVAE(...), ...)``."""
    recon, vq_loss, _ = output
    return F.mse_loss(recon, target) + vq_loss


# --------------------------------------------------------------------------- segmentation


def _conv_bn_relu_x2(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(),
        nn.Conv2d(cout, cout, 3, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(),
    )


class SegmentationDecoder(nn.Module):
    """Frozen spatial features [B, C, h, w] -> logits [B, n_classes, H, W].

    UNet-style decoder blocks (conv-BN-ReLU ×2, then ×2 bilinear upsampling), no skip
    connections; channels halve per block from ``hidden`` down to ``min_channels``.
    """

    def __init__(
        self,
        in_channels: int,
        n_classes: int,
        in_size: Size,
        out_size: Size,
        hidden: int = 128,
        min_channels: int = 16,
    ) -> None:
        super().__init__()
        if n_classes < 1:
            raise ValueError(f"n_classes must be >= 1, got {n_classes}")
        self.in_size = _pair(in_size, "in_size")
        self.out_size = _pair(out_size, "out_size")
        self.n_stages = _n_doublings(self.in_size, self.out_size, "SegmentationDecoder")
        chans = [in_channels] + [max(hidden >> i, min_channels) for i in range(self.n_stages)]
        blocks: list[nn.Module] = []
        for cin, cout in itertools.pairwise(chans):
            blocks += [
                _conv_bn_relu_x2(cin, cout),
                nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
            ]
        if not blocks:  # features already at the output resolution
            blocks.append(_conv_bn_relu_x2(in_channels, hidden))
            chans.append(hidden)
        self.blocks = nn.Sequential(*blocks)
        self.head = nn.Conv2d(chans[-1], n_classes, 1)

    def forward(self, x: Tensor) -> Tensor:
        _check_spatial(x, self.in_size, "SegmentationDecoder")
        return _resize(self.head(self.blocks(x)), self.out_size)


class UNet(nn.Module):
    """Small UNet with skip connections, trained from scratch: [B, C, H, W] -> [B, K, H, W]."""

    def __init__(
        self, n_classes: int, in_channels: int = 3, base: int = 16, depth: int = 3
    ) -> None:
        super().__init__()
        if n_classes < 1 or depth < 1 or base < 1:
            raise ValueError(
                f"n_classes, depth and base must be >= 1, got {n_classes}, {depth}, {base}"
            )
        chans = [base * 2**i for i in range(depth + 1)]
        self.inc = _conv_bn_relu_x2(in_channels, chans[0])
        self.downs = nn.ModuleList(_conv_bn_relu_x2(chans[i], chans[i + 1]) for i in range(depth))
        self.ups = nn.ModuleList(
            nn.ConvTranspose2d(chans[i + 1], chans[i], 2, stride=2) for i in reversed(range(depth))
        )
        self.merges = nn.ModuleList(
            _conv_bn_relu_x2(2 * chans[i], chans[i]) for i in reversed(range(depth))
        )
        self.head = nn.Conv2d(chans[0], n_classes, 1)

    def forward(self, x: Tensor) -> Tensor:
        if x.ndim != 4:
            raise ValueError(f"UNet expects [B, C, H, W], got {tuple(x.shape)}")
        skips = [self.inc(x)]
        for down in self.downs:
            skips.append(down(F.max_pool2d(skips[-1], 2, ceil_mode=True)))
        y = skips.pop()
        for up, merge in zip(self.ups, self.merges, strict=True):
            skip = skips.pop()
            y = _resize(up(y), tuple(skip.shape[-2:]))
            y = merge(torch.cat([skip, y], dim=1))
        return self.head(y)


# --------------------------------------------------------------------------- metrics


def psnr(x: Tensor, y: Tensor, data_range: float = 1.0) -> float:
    """Peak signal-to-noise ratio in dB of the mean squared error over all of ``x`` vs ``y``.

    Images should be in [0, data_range] (un-normalised). Identical inputs give ``inf``.
    """
    if x.shape != y.shape:
        raise ValueError(f"psnr needs equal shapes, got {tuple(x.shape)} and {tuple(y.shape)}")
    if data_range <= 0:
        raise ValueError(f"data_range must be > 0, got {data_range}")
    mse = float((x.detach().double() - y.detach().double()).pow(2).mean())
    if mse == 0.0:
        return math.inf
    return 10.0 * math.log10(data_range**2 / mse)


def miou(
    pred: Tensor,
    target: Tensor,
    n_classes: int,
    ignore_absent: bool = True,
    ignore_index: int | None = None,
) -> float:
    """Mean intersection-over-union of label maps ``pred``/``target`` [B, H, W] over the batch.

    Intersections and unions are summed over all pixels of the batch. With ``ignore_absent``
    the mean runs over classes present in ``pred`` or ``target``; otherwise over all
    ``n_classes``, a class absent from both counting as 1.0. Pixels whose target equals
    ``ignore_index`` are skipped. Perfect prediction: 1.0; disjoint labels: 0.0.
    """
    if pred.shape != target.shape:
        raise ValueError(f"miou needs equal shapes, got {tuple(pred.shape)}, {tuple(target.shape)}")
    if pred.dtype.is_floating_point or target.dtype.is_floating_point:
        raise ValueError("miou takes integer label maps; use logits.argmax(1) for predictions")
    pred, target = pred.reshape(-1).long(), target.reshape(-1).long()
    if ignore_index is not None:
        keep = target != ignore_index
        pred, target = pred[keep], target[keep]
    for name, labels in (("pred", pred), ("target", target)):
        if labels.numel() and (labels.min() < 0 or labels.max() >= n_classes):
            raise ValueError(
                f"{name} has labels outside [0, {n_classes}); pass the right n_classes "
                "or ignore_index"
            )
    confusion = torch.bincount(target * n_classes + pred, minlength=n_classes**2)
    confusion = confusion.view(n_classes, n_classes).double()
    inter = confusion.diag()
    union = confusion.sum(0) + confusion.sum(1) - inter
    present = union > 0
    if ignore_absent:
        if not present.any():
            raise ValueError("miou: no labelled pixels to score (all ignored or empty)")
        return float((inter[present] / union[present]).mean())
    iou = torch.where(present, inter / union.clamp_min(1), torch.ones_like(inter))
    return float(iou.mean())


# --------------------------------------------------------------------------- training


def _batches(n: int, batch_size: int, generator: torch.Generator) -> Iterator[Tensor]:
    """Endless stream of index batches: a fresh permutation per epoch, last partial dropped."""
    size = min(batch_size, n)
    while True:
        perm = torch.randperm(n, generator=generator)
        for start in range(0, n - size + 1, size):
            yield perm[start : start + size]


def _evaluate(
    model: nn.Module,
    inputs: Tensor,
    targets: Tensor,
    loss_fn: Callable[[Any, Tensor], Tensor],
    batch_size: int,
    device: torch.device,
) -> float:
    model.eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for xb, yb in zip(inputs.split(batch_size), targets.split(batch_size), strict=True):
            loss = loss_fn(model(xb.to(device)), yb.to(device))
            total += float(loss) * len(xb)
            count += len(xb)
    model.train()
    return total / count


def train_decoder(
    model: nn.Module,
    inputs: Tensor,
    targets: Tensor,
    loss_fn: Callable[[Any, Tensor], Tensor],
    steps: int,
    lr: float = 1e-3,
    batch_size: int = 32,
    seed: int = 0,
    val: tuple[Tensor, Tensor] | None = None,
    eval_every: int = 50,
    device: str | torch.device | None = None,
    progress: bool = True,
    desc: str = "train",
    on_eval: Callable[[int, float], None] | None = None,
) -> dict[str, Any]:
    """Train ``model`` with Adam on ``loss_fn(model(inputs[idx]), targets[idx])``.

    Batches are drawn (per-epoch permutations) from a ``torch.Generator`` seeded with ``seed``,
    and the global torch RNG is seeded inside a forked RNG state, so equal seeds give equal
    curves without disturbing the caller's RNG. ``inputs`` may be precomputed frozen features.
    Returns ``{"train_loss": [per step], "val_loss": [...], "val_step": [...], "seed": seed}``;
    validation (mean loss over ``val``) runs every ``eval_every`` steps and after the last step.
    ``on_eval(step, val_loss)``, if given, is called after each validation (e.g. to snapshot
    the model for choosing the step on validation). The model is left in eval mode.
    """
    if len(inputs) != len(targets) or len(inputs) == 0:
        raise ValueError(
            f"inputs and targets need the same non-zero length, got {len(inputs)}, {len(targets)}"
        )
    if steps < 1 or batch_size < 1 or eval_every < 1 or lr <= 0:
        raise ValueError(
            f"steps, batch_size, eval_every and lr must be positive, got {steps}, "
            f"{batch_size}, {eval_every}, {lr}"
        )
    if val is not None and (len(val) != 2 or len(val[0]) != len(val[1]) or len(val[0]) == 0):
        raise ValueError("val must be (inputs, targets) of equal non-zero length, or None")
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("model has no trainable parameters; unfreeze the decoder")
    dev = torch.device(device) if device is not None else params[0].device

    history: dict[str, Any] = {"train_loss": [], "val_loss": [], "val_step": [], "seed": seed}
    generator = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        optimiser = torch.optim.Adam(params, lr=lr)
        model.train()
        batches = _batches(len(inputs), batch_size, generator)
        bar = tqdm(range(steps), desc=desc, leave=False, disable=not progress)
        for step in bar:
            idx = next(batches)
            loss = loss_fn(model(inputs[idx].to(dev)), targets[idx].to(dev))
            if not torch.isfinite(loss):
                raise ValueError(f"loss became {loss.item()} at step {step}; lower lr")
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            history["train_loss"].append(loss.item())
            if val is not None and ((step + 1) % eval_every == 0 or step + 1 == steps):
                history["val_loss"].append(
                    _evaluate(model, val[0], val[1], loss_fn, batch_size, dev)
                )
                history["val_step"].append(step + 1)
                if on_eval is not None:
                    on_eval(step + 1, history["val_loss"][-1])
            if step % 10 == 0 or step + 1 == steps:
                bar.set_postfix(loss=f"{history['train_loss'][-1]:.4g}")
        bar.close()
    model.eval()
    return history
