"""Tests for clipnb.methods.clustering (UMAP + KMeans++ clustering scores, label noise, noisy probes)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from clipnb.methods.clustering import (
    CLUSTER_METRICS,
    cluster_and_score,
    cluster_kmeans,
    clustering_scores,
    embed_umap,
    embed_umap_2d,
    flip_labels,
    noisy_probe_accuracy,
)


def _blobs(
    n_per_class: int, n_classes: int, dim: int, seed: int, spread: float = 1.0
) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(n_classes, dim)) * 5.0
    y = np.repeat(np.arange(n_classes), n_per_class)
    x = centers[y] + spread * rng.normal(size=(y.size, dim))
    return x, y


@pytest.fixture(scope="module")
def blobs() -> tuple[np.ndarray, np.ndarray]:
    return _blobs(50, 4, 32, seed=0)


@pytest.fixture(scope="module")
def umap_runs(blobs: tuple[np.ndarray, np.ndarray]) -> tuple[dict[str, float], dict[str, float]]:
    # The only UMAP runs on real-sized data (the first one pays numba's JIT compile).
    x, y = blobs
    return cluster_and_score(x, y, seed=3), cluster_and_score(x, y, seed=3)


# --- clustering_scores -------------------------------------------------------------------------


def test_scores_keys_and_average() -> None:
    scores = clustering_scores(np.array([0, 0, 1, 1]), np.array([0, 0, 0, 0]))
    assert list(scores) == [*CLUSTER_METRICS, "average"]
    # One cluster for two classes: complete but not homogeneous, no agreement beyond chance.
    assert scores["homogeneity"] == pytest.approx(0.0)
    assert scores["completeness"] == pytest.approx(1.0)
    assert scores["v_measure"] == pytest.approx(0.0)
    assert scores["ari"] == pytest.approx(0.0)
    assert scores["ami"] == pytest.approx(0.0, abs=1e-12)
    assert scores["average"] == pytest.approx(0.2)
    assert all(isinstance(v, float) for v in scores.values())


@pytest.mark.parametrize(
    "pred",
    [np.array([0, 0, 0, 1, 1, 1, 2, 2, 2]), np.array([7, 7, 7, 2, 2, 2, 5, 5, 5])],
    ids=["identity", "permuted-ids"],
)
def test_perfect_clustering_scores_one(pred: np.ndarray) -> None:
    truth = np.array([0, 0, 0, 1, 1, 1, 2, 2, 2])
    scores = clustering_scores(truth, pred)
    for name in (*CLUSTER_METRICS, "average"):
        assert scores[name] == pytest.approx(1.0), name


def test_random_assignment_is_chance_level() -> None:
    rng = np.random.default_rng(0)
    truth = rng.integers(0, 10, size=5000)
    pred = rng.integers(0, 10, size=5000)
    scores = clustering_scores(truth, pred)
    assert abs(scores["ari"]) < 0.01
    assert abs(scores["ami"]) < 0.01


def test_scores_reject_mismatched_lengths() -> None:
    with pytest.raises(ValueError, match="same length"):
        clustering_scores(np.array([0, 1, 1]), np.array([0, 1]))
    with pytest.raises(ValueError, match="1-D"):
        clustering_scores(np.zeros((2, 2)), np.zeros((2, 2)))


# --- KMeans ------------------------------------------------------------------------------------


def test_cluster_kmeans_recovers_blobs_deterministically(
    blobs: tuple[np.ndarray, np.ndarray],
) -> None:
    x, y = blobs
    pred = cluster_kmeans(x, n_clusters=4, seed=0)
    assert pred.shape == y.shape
    assert pred.dtype == np.int64
    assert set(np.unique(pred)) == {0, 1, 2, 3}
    assert clustering_scores(y, pred)["ari"] == pytest.approx(1.0)
    np.testing.assert_array_equal(pred, cluster_kmeans(x, n_clusters=4, seed=0))


def test_cluster_kmeans_validates_k() -> None:
    x = np.random.default_rng(0).normal(size=(5, 3))
    with pytest.raises(ValueError, match="n_clusters"):
        cluster_kmeans(x, n_clusters=6, seed=0)
    with pytest.raises(ValueError, match="n_clusters"):
        cluster_kmeans(x, n_clusters=0, seed=0)


# --- UMAP pipeline -----------------------------------------------------------------------------


def test_cluster_and_score_separates_blobs(
    umap_runs: tuple[dict[str, float], dict[str, float]],
) -> None:
    first, _ = umap_runs
    assert list(first) == [*CLUSTER_METRICS, "average"]
    assert first["average"] > 0.95


def test_cluster_and_score_same_seed_same_dict(
    umap_runs: tuple[dict[str, float], dict[str, float]],
) -> None:
    first, second = umap_runs
    assert first == second


def test_cluster_and_score_without_umap(blobs: tuple[np.ndarray, np.ndarray]) -> None:
    x, y = blobs
    assert cluster_and_score(x, y, seed=0, use_umap=False)["average"] > 0.95
    # Labels unrelated to the structure must score near chance: the pipeline can fail.
    shuffled = np.random.default_rng(1).permutation(y)
    assert cluster_and_score(x, shuffled, seed=0, use_umap=False)["average"] < 0.2


def test_cluster_and_score_checks_lengths(blobs: tuple[np.ndarray, np.ndarray]) -> None:
    x, y = blobs
    with pytest.raises(ValueError, match="must match"):
        cluster_and_score(x, y[:-1], seed=0, use_umap=False)


def test_embed_umap_small_sample_clamps_neighbours() -> None:
    # 10 samples < n_neighbors=15 and n_components + 1 >= n_samples: both fallbacks are exercised.
    x, _ = _blobs(5, 2, 8, seed=1)
    emb = embed_umap(x, n_components=9, n_neighbors=15, seed=0)
    assert emb.shape == (10, 9)
    assert np.all(np.isfinite(emb))
    emb2d = embed_umap_2d(x, seed=0)
    assert emb2d.shape == (10, 2)
    np.testing.assert_array_equal(emb2d, embed_umap(x, n_components=2, seed=0))


def test_embed_umap_validation() -> None:
    with pytest.raises(ValueError, match="at least 3 samples"):
        embed_umap(np.ones((2, 4)))
    with pytest.raises(ValueError, match="2-D"):
        embed_umap(np.ones(8))
    with pytest.raises(ValueError, match="NaN"):
        embed_umap(np.full((5, 3), np.nan))
    with pytest.raises(ValueError, match="n_components"):
        embed_umap(np.ones((5, 3)), n_components=0)


# --- label noise -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("n", "fraction", "expected"), [(1000, 0.37, 370), (10, 0.33, 3), (200, 1.0, 200)]
)
def test_flip_labels_exact_count_never_same_class(n: int, fraction: float, expected: int) -> None:
    labels = np.random.default_rng(5).integers(0, 6, size=n)
    flipped = flip_labels(labels, fraction, n_classes=6, seed=11)
    changed = flipped != labels
    assert int(changed.sum()) == expected
    assert flipped.min() >= 0 and flipped.max() < 6
    assert flipped.dtype == labels.dtype
    np.testing.assert_array_equal(labels, np.random.default_rng(5).integers(0, 6, size=n))


def test_flip_labels_zero_is_identity_copy() -> None:
    labels = np.arange(20) % 4
    flipped = flip_labels(labels, 0.0, n_classes=4, seed=0)
    np.testing.assert_array_equal(flipped, labels)
    assert flipped is not labels


def test_flip_labels_deterministic_per_seed() -> None:
    labels = np.arange(500) % 5
    a = flip_labels(labels, 0.3, n_classes=5, seed=7)
    b = flip_labels(labels, 0.3, n_classes=5, seed=7)
    c = flip_labels(labels, 0.3, n_classes=5, seed=8)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_flip_labels_targets_are_uniform_over_other_classes() -> None:
    labels = np.zeros(8000, dtype=np.int64)
    flipped = flip_labels(labels, 1.0, n_classes=5, seed=0)
    counts = np.bincount(flipped, minlength=5)
    assert counts[0] == 0
    # 2000 expected per other class; sd ~ 39, so +-200 is > 5 sd.
    assert np.all(np.abs(counts[1:] - 2000) < 200)


def test_flip_labels_binary_always_swaps() -> None:
    labels = np.array([0, 1] * 50)
    np.testing.assert_array_equal(flip_labels(labels, 1.0, n_classes=2, seed=3), 1 - labels)


@pytest.mark.parametrize("fraction", [-0.1, 1.5, float("nan")])
def test_flip_labels_rejects_bad_fraction(fraction: float) -> None:
    with pytest.raises(ValueError, match=r"fraction must be in \[0, 1\]"):
        flip_labels(np.array([0, 1, 2]), fraction, n_classes=3, seed=0)


def test_flip_labels_rejects_out_of_range_labels() -> None:
    with pytest.raises(ValueError, match="n_classes"):
        flip_labels(np.array([0, 1, 3]), 0.5, n_classes=3, seed=0)
    with pytest.raises(ValueError, match="n_classes >= 2"):
        flip_labels(np.array([0, 0, 0]), 0.5, n_classes=1, seed=0)


# --- noisy linear probe ------------------------------------------------------------------------


def _few_shot_problem(seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(4, 32))
    ytr = np.repeat(np.arange(4), 10)  # 10 shots per class
    yte = np.repeat(np.arange(4), 50)
    xtr = centers[ytr] + 0.5 * rng.normal(size=(ytr.size, 32))
    xte = centers[yte] + 0.5 * rng.normal(size=(yte.size, 32))
    return xtr, ytr, xte, yte


def test_noisy_probe_accuracy_degrades_with_noise() -> None:
    xtr, ytr, xte, yte = _few_shot_problem(seed=0)
    accs = [
        noisy_probe_accuracy(xtr, ytr, xte, yte, noise=p, seed=0) for p in (0.0, 0.2, 0.4, 0.6, 0.8)
    ]
    assert accs[0] > 0.95
    assert all(b <= a for a, b in itertools.pairwise(accs))
    assert accs[-1] < 0.5  # 80% flips with 4 classes: the true class is no longer the majority
    assert noisy_probe_accuracy(xtr, ytr, xte, yte, noise=0.4, seed=0) == accs[2]


def test_noisy_probe_handles_vanishing_classes() -> None:
    rng = np.random.default_rng(0)
    centers = rng.normal(size=(3, 8)) * 5.0
    ytr = np.array([0, 0, 0, 1, 1, 1, 2])
    yte = np.repeat(np.arange(3), 10)
    xtr = centers[ytr] + rng.normal(size=(ytr.size, 8))
    xte = centers[yte] + rng.normal(size=(yte.size, 8))
    # With seed 7 the single flip hits the only class-2 example (checked here, so the test
    # cannot silently stop exercising the vanishing-class path).
    assert 2 not in flip_labels(ytr, 1 / 7, n_classes=3, seed=7)
    acc = noisy_probe_accuracy(xtr, ytr, xte, yte, noise=1 / 7, seed=7)
    assert acc == pytest.approx(2 / 3)  # classes 0 and 1 right, class 2 never predicted

    # Only one class left after flipping: the probe predicts it everywhere.
    ytr1 = np.array([0, 0, 0, 0, 0, 1])
    assert set(flip_labels(ytr1, 1 / 6, n_classes=2, seed=7)) == {0}
    acc1 = noisy_probe_accuracy(xtr[:6], ytr1, xte[:20], yte[:20], noise=1 / 6, seed=7)
    assert acc1 == pytest.approx(0.5)


def test_noisy_probe_accepts_string_labels() -> None:
    xtr, ytr, xte, yte = _few_shot_problem(seed=2)
    names = np.array(["cat", "dog", "owl", "yak"])
    acc = noisy_probe_accuracy(xtr, names[ytr], xte, names[yte], noise=0.0, seed=0)
    assert acc > 0.95


def test_noisy_probe_validates_shapes() -> None:
    xtr, ytr, xte, yte = _few_shot_problem(seed=0)
    with pytest.raises(ValueError, match="train_y"):
        noisy_probe_accuracy(xtr, ytr[:-1], xte, yte, noise=0.1, seed=0)
    with pytest.raises(ValueError, match="features"):
        noisy_probe_accuracy(xtr, ytr, xte[:, :5], yte, noise=0.1, seed=0)
    with pytest.raises(ValueError, match="fraction"):
        noisy_probe_accuracy(xtr, ytr, xte, yte, noise=1.2, seed=0)
