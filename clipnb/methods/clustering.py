"""Label-free structure of feature spaces, and linear probes under label noise.

Two questions from the source study (CLIP vs. other backbones on in- and out-of-distribution data):

1. *Do the features organise data by class without labels?*  Reduce the features with UMAP
   (cosine metric), cluster with KMeans++ using k = number of classes, and compare clusters with
   the true labels using the five scores of the source's appendix table (homogeneity,
   completeness, V-measure, ARI, AMI) plus their plain mean (``"average"``).
2. *How do few-shot linear probes hold up when labels are wrong?*  Flip a fraction of the
   training labels to a different class and measure test accuracy of a logistic-regression probe.

The chapter's tables over backbones, datasets and seeds are built from these in
:mod:`clipnb.studies.clustering`. Everything is deterministic given ``seed``. UMAP is imported
lazily (its numba JIT compile takes ~15-20 s on the first call of a process), so importing this
module stays cheap.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from sklearn.cluster import KMeans
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import (
    adjusted_mutual_info_score,
    adjusted_rand_score,
    completeness_score,
    homogeneity_score,
    v_measure_score,
)
from sklearn.preprocessing import normalize

from clipnb.core.utils import one_blas_thread

__all__ = [
    "CLUSTER_METRICS",
    "cluster_and_score",
    "cluster_kmeans",
    "clustering_scores",
    "embed_umap",
    "embed_umap_2d",
    "flip_labels",
    "noisy_probe",
    "noisy_probe_accuracy",
    "xy_arrays",
]

#: Score names, in the column order of the source's appendix table.
CLUSTER_METRICS: tuple[str, ...] = ("homogeneity", "completeness", "v_measure", "ari", "ami")

_METRIC_FUNCS = {
    "homogeneity": homogeneity_score,
    "completeness": completeness_score,
    "v_measure": v_measure_score,
    "ari": adjusted_rand_score,
    "ami": adjusted_mutual_info_score,
}


def _as_2d_features(features: np.ndarray, name: str = "features") -> np.ndarray:
    x = np.asarray(features, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(
            f"{name} must be a 2-D array (n_samples, n_features), got shape {x.shape}; "
            "reshape or stack your feature vectors first"
        )
    if x.shape[0] == 0 or x.shape[1] == 0:
        raise ValueError(f"{name} is empty (shape {x.shape}); pass at least one sample and feature")
    if not np.all(np.isfinite(x)):
        raise ValueError(f"{name} contains NaN or inf; drop or impute those rows first")
    return x


def _as_1d_labels(labels: np.ndarray, name: str) -> np.ndarray:
    y = np.asarray(labels)
    if y.ndim != 1:
        raise ValueError(f"{name} must be a 1-D array of labels, got shape {y.shape}; use .ravel()")
    return y


def embed_umap(
    features: np.ndarray,
    n_components: int = 10,
    n_neighbors: int = 15,
    min_dist: float = 0.0,
    seed: int = 0,
) -> np.ndarray:
    """Reduce ``features`` (n_samples, n_features) with UMAP (cosine metric) to ``n_components``.

    Deterministic for a given ``seed`` (``random_state=seed``, ``n_jobs=1``). ``min_dist=0.0``
    packs clusters tightly, which suits clustering; use :func:`embed_umap_2d` for plots.

    Small inputs: UMAP needs ``2 <= n_neighbors < n_samples``, so ``n_neighbors`` is clamped to
    ``n_samples - 1`` (at least 3 samples are required). When ``n_components + 1 >= n_samples``
    the spectral initialisation is impossible and a random one (same seed) is used instead.
    Returns a float64 array of shape (n_samples, n_components).
    """
    x = _as_2d_features(features)
    n_samples = x.shape[0]
    if n_components < 1:
        raise ValueError(f"n_components must be >= 1, got {n_components}")
    if n_neighbors < 2:
        raise ValueError(f"n_neighbors must be >= 2, got {n_neighbors}")
    if min_dist < 0:
        raise ValueError(f"min_dist must be >= 0, got {min_dist}")
    if n_samples < 3:
        raise ValueError(
            f"UMAP needs at least 3 samples, got {n_samples}; pass more samples or skip UMAP "
            "(e.g. cluster_and_score(..., use_umap=False))"
        )
    n_neighbors = min(n_neighbors, n_samples - 1)
    init = "spectral" if n_components + 1 < n_samples else "random"

    import umap  # lazy: importing umap pulls in numba and pynndescent

    reducer = umap.UMAP(
        n_components=n_components,
        n_neighbors=n_neighbors,
        min_dist=min_dist,
        metric="cosine",
        init=init,
        random_state=seed,
        n_jobs=1,
    )
    return np.asarray(reducer.fit_transform(x), dtype=np.float64)


def embed_umap_2d(
    features: np.ndarray,
    n_neighbors: int = 15,
    min_dist: float = 0.0,
    seed: int = 0,
) -> np.ndarray:
    """2-D UMAP embedding for scatter plots: :func:`embed_umap` with ``n_components=2``."""
    return embed_umap(
        features, n_components=2, n_neighbors=n_neighbors, min_dist=min_dist, seed=seed
    )


def cluster_kmeans(
    embedding: np.ndarray, n_clusters: int, seed: int, n_init: int = 10
) -> np.ndarray:
    """Cluster rows of ``embedding`` with KMeans (k-means++ init); returns int cluster ids."""
    x = _as_2d_features(embedding, "embedding")
    if not 1 <= n_clusters <= x.shape[0]:
        raise ValueError(
            f"n_clusters must be between 1 and n_samples={x.shape[0]}, got {n_clusters}; "
            "pass fewer clusters or more samples"
        )
    if n_init < 1:
        raise ValueError(f"n_init must be >= 1, got {n_init}")
    km = KMeans(n_clusters=n_clusters, init="k-means++", n_init=n_init, random_state=seed)
    return km.fit_predict(x).astype(np.int64)


def clustering_scores(labels_true: np.ndarray, labels_pred: np.ndarray) -> dict[str, float]:
    """Compare a clustering with the true labels.

    Returns the five scores of :data:`CLUSTER_METRICS` (homogeneity, completeness, V-measure,
    adjusted Rand index, adjusted mutual information) plus ``"average"``, their plain mean, as in
    the source's appendix table. All are invariant to permuting cluster ids; 1.0 is perfect;
    ARI and AMI are ~0 for random assignments.
    """
    y_true = _as_1d_labels(labels_true, "labels_true")
    y_pred = _as_1d_labels(labels_pred, "labels_pred")
    if y_true.shape != y_pred.shape:
        raise ValueError(
            f"labels_true and labels_pred must have the same length, got {y_true.shape[0]} "
            f"and {y_pred.shape[0]}"
        )
    if y_true.size == 0:
        raise ValueError("labels are empty; pass at least one labelled sample")
    scores = {name: float(_METRIC_FUNCS[name](y_true, y_pred)) for name in CLUSTER_METRICS}
    scores["average"] = float(np.mean([scores[name] for name in CLUSTER_METRICS]))
    return scores


def cluster_and_score(
    features: np.ndarray,
    labels: np.ndarray,
    seed: int,
    n_components: int = 10,
    use_umap: bool = True,
) -> dict[str, float]:
    """Source pipeline: UMAP (cosine) -> KMeans++ with k = number of classes -> scores.

    With ``use_umap=False`` KMeans runs on the L2-normalised features instead, so both paths use
    cosine geometry (the natural one for CLIP features). Returns :func:`clustering_scores`.
    """
    x = _as_2d_features(features)
    y = _as_1d_labels(labels, "labels")
    if y.shape[0] != x.shape[0]:
        raise ValueError(
            f"features has {x.shape[0]} rows but labels has {y.shape[0]}; they must match"
        )
    n_classes = int(np.unique(y).size)
    embedding = embed_umap(x, n_components=n_components, seed=seed) if use_umap else normalize(x)
    pred = cluster_kmeans(embedding, n_clusters=n_classes, seed=seed)
    return clustering_scores(y, pred)


def flip_labels(labels: np.ndarray, fraction: float, n_classes: int, seed: int) -> np.ndarray:
    """Return a copy of ``labels`` (ints in ``[0, n_classes)``) with label noise.

    Exactly ``round(fraction * n)`` positions (Python ``round``) are chosen uniformly without
    replacement, and each is set to a uniformly random *other* class (never its own).
    Deterministic for a given ``seed``; ``fraction=0`` returns an identical copy.
    """
    y = _as_1d_labels(labels, "labels")
    if not (0.0 <= fraction <= 1.0):  # also rejects NaN
        raise ValueError(f"fraction must be in [0, 1], got {fraction}")
    if y.size and not np.issubdtype(y.dtype, np.integer):
        raise ValueError(
            f"labels must be integers in [0, n_classes), got dtype {y.dtype}; "
            "encode them first (e.g. np.unique(labels, return_inverse=True))"
        )
    if y.size and (y.min() < 0 or y.max() >= n_classes):
        raise ValueError(
            f"labels must lie in [0, n_classes={n_classes}), got range [{y.min()}, {y.max()}]; "
            "pass a larger n_classes or re-encode the labels"
        )
    n_flip = round(fraction * y.size)
    out = y.copy()
    if n_flip == 0:
        return out
    if n_classes < 2:
        raise ValueError(
            f"flipping to another class needs n_classes >= 2, got {n_classes}; use fraction=0"
        )
    rng = np.random.default_rng(seed)
    idx = rng.choice(y.size, size=n_flip, replace=False)
    offset = rng.integers(1, n_classes, size=n_flip)  # 1..n_classes-1: never the same class
    out[idx] = (y[idx] + offset) % n_classes
    return out


def noisy_probe_accuracy(
    train_x: np.ndarray,
    train_y: np.ndarray,
    test_x: np.ndarray,
    test_y: np.ndarray,
    noise: float,
    seed: int,
    C: float = 1.0,
) -> float:
    """Test accuracy of a logistic-regression probe trained with a fraction ``noise`` of flipped labels.

    Labels may be any values; the class set is the union of train and test labels, and flipped
    labels move to another class of that set (see :func:`flip_labels`). The probe is
    ``LogisticRegression(C=C, solver="lbfgs", max_iter=1000)``. If flipping removes classes from
    the training set it still works (those classes are never predicted); if only one class is
    left, the probe predicts that class everywhere.
    """
    xtr = _as_2d_features(train_x, "train_x")
    xte = _as_2d_features(test_x, "test_x")
    ytr = _as_1d_labels(train_y, "train_y")
    yte = _as_1d_labels(test_y, "test_y")
    if ytr.shape[0] != xtr.shape[0]:
        raise ValueError(f"train_x has {xtr.shape[0]} rows but train_y has {ytr.shape[0]}")
    if yte.shape[0] != xte.shape[0]:
        raise ValueError(f"test_x has {xte.shape[0]} rows but test_y has {yte.shape[0]}")
    if xtr.shape[1] != xte.shape[1]:
        raise ValueError(
            f"train_x has {xtr.shape[1]} features but test_x has {xte.shape[1]}; "
            "use features from the same encoder"
        )
    if not (C > 0 and math.isfinite(C)):
        raise ValueError(f"C must be a positive finite number, got {C}")

    classes, codes = np.unique(np.concatenate([ytr, yte]), return_inverse=True)
    train_codes = codes[: ytr.shape[0]]
    test_codes = codes[ytr.shape[0] :]
    noisy = flip_labels(train_codes, noise, n_classes=classes.size, seed=seed)

    present = np.unique(noisy)
    if present.size == 1:
        pred = np.full(test_codes.shape, present[0])
    else:
        with one_blas_thread():
            probe = LogisticRegression(C=C, solver="lbfgs", max_iter=1000).fit(xtr, noisy)
        pred = probe.predict(xte)
    return float(np.mean(pred == test_codes))


# --- a probe under label noise, on features of any kind -----------------------------------------

#: Offset between the seed flipping the training labels and the one flipping the validation labels.
VAL_FLIP_OFFSET = 7919


def xy_arrays(split: Any) -> tuple[np.ndarray, np.ndarray]:
    """``(x, y)`` numpy arrays from a ``(x, y)`` pair or an object with ``.x``/``.y`` (SplitFeatures)."""
    x, y = (split.x, split.y) if hasattr(split, "x") else split
    return np.asarray(x, dtype=np.float64), np.asarray(y)


def noisy_probe(
    train: Any,
    val: Any,
    test: Any,
    noise: float,
    seed: int,
    Cs: Sequence[float] = (0.1, 1.0, 10.0, 100.0),
) -> tuple[float, float]:
    """Test accuracy (%) of a logistic-regression probe when a fraction ``noise`` of labels is wrong.

    ``train``/``val``/``test`` are ``(x, y)`` pairs (or SplitFeatures) with integer labels. The
    training labels are flipped with :func:`flip_labels` (seed ``seed``), and so are the validation
    labels (seed ``seed + VAL_FLIP_OFFSET``): the labels a user has all come from the same noisy
    labeller. ``C`` is chosen on that noisy validation split with
    :func:`clipnb.core.evaluation.fit_linear_probe`; symmetric noise keeps the ranking of candidates in
    expectation (noisy accuracy is an increasing function of clean accuracy while
    ``noise < 1 - 1/K``). The test labels stay clean and are read once. Returns ``(accuracy, C)``.
    """
    from clipnb.core.evaluation import accuracy, fit_linear_probe

    (xtr, ytr), (xva, yva), (xte, yte) = xy_arrays(train), xy_arrays(val), xy_arrays(test)
    n_classes = int(max(ytr.max(), yva.max(), yte.max())) + 1
    noisy_train = flip_labels(ytr, noise, n_classes=n_classes, seed=seed)
    noisy_val = flip_labels(yva, noise, n_classes=n_classes, seed=seed + VAL_FLIP_OFFSET)
    present = np.unique(noisy_train)
    if present.size == 1:  # a single class left: nothing to fit, predict it everywhere
        return accuracy(np.full(yte.shape, present[0]), yte), float("nan")
    probe = fit_linear_probe(xtr, noisy_train, xva, noisy_val, Cs=Cs)
    return accuracy(probe.classifier.predict(xte), yte), probe.C
