"""Tests for clipnb.studies.feature_decoding (the study 'What frozen features contain').

The issue's own checks (the tower is unchanged after decoder training, the EMA codebook update
matches its formula, mIoU is 1 for a perfect and 0 for a disjoint prediction) live in
tests/methods/test_decoders.py; here: the study's data helpers and the validation-chosen training step.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torchvision import transforms as T

import clipnb
from clipnb.core.imagesets import array_imageset, mask_geometry
from clipnb.core.spatial import spatial_features
from clipnb.methods.decoders import VQVAE, SegmentationDecoder, train_decoder, vqvae_loss
from clipnb.studies import feature_decoding as fd
from clipnb.studies.feature_decoding import (
    fit_on_validation,
    pixel_tensors,
    segmentation_scores,
    segmentation_targets,
    spatial_feature_cache,
    vqvae_scores,
)

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def tiny_bundle() -> clipnb.ClipBundle:
    torch.manual_seed(0)
    return clipnb.create_model("clipnb-ViT-tiny", pretrained=None)


@pytest.fixture(scope="module")
def world_split() -> clipnb.ImageSet:
    return clipnb.load_dataset("world-shape-photo", per_class=(2, 1, 1)).train


def _snapshot(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def test_spatial_feature_cache_runs_tower_once_and_keeps_it_frozen(
    tiny_bundle, world_split, fresh_cache, monkeypatch
) -> None:
    before = _snapshot(tiny_bundle.visual)
    feats = spatial_feature_cache(tiny_bundle, world_split, batch_size=5)
    grid = tiny_bundle.visual.grid_size
    assert feats.shape == (len(world_split), tiny_bundle.visual.transformer.width, *grid)
    x = clipnb.core.features.image_tensors(tiny_bundle, world_split)
    torch.testing.assert_close(feats, spatial_features(tiny_bundle.visual, x))
    assert len(list((fresh_cache / "features" / "spatial").glob("*.pt"))) == 1

    # Second call: from the cache, the tower is not run again.
    def boom(*args, **kwargs):
        raise AssertionError("tower ran twice")

    monkeypatch.setattr("clipnb.core.spatial.spatial_features", boom)
    assert torch.equal(spatial_feature_cache(tiny_bundle, world_split), feats)
    after = tiny_bundle.visual.state_dict()
    assert all(torch.equal(after[k], v) for k, v in before.items())

    # Another tower (random init with other weights) gets its own cache entry.
    torch.manual_seed(1)
    other = clipnb.create_model("clipnb-ViT-tiny", pretrained=None)
    monkeypatch.undo()
    assert not torch.equal(spatial_feature_cache(other, world_split), feats)


def test_world_segmentation_targets_are_mask_times_label_plus_one(tiny_bundle, world_split):
    targets, names = segmentation_targets(tiny_bundle, world_split)
    assert names == ["background", *world_split.class_names]
    assert targets.dtype == torch.int64 and targets.shape == world_split.masks.shape
    for i in range(len(world_split)):
        mask = torch.from_numpy(world_split.masks[i].astype(np.int64))
        assert torch.equal(targets[i], mask * (int(world_split.labels[i]) + 1))
        assert set(targets[i].unique().tolist()) == {0, int(world_split.labels[i]) + 1}


def test_trimap_targets_follow_the_image_geometry(tiny_bundle) -> None:
    """A non-square pet image: trimap 1/2/3 -> pet/background/border, resized and cropped."""
    image = np.zeros((40, 64, 3), dtype=np.uint8)
    raw = np.full((40, 64), 2, dtype=np.uint8)  # background
    raw[10:30, 20:44] = 3  # border ring
    raw[12:28, 22:42] = 1  # pet
    split = array_imageset(
        "pets/train", image[None], np.array([0]), ["cat"], ["pets-fixture"],
        meta={"trimap": lambda i: raw},
    )  # fmt: skip
    targets, names = segmentation_targets(tiny_bundle, split)
    assert names == ["background", "pet", "border"]
    assert targets.shape == (1, 32, 32)  # Resize(32) on the short side, CenterCrop(32)
    nearest = T.Resize(32, T.InterpolationMode.NEAREST)
    expected = np.asarray(T.CenterCrop(32)(nearest(Image.fromarray(raw))))
    lookup = np.array([0, 1, 0, 2])
    assert np.array_equal(targets[0].numpy(), lookup[expected])
    assert set(targets.unique().tolist()) == {0, 1, 2}
    plain = array_imageset("plain", image[None], np.array([0]), ["cat"], ["plain-fixture"])
    with pytest.raises(ValueError, match="neither object masks nor trimaps"):
        segmentation_targets(tiny_bundle, plain)


def test_mask_geometry_identity_and_errors() -> None:
    mask = np.arange(16, dtype=np.uint8).reshape(4, 4)
    prep = T.Compose([T.Resize(4), T.CenterCrop(4), T.ToTensor()])
    assert np.array_equal(mask_geometry(prep, mask), mask)
    assert mask_geometry(T.Compose([T.Resize(8)]), mask).shape == (8, 8)
    with pytest.raises(ValueError, match="random crop"):
        mask_geometry(T.Compose([T.RandomCrop(2)]), mask)
    with pytest.raises(ValueError, match=r"\[H, W\]"):
        mask_geometry(prep, mask[None])


def test_pixel_tensors(world_split) -> None:
    pix = pixel_tensors(world_split, 32)
    assert pix.shape == (len(world_split), 3, 32, 32)
    assert torch.equal(pix[0], torch.from_numpy(world_split.images[0]).permute(2, 0, 1) / 255.0)
    assert pixel_tensors(world_split, 16).shape[-1] == 16


def _toy() -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(5)
    feats = torch.randn(12, 6, 4, 4, generator=gen)
    labels = (F.interpolate(feats[:, :1], size=16, mode="nearest")[:, 0] > 0).long()
    return feats, labels


def test_fit_on_validation_restores_the_best_validation_step() -> None:
    feats, labels = _toy()
    train, val = (feats[:8], labels[:8]), (feats[8:], labels[8:])
    torch.manual_seed(0)
    model = SegmentationDecoder(6, 2, 4, 16, hidden=8)
    init = _snapshot(model)
    hist = fit_on_validation(model, train, val, F.cross_entropy, steps=12, eval_every=3, lr=0.05,
                             batch_size=4, seed=0, progress=False)  # fmt: skip
    assert hist["val_step"] == [3, 6, 9, 12]
    best = int(np.argmin(hist["val_loss"]))
    assert hist["best_step"] == hist["val_step"][best]
    assert hist["best_val_loss"] == pytest.approx(min(hist["val_loss"]))
    assert not model.training
    # The restored model scores exactly the chosen validation loss (weights and BN statistics).
    with torch.no_grad():
        assert float(F.cross_entropy(model(val[0]), val[1])) == pytest.approx(
            hist["best_val_loss"], rel=1e-5
        )
    # Replaying plain training up to the chosen step gives the same weights.
    replay = SegmentationDecoder(6, 2, 4, 16, hidden=8)
    replay.load_state_dict(init)
    train_decoder(replay, *train, F.cross_entropy, steps=hist["best_step"], lr=0.05,
                  batch_size=4, seed=0, progress=False)  # fmt: skip
    for key, value in replay.state_dict().items():
        torch.testing.assert_close(model.state_dict()[key], value)


def test_scores() -> None:
    feats, labels = _toy()
    torch.manual_seed(0)
    model = SegmentationDecoder(6, 2, 4, 16, hidden=8)
    scores = segmentation_scores(model, feats, labels, n_classes=2, batch_size=5)
    with torch.no_grad():
        logits = model(feats)
    assert scores["loss"] == pytest.approx(float(F.cross_entropy(logits, labels)), rel=1e-5)
    assert scores["pixel_acc"] == pytest.approx(
        100 * float((logits.argmax(1) == labels).float().mean())
    )
    assert 0.0 <= scores["miou"] <= 100.0

    images = torch.rand(6, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    vq = VQVAE(6, 4, 16, n_codes=4, code_dim=3, hidden=8).eval()
    vq.quantizer.initialised.fill_(True)
    out = vqvae_scores(vq, feats[:6], images, batch_size=4)
    with torch.no_grad():
        recon, vq_loss, codes = vq(feats[:6])
    assert out["loss"] == pytest.approx(
        float(vqvae_loss((recon, vq_loss, codes), images)), rel=1e-5
    )
    assert out["mse"] == pytest.approx(float(F.mse_loss(recon, images)), rel=1e-5)
    assert 1.0 <= out["perplexity"] <= 4.0


# --- the chapter's numbers and verdicts, on hand-made results ---------------------------------------

VQ_ROWS = (fd.CLIP_VQ, fd.RANDOM_VQ, fd.OWN_VQ)
SEG_ROWS = (fd.CLIP_SEG, fd.RANDOM_SEG, fd.UNET)


def _records(key: str, table: dict[str, dict[str, list[float]]]) -> list[dict]:
    """Long records from ``table[row][metric]`` = one value per seed."""
    return [
        {key: row, "seed": seed, "metric": metric, "value": value}
        for row, metrics in table.items()
        for metric, values in metrics.items()
        for seed, value in enumerate(values)
    ]


def decoding_results(
    psnr: tuple[list[float], list[float], list[float]] = ([20.0], [15.0], [25.0]),
    train_loss: tuple[float, float, float] = (4.0, 5.0, 2.0),
    miou: tuple[list[float], list[float], list[float]] = ([60.0], [40.0], [80.0]),
    val_loss: tuple[float, float, float] = (30.0, 40.0, 50.0),
    ood_miou: tuple[float, float, float] | None = (30.0, 20.0, 10.0),
    chosen: tuple[int, int] = (10, 10),
) -> fd.DecodingResults:
    """Three VQ-VAEs and three segmenters (rows in chapter order) trained for 10 steps."""
    vq = {
        row: {
            "train loss ×100": [loss] * len(values),
            "test PSNR (dB)": values,
            "chosen step": [chosen[0]] * len(values),
        }
        for row, values, loss in zip(VQ_ROWS, psnr, train_loss, strict=True)
    }
    seg = {
        row: {
            "test mIoU %": values,
            "best val. loss ×100": [loss] * len(values),
            "chosen step": [chosen[1]] * len(values),
        }
        for row, values, loss in zip(SEG_ROWS, miou, val_loss, strict=True)
    }
    if ood_miou is not None:
        for row, value in zip(SEG_ROWS, ood_miou, strict=True):
            seg[row]["OOD test mIoU %"] = [value] * len(miou[0])
    summary = fd.DataSummary(
        vq_dataset="world-shape-photo",
        seg_dataset="world-shape-photo",
        ood_dataset="world-shape-sketch" if ood_miou is not None else "",
        split_sizes={"world-shape-photo": (64, 16, 32), "world-shape-sketch": (8, 8, 24)},
        n_ood=24 if ood_miou is not None else 0,
        grid=(4, 4),
        channels=32,
        first_seed=0,
    )
    return fd.DecodingResults(
        summary,
        fd.VQResults(_records("encoder", vq), [], 10, 4, [], []),
        fd.SegResults(_records("model", seg), [], 10, ["background", "circle"], [], {}),
    )


def test_numbers_read_the_means() -> None:
    numbers = fd.numbers(decoding_results())
    assert (numbers["n_vq_train"], numbers["n_seg_train"]) == (64, 64)
    assert (numbers["grid_h"], numbers["feat_channels"], numbers["first_seed"]) == (4, 32, 0)
    assert (numbers["vq_psnr_clip"], numbers["vq_psnr_random"], numbers["vq_psnr_own"]) == (
        20.0,
        15.0,
        25.0,
    )
    assert numbers["vq_train_clip"] == pytest.approx(0.04)
    assert numbers["vq_train_ratio"] == pytest.approx(2.0)
    assert (numbers["seg_miou_clip"], numbers["seg_ood_random"]) == (60.0, 20.0)
    assert numbers["seg_val_unet"] == pytest.approx(0.5)
    assert (numbers["seg_gap_test"], numbers["seg_gap_ood"]) == (20.0, 10.0)
    assert numbers["n_seg_classes"] == 2
    without_ood = fd.numbers(decoding_results(ood_miou=None))
    assert np.isnan(without_ood["seg_ood_clip"]) and np.isnan(without_ood["seg_gap_ood"])


def test_verdicts_of_one_seed_where_the_trained_encoder_fits_best() -> None:
    assert fd.verdicts(decoding_results()) == {
        "vq_psnr_ranking": "own encoder (trained), then CLIP (frozen), then random tower (frozen)",
        "vq_ratio_meaning": (
            "CLIP's features fit the training images less closely than the trained encoder"
        ),
        "vq_ratio_vs_source": "Our ratio is also above 1, the source's direction",
        "vq_pretrain_gap": "+5.00 dB (one seed, so no spread over seeds to compare it with)",
        "seg_miou_ranking": (
            "UNet from scratch, then CLIP (frozen) + decoder, then random tower (frozen) + decoder"
        ),
        "seg_val_vs_unet": "lower than",
        "seg_ood_sentence": (
            "On the test images of `world-shape-sketch` (the same classes, out of distribution"
            " for the tower), the models trained on `world-shape-photo` reach 30.0 % (CLIP),"
            " 20.0 % (random tower) and 10.0 % (UNet) (ranked: CLIP (frozen) + decoder, then"
            " random tower (frozen) + decoder, then UNet from scratch). The CLIP decoder's mIoU"
            " minus the random tower's is +20.0 points on `world-shape-photo` and +10.0 points"
            " on `world-shape-sketch`."
        ),
        "seg_pretrain_gap": "+20.00 points (one seed, so no spread over seeds to compare it with)",
        "last_step_share": (
            "the lowest validation loss came at the last step in 6 of 6 runs, so longer training"
            " would likely lower it further"
        ),
    }


def test_verdicts_where_clip_fits_closely_and_no_ood_set_is_scored() -> None:
    results = decoding_results(
        train_loss=(2.0, 5.0, 4.0), val_loss=(50.0, 40.0, 50.0), ood_miou=None, chosen=(10, 5)
    )
    verdicts = fd.verdicts(results)
    assert verdicts["vq_ratio_meaning"] == (
        "CLIP's features fit the training images at least as closely as the trained encoder"
    )
    assert verdicts["vq_ratio_vs_source"] == (
        "Our ratio is not above 1: here the source's direction does not reproduce"
    )
    assert verdicts["seg_val_vs_unet"] == "not lower than"
    assert verdicts["seg_ood_sentence"] == (
        "This run sets no out-of-distribution segmentation set (`ood_dataset` is empty), so only"
        " the test split of `world-shape-photo` is scored; there the CLIP decoder's mIoU minus"
        " the random tower's is +20.0 points."
    )
    # Half the runs (the VQ-VAEs) ended at their last step: not a majority.
    assert verdicts["last_step_share"] == (
        "the lowest validation loss came at the last step in 3 of 6 runs"
    )


def test_gap_words_against_the_spread_over_seeds() -> None:
    def gap(clip: list[float], random: list[float]) -> str:
        results = decoding_results(psnr=(clip, random, [25.0] * len(clip)))
        return fd.verdicts(results)["vq_pretrain_gap"]

    assert gap([20.0, 22.0], [20.5, 21.5]) == "+0.00 dB, within the spread over seeds (± 1.00)"
    assert gap([24.0, 26.0], [20.0, 21.0]) == (
        "+4.50 dB, a gain larger than the spread over seeds (± 1.00)"
    )
    assert gap([18.0, 19.0], [24.0, 26.0]) == (
        "-6.50 dB, a loss larger than the spread over seeds (± 1.00)"
    )
    assert gap([20.0], [21.0]) == "-1.00 dB (one seed, so no spread over seeds to compare it with)"


def test_ranking_reads_highest_first() -> None:
    assert fd.ranking(pd.Series({"a": 1.0, "b": 3.0, "c": 2.0})) == "b, then c, then a"


def test_tables_and_figures_of_hand_made_results() -> None:
    import matplotlib.pyplot as plt

    results = decoding_results()
    table = fd.data_table(results.data)
    assert list(table["used for"]) == ["VQ-VAE", "segmentation", "segmentation, OOD test"]
    assert list(table["train / val / test images"]) == ["64 / 16 / 32"] * 2 + ["– / – / 24"]
    assert len(fd.data_table(decoding_results(ood_miou=None).data)) == 2
    images = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    results.vq.reconstructions = [("original", images), (fd.CLIP_VQ, images)]
    results.vq.random_decodes = [(fd.CLIP_VQ, images)]
    results.vq.curves = [{"encoder": fd.CLIP_VQ, "seed": 0, "step": 1, "val loss": 1.0}]
    results.seg.curves = [{"model": fd.UNET, "seed": 0, "step": 1, "val loss": 1.0}]
    results.seg.images = [np.zeros((8, 8, 3), np.uint8)] * 2
    results.seg.masks = {"ground truth": torch.zeros(2, 8, 8, dtype=torch.long)}
    figures = fd.figures(results)
    assert set(figures) == {
        "fig_reconstructions",
        "fig_random_codes",
        "fig_val_curves",
        "fig_masks",
    }
    for fig in figures.values():
        plt.close(fig)
