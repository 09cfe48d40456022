"""Checks behind the chapter "Zero-shot and linear probes"."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import clipnb
from clipnb.core import evaluation
from clipnb.core.features import SplitFeatures
from clipnb.data import reference
from clipnb.studies import zero_shot

CS = (0.001, 0.1, 10.0, 1000.0)


def _blobs(n_per_class: int, seed: int, n_classes: int = 3, dim: int = 8) -> SplitFeatures:
    """Noisy Gaussian clusters around fixed class centres (normalised, like CLIP features)."""
    centres = torch.randn(n_classes, dim, generator=torch.Generator().manual_seed(0))
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n_classes).repeat_interleave(n_per_class)
    x = centres[y] + 1.5 * torch.randn(len(y), dim, generator=g)
    return SplitFeatures(F.normalize(x, dim=-1), y, [f"c{i}" for i in range(n_classes)])


class _Guarded:
    """A test split that records how many probes had been fitted whenever it is read."""

    def __init__(self, split: SplitFeatures, fits: dict[str, int]) -> None:
        self._split, self._fits, self.reads = split, fits, []

    @property
    def x(self) -> torch.Tensor:
        self.reads.append(self._fits["n"])
        return self._split.x

    @property
    def y(self) -> torch.Tensor:
        self.reads.append(self._fits["n"])
        return self._split.y


def test_c_is_chosen_on_validation_not_test(monkeypatch):
    fits = {"n": 0}

    class Counting(evaluation.LogisticRegression):
        def fit(self, *args, **kwargs):
            fits["n"] += 1
            return super().fit(*args, **kwargs)

    monkeypatch.setattr(evaluation, "LogisticRegression", Counting)
    train, val, test = _blobs(10, 1), _blobs(20, 2), _blobs(30, 3)
    guarded = _Guarded(test, fits)
    ev = zero_shot.evaluate_linear_probe(train, val, guarded, Cs=CS)

    # The test split is read only after every candidate C was fitted and scored on validation.
    assert guarded.reads and min(guarded.reads) == len(CS) == fits["n"]
    # The chosen C is the argmax of the validation scores, which are validation accuracies.
    assert ev.C == CS[int(np.argmax(ev.val_scores))]
    for C, score in zip(CS, ev.val_scores, strict=True):
        clf = evaluation.LogisticRegression(C=C, max_iter=1000).fit(train.x.numpy(), train.y)
        assert score == pytest.approx(clipnb.accuracy(clf.predict(val.x.numpy()), val.y))
    # Test labels cannot influence the choice: scrambled test labels give the same C.
    scrambled = SplitFeatures(test.x, test.y[torch.randperm(len(test.y))], test.class_names)
    assert zero_shot.evaluate_linear_probe(train, val, scrambled, Cs=CS).C == ev.C
    assert ev.test_accuracy == pytest.approx(
        clipnb.accuracy(
            evaluation.LogisticRegression(C=ev.C, max_iter=1000)
            .fit(train.x.numpy(), train.y)
            .predict(test.x.numpy()),
            test.y,
        )
    )


def test_warm_started_probe_path_reaches_the_cold_start_optimum():
    train, val = _blobs(20, 1), _blobs(20, 2)
    path = evaluation.fit_probe_path(train.x, train.y.numpy(), Cs=CS[::-1])  # any order
    assert sorted(path) == sorted(CS)
    for C, warm in path.items():
        cold = evaluation.LogisticRegression(C=C, max_iter=1000).fit(train.x.numpy(), train.y)
        warm_p, cold_p = warm.predict_proba(val.x.numpy()), cold.predict_proba(val.x.numpy())
        np.testing.assert_array_equal(warm_p.argmax(1), cold_p.argmax(1))
        # lbfgs stops at its tolerance, so the nearly unregularised fits agree to ~1e-2.
        np.testing.assert_allclose(warm_p, cold_p, atol=2e-2)


def test_probes_fit_with_one_blas_thread(monkeypatch):
    from threadpoolctl import threadpool_info

    seen = []

    class Spying(evaluation.LogisticRegression):
        def fit(self, *args, **kwargs):
            seen.extend(i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas")
            return super().fit(*args, **kwargs)

    monkeypatch.setattr(evaluation, "LogisticRegression", Spying)
    train = _blobs(10, 1)
    evaluation.fit_probe_path(train.x, train.y.numpy(), Cs=CS)
    assert seen and set(seen) == {1}


def test_probe_records_use_the_few_shot_draws():
    splits = {"train": _blobs(10, 1), "val": _blobs(5, 2), "test": _blobs(5, 3)}
    records = zero_shot.probe_records("blobs", "clip", splits, shots=[1, 2], seeds=[0, 1], Cs=CS)
    assert [(r["shots"], r["seed"]) for r in records] == [
        ("all", 0),
        (1, 0),
        (1, 1),
        (2, 0),
        (2, 1),
    ]
    assert all(r["C"] in CS and 0 <= r["accuracy"] <= 100 for r in records)
    sub = zero_shot.shot_subset(splits["train"], 2, seed=1)
    idx = clipnb.few_shot_indices(splits["train"].y.numpy(), 2, 1)
    assert torch.equal(sub.x, splits["train"].x[idx])


def test_label_probs_is_the_softmax_over_the_texts(fresh_cache):
    torch.manual_seed(0)
    bundle = clipnb.create_model("clipnb-ViT-tiny")
    data = clipnb.load_dataset("digits")
    texts = ["a photo of a one.", "a photo of a two.", "a photo of a seven."]
    probs = zero_shot.label_probs(bundle, data.test, 3, texts)
    image = clipnb.encode_images(bundle, data.test.subset([3]), cache=False)
    text = clipnb.encode_texts(bundle, texts, cache=False)
    expected = (bundle.logit_scale * image @ text.T).softmax(-1)[0]
    assert probs.shape == (3,) and probs.sum() == pytest.approx(1.0, abs=1e-5)
    assert np.allclose(probs, expected.numpy(), atol=1e-5)
    assert zero_shot.pick_classes(10, 7, 4, seed=0).count(7) == 1


def test_reference_numbers_by_dataset_name():
    assert reference.reference_for("mnist") == 48.4
    assert reference.reference_for("cifar100") == 64.2
    assert reference.reference_for("food101") is None  # not in open_clip's table
    assert reference.reference_for("food101", reference.SOURCE_000_ZERO_SHOT) == 80.7
    assert reference.reference_for("digits") is None  # embedded: no published counterpart
    assert reference.reference_for("no-such-dataset") is None


def test_resnet50_features_without_weights(fresh_cache, tmp_path, monkeypatch):
    from clipnb.core.models import WeightsNotFoundError
    from clipnb.methods import backbones

    net = backbones.torchvision_backbone("resnet50", pretrained=False)
    images = clipnb.load_dataset("digits").val.subset([0, 1])
    feats = clipnb.encode_images(net, images)
    assert feats.shape == (2, 2048)
    assert torch.allclose(feats.norm(dim=-1), torch.ones(2), atol=1e-5)
    monkeypatch.setenv("CLIPNB_OFFLINE", "1")
    with pytest.raises(WeightsNotFoundError, match="offline"):
        backbones.torchvision_backbone("resnet50", weights_dir=tmp_path)
