"""Checks of the finetune_parts study: part isolation, cached fast paths, CAM score and mass."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

import clipnb
from clipnb.methods import finetune as ft
from clipnb.methods.gradcam import ClipGradCAM, cam_mass_in_mask
from clipnb.methods.saliency import CamSetting
from clipnb.studies import finetune_parts as ps


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    torch.manual_seed(0)
    bundle = clipnb.create_model("clipnb-ViT-tiny")
    data = clipnb.load_dataset("digits")
    train = clipnb.few_shot(data.train, 2, seed=0)
    prompts = ft.prompt_texts(data.class_names)
    return bundle, train, data.val.subset(range(40)), prompts


@pytest.mark.parametrize("part", ft.PARTS)
def test_only_the_chosen_part_changes_with_cached_features(tiny, part):
    bundle, train, _, prompts = tiny
    before = {k: v.clone() for k, v in bundle.model.state_dict().items()}
    result = ft.finetune(
        bundle,
        part,
        train,
        prompts,
        steps=1,
        lr=1e-2,
        batch_size=8,
        features=ps.frozen_features(bundle, part, train),
        fused=True,
    )
    chosen = {id(p) for p in clipnb.core.models.model_parts(result.bundle.model)[part]}
    changed = [
        n for n, p in result.bundle.model.named_parameters() if not torch.equal(p, before[n])
    ]
    assert changed, f"nothing in {part} changed"
    params = dict(result.bundle.model.named_parameters())
    for name in changed:
        assert id(params[name]) in chosen, f"{name} changed but is not part of {part}"
    for k, v in bundle.model.state_dict().items():  # the pretrained model is untouched
        assert torch.equal(v, before[k]), k


def test_pre_projection_times_projection_is_the_image_embedding(tiny):
    bundle, train, _, _ = tiny
    pixels = ft.image_tensors(bundle, train)[:4]
    encode = ft.image_pre_projection(bundle.model)
    with torch.no_grad():
        torch.testing.assert_close(
            encode(pixels) @ bundle.model.visual.proj, bundle.model.encode_image(pixels)
        )
    assert isinstance(bundle.model.visual.proj, torch.nn.Parameter)  # restored


@pytest.mark.parametrize("part", ["text_projection", "image_projection"])
def test_cached_features_train_like_the_pixels(tiny, part):
    bundle, train, _, prompts = tiny
    kwargs = dict(steps=3, lr=1e-2, batch_size=8, seed=1)
    slow = ft.finetune(bundle, part, train, prompts, **kwargs)
    fast = ft.finetune(
        bundle, part, train, prompts, features=ps.frozen_features(bundle, part, train), **kwargs
    )
    np.testing.assert_allclose(slow.train_loss, fast.train_loss, rtol=1e-4, atol=1e-5)
    for (n, a), b in zip(
        slow.bundle.model.named_parameters(), fast.bundle.model.parameters(), strict=True
    ):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5, msg=n)


@pytest.mark.parametrize("part", ft.PARTS)
def test_split_scorer_equals_re_encoding_everything(tiny, part):
    bundle, train, val, prompts = tiny
    result = ft.finetune(bundle, part, train, prompts, steps=2, lr=1e-2, batch_size=8)
    scorer = ps.SplitScorer(bundle, val, prompts)
    slow = ft.evaluate_pixels(
        result.bundle.model,
        bundle.tokenize(prompts),
        ft.image_tensors(bundle, val),
        torch.as_tensor(val.labels),
    )
    assert scorer.accuracy(result.bundle.model, part) == pytest.approx(slow)
    assert scorer.accuracy(bundle.model, None) == pytest.approx(scorer.zero_shot())


def test_cam_score_is_the_zero_shot_logit_over_the_scale(tiny):
    bundle, _, val, prompts = tiny
    scorer = ps.SplitScorer(bundle, val, prompts)
    pixels = scorer.pixels[:3]
    with ClipGradCAM(bundle.model, scorer.class_features(bundle.model, None)) as cam:
        cam(pixels, [0, 1, 2])
        scores = cam.scores
    logits = clipnb.zero_shot_logits(scorer.image[:3], scorer.text, bundle.logit_scale)
    torch.testing.assert_close(scores * bundle.logit_scale, logits, rtol=1e-4, atol=1e-4)


def test_select_setting_picks_the_best_validation_candidate(tiny):
    bundle, train, val, prompts = tiny
    scorer = ps.SplitScorer(bundle, val, prompts)
    best, records = ps.select_setting(
        bundle, "text_projection", train, scorer, [1e-3, 1e-1], [1, 2], batch_size=8
    )
    assert len(records) == 4
    top = records[int(np.argmax([r["val"] for r in records]))]  # first best, candidate order
    assert (best.lr, best.steps) == (top["lr"], top["steps"])
    # the 1-step score is the same run stopped earlier: it equals a separate 1-step run
    one = ft.finetune(bundle, "text_projection", train, prompts, steps=1, lr=1e-3, batch_size=8)
    rec = next(r for r in records if r["lr"] == 1e-3 and r["steps"] == 1)
    assert scorer.accuracy(one.bundle.model, "text_projection") == pytest.approx(rec["val"])


def test_cam_mass_is_one_for_a_map_zero_outside_the_mask():
    mask = np.zeros((2, 8, 8), dtype=np.uint8)
    mask[:, 2:5, 3:7] = 1  # world masks: 0 background, 1 object
    cams = np.random.default_rng(0).random((2, 8, 8)) * mask
    np.testing.assert_allclose(cam_mass_in_mask(cams, mask), [1.0, 1.0])
    np.testing.assert_allclose(cam_mass_in_mask(np.ones((2, 8, 8)), mask), mask.mean((1, 2)))


def test_cam_spread_and_ink_masks():
    flat = np.ones((1, 4, 4))
    peak = np.zeros((1, 4, 4))
    peak[0, 1, 2] = 1.0
    np.testing.assert_allclose(ps.cam_spread(np.concatenate([flat, peak])), [1.0, 0.0])
    assert np.isnan(ps.cam_spread(np.zeros((1, 4, 4))))[0]
    image = np.zeros((1, 4, 4, 3), dtype=np.uint8)
    image[0, 1:3, 1] = 200
    masks = ps.ink_masks(image)
    assert masks.sum() == 2 and masks[0, 1, 1] and masks[0, 2, 1]


def test_cam_probe_on_world_masks(smoke_bundle):
    data = clipnb.load_dataset("world-shape-photo", per_class=(2, 2, 3))
    prompts = ft.prompt_texts(data.class_names)
    scorer = ps.SplitScorer(smoke_bundle, data.test, prompts)
    probe = ps.CamProbe(
        scorer, np.arange(6), ps.first_of_classes(data.test.labels, [0, 4]), CamSetting()
    )
    assert probe.mask_kind == "object mask"
    assert probe.mask_area == pytest.approx(float(data.test.masks[:6].mean()))
    out = probe(smoke_bundle.model, None, 0, 0)
    assert 0.0 <= out["cam_mass"] <= 1.0 and 0.0 < out["cam_spread"] <= 1.0
    assert probe.maps[("zero-shot", 0)].shape == (2, 32, 32)


# --------------------------------------------------------------------------------------------
# numbers and verdicts, on hand-made results
# --------------------------------------------------------------------------------------------

SHOTS = [1, 5]
SEEDS = [0, 1]
NAN = float("nan")


def make_results(
    at_max: dict[str, dict[str, float]] | None = None,
    mass_at_max: dict[str, dict[str, tuple[float, float]]] | None = None,
    zs_mass: dict[str, float] | None = None,
    wrong: pd.DataFrame | None = None,
    minutes: float = 5.0,
) -> ps.Results:
    """Results of a sweep over two seeds at 0, 1 and 5 shots: every accuracy is 50 % and every
    CAM mass 0.3 unless ``at_max`` (accuracy at 5 shots), ``mass_at_max`` (mass at 5 shots, per
    seed) or ``zs_mass`` (the pretrained model's mass, NaN = no masks) say otherwise. Selection
    and sweep take ``minutes`` in all, of which the CAMs take none."""
    records = []
    for role in ps.ROLES:
        for part in ps.PARTS:
            for shots in [0, *SHOTS]:
                for seed in SEEDS:
                    accuracy, mass = 50.0, (zs_mass or {}).get(role, 0.3)
                    if shots == max(SHOTS):
                        accuracy = (at_max or {}).get(role, {}).get(part, 50.0)
                        mass = (mass_at_max or {}).get(role, {}).get(part, (mass, mass))[seed]
                    records.append(
                        {
                            "dataset": role,
                            "part": part,
                            "shots": shots,
                            "seed": seed,
                            "accuracy": accuracy,
                            "cam_mass": mass,
                            "cam_seconds": 0.0,
                        }
                    )
    selection = ps.Selection(settings={}, records=[], shots={}, seed=0, seconds=0.0)
    return ps.Results(
        datasets={"mnist": "digits", "flowers": "sketch", "animals": "photo"},
        shots={role: list(SHOTS) for role in ps.ROLES},
        seeds=list(SEEDS),
        records=pd.DataFrame.from_records(records),
        zero_shot={role: 20.0 for role in ps.ROLES},
        n_classes={"mnist": 10, "flowers": 8, "animals": 8},
        selection=selection,
        cam_setting="GradCAM at the last block",
        cam_reading="The maps are read as evidence.",
        mask_area={role: 0.25 for role in ps.ROLES},
        wrong=pd.DataFrame([]) if wrong is None else wrong,
        sweep_seconds=60.0 * minutes,
    )


def wrong_table(zs: dict[str, float], image_encoder: dict[str, float]) -> pd.DataFrame:
    rows = [{"model": "zero-shot", "shots": 0} | zs, {"model": "image_encoder", "shots": 5}]
    rows[1] |= image_encoder
    rows.append({"model": "text_encoder", "shots": 5} | zs)
    return pd.DataFrame(rows)


def test_numbers_have_the_glue_keys_the_prose_cites(repo):
    import re

    results = make_results(at_max={"mnist": {"image_encoder": 90.0}})
    numbers, verdicts = ps.numbers(results), ps.verdicts(results)
    text = (repo / "notebooks" / "03_finetune_parts.py").read_text()
    cited = set(re.findall(r"\{glue:text\}`(\w+)", text))
    assert cited - set(numbers) == {"total_minutes"}  # the notebook times itself
    assert set(re.findall(r"\{glue:md\}`(\w+)`", text)) == set(verdicts)
    assert numbers["max_mnist_image_encoder"] == 90.0 and numbers["first_mnist_text_encoder"] == 50
    assert numbers["chance_mnist"] == 10.0 and numbers["max_shots_flowers"] == 5
    assert numbers["n_models"] == 3 * 4 * 2 * 2 and numbers["n_seeds"] == 2
    assert numbers["mass_animals_zs"] == 0.3 and numbers["mask_area_flowers"] == 0.25
    assert math.isnan(numbers["wrong_zs_true_mass"]) and math.isnan(numbers["wrong_area_pct"])
    assert math.isnan(numbers["fig_cam_mnist_mass"])


def test_numbers_without_cam_masses_read_nan():
    results = make_results()
    results.records = results.records.drop(columns="cam_mass")
    numbers, verdicts = ps.numbers(results), ps.verdicts(results)
    assert math.isnan(numbers["mass_mnist_zs"]) and math.isnan(numbers["mass_mnist_text_encoder"])
    assert verdicts["mass_movers_mnist"] == "not measured (no masks)"


@pytest.mark.parametrize(
    ("minutes", "words"), [(8.0, "stays within"), (7.5, "stays within"), (8.01, "goes over")]
)
def test_budget_verdict(minutes, words):
    results = make_results(minutes=minutes)
    assert ps.numbers(results)["finetune_minutes"] == pytest.approx(minutes)
    assert ps.verdicts(results)["budget_verdict"] == words


def test_the_budget_leaves_the_cams_out():
    results = make_results(minutes=9.0)
    results.records.loc[results.records.shots > 0, "cam_seconds"] = 60.0 / len(results.records)
    assert ps.verdicts(results)["budget_verdict"] == "goes over"
    results.records.loc[results.records.shots > 0, "cam_seconds"] = 2 * 60.0
    assert ps.numbers(results)["cam_minutes"] == pytest.approx(2 * 48)
    assert ps.verdicts(results)["budget_verdict"] == "stays within"


ENCODERS_LEAD = {"text_encoder": 80.0, "image_encoder": 90.0, "text_projection": 60.0}
PROJECTIONS_LEAD = {"text_encoder": 40.0, "image_encoder": 45.0, "text_projection": 70.0}
INTERLEAVED = {"text_encoder": 80.0, "image_encoder": 40.0, "text_projection": 60.0}


@pytest.mark.parametrize(
    ("role", "at_max", "words"),
    [
        (
            "mnist",
            ENCODERS_LEAD,
            "the best part is the image encoder; both encoders are ahead of both projections, "
            "as in the source",
        ),
        (
            "animals",
            ENCODERS_LEAD,
            "the best part is the image encoder; both encoders are ahead of both projections, "
            "unlike in the source",
        ),
        (
            "flowers",
            PROJECTIONS_LEAD,
            "the best part is the text projection; both projections are ahead of both encoders, "
            "as in the source",
        ),
        (
            "mnist",
            PROJECTIONS_LEAD,
            "the best part is the text projection; both projections are ahead of both encoders, "
            "unlike in the source",
        ),
        (
            "animals",
            INTERLEAVED,
            "the best part is the text encoder; encoders and projections are interleaved, "
            "unlike in the source",
        ),
    ],
)
def test_order_verdict(role, at_max, words):
    # the image projection stays at 50 %: ahead of 45 and 40, behind 60
    assert ps.verdicts(make_results(at_max={role: at_max}))[f"order_{role}"] == words


def test_order_verdict_ties_are_interleaved_and_the_first_best_part_wins():
    tied = {"text_encoder": 50.0, "image_encoder": 60.0, "text_projection": 60.0}
    words = ps.verdicts(make_results(at_max={"mnist": tied}))["order_mnist"]
    assert words == (
        "the best part is the image encoder; encoders and projections are interleaved, "
        "unlike in the source"
    )


TRUE = {"true_mass": 0.6, "true_spread": 0.80}


@pytest.mark.parametrize(
    ("forced", "words"),
    [
        (
            {"forced_mass": 0.4, "forced_spread": 0.85},
            "more diffuse than the true map, with less of its mass on the ink",
        ),
        (
            {"forced_mass": 0.7, "forced_spread": 0.70},
            "less diffuse than the true map, with no less of its mass on the ink",
        ),
        (
            {"forced_mass": 0.6, "forced_spread": 0.805},
            "as diffuse as the true map, with no less of its mass on the ink",
        ),
        (
            {"forced_mass": 0.5, "forced_spread": 0.795},
            "as diffuse as the true map, with less of its mass on the ink",
        ),
    ],
)
def test_forced_target_verdict(forced, words):
    results = make_results(wrong=wrong_table(TRUE | forced, TRUE | forced))
    verdicts = ps.verdicts(results)
    assert verdicts["wrong_zs_verdict"] == verdicts["wrong_image_encoder_verdict"] == words
    assert ps.numbers(results)["wrong_zs_forced_mass"] == forced["forced_mass"]


def test_forced_target_verdict_when_not_measured():
    missing = "not measured (no forced target on this dataset)"
    verdicts = ps.verdicts(make_results())  # no forced target: an empty table
    assert verdicts["wrong_zs_verdict"] == verdicts["wrong_image_encoder_verdict"] == missing
    # no ink masks: spreads but no masses
    spreads = {"true_spread": 0.8, "forced_spread": 0.9}
    verdicts = ps.verdicts(make_results(wrong=wrong_table(spreads, spreads)))
    assert verdicts["wrong_zs_verdict"] == missing


@pytest.mark.parametrize(
    ("mass_at_max", "words"),
    [
        ({}, "none"),
        ({"image_encoder": (0.5, 0.6)}, "the image encoder"),
        (
            {"text_encoder": (0.5, 0.5), "image_encoder": (0.4, 0.4)},
            "the text encoder and the image encoder",
        ),
        (
            {p: (0.9, 0.9) for p in ps.PARTS[1:]},
            "the image encoder, the text projection and the image projection",
        ),
        # above the pretrained model's 0.3 on average, but not by more than one std over seeds
        ({"image_encoder": (0.1, 0.7)}, "none"),
    ],
)
def test_mass_movers_verdict(mass_at_max, words):
    results = make_results(mass_at_max={"flowers": mass_at_max})
    assert ps.verdicts(results)["mass_movers_flowers"] == words
    assert ps.verdicts(results)["mass_movers_animals"] == "none"


def test_mass_movers_without_masks():
    results = make_results(zs_mass={"mnist": NAN})
    assert ps.verdicts(results)["mass_movers_mnist"] == "not measured (no masks)"


def test_cam_phrases_pass_through():
    verdicts = ps.verdicts(make_results())
    assert verdicts["cam_setting"] == "GradCAM at the last block"
    assert verdicts["cam_reading"] == "The maps are read as evidence."
