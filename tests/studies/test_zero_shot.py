"""Checks behind the chapter "Zero-shot and linear probes"."""

from __future__ import annotations

import numpy as np
import pandas as pd
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


# --- the chapter's numbers and verdicts, on hand-made results ----------------------------------


def _chapter(
    accuracies: dict[str, dict[str, float]],
    one_shot: dict[str, float],
    cs: dict[str, float] | None = None,
    baselines: tuple[str, ...] = ("supervised", "pixels"),
    profile: str = "embedded",
) -> zero_shot.ZeroShotResults:
    """Results of two or more datasets: ``accuracies[dataset]`` holds the accuracy of
    ``"zs1"``, ``"zs80"``, ``"clip"`` and each baseline; ``one_shot`` the 1-shot probe's."""
    records = []
    for d, acc in accuracies.items():
        for features, key in (("zero-shot, 1 prompt", "zs1"), ("zero-shot, 80 prompts", "zs80")):
            records.append(
                {"dataset": d, "features": features, "shots": "—", "seed": 0, "accuracy": acc[key]}
            )
        for features in ("clip", *baselines):
            C = (cs or {}).get(d, 0.316) if features == "clip" else 1.0
            records.append(
                {
                    "dataset": d,
                    "features": features,
                    "shots": "all",
                    "seed": 0,
                    "accuracy": acc[features],
                    "C": C,
                }
            )
        for k, shift in ((1, 0.0), (4, 10.0)):
            records.append(
                {
                    "dataset": d,
                    "features": "clip",
                    "shots": k,
                    "seed": 0,
                    "accuracy": one_shot[d] + shift,
                    "C": 1.0,
                }
            )
    names = list(accuracies)
    panel = (np.zeros((2, 2, 3), np.uint8), "t", ["a", "b"], np.array([0.25, 0.75]), 1)
    return zero_shot.ZeroShotResults(
        profile=profile,
        datasets=names,
        baselines=list(baselines),
        probe_shots=[1, 4],
        n_seeds=1,
        focus_dataset=names[0],
        contrast_dataset=names[-1],
        n_classes=dict.fromkeys(names, 10),
        records=pd.DataFrame.from_records(records),
        label_probs_texts=2,
        panels=[panel],
    )


def _acc(zs1, zs80, clip, supervised=50.0, pixels=50.0) -> dict[str, float]:
    return {"zs1": zs1, "zs80": zs80, "clip": clip, "supervised": supervised, "pixels": pixels}


def test_numbers_follow_the_records():
    results = _chapter(
        {"digits": _acc(20.0, 30.0, 80.0, 90.0, 85.0), "shapes": _acc(60.0, 50.0, 70.0, 60.0)},
        one_shot={"digits": 25.0, "shapes": 65.0},
        cs={"digits": 0.316, "shapes": 10.0},
    )
    n = zero_shot.numbers(results)
    assert n["zs_focus_single"] == 20.0 and n["zs_focus_ensemble"] == 30.0
    assert n["zs_focus_best"] == 30.0 and n["probe_focus"] == 80.0 and n["probe_focus_C"] == 0.316
    assert n["baseline_focus"] == 90.0 and n["chance_focus"] == 10.0
    assert n["supervised_focus"] == 90.0 and n["pixels_contrast"] == 50.0
    assert n["n_supervised_beats_clip"] == 1.0 and n["n_pixels_beats_clip"] == 1.0
    assert np.isnan(n["resnet50_focus"]) and np.isnan(n["n_resnet50_beats_clip"])
    assert (n["ensemble_gain_min"], n["ensemble_gain_max"], n["ensemble_gain_mean"]) == (
        -10.0,
        10.0,
        0.0,
    )
    assert n["n_ensemble_helps"] == 1.0 and n["n_ensemble_hurts"] == 1.0
    assert n["probe_gain_mean"] == 30.0 and n["n_probe_beats_zs"] == 2.0
    assert n["n_c_0316"] == 1.0 and (n["c_chosen_min"], n["c_chosen_max"]) == (0.316, 10.0)
    assert n["probe_focus_1shot"] == 25.0 and n["probe_focus_maxshot"] == 35.0
    assert n["probe_contrast_1shot"] == 65.0 and (n["min_shots"], n["max_shots"]) == (1.0, 4.0)
    assert n["n_1shot_below_zs"] == 1.0  # digits: 25 < 30; shapes: 65 >= 50
    assert n["label_prob_first"] == n["label_prob_last"] == 0.75 and n["n_label_texts"] == 2.0
    assert all(isinstance(v, float) for v in n.values())


def test_digit_features_and_c_verdicts():
    gains = _chapter(
        {"digits": _acc(20.0, 30.0, 50.5), "shapes": _acc(60.0, 60.0, 70.0)},
        one_shot={"digits": 25.0, "shapes": 65.0},
        cs={"digits": 0.316, "shapes": 10.0},
    )
    v = zero_shot.verdicts(gains)
    assert v["digit_features_verdict"] == (
        "The probe gains more than 20 points over zero-shot here, so the image features do"
        " separate the digits, and what zero-shot lacks is the link from those features to the"
        ' words "zero" to "nine"'
    )
    assert (
        v["c_verdict"] == "the best regularisation depends on the dataset, so the sweep is needed"
    )
    exactly_20 = _chapter(
        {"digits": _acc(20.0, 30.0, 50.0), "shapes": _acc(60.0, 60.0, 70.0)},
        one_shot={"digits": 25.0, "shapes": 65.0},
    )
    v = zero_shot.verdicts(exactly_20)
    assert v["digit_features_verdict"] == (
        "The probe gains 20 points or less over zero-shot here, so the image features"
        " themselves separate the digits poorly, and the missing link to the words is not the"
        " whole story"
    )
    assert v["c_verdict"] == (
        "the same C was chosen on every dataset, so here a fixed C would have done"
    )


def test_pixels_verdict_above_not_above_or_not_run():
    def pixels(value: float, baselines=("supervised", "pixels")) -> str:
        results = _chapter(
            {"digits": _acc(20.0, 30.0, 60.0, pixels=value), "shapes": _acc(60.0, 60.0, 70.0)},
            one_shot={"digits": 25.0, "shapes": 65.0},
            baselines=baselines,
        )
        return zero_shot.verdicts(results)["pixels_vs_clip"]

    assert pixels(61.0) == "above"
    assert pixels(60.0) == "not above" and pixels(10.0) == "not above"
    assert pixels(61.0, baselines=("supervised",)) == "beside"


def test_supervised_verdict_every_branch():
    def supervised(wins: int, n_datasets: int = 4, baselines=("supervised", "pixels")) -> str:
        accuracies = {
            f"d{i}": _acc(20.0, 30.0, 60.0, supervised=70.0 if i < wins else 60.0)
            for i in range(n_datasets)
        }
        results = _chapter(accuracies, dict.fromkeys(accuracies, 25.0), baselines=baselines)
        return zero_shot.verdicts(results)["supervised_verdict"]

    most = "on most datasets here, captions bought zero-shot transfer, not better image features"
    assert supervised(3) == most
    assert (
        supervised(2)
        == supervised(1)
        == (
            "the verdict is mixed: captions gave image features at least as good on some"
            " datasets and worse on others, and zero-shot transfer on top"
        )
    )
    assert supervised(0) == (
        "captions gave image features at least as good as the labels on every dataset,"
        " and zero-shot transfer on top"
    )
    assert supervised(3, baselines=("pixels",)) == (
        "this profile does not run the label-supervised tower"
    )


def test_one_shot_sentences_every_branch():
    def sentences(one_shot: dict[str, float]) -> tuple[str, str]:
        results = _chapter(
            {"digits": _acc(20.0, 30.0, 60.0), "shapes": _acc(60.0, 50.0, 70.0)}, one_shot
        )
        v = zero_shot.verdicts(results)
        return v["one_shot_below_sentence"], v["one_shot_above_sentence"]

    below, above = sentences({"digits": 25.0, "shapes": 50.0})  # equal counts as not below
    assert below == (
        "In this profile those are digits: there one example per class is worth less than the"
        " class name, the effect the CLIP paper reported for real CLIP at 1–2 shots."
    )
    assert above == (
        "On shapes, even one labelled example per class matches or beats the zero-shot ensemble."
    )
    below, above = sentences({"digits": 35.0, "shapes": 55.0})
    assert below == (
        "So the effect the CLIP paper reported for real CLIP at 1–2 shots, one example per class"
        " being worth less than the class name, does not appear here."
    )
    assert above.startswith("On digits and shapes, even one")
    below, above = sentences({"digits": 5.0, "shapes": 10.0})
    assert below.startswith("In this profile those are digits and shapes: there")
    assert (
        above == "On no dataset does one labelled example per class reach the zero-shot ensemble."
    )


def test_tables_of_the_chapter():
    results = _chapter(
        {"mnist": _acc(20.0, 30.0, 60.0), "cifar100": _acc(60.0, 50.0, 70.0)},
        one_shot={"mnist": 25.0, "cifar100": 65.0},
        cs={"mnist": 0.1, "cifar100": 0.316},
        profile="full",
    )
    table = zero_shot.baseline_table(results)
    assert list(table.columns) == [
        "zero-shot, 1 prompt",
        "zero-shot, 80 prompts",
        "CLIP probe",
        "C (CLIP probe)",
        "supervised tower probe",
        "raw pixels probe",
        "chance",
        "reference zero-shot (ViT-B/32)",
        "source 000: CLIP / ResNet50",
    ]
    assert table.loc["mnist", "C (CLIP probe)"] == "0.1" and table.loc["mnist", "chance"] == "10.0"
    assert table.loc["mnist", "reference zero-shot (ViT-B/32)"] == "48.4"
    assert table.loc["mnist", "source 000: CLIP / ResNet50"] == "32.6 / 94.5"
    kshot = zero_shot.kshot_table(results)
    assert list(kshot.columns) == ["zero-shot, 80 prompts", "1-shot", "4-shot", "all"]
    assert kshot.loc["cifar100", "4-shot"] == "75.0" and kshot.loc["cifar100", "all"] == "70.0"
    embedded = _chapter({"digits": _acc(20.0, 30.0, 60.0)}, one_shot={"digits": 25.0})
    table = zero_shot.baseline_table(embedded)
    assert "source 000: CLIP / ResNet50" not in table
    assert table.loc["digits", "reference zero-shot (ViT-B/32)"] == "—"
