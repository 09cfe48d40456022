"""Checks of the finetune_parts study: part isolation, cached fast paths, CAM score and mass."""

from __future__ import annotations

import numpy as np
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
