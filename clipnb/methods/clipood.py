"""CLIPood pieces: Margin Metric Softmax and weight averaging over a fine-tuning run.

From Shu et al., "CLIPood: Generalizing CLIP to Out-of-Distributions" (ICML 2023).

Margin Metric Softmax (eqs. 3-4), with ``S`` the cosine similarity, image embedding
``I``, frozen class text embeddings ``T_c`` and temperature ``tau``::

    L = -log  exp(S(I, T_y) / tau) / sum_c exp((S(I, T_c) + lambda * D(T_y, T_c)) / tau)
    D(T_y, T_c) = 1 - S(T_y, T_c)

Beta Moving Average (eqs. 5-7): over a trajectory ``theta_0 .. theta_T`` (``theta_0`` the
pretrained weights) with ``alpha_t = Beta(beta, beta).pdf((t + 0.5) / (T + 1))``::

    theta_t^BMA = A_{t-1} / A_t * theta_{t-1}^BMA + alpha_t / A_t * theta_t,
    A_t = sum_{k <= t} alpha_k,

i.e. the running weighted mean ``sum_k alpha_k theta_k / sum_k alpha_k``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Self

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "BetaMovingAverage",
    "ExponentialMovingAverage",
    "UniformAverage",
    "beta_pdf",
    "margin_metric_softmax",
    "text_margins",
]


# ---------------------------------------------------------------------------
# Margin Metric Softmax
# ---------------------------------------------------------------------------
def _check_2d(x: Tensor, name: str) -> None:
    if not isinstance(x, Tensor) or x.ndim != 2 or not x.is_floating_point():
        shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
        raise ValueError(f"{name} must be a 2-D floating-point tensor [n, dim], got {shape}.")


def text_margins(text_features: Tensor) -> Tensor:
    """Adaptive margins ``D[y, c] = 1 - cos(T_y, T_c)`` [C, C] (eq. 4).

    Computed from detached (frozen) text embeddings; the diagonal is exactly zero,
    the matrix is symmetric and its entries lie in ``[0, 2]``.
    """
    _check_2d(text_features, "text_features")
    t = F.normalize(text_features.detach().float(), dim=-1)
    d = (1.0 - t @ t.T).clamp(0.0, 2.0)
    d = 0.5 * (d + d.T)  # exact symmetry despite round-off
    d.fill_diagonal_(0.0)
    return d


def margin_metric_softmax(
    image_features: Tensor,
    text_features: Tensor,
    labels: Tensor,
    temperature: float,
    margin: float,
) -> Tensor:
    """Mean Margin Metric Softmax loss (CLIPood eq. 3).

    ``L = -log exp(S(I,T_y)/tau) / sum_c exp((S(I,T_c) + margin * D(T_y,T_c))/tau)``, which
    equals ``cross_entropy((S + margin * D[y]) / tau, y)`` because ``D[y, y] = 0``.
    ``S`` is the cosine similarity (both inputs are L2-normalised here), text embeddings
    are detached (frozen); with ``margin = 0`` this is plain cross-entropy on ``S / tau``.
    """
    _check_2d(image_features, "image_features")
    _check_2d(text_features, "text_features")
    if image_features.shape[1] != text_features.shape[1]:
        raise ValueError(
            f"image_features dim {image_features.shape[1]} != text_features dim "
            f"{text_features.shape[1]}; use embeddings from the same CLIP model."
        )
    n_classes = text_features.shape[0]
    if not isinstance(labels, Tensor) or labels.ndim != 1 or labels.is_floating_point():
        raise ValueError("labels must be a 1-D integer tensor of class indices (.long()).")
    if labels.shape[0] != image_features.shape[0]:
        raise ValueError(
            f"labels has {labels.shape[0]} entries but image_features has {image_features.shape[0]} rows."
        )
    if labels.numel() == 0:
        raise ValueError("margin_metric_softmax needs a non-empty batch.")
    if labels.min() < 0 or labels.max() >= n_classes:
        raise ValueError(f"labels must lie in [0, {n_classes}) (number of text_features rows).")
    if not (math.isfinite(temperature) and temperature > 0):
        raise ValueError(
            f"temperature must be > 0 (CLIP uses 1/logit_scale ~ 0.01), got {temperature}."
        )
    if not (math.isfinite(margin) and margin >= 0):
        raise ValueError(f"margin (lambda) must be a finite float >= 0, got {margin}.")

    labels = labels.long().to(image_features.device)
    img = F.normalize(image_features, dim=-1)
    txt = F.normalize(text_features.detach().to(img.dtype), dim=-1)
    sims = img @ txt.T  # S(I, T_c), [B, C]
    if margin != 0:
        sims = sims + margin * text_margins(txt).to(sims.dtype)[labels]
    return F.cross_entropy(sims / temperature, labels)


# ---------------------------------------------------------------------------
# Weight averaging
# ---------------------------------------------------------------------------
def beta_pdf(x: float, a: float, b: float) -> float:
    """Beta(a, b) density ``x^(a-1) (1-x)^(b-1) / B(a, b)`` for ``0 < x < 1``."""
    if not 0.0 < x < 1.0:
        raise ValueError(f"beta_pdf is evaluated on the open interval (0, 1), got x={x}.")
    log_b = math.lgamma(a) + math.lgamma(b) - math.lgamma(a + b)
    return math.exp((a - 1.0) * math.log(x) + (b - 1.0) * math.log1p(-x) - log_b)


StateLike = nn.Module | Mapping[str, Tensor]


class _RunningAverage:
    """Shared machinery: ``avg <- (1 - c) * avg + c * theta`` on floating-point tensors.

    Floating-point entries are accumulated in ``dtype`` (float64 by default) and returned
    in their original dtype; integer/bool buffers (e.g. BatchNorm ``num_batches_tracked``)
    are copied from the latest state. ``c = 1`` on the first update.
    """

    dtype: torch.dtype

    def _validate_params(self) -> None:
        if not isinstance(self.dtype, torch.dtype) or not self.dtype.is_floating_point:
            raise ValueError(
                f"dtype must be a floating torch.dtype (e.g. torch.float64), got {self.dtype}."
            )

    def _coefficient(self, step: int, first: bool) -> float:  # pragma: no cover - abstract
        raise NotImplementedError

    def _after_update(self, step: int, first: bool) -> None:
        """Hook to update bookkeeping once the new state has been folded in."""

    def _validate_step(self, step: int) -> None:
        if not isinstance(step, int) or isinstance(step, bool):
            raise ValueError(f"step must be an int, got {step!r}.")
        last = getattr(self, "last_step_", None)
        if last is not None and step <= last:
            raise ValueError(f"steps must increase strictly: got step={step} after {last}.")

    @staticmethod
    def _as_state(model_or_state_dict: StateLike) -> Mapping[str, Tensor]:
        if isinstance(model_or_state_dict, nn.Module):
            return model_or_state_dict.state_dict()
        if isinstance(model_or_state_dict, Mapping):
            return model_or_state_dict
        raise ValueError(
            "update() expects an nn.Module or a state dict (Mapping[str, Tensor]), "
            f"got {type(model_or_state_dict).__name__}."
        )

    def _check_compatible(self, state: Mapping[str, Tensor]) -> None:
        if set(state) != set(self.average_):
            diff = sorted(set(self.average_) ^ set(state))
            raise ValueError(f"state dict keys changed between updates: {diff[:5]}.")
        for name, value in state.items():
            if tuple(value.shape) != tuple(self.average_[name].shape):
                raise ValueError(
                    f"shape of {name!r} changed from {tuple(self.average_[name].shape)} "
                    f"to {tuple(value.shape)}."
                )

    def update(self, model_or_state_dict: StateLike, step: int) -> Self:
        """Fold the weights ``theta_step`` into the running average (returns self)."""
        self._validate_params()
        self._validate_step(step)
        state = self._as_state(model_or_state_dict)
        first = not hasattr(self, "average_")
        if not first:
            self._check_compatible(state)
        coef = self._coefficient(step, first)  # validates params; no side effects
        if first:
            self.average_: dict[str, Tensor] = {}
            self.dtypes_: dict[str, torch.dtype] = {}
            self.n_updates_ = 0
        with torch.no_grad():
            for name, value in state.items():
                value = value.detach()
                if first:
                    self.dtypes_[name] = value.dtype
                if value.is_floating_point():
                    if first:
                        self.average_[name] = value.to(self.dtype, copy=True)
                    else:
                        avg = self.average_[name]
                        avg.add_(value.to(device=avg.device, dtype=avg.dtype) - avg, alpha=coef)
                else:
                    self.average_[name] = value.clone()
        self._after_update(step, first)
        self.n_updates_ += 1
        self.last_step_ = step
        return self

    def state_dict(self) -> dict[str, Tensor]:
        """Averaged weights, each in the dtype it had in the updates."""
        if not hasattr(self, "average_"):
            raise ValueError(f"{type(self).__name__} has no weights yet; call update() first.")
        return {k: v.to(self.dtypes_[k], copy=True) for k, v in self.average_.items()}

    def copy_to(self, model: nn.Module) -> nn.Module:
        """Load the averaged weights into ``model`` (strict) and return it."""
        model.load_state_dict(self.state_dict())
        return model


class BetaMovingAverage(_RunningAverage):
    """Beta Moving Average (CLIPood eqs. 5-7).

    Indexing follows Algorithm 1 of the paper: the trajectory is ``theta_0 .. theta_T``
    with ``theta_0`` the pretrained model, so call ``update(pretrained, 0)`` before
    training and ``update(model, t)`` after optimisation step ``t = 1..T``. The weight
    of ``theta_t`` is ``alpha_t = Beta(beta, beta).pdf((t + 0.5) / (T + 1))`` and

        theta_t^BMA = A_{t-1}/(A_{t-1} + alpha_t) * theta_{t-1}^BMA
                      + alpha_t/(A_{t-1} + alpha_t) * theta_t,   A_t = sum_{k<=t} alpha_k.

    With ``beta = 1`` every ``alpha_t = 1`` and the result is the uniform mean of all
    ``T + 1`` models (pretrained included).
    """

    def __init__(self, beta: float, total_steps: int, dtype: torch.dtype = torch.float64) -> None:
        self.beta = beta
        self.total_steps = total_steps
        self.dtype = dtype

    def weight(self, step: int) -> float:
        """``alpha_t = Beta(beta, beta).pdf((t + 0.5) / (T + 1))``."""
        if not (math.isfinite(self.beta) and self.beta > 0):
            raise ValueError(f"beta must be a finite float > 0 (paper: 0.5), got {self.beta}.")
        if not (isinstance(self.total_steps, int) and self.total_steps >= 0):
            raise ValueError(f"total_steps must be an int >= 0, got {self.total_steps!r}.")
        if not 0 <= step <= self.total_steps:
            raise ValueError(
                f"step must be in [0, total_steps={self.total_steps}] (0 = pretrained), got {step}."
            )
        x = (step + 0.5) / (self.total_steps + 1)
        return beta_pdf(x, self.beta, self.beta)

    def _coefficient(self, step: int, first: bool) -> float:
        w = self.weight(step)
        if first:
            return 1.0
        new_sum = self.weight_sum_ + w
        # if every weight so far underflowed to 0, fall back to the latest model
        return 1.0 if new_sum == 0 else w / new_sum

    def _after_update(self, step: int, first: bool) -> None:
        self.weight_sum_ = (0.0 if first else self.weight_sum_) + self.weight(step)


class ExponentialMovingAverage(_RunningAverage):
    """Exponential moving average ``avg <- decay * avg + (1 - decay) * theta_t``.

    The first update initialises ``avg = theta``; ``decay = 0`` keeps the last state.
    ``step`` is only checked to increase.
    """

    def __init__(self, decay: float = 0.999, dtype: torch.dtype = torch.float64) -> None:
        self.decay = decay
        self.dtype = dtype

    def _coefficient(self, step: int, first: bool) -> float:
        if not 0.0 <= self.decay <= 1.0:
            raise ValueError(f"decay must be in [0, 1], got {self.decay}.")
        return 1.0 if first else 1.0 - self.decay


class UniformAverage(_RunningAverage):
    """Uniform average of all states passed to :meth:`update` (``sum_t theta_t / n``)."""

    def __init__(self, dtype: torch.dtype = torch.float64) -> None:
        self.dtype = dtype

    def _coefficient(self, step: int, first: bool) -> float:
        return 1.0 if first else 1.0 / (self.n_updates_ + 1)
