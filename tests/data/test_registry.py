from __future__ import annotations

import numpy as np
import pytest

import clipnb
from clipnb.core.imagesets import few_shot, few_shot_indices, stratified_split


def test_unknown_dataset_lists_known():
    with pytest.raises(clipnb.data.registry.UnknownDatasetError, match="digits"):
        clipnb.load_dataset("imagenet-9000")


def test_handwritten_digits_splits_are_fixed_and_disjoint():
    a = clipnb.load_dataset("digits")
    b = clipnb.load_dataset("digits")
    assert len(a.train) + len(a.val) + len(a.test) == 1797
    assert a.train.images.shape[1:] == (32, 32, 3) and a.train.images.dtype == np.uint8
    assert np.array_equal(a.test.labels, b.test.labels)
    assert a.test.fingerprint == b.test.fingerprint != a.train.fingerprint
    assert a.class_names[7] == "seven"


def test_stratified_split_partitions_each_class():
    labels = np.repeat(np.arange(3), 10)
    parts = stratified_split(labels, (0.6, 0.2, 0.2), seed=1)
    joined = np.sort(np.concatenate(parts))
    assert np.array_equal(joined, np.arange(30))
    assert [np.bincount(labels[p]).tolist() for p in parts] == [[6, 6, 6], [2, 2, 2], [2, 2, 2]]


def test_few_shot_is_deterministic_nested_and_balanced():
    labels = np.repeat(np.arange(4), 20)
    one = few_shot_indices(labels, 1, seed=3)
    four = few_shot_indices(labels, 4, seed=3)
    assert np.array_equal(one, few_shot_indices(labels, 1, seed=3))
    assert set(one) <= set(four)
    assert np.bincount(labels[four]).tolist() == [4, 4, 4, 4]
    assert not np.array_equal(four, few_shot_indices(labels, 4, seed=4))


def test_too_many_shots_names_the_class():
    labels = np.array([0, 0, 0, 1])
    with pytest.raises(ValueError, match="'b' has only 1"):
        few_shot_indices(labels, 2, seed=0, class_names=["a", "b"])


def test_subset_keeps_root_and_fingerprint():
    data = clipnb.load_dataset("digits")
    sub = few_shot(data.train, 2, seed=0)
    assert sub.root is data.train and len(sub) == 20
    assert np.array_equal(sub.images, data.train.images[sub.indices])
    assert sub.fingerprint != few_shot(data.train, 2, seed=1).fingerprint
    nested = sub.subset([0, 1])
    assert nested.root is data.train and np.array_equal(nested.indices, sub.indices[:2])


def test_world_task_dataset():
    data = clipnb.load_dataset("world-shape-photo", per_class=(2, 1, 3))
    assert len(data.train) == 2 * len(data.class_names)
    assert data.test.masks is not None and data.test.masks.shape[0] == len(data.test)
    again = clipnb.load_dataset("world-shape-photo", per_class=(2, 1, 3))
    assert np.array_equal(data.test.images, again.test.images)
    assert not np.array_equal(data.train.images[:2], data.test.images[:2])
