"""Tests for the CLIPood study: domain splits, base-to-new halves, the experiment runner.

The loss identities (lambda = 0 is cross-entropy, zero-diagonal margins, beta = 1 is the uniform
average) are tested on the pieces in tests/methods/test_clipood.py; here they are checked again through
``finetune``, on the path the study takes.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import clipnb
from clipnb.core.utils import array_hash
from clipnb.data import domains
from clipnb.methods import finetune as ft
from clipnb.methods.clipood import (
    BetaMovingAverage,
    ExponentialMovingAverage,
    UniformAverage,
    text_margins,
)
from clipnb.studies import clipood
from tests import fixtures as fx

WORLD = [f"world-shape-{s}" for s in ("photo", "sketch", "cartoon", "noisy")]
TINY = {"per_class": (2, 2, 3)}


@pytest.fixture(scope="module")
def tiny_bundle():
    torch.manual_seed(0)
    return clipnb.create_model("clipnb-ViT-tiny")


@pytest.fixture(scope="module")
def world_benchmark() -> domains.Benchmark:
    (bench,) = domains.domain_benchmarks(WORLD)
    return bench


# --- leave one domain out ------------------------------------------------------------------------
def test_benchmarks_group_world_styles_and_keep_domainbed_sets() -> None:
    benches = domains.domain_benchmarks(
        [*WORLD, "pacs", "world-colour-photo", "world-colour-noisy"]
    )
    assert [b.name for b in benches] == ["world-shape", "pacs", "world-colour"]
    assert benches[0].domains == ("photo", "sketch", "cartoon", "noisy")
    assert benches[1].multi_domain and "sketch" in benches[1].domains
    with pytest.raises(ValueError, match="at least two domains"):
        domains.domain_benchmarks(["world-shape-photo"])
    with pytest.raises(ValueError, match="not a domain dataset"):
        domains.domain_benchmarks(["digits"])


@pytest.mark.parametrize("held_out", ["photo", "sketch", "cartoon", "noisy"])
def test_held_out_world_domain_never_in_training_or_selection(world_benchmark, held_out) -> None:
    split = domains.leave_one_domain_out(world_benchmark, held_out, **TINY)
    held = world_benchmark.domains.index(held_out)
    assert split.train.meta["test_domain"] == held_out
    for part in (split.train, split.val):
        assert held not in set(part.domains.tolist())
        assert set(part.domains.tolist()) == set(range(4)) - {held}
    assert set(split.test.domains.tolist()) == {held}
    # Pixel level: no image of the held-out style (any of its splits) is in train or val.
    own = clipnb.load_dataset(f"world-shape-{held_out}", **TINY)
    held_hashes = {array_hash(im) for s in ("train", "val", "test") for im in own.split(s).images}
    for part in (split.train, split.val):
        assert not held_hashes & {array_hash(im) for im in part.images}
    # The test split is the held-out style's own test split (same images, same cached features).
    assert split.test.fingerprint == own.test.fingerprint
    with pytest.raises(ValueError, match="held-out domain"):
        domains.leave_one_domain_out(world_benchmark, "oil painting", **TINY)


def test_held_out_domainbed_domain_never_in_training_or_selection(tmp_path) -> None:
    fx.write_pacs(tmp_path)
    (bench,) = domains.domain_benchmarks(["pacs"])
    for held_out in bench.domains:
        split = domains.leave_one_domain_out(bench, held_out, root=tmp_path)
        names = split.train.meta["domain_names"]
        held = names.index(held_out)
        assert held not in set(split.train.domains.tolist()) | set(split.val.domains.tolist())
        assert set(split.test.domains.tolist()) == {held}
        # File level: no training or validation image lives in the held-out domain's folder.
        folder = str(tmp_path / "PACS" / held_out) + "/"
        for part in (split.train, split.val):
            assert not any(p.startswith(folder) for p in part.images._load.paths)
        assert all(p.startswith(folder) for p in split.test.images._load.paths)


def test_concat_sets_rejects_mismatched_classes() -> None:
    a = clipnb.load_dataset("world-shape-photo", **TINY).train
    b = clipnb.load_dataset("world-colour-photo", **TINY).train
    with pytest.raises(ValueError, match="other class names"):
        domains.concat_sets("x", [a, b], [0, 1])


# --- base to new -----------------------------------------------------------------------------------
def test_base_to_new_halves() -> None:
    base_idx, new_idx = domains.base_new_classes(9)
    assert base_idx.tolist() == [0, 1, 2, 3, 4] and new_idx.tolist() == [5, 6, 7, 8]
    data = clipnb.load_dataset("world-shape-photo", **TINY)
    base, new = domains.base_to_new(data)
    assert base.class_names == data.class_names[:4] and new.class_names == data.class_names[4:]
    assert not set(base.class_names) & set(new.class_names)
    for half, offset in ((base, 0), (new, 4)):
        for s in ("train", "val", "test"):
            part, full = half.split(s), data.split(s)
            assert set(part.labels.tolist()) == set(range(4))
            # relabelled rows point at the right original class
            orig = full.labels[part.indices]
            np.testing.assert_array_equal(orig, part.labels + offset)
    assert domains.harmonic_mean(80.0, 60.0) == pytest.approx(2 * 80 * 60 / 140)
    assert domains.harmonic_mean(0.0, 0.0) == 0.0


# --- the loss and the averages, through finetune -----------------------------------------------------
def test_mms_with_zero_margin_trains_exactly_like_cross_entropy(tiny_bundle) -> None:
    data = clipnb.load_dataset("world-shape-photo", **TINY)
    prompts = ft.prompt_texts(data.class_names)
    kw = {"steps": 3, "lr": 1e-3, "batch_size": 8}
    ce = ft.finetune(tiny_bundle, ft.IMAGE_PARTS, data.train, prompts, **kw)
    mms0 = ft.finetune(
        tiny_bundle,
        ft.IMAGE_PARTS,
        data.train,
        prompts,
        loss_fn=lambda i, t, y, s: clipnb.methods.clipood.margin_metric_softmax(
            i, t, y, 1.0 / s, 0.0
        ),
        **kw,
    )
    # Same losses along the way (Adam normalises gradients, so round-off in near-zero gradients
    # of biases may move the weights by up to ~lr per step: compare losses, not weights).
    np.testing.assert_allclose(ce.train_loss, mms0.train_loss, rtol=1e-4)
    assert clipood.mms_loss(0.0) is ft.cross_entropy_loss
    # a positive margin changes the trajectory, and the margin matrix has a zero diagonal
    mms = ft.finetune(
        tiny_bundle, ft.IMAGE_PARTS, data.train, prompts, loss_fn=clipood.mms_loss(0.5), **kw
    )
    assert not torch.equal(mms.bundle.model.visual.proj, ce.bundle.model.visual.proj)
    text = clipnb.class_embeddings(tiny_bundle, data.class_names, cache=False)
    assert torch.equal(torch.diagonal(text_margins(text)), torch.zeros(len(data.class_names)))


def test_averager_mapping_beta_one_is_uniform_and_raw_is_raw(tiny_bundle) -> None:
    data = clipnb.load_dataset("world-shape-photo", **TINY)
    steps = 4
    averagers = {
        "raw": ExponentialMovingAverage(decay=0.0),
        "bma1": BetaMovingAverage(beta=1.0, total_steps=steps),
        "uniform": UniformAverage(),
    }
    result = ft.finetune(
        tiny_bundle,
        ft.IMAGE_PARTS,
        data.train,
        ft.prompt_texts(data.class_names),
        steps=steps,
        lr=1e-3,
        batch_size=8,
        averager=averagers,
        eval_sets={"val": data.val},
    )
    bma, uni = averagers["bma1"].state_dict(), averagers["uniform"].state_dict()
    for k in bma:
        torch.testing.assert_close(bma[k], uni[k], atol=1e-6, rtol=0)
    final = result.evals[-1][1]
    assert set(final) == {"val", "val/raw", "val/bma1", "val/uniform"}
    assert final["val"] == final["val/raw"]  # the raw entry is the raw model, not the average
    # the returned model carries the first averager: the latest weights
    latest = averagers["raw"].state_dict()
    for name, p in result.bundle.model.named_parameters():
        if name in latest:
            assert torch.equal(p, latest[name]), name


# --- the experiment: selection never sees the test split ---------------------------------------------
def test_selection_ignores_the_test_split(tiny_bundle, world_benchmark) -> None:
    split = domains.leave_one_domain_out(world_benchmark, "sketch", **TINY)
    other = clipnb.load_dataset("world-shape-photo", **TINY).test
    kw = {
        "seeds": [0, 1],
        "steps": [2],
        "lrs": [1e-3],
        "margins": [0.0, 0.5],
        "betas": [0.5, 1.0],
        "ema_decay": 0.5,
        "batch_size": 8,
        "progress": False,
    }
    a = clipood.run_experiment(
        tiny_bundle, split.train, {"val": split.val, "test": split.test}, **kw
    )
    b = clipood.run_experiment(tiny_bundle, split.train, {"val": split.val, "test": other}, **kw)
    assert a.selected == b.selected
    assert set(a.selected) == {*clipood.METHODS, *clipood.ABLATION}
    assert a.selected["ERM (CE)"][0].margin == 0 and a.selected["MMS"][0].margin > 0
    assert a.selected["MMS + uniform average"][1] == "bma1"
    assert set(a.results["split"]) == {"test"} and set(a.results["seed"]) == {0, 1}
    # seed 0 comes from the grid, the other seed reruns only the selected settings
    assert a.trials_run <= 2 + 2
    # same parameters, same numbers
    pd_a = a.results.sort_values(["method", "seed"]).reset_index(drop=True)
    c = clipood.run_experiment(
        tiny_bundle, split.train, {"val": split.val, "test": split.test}, **kw
    )
    pd_c = c.results.sort_values(["method", "seed"]).reset_index(drop=True)
    assert pd_a.equals(pd_c)


def test_harmonic_mean_rows_and_trajectory(tiny_bundle) -> None:
    import pandas as pd

    records = pd.DataFrame(
        [
            {"method": "m", "seed": 0, "split": "base", "accuracy": 80.0},
            {"method": "m", "seed": 0, "split": "new", "accuracy": 60.0},
        ]
    )
    out = clipood.with_harmonic_mean(records, by=["method", "seed"])
    h = out[out["split"] == "H"]["accuracy"].item()
    assert h == pytest.approx(domains.harmonic_mean(80.0, 60.0))
    with pytest.raises(ValueError, match="'base' and 'new'"):
        clipood.with_harmonic_mean(records[records["split"] == "base"], by=["method", "seed"])

    data = clipnb.load_dataset("world-shape-photo", **TINY)
    curve = clipood.trajectory(
        tiny_bundle,
        data.train,
        {"test": data.test, "val": data.val},
        clipood.TrialConfig(steps=4, lr=1e-3, margin=0.3, seed=0),
        beta=0.5,
        ema_decay=0.5,
        batch_size=8,
        every=2,
    )
    assert sorted(curve["step"].unique()) == [0, 2, 4]
    assert set(curve["model"]) == {"raw", "EMA", "BMA"} and set(curve["split"]) == {"test", "val"}
    start = curve[curve["step"] == 0].groupby("split")["accuracy"].nunique()
    assert (start == 1).all()  # at step 0 the three models are the pretrained one
