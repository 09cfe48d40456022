"""Tests for the clustering study's pieces: study-level tables, backbones, FGVC-Aircraft loader."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from clipnb.core import report
from clipnb.core.features import encode_images
from clipnb.core.imagesets import DatasetNotFoundError, array_imageset
from clipnb.core.models import WeightsNotFoundError
from clipnb.data.registry import load_dataset
from clipnb.methods.backbones import (
    TORCHVISION_BACKBONES,
    _replace_head,
    backbone_label,
    load_backbone,
    pixel_backbone,
    torchvision_backbone,
    torchvision_weights_file,
)
from clipnb.methods.clustering import (
    CLUSTER_METRICS,
    VAL_FLIP_OFFSET,
    clustering_records,
    flip_labels,
    label_noise_records,
    noisy_probe,
)
from tests import fixtures as fx


def _split(n_per_class: int, n_classes: int, seed: int, spread: float = 0.3):
    rng = np.random.default_rng(seed)
    centers = np.eye(n_classes, 16) * 4.0
    y = np.repeat(np.arange(n_classes), n_per_class)
    return centers[y] + spread * rng.normal(size=(y.size, 16)), y


def _features(spread: float = 0.3) -> dict:
    return {
        (b, "blobs"): {
            "train": _split(12, 4, seed=1 + k, spread=spread),
            "val": _split(6, 4, seed=10 + k, spread=spread),
            "test": _split(20, 4, seed=20 + k, spread=spread),
        }
        for k, b in enumerate(("a", "b"))
    }


# --- study level: clustering table ------------------------------------------------------------------


def test_clustering_records_perfect_clusters_score_one() -> None:
    feats = {key: f["test"] for key, f in _features().items()}
    records = clustering_records(feats, [0, 1], use_umap=False, progress=False)
    df = pd.DataFrame(records)
    assert len(df) == 2 * 2 * (len(CLUSTER_METRICS) + 1)
    assert set(df["metric"]) == {*CLUSTER_METRICS, "average"}
    np.testing.assert_allclose(df["score"], 1.0)


def test_clustering_same_seed_same_table() -> None:
    feats = {key: f["test"] for key, f in _features(spread=3.0).items()}  # overlapping blobs

    def table() -> pd.DataFrame:
        records = clustering_records(feats, [0, 1, 2], use_umap=False, progress=False)
        return report.mean_std_table(records, ["dataset", "backbone"], "metric", "score", 3)

    first, second = table(), table()
    pd.testing.assert_frame_equal(first, second)
    assert first.shape == (2, len(CLUSTER_METRICS) + 1)
    other = clustering_records(feats, [3], use_umap=False, progress=False)
    assert [r["score"] for r in other] != [
        r["score"] for r in clustering_records(feats, [0], use_umap=False, progress=False)
    ]


# --- study level: label noise -----------------------------------------------------------------------


def test_noisy_probe_flips_train_and_val_and_selects_c(monkeypatch: pytest.MonkeyPatch) -> None:
    import clipnb.evaluation as evaluation

    feats = _features()[("a", "blobs")]
    seen = {}
    real_fit = evaluation.fit_linear_probe

    def spy(train_x, train_y, val_x, val_y, Cs, **kw):
        seen["train_y"], seen["val_y"] = np.asarray(train_y), np.asarray(val_y)
        return real_fit(train_x, train_y, val_x, val_y, Cs=Cs, **kw)

    monkeypatch.setattr(evaluation, "fit_linear_probe", spy)
    acc, C = noisy_probe(feats["train"], feats["val"], feats["test"], 0.25, seed=3, Cs=[0.5, 5.0])
    ytr, yva = feats["train"][1], feats["val"][1]
    np.testing.assert_array_equal(seen["train_y"], flip_labels(ytr, 0.25, 4, seed=3))
    np.testing.assert_array_equal(
        seen["val_y"], flip_labels(yva, 0.25, 4, seed=3 + VAL_FLIP_OFFSET)
    )
    assert int((seen["train_y"] != ytr).sum()) == round(0.25 * ytr.size)
    assert int((seen["val_y"] != yva).sum()) == round(0.25 * yva.size)
    assert C in (0.5, 5.0)
    assert 0.0 <= acc <= 100.0


def test_label_noise_same_seed_same_table() -> None:
    feats = _features(spread=2.0)

    def table() -> pd.DataFrame:
        records = label_noise_records(
            feats, [1, 5], [0.0, 0.4], [0, 1], Cs=[0.1, 10.0], progress=False
        )
        return report.mean_std_table(records, ["dataset", "backbone", "shots"], "noise")

    first, second = table(), table()
    pd.testing.assert_frame_equal(first, second)
    assert first.shape == (2 * 2, 2)


def test_label_noise_records_clean_blobs_and_shapes() -> None:
    records = label_noise_records(_features(), [1, 5], [0.0, 0.5], [0], Cs=[1.0], progress=False)
    df = pd.DataFrame(records)
    assert len(df) == 2 * 2 * 2
    assert set(df.columns) >= {"backbone", "dataset", "shots", "noise", "seed", "C", "accuracy"}
    clean = df[(df["noise"] == 0.0) & (df["shots"] == 5)]
    assert (clean["accuracy"] == 100.0).all()


def test_label_noise_uses_the_same_few_shot_draw_for_every_noise(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import clipnb.clustering as clustering

    calls = []
    real = clustering.noisy_probe

    def spy(train, val, test, noise, seed, Cs):
        calls.append((noise, tuple(np.round(train[0][:, 0], 6))))
        return real(train, val, test, noise, seed, Cs=Cs)

    monkeypatch.setattr(clustering, "noisy_probe", spy)
    feats = {("a", "blobs"): _features()[("a", "blobs")]}
    label_noise_records(feats, [2], [0.0, 0.5], [7], Cs=[1.0], progress=False)
    assert len(calls) == 2 and calls[0][1] == calls[1][1]


# --- backbones ----------------------------------------------------------------------------------------


def _images(n: int = 4, size: int = 16):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(n, size, size, 3), dtype=np.uint8)
    return array_imageset("tiny", images, np.arange(n) % 2, ["a", "b"], ["tiny", n, size])


def test_pixel_backbone_features_and_cache(fresh_cache: Path) -> None:
    images = _images(size=16)
    bundle = pixel_backbone(16)
    feats = encode_images(bundle, images)
    assert feats.shape == (4, 3 * 16 * 16)
    torch.testing.assert_close(feats.norm(dim=1), torch.ones(4))
    expected = torch.as_tensor(images.images[0], dtype=torch.float32).permute(2, 0, 1) / 255.0
    expected = (expected - 0.5) / 0.5
    torch.testing.assert_close(feats[0], expected.flatten() / expected.norm())
    assert list((fresh_cache / "features").rglob("*.pt"))
    torch.testing.assert_close(encode_images(pixel_backbone(16), images), feats)
    assert pixel_backbone(8).fingerprint != bundle.fingerprint
    assert encode_images(pixel_backbone(8), images).shape == (4, 3 * 8 * 8)
    assert load_backbone("pixels", "smoke", pixel_size=16).fingerprint == bundle.fingerprint


def test_load_backbone_rejects_unknown_names() -> None:
    with pytest.raises(ValueError, match="Unknown backbone"):
        load_backbone("dino", "smoke")
    with pytest.raises(ValueError, match="offline profiles only"):
        load_backbone("supervised", "full")
    with pytest.raises(ValueError, match="Unknown profile"):
        load_backbone("pixels", "huge")
    assert backbone_label("clip") == "CLIP"
    assert backbone_label("resnet50").startswith("ResNet-50")
    assert backbone_label("something") == "something"


@pytest.mark.parametrize("name", sorted(TORCHVISION_BACKBONES))
def test_torchvision_head_paths_name_the_last_linear_layer(name: str) -> None:
    from torchvision.models import get_model

    spec = TORCHVISION_BACKBONES[name]
    with torch.device("meta"):  # structure only: no memory, no initialisation cost
        net = get_model(spec.arch, weights=None)
    head = net.get_submodule(spec.head)
    linear = head if isinstance(head, torch.nn.Linear) else head[-1]
    assert isinstance(linear, torch.nn.Linear) and linear.out_features == 1000
    assert linear.in_features == spec.dim
    _replace_head(net, spec.head)
    assert isinstance(net.get_submodule(spec.head), torch.nn.Identity)


def test_torchvision_backbone_features(fresh_cache: Path) -> None:
    bundle = torchvision_backbone("efficientnet_b0", pretrained=False)
    feats = encode_images(bundle, _images(n=2, size=40))
    assert feats.shape == (2, TORCHVISION_BACKBONES["efficientnet_b0"].dim)
    # (no unit-norm check: a randomly initialised EfficientNet in eval mode outputs ~1e-13)
    assert torch.isfinite(feats).all()
    assert bundle.name == "torchvision:efficientnet_b0"


def test_torchvision_weights_load_from_a_local_file(tmp_path: Path) -> None:
    from torchvision.models import get_model

    with torch.random.fork_rng():
        torch.manual_seed(123)
        net = get_model("efficientnet_b0", weights=None)
    path = torchvision_weights_file("efficientnet_b0", tmp_path)
    assert path.parent == tmp_path and path.name.endswith(".pth")
    torch.save(net.state_dict(), path)
    bundle = torchvision_backbone("efficientnet_b0", weights_dir=tmp_path)
    torch.testing.assert_close(bundle.model.visual.features[0][0].weight, net.features[0][0].weight)
    assert bundle.pretrained == str(path)
    assert (
        bundle.fingerprint != torchvision_backbone("efficientnet_b0", pretrained=False).fingerprint
    )


def test_torchvision_missing_weights_offline_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CLIPNB_OFFLINE", "1")
    with pytest.raises(WeightsNotFoundError, match=r"resnet50-.*pth.*offline"):
        torchvision_backbone("resnet50", weights_dir=tmp_path)
    with pytest.raises(ValueError, match="Unknown torchvision backbone"):
        torchvision_backbone("alexnet", pretrained=False)


# --- FGVC-Aircraft loader --------------------------------------------------------------------------------


@pytest.mark.parametrize("coop", [False, True], ids=["torchvision", "coop"])
def test_fgvc_aircraft_reads_both_layouts(tmp_path: Path, coop: bool) -> None:
    fx.write_fgvc_aircraft(tmp_path, coop=coop)
    ds = load_dataset("fgvc_aircraft", root=tmp_path)
    assert ds.class_names == fx.AIRCRAFT_VARIANTS
    assert [len(ds.split(s)) for s in ("train", "val", "test")] == [12, 6, 9]
    np.testing.assert_array_equal(np.bincount(ds.train.labels), [4, 4, 4])
    for i in (0, 5, 11):
        assert abs(np.median(ds.train.array(i)[..., 0]) - fx.shade(ds.train.labels[i])) <= 3


def test_fgvc_aircraft_without_variants_file_sorts_names(tmp_path: Path) -> None:
    fx.write_fgvc_aircraft(tmp_path, with_variants=False)
    assert load_dataset("fgvc_aircraft", root=tmp_path).class_names == sorted(fx.AIRCRAFT_VARIANTS)


def test_fgvc_aircraft_errors_name_the_files(tmp_path: Path) -> None:
    with pytest.raises(DatasetNotFoundError, match="fgvc-aircraft-2013b"):
        load_dataset("fgvc_aircraft", root=tmp_path)
    folder = fx.write_fgvc_aircraft(tmp_path)
    (folder / "images_variant_val.txt").unlink()
    with pytest.raises(DatasetNotFoundError, match=r"images_variant_val\.txt"):
        load_dataset("fgvc_aircraft", root=tmp_path)
    (folder / "images_variant_val.txt").write_text("1 Boeing 999\n")
    with pytest.raises(DatasetNotFoundError, match="Boeing 999"):
        load_dataset("fgvc_aircraft", root=tmp_path)
    (folder / "images_variant_val.txt").write_text("justanid\n")
    with pytest.raises(DatasetNotFoundError, match="line 1"):
        load_dataset("fgvc_aircraft", root=tmp_path)
