"""Tests for the CLIPood study: domain splits, base-to-new halves, the experiment runner.

The loss identities (lambda = 0 is cross-entropy, zero-diagonal margins, beta = 1 is the uniform
average) are tested on the pieces in tests/methods/test_clipood.py; here they are checked again through
``finetune``, on the path the study takes.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
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


# --- the chapter's numbers and verdicts, on hand-made results ---------------------------------------

ALL_METHODS = ["zero-shot", *clipood.METHODS, *clipood.ABLATION]
CLIPOOD = "CLIPood (MMS + BMA)"
HELD_OUT = ("photo", "sketch")


def _config(margin: float = 0.3) -> clipood.TrialConfig:
    return clipood.TrialConfig(steps=30, lr=1e-4, margin=margin, seed=0)


def _grid() -> pd.DataFrame:
    """A seed-0 grid: two margins, the raw model, the EMA and two BMAs on val and test."""
    members = {"raw": 40.0, "ema": 42.0, "bma0.5": 45.0, "bma1": 44.0}
    return pd.DataFrame(
        [
            {**_config(margin).__dict__, "member": m, "split": s, "accuracy": acc + margin + (s == "val")}
            for margin in (0.0, 0.3)
            for m, acc in members.items()
            for s in ("val", "test")
        ]
    )  # fmt: skip


def _curve(start: float, final: dict[str, float]) -> pd.DataFrame:
    """A trajectory: every model at ``start`` at step 0, the raw weights dip to 20 at step 15,
    then each model ends at ``final``; the val split runs 10 points above."""
    rows = []
    for model in ("raw", "EMA", "BMA"):
        middle = 20.0 if model == "raw" else (start + final[model]) / 2
        for step, acc in ((0, start), (15, middle), (30, final[model])):
            rows += [
                {"step": step, "model": model, "split": "test", "accuracy": acc},
                {"step": step, "model": model, "split": "val", "accuracy": acc + 10},
            ]
    return pd.DataFrame(rows)


def _b2n(halves: dict[str, tuple[float, float]]) -> pd.DataFrame:
    rows = [
        {"dataset": "world-shape-photo", "method": m, "seed": s, "split": split, "accuracy": acc}
        for m, (base, new) in halves.items()
        for s in ([-1] if m == "zero-shot" else [0, 1])
        for split, acc in (("base", base), ("new", new))
    ]
    return clipood.with_harmonic_mean(pd.DataFrame(rows), by=["dataset", "method", "seed"])


#: Held-out averages, validation accuracies and base/new halves of a build like the source's.
SOURCE_LIKE = {
    "avg": {
        "zero-shot": 40.0,
        "ERM (CE)": 45.0,
        "CE + BMA": 47.0,
        "MMS": 46.0,
        CLIPOOD: 50.0,
        "MMS + EMA": 48.5,
        "MMS + uniform average": 47.0,
    },
    "val": {m: 70.0 for m in ALL_METHODS} | {"zero-shot": 50.0, "ERM (CE)": 72.0},
    "b2n": {
        "zero-shot": (60.0, 70.0),
        "ERM (CE)": (80.0, 50.0),
        "CE + BMA": (78.0, 60.0),
        "MMS": (79.0, 52.0),
        CLIPOOD: (78.0, 72.0),
    },
}


def clipood_results(
    avg: dict[str, float],
    val: dict[str, float],
    b2n: dict[str, tuple[float, float]],
    *,
    sketch: dict[str, float] | None = None,
    members: tuple[str, str] = ("bma0.5", "bma0.5"),
    curve: tuple[float, dict[str, float]] = (40.0, {"raw": 30.0, "EMA": 38.0, "BMA": 41.0}),
    curve_beta: float = 0.5,
) -> clipood.ClipoodResults:
    """One benchmark, photo and sketch held out in turn, two seeds (seed 0 half a point up).

    ``avg`` is each method's mean over held-out domains; ``sketch`` its accuracy on sketch
    (default: one point below the mean). ``val`` is the same on both training-domain splits.
    """
    sketch = {m: sketch.get(m, a - 1.0) if sketch else a - 1.0 for m, a in avg.items()}
    dg = pd.DataFrame(
        [
            {"benchmark": "world-shape", "held-out": d, "method": m, "seed": s,
             "accuracy": (2 * a - sketch[m] if d == "photo" else sketch[m]) + {-1: 0, 0: 0.5, 1: -0.5}[s]}
            for m, a in avg.items()
            for s in ([-1] if m == "zero-shot" else [0, 1])
            for d in HELD_OUT
        ]
    )  # fmt: skip
    dg_val = pd.DataFrame(
        [{"benchmark": "world-shape", "held-out": d, **val} for d in HELD_OUT]
    ).set_index(["benchmark", "held-out"])
    selected = {
        ("world-shape", d): {m: (_config(0.0 if "CE" in m else 0.3), member) for m in ALL_METHODS[1:]}
        for d, member in zip(HELD_OUT, members, strict=True)
    }  # fmt: skip
    return clipood.ClipoodResults(
        bundle_name="clipnb-ViT-32px",
        n_trainable=20576,
        logit_scale=14.0,
        benchmarks={"world-shape": list(HELD_OUT)},
        seeds=[0, 1],
        steps=[30],
        lrs=[1e-4],
        margins=[0.0, 0.3],
        betas=[0.5, 1.0],
        ema_decay=0.9,
        batch_size=16,
        b2n_datasets=["world-shape-photo"],
        b2n_shots=16,
        curve_domain="photo",
        dg=dg,
        dg_val=dg_val,
        dg_selected=selected,
        dg_train_sizes={("world-shape", d): 96 for d in HELD_OUT},
        ood_top_class_pct=50.0,
        ood_n_classes=8,
        curve=_curve(*curve),
        curve_beta=curve_beta,
        curve_n_classes=8,
        b2n=_b2n(b2n),
        dg_grids={("world-shape", d): _grid() for d in HELD_OUT},
        wall_minutes=1.25,
        cpu_minutes=2.5,
    )


def _with(changes: dict[str, float], **kwargs) -> clipood.ClipoodResults:
    """The source-like build with some held-out averages changed."""
    return clipood_results(
        SOURCE_LIKE["avg"] | changes, SOURCE_LIKE["val"], SOURCE_LIKE["b2n"], **kwargs
    )


def test_numbers_read_the_means() -> None:
    numbers = clipood.numbers(_with({}))
    assert numbers["n_trainable_m"] == pytest.approx(0.020576)
    assert (numbers["n_seeds"], numbers["n_grid"], numbers["steps_first"]) == (2, 2, 30)
    assert numbers["dg_clipood_avg"] == 50.0 and numbers["dg_clipood_ood"] == 49.0
    assert numbers["dg_gain_vs_erm"] == 5.0 and numbers["dg_gain_vs_zs"] == 10.0
    assert numbers["dg_gain_seeds_min"] == 5.0
    assert numbers["dg_seed_std"] == pytest.approx(np.sqrt(0.5))
    assert numbers["chance"] == 12.5 and numbers["ood_top_class_pct"] == 50.0
    assert (numbers["dg_val_zs"], numbers["dg_val_best_gain"]) == (50.0, 22.0)
    assert numbers["ema_theta0_pct"] == pytest.approx(100 * 0.9**30)
    assert numbers["uniform_theta0_pct"] == pytest.approx(100 / 31)
    assert numbers["bma_theta0_pct"] > numbers["ema_theta0_pct"]  # beta 0.5: U-shaped weights
    assert numbers["bma_beta"] == 0.5
    assert (numbers["curve_start"], numbers["curve_min_raw"], numbers["curve_final_bma"]) == (
        40.0,
        20.0,
        41.0,
    )
    assert numbers["b2n_erm_base_delta"] == 20.0 and numbers["b2n_clipood_new_delta"] == 2.0
    assert numbers["b2n_zs_h"] == pytest.approx(domains.harmonic_mean(60.0, 70.0))


def test_verdicts_of_a_build_like_the_source() -> None:
    assert clipood.verdicts(_with({})) == {
        "dg_best_finetuned": "the best finetuned model is CLIPood (MMS + BMA), as in the source",
        "dg_bma_effect": "in both settings",
        "dg_mms_effect": "in both settings",
        "dg_vs_zs_words": "all four finetuned models come out ahead",
        "dg_erm_story": (
            "plain finetuning (ERM) gains 5.0 points of held-out accuracy, and averaging with the"
            " pretrained weights (CE + BMA) changes that by +2.0"
        ),
        "dg_headline": "appears here for ERM (CE), CE + BMA, MMS and CLIPood (MMS + BMA)",
        "ood_verdict": "the methods range from 39.0 to 49.0 % there",
        "dg_val_best": "ERM (CE)",
        "dg_val_verdict": (
            "finetuning does fit the styles it trains on, so the held-out columns measure transfer"
        ),
        "clipood_betas": "β = 0.5 for every held-out domain",
        "ablation_order": "follows",
        "curve_closest": "the BMA ends closest to the pretrained model's accuracy",
        "curve_bma_shape": "U-shaped",
        "b2n_erm_base_verdict": (
            "plain finetuning raises the base classes it trains on, as in the source"
        ),
        "b2n_clipood_new_verdict": "CLIPood keeps the new classes at or above zero-shot and above ERM's",
        "b2n_bma_effect": "in both settings",
    }


def test_verdicts_of_a_build_where_finetuning_hurts() -> None:
    avg = {
        "zero-shot": 50.0,
        "ERM (CE)": 40.0,
        "CE + BMA": 45.0,
        "MMS": 38.0,
        CLIPOOD: 37.0,
        "MMS + EMA": 41.0,
        "MMS + uniform average": 40.0,
    }
    results = clipood_results(
        avg,
        {m: 52.0 for m in ALL_METHODS} | {"zero-shot": 50.0},
        {
            "zero-shot": (60.0, 70.0),
            "ERM (CE)": (55.0, 50.0),
            "CE + BMA": (58.0, 60.0),
            "MMS": (56.0, 52.0),
            CLIPOOD: (57.0, 45.0),
        },
        sketch={m: 13.0 for m in avg},
        members=("bma0.5", "bma2"),
        curve=(40.0, {"raw": 39.0, "EMA": 36.0, "BMA": 43.0}),
        curve_beta=1.0,
    )
    assert clipood.verdicts(results) == {
        "dg_best_finetuned": "the best finetuned model is CE + BMA, not CLIPood as in the source",
        "dg_bma_effect": "with cross-entropy only",
        "dg_mms_effect": "in neither setting",
        "dg_vs_zs_words": "none of the four finetuned models comes out ahead",
        "dg_erm_story": (
            "plain finetuning (ERM) costs 10.0 points of held-out accuracy, and averaging with the"
            " pretrained weights (CE + BMA) gives part of it back"
        ),
        "dg_headline": "does not appear here; what can be compared is how much each method loses",
        "ood_verdict": (
            "every method, finetuned or not, stays within 0.5 points of chance there, so that"
            " style is a floor rather than a test of transfer"
        ),
        "dg_val_best": "ERM (CE)",
        "dg_val_verdict": (
            "30 steps over 96 training images barely fit even the styles the model trains on"
        ),
        "clipood_betas": "β = 0.5, 2 for the held-out domains in turn",
        "ablation_order": "does not follow",
        "curve_closest": "the raw weights end closest to the pretrained model's accuracy",
        "curve_bma_shape": "uniform",
        "b2n_erm_base_verdict": "plain finetuning lowers even the base classes it trains on",
        "b2n_clipood_new_verdict": (
            "CLIPood's new-class accuracy stays below zero-shot's and does not exceed ERM's"
        ),
        "b2n_bma_effect": "with cross-entropy only",
    }


@pytest.mark.parametrize(
    ("changes", "words", "headline"),
    [
        ({"zero-shot": 46.5}, "only CE + BMA and CLIPood (MMS + BMA) come out ahead", "CE + BMA and CLIPood (MMS + BMA)"),
        ({"zero-shot": 49.0}, "only CLIPood (MMS + BMA) comes out ahead", "CLIPood (MMS + BMA)"),
    ],
)  # fmt: skip
def test_only_some_finetuned_models_beat_zero_shot(changes, words, headline) -> None:
    verdicts = clipood.verdicts(_with(changes))
    assert verdicts["dg_vs_zs_words"] == words
    assert verdicts["dg_headline"] == f"appears here for {headline}"


@pytest.mark.parametrize(
    ("changes", "story"),
    [
        ({"zero-shot": 50.0, "CE + BMA": 44.0}, "gives none of it back"),
        ({"zero-shot": 50.0, "CE + BMA": 51.0}, "gives all of it back"),
    ],
)
def test_erm_story_when_the_bma_gives_none_or_all_of_the_loss_back(changes, story) -> None:
    assert clipood.verdicts(_with(changes))["dg_erm_story"] == (
        "plain finetuning (ERM) costs 5.0 points of held-out accuracy, and averaging with the"
        f" pretrained weights (CE + BMA) {story}"
    )


def test_effect_words_names_the_one_setting() -> None:
    means = pd.Series({"ERM (CE)": 40.0, "CE + BMA": 39.0, "MMS": 41.0, CLIPOOD: 42.0})
    assert clipood.effect_words(means, clipood.BMA_PAIRS) == "with the MMS loss only"
    assert clipood.effect_words(means, clipood.MMS_PAIRS) == "in both settings"


def test_curve_shape_of_a_centre_heavy_bma() -> None:
    assert clipood.verdicts(_with({}, curve_beta=2.0))["curve_bma_shape"] == "centre-heavy"


@pytest.mark.parametrize(
    ("erm_new", "clipood_new", "words"),
    [
        (50.0, 55.0, "CLIPood's new-class accuracy stays below zero-shot's and above ERM's"),
        (70.0, 70.0, "CLIPood keeps the new classes at or above zero-shot and does not exceed ERM's"),
    ],
)  # fmt: skip
def test_new_class_verdicts_against_zero_shot_and_erm(erm_new, clipood_new, words) -> None:
    halves = SOURCE_LIKE["b2n"] | {"ERM (CE)": (80.0, erm_new), CLIPOOD: (78.0, clipood_new)}
    results = clipood_results(SOURCE_LIKE["avg"], SOURCE_LIKE["val"], halves)
    assert clipood.verdicts(results)["b2n_clipood_new_verdict"] == words


def test_tables_and_figures_of_hand_made_results() -> None:
    import matplotlib.pyplot as plt

    results = _with({})
    assert list(clipood.dg_table(results).index) == clipood.MAIN_METHODS
    assert list(clipood.dg_table(results).columns) == [
        "world-shape · photo",
        "world-shape · sketch",
        "world-shape · average",
    ]
    assert list(clipood.ablation_table(results).index) == clipood.ABLATION_METHODS
    assert list(clipood.dg_val_table(results).columns) == ["zero-shot", *clipood.METHODS]
    assert clipood.chosen_settings_table(results).loc[CLIPOOD, "world-shape · sketch"] == (
        "λ=0.3 · bma0.5 · lr=1e-04 · 30 steps"
    )
    assert list(clipood.b2n_table(results).columns)[-1] == "average · H"
    scale = clipood.scale_table(results)["this build"]
    assert list(scale) == [
        "clipnb-ViT-32px (0.02 M trainable)",
        "world-shape (2 held-out runs)",
        "96 images",
        "30 steps × 16",
        "2 runs × 2 β",
        "1.2 min wall, 2.5 min CPU",
    ]
    figures = clipood.figures(results)
    assert set(figures) == {"fig_clipood_sweeps", "fig_clipood_steps"}
    for fig in figures.values():
        plt.close(fig)
