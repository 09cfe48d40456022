"""One way to evaluate: zero-shot logits, accuracy, linear probes chosen on validation, mean ± std."""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression

from clipnb.core.utils import one_blas_thread

T = TypeVar("T")

#: Inverse regularisation strengths swept for the logistic-regression probe (the source used 0.316).
PROBE_CS: tuple[float, ...] = tuple(float(c) for c in np.logspace(-3, 3, 13))


def zero_shot_logits(
    image_features: torch.Tensor, class_embeddings: torch.Tensor, logit_scale: float = 100.0
) -> torch.Tensor:
    """CLIP's zero-shot logits: ``logit_scale · f Wᵀ`` on normalised features."""
    return logit_scale * image_features @ class_embeddings.T


def accuracy(scores: torch.Tensor | np.ndarray, labels: torch.Tensor | np.ndarray) -> float:
    """Top-1 accuracy in percent, from logits ``[N,C]`` or predicted labels ``[N]``."""
    scores = torch.as_tensor(np.asarray(scores) if isinstance(scores, np.ndarray) else scores)
    preds = scores.argmax(dim=-1) if scores.ndim == 2 else scores
    labels = torch.as_tensor(np.asarray(labels) if isinstance(labels, np.ndarray) else labels)
    return float((preds.cpu() == labels.cpu()).float().mean().item() * 100.0)


def select_on_validation(
    candidates: Iterable[T], score: Callable[[T], float]
) -> tuple[T, list[float]]:
    """The candidate with the best validation ``score`` (first one on ties) and all scores.

    Every hyper-parameter and epoch choice in the report goes through here, with a ``score``
    that only sees the validation split.
    """
    candidates = list(candidates)
    if not candidates:
        raise ValueError("no candidates to select from")
    scores = [float(score(c)) for c in candidates]
    return candidates[int(np.argmax(scores))], scores


@dataclass
class ProbeResult:
    classifier: LogisticRegression
    C: float
    val_scores: list[float]


def fit_linear_probe(
    train_x: np.ndarray | torch.Tensor,
    train_y: np.ndarray,
    val_x: np.ndarray | torch.Tensor,
    val_y: np.ndarray,
    Cs: Sequence[float] = PROBE_CS,
    max_iter: int = 1000,
) -> ProbeResult:
    """Logistic regression on frozen features with C chosen on the validation split."""
    fitted = fit_probe_path(train_x, train_y, Cs, max_iter)
    val_x = np.asarray(val_x)
    best, scores = select_on_validation(Cs, lambda C: accuracy(fitted[C].predict(val_x), val_y))
    return ProbeResult(fitted[best], float(best), scores)


def fit_probe_path(
    train_x: np.ndarray | torch.Tensor,
    train_y: np.ndarray,
    Cs: Sequence[float] = PROBE_CS,
    max_iter: int = 1000,
) -> dict[float, LogisticRegression]:
    """One logistic regression per C, fitted along the regularisation path.

    From the smallest C up, each fit starts from the previous solution: the objective is strictly
    convex, so it reaches the cold-start optimum in a fraction of the iterations.
    """
    train_x = np.asarray(train_x)
    path = LogisticRegression(max_iter=max_iter, warm_start=True)
    with one_blas_thread():
        return {
            C: copy.deepcopy(path.set_params(C=C).fit(train_x, train_y)) for C in sorted(set(Cs))
        }


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and (population) std over seeds."""
    arr = np.asarray(values, dtype=float)
    return float(arr.mean()), float(arr.std())
