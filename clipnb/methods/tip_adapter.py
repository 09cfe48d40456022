"""Tip-Adapter and Tip-Adapter-F on precomputed CLIP features.

Tip-Adapter (Zhang et al., ECCV 2022) adds a key-value cache built from the few-shot
training set to CLIP's zero-shot classifier. For an L2-normalised query feature ``f``
([B, D]), cache keys ``K`` ([N, D], the normalised few-shot train features), one-hot
cache values ``L`` ([N, C]) and zero-shot class text embeddings ``W`` ([C, D]):

    A      = exp(-beta * (1 - f K^T))                 # [B, N] affinities in (0, 1]
    logits = logit_scale * f W^T + alpha * A L        # [B, C]

``alpha`` is the residual ratio (``alpha = 0`` is zero-shot CLIP) and ``beta`` the
sharpness of the affinity. Tip-Adapter-F makes ``K`` learnable (initialised at the
cache) and fine-tunes it with cross-entropy on the few-shot train features.

All hyper-parameter selection here uses a validation split only; nothing in this
module ever receives test data.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Self

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "ALPHAS",
    "BETAS",
    "TipAdapter",
    "TipAdapterF",
    "search_alpha_beta",
]

#: Default residual ratios for :func:`search_alpha_beta`.
ALPHAS: tuple[float, ...] = (0.1, 0.5, 1.0, 2.0, 5.0)
#: Default affinity sharpness values for :func:`search_alpha_beta`.
BETAS: tuple[float, ...] = (0.5, 1.0, 2.0, 5.0, 10.0)

_NORM_TOL = 1e-3


def _check_matrix(x: Tensor, name: str, dim: int | None = None, normalised: bool = True) -> Tensor:
    """Validate a 2-D float feature matrix and return it as float32."""
    if not isinstance(x, Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(x).__name__}.")
    if x.ndim != 2:
        raise ValueError(f"{name} must be 2-D [n, dim], got shape {tuple(x.shape)}.")
    if not x.is_floating_point():
        raise ValueError(f"{name} must be a floating-point tensor; convert it with .float().")
    if dim is not None and x.shape[1] != dim:
        raise ValueError(
            f"{name} has feature dim {x.shape[1]} but the classifier expects {dim}; "
            "use features from the same CLIP model as zs_weights."
        )
    x = x.float()
    if not torch.isfinite(x).all():
        raise ValueError(f"{name} contains NaN or inf values.")
    if normalised and x.shape[0] > 0:
        norms = x.norm(dim=1)
        if (norms - 1).abs().max() > _NORM_TOL:
            raise ValueError(
                f"{name} rows must be L2-normalised (norms range "
                f"{norms.min():.4f}..{norms.max():.4f}); apply "
                "torch.nn.functional.normalize(x, dim=-1) first."
            )
    return x


def _check_labels(labels: Tensor, n: int, num_classes: int, name: str = "labels") -> Tensor:
    """Validate integer class labels of length ``n`` in ``[0, num_classes)``."""
    if not isinstance(labels, Tensor) or labels.ndim != 1:
        raise ValueError(f"{name} must be a 1-D torch.Tensor of class indices.")
    if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
        raise ValueError(f"{name} must be an integer tensor; convert it with .long().")
    if labels.shape[0] != n:
        raise ValueError(f"{name} has {labels.shape[0]} entries but the features have {n} rows.")
    if n > 0 and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(
            f"{name} must lie in [0, {num_classes}) (the number of rows of zs_weights); "
            f"got range [{int(labels.min())}, {int(labels.max())}]."
        )
    return labels.long()


def _check_scale(logit_scale: float | Tensor) -> float:
    value = float(logit_scale)
    if not math.isfinite(value) or value <= 0:
        raise ValueError(
            f"logit_scale must be a positive finite float (CLIP's exp(t), ~100), got {value}; "
            "pass model.logit_scale.exp().item()."
        )
    return value


class TipAdapter:
    """Training-free Tip-Adapter.

    ``logits(f) = logit_scale * f W^T + alpha * exp(-beta * (1 - f K^T)) L``

    Parameters
    ----------
    alpha:
        Residual ratio weighting the cache logits (``0`` gives zero-shot CLIP).
    beta:
        Sharpness of the affinity ``exp(-beta * (1 - cos))``.
    """

    def __init__(self, alpha: float = 1.0, beta: float = 1.0) -> None:
        self.alpha = alpha
        self.beta = beta

    # ------------------------------------------------------------------ fitting
    def _validate_params(self) -> None:
        for name in ("alpha", "beta"):
            value = float(getattr(self, name))
            if not math.isfinite(value) or value < 0:
                raise ValueError(f"{name} must be a finite float >= 0, got {value}.")

    def _build_cache(
        self, keys: Tensor, labels: Tensor, zs_weights: Tensor, logit_scale: float | Tensor
    ) -> None:
        self._validate_params()
        zs = _check_matrix(zs_weights, "zs_weights")
        keys = _check_matrix(keys, "keys", dim=zs.shape[1])
        if keys.shape[0] == 0:
            raise ValueError("keys is empty; the cache needs at least one few-shot example.")
        labels = _check_labels(labels, keys.shape[0], zs.shape[0]).to(keys.device)
        self.zs_weights_ = zs.detach().clone()
        self.logit_scale_ = _check_scale(logit_scale)
        self.keys_ = keys.detach().clone()
        self.labels_ = labels.detach().clone()
        self.values_ = F.one_hot(labels, num_classes=zs.shape[0]).float()
        self.n_classes_ = zs.shape[0]

    def fit(
        self, keys: Tensor, labels: Tensor, zs_weights: Tensor, logit_scale: float | Tensor
    ) -> Self:
        """Store the cache: keys ``K`` = few-shot features [N, D], values ``L`` = one-hot labels."""
        self._build_cache(keys, labels, zs_weights, logit_scale)
        return self

    # --------------------------------------------------------------- inference
    def _check_fitted(self) -> None:
        if not hasattr(self, "keys_"):
            raise ValueError(f"This {type(self).__name__} is not fitted yet; call fit() first.")

    def _logits_with_keys(self, features: Tensor, keys: Tensor) -> Tensor:
        """``logit_scale * f W^T + alpha * exp(-beta * (1 - f K^T)) L`` for given keys."""
        zs_logits = self.logit_scale_ * features @ self.zs_weights_.T
        if self.alpha == 0 and not keys.requires_grad:
            return zs_logits  # exactly zero-shot CLIP
        affinity = torch.exp(-self.beta * (1.0 - features @ keys.T))
        return zs_logits + self.alpha * (affinity @ self.values_)

    def zero_shot_logits(self, features: Tensor) -> Tensor:
        """Zero-shot CLIP logits ``logit_scale * f W^T`` [B, C]."""
        self._check_fitted()
        features = _check_matrix(features, "features", dim=self.zs_weights_.shape[1])
        return self.logit_scale_ * features @ self.zs_weights_.T

    @torch.no_grad()
    def logits(self, features: Tensor) -> Tensor:
        """Tip-Adapter logits [B, C] for L2-normalised ``features`` [B, D]."""
        self._check_fitted()
        features = _check_matrix(features, "features", dim=self.zs_weights_.shape[1])
        return self._logits_with_keys(features, self.keys_)

    def forward_logits(self, features: Tensor) -> Tensor:
        """Tip-Adapter logits [B, C], differentiable w.r.t. ``features`` (no input checks).

        For gradient-based uses such as Grad-CAM's ``logit_fn``; the cache is moved to the
        features' device. :meth:`logits` is the checked, no-grad version.
        """
        self._check_fitted()
        device = features.device
        zs_logits = self.logit_scale_ * features @ self.zs_weights_.to(device).T
        if self.alpha == 0:
            return zs_logits
        affinity = torch.exp(-self.beta * (1.0 - features @ self.keys_.to(device).T))
        return zs_logits + self.alpha * (affinity @ self.values_.to(device))

    def predict(self, features: Tensor) -> Tensor:
        """Predicted class indices [B] (argmax of :meth:`logits`)."""
        return self.logits(features).argmax(dim=1)

    def score(self, features: Tensor, labels: Tensor) -> float:
        """Accuracy of :meth:`predict` against ``labels``."""
        self._check_fitted()
        labels = _check_labels(labels, features.shape[0], self.n_classes_)
        if labels.shape[0] == 0:
            raise ValueError("score() needs at least one example.")
        pred = self.predict(features)
        return float((pred == labels.to(pred.device)).double().mean())


class TipAdapterF(TipAdapter):
    """Tip-Adapter-F: the cache keys are fine-tuned with cross-entropy.

    The keys ``K`` (initialised at the few-shot features) are trained with AdamW and a
    cosine learning-rate schedule to minimise ``CE(logits(f_i; K), y_i)`` over the few-shot
    train features themselves, as in the paper; values ``L`` and ``W`` stay frozen.
    After every epoch the keys are snapshotted. If a validation split is given to
    :meth:`fit`, the keys of the epoch with the best validation accuracy are kept
    (first best on ties); otherwise the last epoch's keys are kept.

    Parameters
    ----------
    alpha, beta:
        As in :class:`TipAdapter` (fixed during training).
    lr:
        AdamW learning rate (paper: 1e-3).
    epochs:
        Number of passes over the few-shot set (paper: 20).
    batch_size:
        Mini-batch size (paper: 256).
    weight_decay:
        AdamW weight decay.
    seed:
        Seed of the ``torch.Generator`` that shuffles the mini-batches.
    keep_history:
        Keep a CPU copy of the keys after every epoch in ``keys_history_`` (memory
        ``epochs * N * D`` floats); set ``False`` for large caches.
    """

    def __init__(
        self,
        alpha: float = 1.0,
        beta: float = 1.0,
        lr: float = 1e-3,
        epochs: int = 20,
        batch_size: int = 256,
        weight_decay: float = 0.01,
        seed: int = 0,
        keep_history: bool = True,
    ) -> None:
        super().__init__(alpha=alpha, beta=beta)
        self.lr = lr
        self.epochs = epochs
        self.batch_size = batch_size
        self.weight_decay = weight_decay
        self.seed = seed
        self.keep_history = keep_history

    def _validate_train_params(self) -> None:
        if not (isinstance(self.epochs, int) and self.epochs >= 1):
            raise ValueError(f"epochs must be an int >= 1, got {self.epochs!r}.")
        if not (isinstance(self.batch_size, int) and self.batch_size >= 1):
            raise ValueError(f"batch_size must be an int >= 1, got {self.batch_size!r}.")
        if not (float(self.lr) > 0 and math.isfinite(float(self.lr))):
            raise ValueError(f"lr must be a positive float, got {self.lr!r}.")
        if float(self.weight_decay) < 0:
            raise ValueError(f"weight_decay must be >= 0, got {self.weight_decay!r}.")

    def fit(
        self,
        keys: Tensor,
        labels: Tensor,
        zs_weights: Tensor,
        logit_scale: float | Tensor,
        val_features: Tensor | None = None,
        val_labels: Tensor | None = None,
    ) -> Self:
        """Build the cache, fine-tune its keys and keep the best (val) or last epoch.

        Sets ``keys_`` (selected keys), ``init_keys_``, ``train_loss_curve_`` (mean
        mini-batch CE per epoch), ``val_curve_`` (val accuracy per epoch or ``None``),
        ``best_epoch_`` (0-based index of the kept epoch) and ``keys_history_``.
        """
        self._validate_train_params()
        self._build_cache(keys, labels, zs_weights, logit_scale)
        if (val_features is None) != (val_labels is None):
            raise ValueError("Pass both val_features and val_labels, or neither.")
        if val_features is not None:
            val_features = _check_matrix(
                val_features, "val_features", dim=self.zs_weights_.shape[1]
            )
            val_labels = _check_labels(
                val_labels, val_features.shape[0], self.n_classes_, "val_labels"
            )
            if val_features.shape[0] == 0:
                raise ValueError("val_features is empty; pass None to skip validation.")
            val_labels = val_labels.to(val_features.device)

        train_x = self.keys_  # the few-shot train features are also the queries
        train_y = self.labels_
        n = train_x.shape[0]
        n_batches = math.ceil(n / self.batch_size)
        total_iters = self.epochs * n_batches

        generator = torch.Generator(device="cpu").manual_seed(int(self.seed))
        learned = torch.nn.Parameter(self.keys_.clone())
        optimizer = torch.optim.AdamW(
            [learned], lr=float(self.lr), eps=1e-4, weight_decay=float(self.weight_decay)
        )
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total_iters)

        self.init_keys_ = self.keys_.clone()
        self.train_loss_curve_: list[float] = []
        self.val_curve_: list[float] | None = [] if val_features is not None else None
        self.keys_history_: list[Tensor] = []
        best_acc = -1.0
        best_keys = self.keys_.clone()
        best_epoch = self.epochs - 1

        for epoch in range(self.epochs):
            order = torch.randperm(n, generator=generator).to(train_x.device)
            losses = []
            for b in range(n_batches):
                idx = order[b * self.batch_size : (b + 1) * self.batch_size]
                logits = self._logits_with_keys(train_x[idx], learned)
                loss = F.cross_entropy(logits, train_y[idx])
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                scheduler.step()
                losses.append(float(loss.detach()) * idx.shape[0])
            self.train_loss_curve_.append(sum(losses) / n)

            snapshot = learned.detach().clone()
            if self.keep_history:
                self.keys_history_.append(snapshot.cpu())
            if val_features is not None:
                with torch.no_grad():
                    pred = self._logits_with_keys(val_features, snapshot).argmax(dim=1)
                acc = float((pred == val_labels).double().mean())
                self.val_curve_.append(acc)  # type: ignore[union-attr]
                if acc > best_acc:
                    best_acc, best_keys, best_epoch = acc, snapshot, epoch
            else:
                best_keys, best_epoch = snapshot, epoch

        self.keys_ = best_keys
        self.best_epoch_ = best_epoch
        return self

    def use_epoch(self, epoch: int) -> Self:
        """Replace ``keys_`` by the snapshot taken after ``epoch`` (0-based)."""
        self._check_fitted()
        if not self.keys_history_:
            raise ValueError("No key history was kept; refit with keep_history=True.")
        if not 0 <= epoch < len(self.keys_history_):
            raise ValueError(f"epoch must be in [0, {len(self.keys_history_)}), got {epoch}.")
        self.keys_ = self.keys_history_[epoch].to(self.init_keys_.device).clone()
        self.best_epoch_ = epoch
        return self


def search_alpha_beta(
    adapter_factory_or_cls: Callable[..., TipAdapter],
    train_keys: Tensor,
    train_labels: Tensor,
    val_features: Tensor,
    val_labels: Tensor,
    zs_weights: Tensor,
    logit_scale: float | Tensor,
    alphas: Sequence[float] = ALPHAS,
    betas: Sequence[float] = BETAS,
) -> tuple[float, float, np.ndarray]:
    """Grid-search ``(alpha, beta)`` by validation accuracy.

    For every pair, ``adapter_factory_or_cls(alpha=a, beta=b)`` is fitted on the train
    cache and scored on the validation split; ``grid[i, j] = acc_val(alphas[i], betas[j])``.
    Ties are broken deterministically by taking the first maximum in row-major order
    (smallest alpha index, then smallest beta index). Use ``functools.partial`` to pass
    extra constructor arguments (e.g. ``partial(TipAdapterF, epochs=10)``).

    Returns ``(best_alpha, best_beta, grid)`` with ``grid`` of shape [len(alphas), len(betas)].
    """
    alphas = [float(a) for a in alphas]
    betas = [float(b) for b in betas]
    if not alphas or not betas:
        raise ValueError("alphas and betas must be non-empty sequences, e.g. ALPHAS and BETAS.")
    if not callable(adapter_factory_or_cls):
        raise ValueError("adapter_factory_or_cls must be a class or callable(alpha=, beta=).")
    n_classes = _check_matrix(zs_weights, "zs_weights").shape[0]
    val_features = _check_matrix(val_features, "val_features")
    val_labels = _check_labels(val_labels, val_features.shape[0], n_classes, "val_labels")
    if val_features.shape[0] == 0:
        raise ValueError("val_features is empty; the search needs a validation split.")

    counts = np.zeros((len(alphas), len(betas)), dtype=np.int64)
    for i, a in enumerate(alphas):
        for j, b in enumerate(betas):
            adapter = adapter_factory_or_cls(alpha=a, beta=b)
            adapter.fit(train_keys, train_labels, zs_weights, logit_scale)
            pred = adapter.predict(val_features)
            counts[i, j] = int((pred.cpu() == val_labels.cpu()).sum())
    grid = counts / val_features.shape[0]
    i_best, j_best = np.unravel_index(int(np.argmax(counts)), counts.shape)
    return alphas[i_best], betas[j_best], grid
