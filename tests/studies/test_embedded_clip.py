"""The chapter "The embedded CLIP": its numbers, tables, figures and every verdict branch, on
hand-made results (the saliency protocol itself: tests/methods/test_saliency.py)."""

from __future__ import annotations

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest

from clipnb.data import world
from clipnb.methods.pretrain import PretrainConfig, PretrainRecord
from clipnb.methods.saliency import CamSetting, Protocol, SaliencyValidation
from clipnb.studies import embedded_clip
from clipnb.studies.embedded_clip import CamExamples, EmbeddedClipResults, ModelFacts

STEPS, IMAGE_SIZE = 40, 32


def _acc(kappa: float) -> float:
    """The accuracy (%) of a 10-class task with chance-corrected accuracy ``kappa``."""
    return 10.0 + 90.0 * kappa


def _zero_shot(
    seen: dict[str, float], heldout: dict[str, float], handwritten: float
) -> pd.DataFrame:
    """Zero-shot rows of 10-class tasks: ``seen[task]`` is the kappa in every pretraining style,
    ``heldout[task]`` in the held-out style, ``handwritten`` the digits'."""
    rows = []
    for task in world.LABEL_TASKS:
        for style in world.STYLES:
            kappa = heldout[task] if style == world.HELD_OUT_STYLE else seen[task]
            rows.append({"task": task, "style": style, "zero-shot %": _acc(kappa)})
    rows.append(
        {"task": "handwritten digit", "style": "handwritten (OOD)"}
        | {"zero-shot %": _acc(handwritten)}
    )
    frame = pd.DataFrame(rows)
    return frame.assign(dataset="d", classes=10, **{"test images": 20, "chance %": 10.0})[
        ["dataset", "task", "style", "classes", "test images", "zero-shot %", "chance %"]
    ]


def _validation(
    rows: list[tuple[str, str, float, float, float]],
    setting: CamSetting,
    uniform: tuple[float, float] = (20.0, 20.0),
    centre: tuple[float, float] = (60.0, 30.0),
) -> SaliencyValidation:
    """``rows`` of ``(method, layer, pointing, mass, rho_random)``, the same for two seeds;
    ``uniform`` and ``centre`` are the ``(pointing, mass)`` of the no-model maps."""
    table = pd.DataFrame(
        [
            {
                "method": method,
                "layer": layer,
                "seed": seed,
                "pointing": pointing,
                "mass": mass,
                "area": 20.0,
                "flat": 0.0,
                "rho_head": min(1.0, rho + 0.3),
                "rho_embedding": rho,
                "rho_random": rho,
            }
            for method, layer, pointing, mass, rho in rows
            for seed in (0, 1)
        ]
    )
    baselines = pd.DataFrame(
        [
            {"method": name, "layer": "", "seed": seed, "pointing": p, "mass": m, "area": 20.0}
            for name, (p, m) in (("uniform map", uniform), ("centre prior", centre))
            for seed in (0, 1)
        ]
    )
    protocol = Protocol("world-shape-photo", per_seed=3, seeds=(0, 1))
    return SaliencyValidation(protocol, table, baselines, setting, seconds=90.0)


#: GradCAM at block 2 passes the check and beats the uniform map; EigenCAM fails everywhere.
PASSING = _validation(
    [
        ("GradCAM", "block 1", 40.0, 35.0, 0.8),
        ("GradCAM", "block 2", 50.0, 40.0, 0.1),
        ("EigenCAM", "block 1", 70.0, 60.0, 0.95),
        ("EigenCAM", "block 2", 70.0, 60.0, 0.9),
    ],
    CamSetting("GradCAM", "block 2"),
)


def _record(seconds: float = 420.0, steal: float = float("nan")) -> PretrainRecord:
    return PretrainRecord(
        config={},
        losses=[4.0, 3.5, 3.0, 2.5],
        heldout_losses=[(2, 3.6), (4, 2.75)],
        seconds=seconds,
        cpu_seconds=2 * seconds,
        steal_percent=steal,
        images_seen=256,
        time_split={"batch": 1.0, "forward_backward": 6.0, "optimizer": 1.0},
        flops_per_image=2e6,
        peak_flops=150e9,
        threads=2,
    )


def _results(
    zero_shot: pd.DataFrame | None = None,
    validation: SaliencyValidation = PASSING,
    record: PretrainRecord | None = None,
) -> EmbeddedClipResults:
    if zero_shot is None:
        zero_shot = _zero_shot(
            {"shape": 0.95, "colour": 0.6, "digit": 0.3},
            {"shape": 0.5, "colour": 0.1, "digit": 0.01},
            handwritten=0.0,
        )
    images = np.zeros((2, 8, 8, 3), np.uint8)
    masks = np.zeros((2, 8, 8), bool)
    masks[:, 2:4, 2:4] = True
    maps = np.zeros((2, 8, 8))
    maps[:, 2:4, 2:4] = 1.0
    return EmbeddedClipResults(
        config=PretrainConfig(steps=STEPS, batch_size=64, pool_size=2048),
        record=record or _record(),
        twin=_record(seconds=120.0),
        model=ModelFacts(
            image_width=64,
            text_width=32,
            patch_size=8,
            image_size=IMAGE_SIZE,
            grid=(4, 4),
            n_params=2_500_000,
            n_token_params=1_600_000,
            n_cam_layers=2,
        ),
        world_examples=[(images[0], "[photo] a red circle")] * 2,
        n_pairs=64,
        recall={
            "image_to_text_R@1": 25.0,
            "image_to_text_R@5": 60.0,
            "text_to_image_R@1": 20.0,
            "text_to_image_R@5": 55.0,
        },
        zero_shot=zero_shot,
        validation=validation,
        cam_examples=CamExamples(
            images=images,
            masks=masks,
            titles=["circle", "star"],
            maps={"GradCAM": maps, "GradCAM, randomised tower": np.ones((2, 8, 8))},
        ),
    )


def test_numbers_follow_the_results():
    n = embedded_clip.numbers(_results())
    assert (n["grid_size"], n["n_tokens"], n["grid_side"]) == (4.0, 16.0, 4.0)
    assert n["pretrain_minutes"] == 7.0 and n["pretrain_cpu_minutes"] == 14.0
    assert n["pretrain_images_per_s"] == 256 / 420 and n["pool_passes"] == 0.125
    assert n["final_heldout_loss"] == 2.75 and n["chance_loss"] == pytest.approx(np.log(64))
    assert n["twin_minutes"] == 2.0 and n["twin_steps"] == 4.0
    assert n["twin_lr"] == PretrainConfig().supervised_lr and n["clip_lr"] == PretrainConfig().lr
    assert n["image2text_R1"] == 25.0 and n["text2image_R5"] == 55.0
    assert (n["chance_r1"], n["chance_r5"]) == (100 / 64, 500 / 64)
    assert n["zs_shape_photo"] == _acc(0.95) and n["zs_digit_heldout"] == _acc(0.01)
    assert n["zs_digits"] == 10.0 and n["chance_digits"] == 10.0
    assert n["best_photo_acc"] == _acc(0.95)
    assert n["photo_vs_handwritten_gap"] == _acc(0.95) - 10.0
    assert (n["kappa_near_perfect"], n["kappa_weak"]) == (0.9, 0.05)
    assert n["saliency_chosen_mass"] == 40.0 and n["saliency_chosen_rho"] == 0.1
    assert n["saliency_uniform_pointing"] == 20.0 and n["saliency_centre_pointing"] == 60.0
    assert (n["saliency_n_images"], n["saliency_n_layers"]) == (6.0, 2.0)
    assert n["saliency_minutes"] == 1.5 and n["n_params_m"] == 2.5
    assert all(isinstance(v, float) for v in n.values())


def test_levels_follow_kappa_at_the_bounds():
    assert [embedded_clip.level(k) for k in (0.9, 0.5, 0.2, 0.05, 0.049)] == [
        "learned almost completely",
        "learned well",
        "learned only partly",
        "barely learned",
        "not learned (zero-shot stays near chance)",
    ]
    assert [embedded_clip.level(k, short=True) for k in (1.0, 0.89, 0.3, 0.1, -0.2)] == [
        "near perfect",
        "strong",
        "partial",
        "weak",
        "near chance",
    ]


def test_pretraining_sentences_every_branch():
    v = embedded_clip.verdicts(_results(record=_record(seconds=420.0)))
    assert v["steal_sentence"] == (
        "This machine did not report how much CPU time its host took from it."
    )
    assert v["budget_verdict"] == "That is within the profile's 8-minute budget."
    v = embedded_clip.verdicts(_results(record=_record(seconds=570.0, steal=12.4)))
    assert v["steal_sentence"] == (
        "While it ran, the hypervisor gave 12 % of this virtual machine's CPU time to other"
        " guests (steal time): on a shared cloud machine the same run takes longer in wall time"
        " when the neighbours are busy, and CPU time is the steadier measure."
    )
    assert v["budget_verdict"].startswith(
        "That is over the profile's 8-minute budget by 1.5 minutes on this machine"
    )


def test_zero_shot_verdicts_when_digits_lag_and_ood_is_at_chance():
    v = embedded_clip.verdicts(_results())
    assert v["seen_levels"] == (
        "Shapes are learned almost completely; colours are learned well; printed digits are"
        " learned only partly"
    )
    assert v["seen_levels_short"] == (
        "near perfect for shapes, strong for colours and partial for printed digits"
    )
    assert v["budget_reason"] == (
        "For printed digits, the likely reason is the budget: a ViT learning shapes or small"
        " glyphs in a 32-pixel image from scratch needs many more than 40 steps, while a colour"
        " is decided by a few pixels, and this profile's budget is minutes on two CPU cores."
    )
    assert (
        v["heldout_levels"]
        == "strong for shapes, weak for colours and near chance for printed digits"
    )
    assert v["handwritten_level"] == "near chance"
    assert v["shape_heldout_verb"] == "drop to"
    assert v["clean_contrast"] == (
        "The clean contrast is between shapes, colours and printed digits in seen styles and"
        " printed digits in the sketch style and handwritten digits, where zero-shot is near"
        " chance"
    )
    assert v["best_photo_task"] == "shapes"
    assert v["gap_verdict"] == "so this build shows the same kind of gap (more than 10 points) as"


def test_zero_shot_verdicts_when_everything_is_learned_well():
    zs = _zero_shot(
        {"shape": 0.55, "colour": 0.9, "digit": 0.6},
        {"shape": 0.55, "colour": 0.5, "digit": 0.3},
        handwritten=0.85,
    )
    v = embedded_clip.verdicts(_results(zs))
    assert v["budget_reason"] == "Every task is learned well within 40 steps."
    assert v["shape_heldout_verb"] == "stay at"
    assert v["clean_contrast"] == (
        "Shapes, colours and printed digits are learned at least partly in seen styles, but no"
        " out-of-distribution set is near chance, so the in/out contrast is one of degree"
    )
    assert v["best_photo_task"] == "colours"
    assert v["gap_verdict"] == "so this build shows a much smaller gap (10 points or less) than"
    assert v["handwritten_level"] == "strong"


def test_zero_shot_verdicts_when_nothing_is_learned():
    zs = _zero_shot(
        {"shape": 0.1, "colour": 0.15, "digit": 0.0},
        {"shape": 0.2, "colour": 0.0, "digit": 0.0},
        handwritten=0.3,
    )
    v = embedded_clip.verdicts(_results(zs))
    assert v["budget_reason"] == (
        "For shapes, colours and printed digits, the likely reason is the budget: a ViT learning"
        " shapes or small glyphs in a 32-pixel image from scratch needs many more than 40 steps,"
        " and this profile's budget is minutes on two CPU cores."
    )
    assert v["seen_levels_short"] == (
        "weak for shapes, weak for colours and near chance for printed digits"
    )
    assert v["shape_heldout_verb"] == "rise to"
    assert v["clean_contrast"] == (
        "No task is learned even partly in seen styles, so there is no clean in/out contrast"
    )
    assert v["gap_verdict"] == "so this build shows no such gap, unlike"


def test_saliency_verdicts_when_the_choice_passes():
    v = embedded_clip.saliency_verdicts(PASSING)
    assert v == {
        "saliency_choice": "GradCAM at block 2",
        "saliency_failing": "EigenCAM",
        "saliency_failing_verb": "fails",
        "saliency_vs_centre": "above the centre prior's",
        "saliency_pointing_vs_centre": "below the centre prior's",
        "saliency_interpretable": "the chapters' CAM figures use it and quote its mass in mask",
    }


def test_saliency_verdicts_when_the_choice_fails_or_does_not_localise():
    every_method_fails = _validation(
        [("GradCAM", "block 2", 70.0, 40.0, 0.6), ("EigenCAM", "block 2", 70.0, 60.0, 0.9)],
        CamSetting("GradCAM", "block 2"),
    )
    v = embedded_clip.saliency_verdicts(every_method_fails)
    assert v["saliency_failing"] == "GradCAM and EigenCAM"
    assert v["saliency_failing_verb"] == "fail"
    assert v["saliency_pointing_vs_centre"] == "above the centre prior's"
    assert v["saliency_interpretable"] == (
        "no method passes the randomisation check on this model, so the CAM rows of the "
        "chapters are not interpretable at this scale"
    )
    flat = _validation(
        [("GradCAM", "block 2", 20.0, 20.0, 0.1), ("EigenCAM", "block 2", 20.0, 25.0, 0.3)],
        CamSetting("GradCAM", "block 2"),
        centre=(20.0, 20.0),
    )
    v = embedded_clip.saliency_verdicts(flat)
    assert v["saliency_failing"] == "no method" and v["saliency_failing_verb"] == "fail"
    assert (
        v["saliency_vs_centre"]
        == v["saliency_pointing_vs_centre"]
        == (
            "below the centre prior's"  # a tie is not above
        )
    )
    assert v["saliency_interpretable"] == (
        "the chosen maps put no more mass on the object than a uniform map, so the CAM rows "
        "of the chapters are not interpretable at this scale"
    )


def test_tables_of_the_chapter():
    results = _results()
    table = embedded_clip.validation_table(results.validation)
    assert list(table.columns) == list(embedded_clip.SCORE_LABELS.values())
    assert table.loc[("GradCAM", "block 2"), "mass in mask, %"] == "40.00 ± 0.00"
    assert table.loc[("centre prior", ""), "ρ with randomised tower"] == "—"
    assert list(table.index)[-2:] == [("uniform map", ""), ("centre prior", "")]
    recall = embedded_clip.recall_table(results)
    assert recall.loc["text → image", "R@1"] == 20.0
    zs = embedded_clip.zero_shot_table(results)
    assert list(zs.columns) == [*world.STYLES, "handwritten (OOD)"]
    assert zs.loc["shape", "photo"] == round(_acc(0.95), 1)
    mass = embedded_clip.example_mass_table(results)
    assert mass["mass in mask, %"].tolist() == [100.0, 6.2]  # 4 of 64 pixels, rounded
    scale = embedded_clip.scale_table(results)
    assert scale.loc["training time", "embedded CLIP (this build)"] == (
        "7.0 min on 2 CPU cores (14.0 CPU-min)"
    )
    assert scale.loc["parameters", "embedded CLIP (this build)"] == "2.5 M"
    assert list(embedded_clip.time_table(results).index) == [
        "waiting for the batch",
        "forward + backward",
        "AdamW step",
    ]
    cascade = embedded_clip.cascade_frame(results.validation)
    assert set(cascade.stage) == {"head", "embedding"} and set(cascade.method) == {
        "GradCAM",
        "EigenCAM",
    }


def test_figures_draw(one_thread):
    results = _results()
    figures = [
        embedded_clip.world_figure(results),
        embedded_clip.loss_figure(results),
        embedded_clip.zero_shot_figure(results),
        embedded_clip.cascade_figure(results.validation),
        embedded_clip.example_figure(results.cam_examples),
    ]
    assert all(isinstance(f, matplotlib.figure.Figure) for f in figures)
    assert len(figures[-1].axes) == 3 * 2  # the images, then one row per map
    for fig in figures:
        plt.close(fig)
