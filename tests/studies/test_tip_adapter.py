"""Tests for the Tip-Adapter study: clipnb.fewshot's protocol and methods, and the CAM target.

The unit tests of the adapter itself (formula, alpha = 0, a cached query, the grid search and
Tip-Adapter-F's epoch selection) are in tests/methods/test_tip_adapter.py; these check the study level.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import clipnb
from clipnb.core import report
from clipnb.core.features import SplitFeatures, image_tensors
from clipnb.methods import few_shot
from clipnb.methods.saliency import CamSetting
from clipnb.methods.tip_adapter import TipAdapter
from clipnb.studies import tip_adapter as tip_adapter_figures

LOGIT_SCALE = 50.0


def make_task(
    n_classes: int = 4,
    dim: int = 32,
    per_class: tuple[int, int, int] = (20, 10, 30),
    seed: int = 0,
    noise: float = 0.8,
) -> few_shot.FeatureTask:
    """Clusters on the sphere; the text classifier is shifted by one class (bad zero-shot)."""
    g = torch.Generator().manual_seed(seed)
    centres = F.normalize(torch.randn(n_classes, dim, generator=g), dim=-1)
    names = [f"c{i}" for i in range(n_classes)]

    def split(n: int) -> SplitFeatures:
        y = torch.arange(n_classes).repeat_interleave(n)
        x = F.normalize(
            centres[y] + noise * torch.randn(len(y), dim, generator=g) / dim**0.5, dim=-1
        )
        return SplitFeatures(x, y, names)

    train, val, test = (split(n) for n in per_class)
    weights = F.normalize(centres + 0.2 * torch.randn(n_classes, dim, generator=g), dim=-1)
    return few_shot.FeatureTask("toy", train, val, test, weights.roll(1, dims=0), LOGIT_SCALE)


def all_methods() -> dict[str, few_shot.Method]:
    return {
        "zero-shot": few_shot.zero_shot_method(),
        "probe": few_shot.linear_probe_method(Cs=(0.1, 10.0)),
        "head": few_shot.head_method("zero_shot", epochs=5, lr=(1e-3, 1e-2)),
        "random head": few_shot.head_method("random", epochs=3, lr=1e-2),
        "tip": few_shot.tip_adapter_method((0.0, 0.1, 1.0), (1.0, 10.0)),
        "tip-f": few_shot.tip_adapter_f_method(
            (0.0, 0.1, 1.0), (1.0, 10.0), epochs=3, lr=(1e-3, 1e-4)
        ),
    }


def test_alpha_zero_method_gives_exactly_zero_shot_predictions() -> None:
    task = make_task()
    problem = few_shot.few_shot_problem(task, 4, seed=0)
    zs = few_shot.zero_shot_method()(problem)
    tip = few_shot.tip_adapter_method(alpha_fractions=(0.0,), betas=(1.0, 5.0))(problem)
    assert tip.info["alpha"] == 0.0
    assert torch.equal(tip.predict(task.test.x), zs.predict(task.test.x))
    assert torch.equal(zs.predict(task.test.x), LOGIT_SCALE * task.test.x @ task.class_weights.T)


def test_cache_picks_the_label_of_an_identical_key_with_large_beta() -> None:
    task = make_task(seed=1)
    problem = few_shot.few_shot_problem(task, 2, seed=0)
    adapter = TipAdapter(alpha=LOGIT_SCALE * 10, beta=1000.0).fit(
        problem.train.x, problem.train.y, task.class_weights, LOGIT_SCALE
    )
    # the text classifier is deliberately wrong (shifted), the cache is right
    zs_pred = (problem.train.x @ task.class_weights.T).argmax(dim=1)
    assert (zs_pred != problem.train.y).all()
    assert torch.equal(adapter.predict(problem.train.x), problem.train.y)


def test_alpha_is_searched_on_the_logit_scale() -> None:
    task = make_task(seed=2)
    problem = few_shot.few_shot_problem(task, 8, seed=0)
    fitted = few_shot.tip_adapter_method((0.0, 0.5), (5.0,))(problem)
    # zero-shot is wrong by construction, so validation must take the cache, at alpha = 0.5 * s
    assert fitted.info["alpha"] == pytest.approx(0.5 * LOGIT_SCALE)
    assert fitted.info["alpha_fraction"] == pytest.approx(0.5)
    assert fitted.info["val_accuracy"] > 50  # chance is 25, zero-shot 0


def test_forward_logits_match_logits_and_are_differentiable() -> None:
    task = make_task(seed=3)
    problem = few_shot.few_shot_problem(task, 4, seed=1)
    for alpha in (0.0, 7.0):
        adapter = TipAdapter(alpha=alpha, beta=3.0).fit(
            problem.train.x, problem.train.y, task.class_weights, LOGIT_SCALE
        )
        x = task.val.x.clone().requires_grad_(True)
        out = adapter.forward_logits(x)
        torch.testing.assert_close(out.detach(), adapter.logits(task.val.x))
        out[:, 0].sum().backward()
        assert x.grad is not None and x.grad.abs().sum() > 0


def test_few_shot_problem_is_the_shared_sampler_draw() -> None:
    data = clipnb.load_dataset("digits")
    labels = torch.as_tensor(data.train.labels)
    x = F.normalize(torch.randn(len(labels), 8), dim=-1)
    names = data.class_names
    task = few_shot.FeatureTask(
        "digits",
        SplitFeatures(x, labels, names),
        SplitFeatures(x[:20], labels[:20], names),
        SplitFeatures(x[:20], labels[:20], names),
        F.normalize(torch.randn(10, 8), dim=-1),
        LOGIT_SCALE,
    )
    problem = few_shot.few_shot_problem(task, 3, seed=2)
    subset = clipnb.few_shot(data.train, 3, seed=2)
    assert torch.equal(problem.train.y, torch.as_tensor(subset.labels))
    assert torch.equal(problem.train.x, x[torch.as_tensor(subset.indices)])
    assert not hasattr(problem, "test")


def test_selection_never_reads_test_labels_or_features() -> None:
    """Every choice (alpha, beta, epoch, C, lr, val accuracy) is identical when test changes."""
    task = make_task(seed=4)
    g = torch.Generator().manual_seed(9)
    scrambled = few_shot.FeatureTask(
        task.name,
        task.train,
        task.val,
        SplitFeatures(
            F.normalize(torch.randn(task.test.x.shape, generator=g), dim=-1),
            task.test.y[torch.randperm(len(task.test.y), generator=g)],
            task.test.class_names,
        ),
        task.class_weights,
        task.logit_scale,
    )

    seen: list[few_shot.FewShotProblem] = []

    def spying(method: few_shot.Method) -> few_shot.Method:
        def fit(problem: few_shot.FewShotProblem) -> few_shot.Fitted:
            seen.append(problem)
            return method(problem)

        return fit

    methods = {name: spying(m) for name, m in all_methods().items()}
    a = few_shot.run_few_shot(task, methods, [1, 4], [0, 1], progress=False)
    b = few_shot.run_few_shot(scrambled, methods, [1, 4], [0, 1], progress=False)
    assert len(a) == len(b) == 2 * 2 * len(methods)
    for ra, rb in zip(a, b, strict=True):
        choices_a = {k: v for k, v in ra.items() if k != "accuracy"}
        choices_b = {k: v for k, v in rb.items() if k != "accuracy"}
        assert choices_a == choices_b
    assert any(ra["accuracy"] != rb["accuracy"] for ra, rb in zip(a, b, strict=True))
    # no tensor a method received shares memory with a test split
    test_ptrs = {t.x.data_ptr() for t in (task.test, scrambled.test)}
    test_ptrs |= {t.y.data_ptr() for t in (task.test, scrambled.test)}
    for problem in seen:
        for tensor in (problem.train.x, problem.train.y, problem.val.x, problem.val.y):
            assert tensor.data_ptr() not in test_ptrs


def test_run_few_shot_is_deterministic_and_shaped_for_tables() -> None:
    task = make_task(seed=5)
    methods = all_methods()
    a = few_shot.run_few_shot(task, methods, [2], [0, 1], progress=False)
    b = few_shot.run_few_shot(task, methods, [2], [0, 1], progress=False)
    assert [r["accuracy"] for r in a] == [r["accuracy"] for r in b]
    assert {r["method"] for r in a} == set(methods)
    assert all({"dataset", "method", "shots", "seed", "accuracy"} <= r.keys() for r in a)
    table = report.mean_std_table(a, "method", "shots")
    assert table.shape == (len(methods), 1)
    fig = tip_adapter_figures.plot_accuracy_vs_shots(a)
    assert len(fig.axes) == 1
    fig = tip_adapter_figures.plot_alpha_beta_grid(
        np.full((2, 3), 0.5), [0.0, 1.0], [1.0, 2.0, 5.0]
    )
    assert fig.axes[0].images[0].get_array().shape == (2, 3)
    with pytest.raises(ValueError, match="methods"):
        few_shot.run_few_shot(task, {}, [1], [0])


def test_zero_shot_head_without_training_is_zero_shot() -> None:
    task = make_task(seed=6)
    problem = few_shot.few_shot_problem(task, 2, seed=0)
    head = few_shot.head_method("zero_shot", epochs=0)(problem)
    zs = few_shot.zero_shot_method()(problem)
    assert head.info["epoch"] == 0
    assert torch.equal(
        head.predict(task.test.x).argmax(dim=1), zs.predict(task.test.x).argmax(dim=1)
    )
    probe = few_shot.linear_probe_method(Cs=(1.0,))(problem)
    assert probe.predict(task.test.x).shape == (len(task.test), 4)


GRADCAM = CamSetting("GradCAM", "")


def test_tip_adapter_cams_over_shots() -> None:
    """Grad-CAM with Tip-Adapter's logits as the target; alpha = 0 reproduces zero-shot's map."""
    bundle = clipnb.create_model("clipnb-ViT-tiny")
    dim = bundle.model.text_projection.shape[1]
    task = make_task(dim=dim, seed=7)
    data = clipnb.load_dataset("digits")
    rows = np.arange(3)
    pixels = image_tensors(bundle, data.test, rows)
    classes = [0, 1, 3]  # classes of the toy task (the images are only inputs to the tower)
    tip = few_shot.cams_over_shots(
        bundle,
        task,
        few_shot.tip_adapter_method((1.0,), (5.0,)),
        [1, 4],
        0,
        pixels,
        classes,
        GRADCAM,
    )
    assert sorted(tip) == [1, 4]
    assert tip[1].shape == (3, bundle.image_size, bundle.image_size)
    assert np.isfinite(tip[4]).all() and tip[4].min() >= 0 and tip[4].max() <= 1
    zs = few_shot.cams_over_shots(
        bundle, task, few_shot.zero_shot_method(), [1], 0, pixels, classes, GRADCAM
    )
    off = few_shot.cams_over_shots(
        bundle, task, few_shot.tip_adapter_method((0.0,), (5.0,)), [1], 0, pixels, classes, GRADCAM
    )
    np.testing.assert_allclose(off[1], zs[1], atol=1e-5)
    shown = report.display_images(bundle, pixels)
    assert shown.shape == (3, bundle.image_size, bundle.image_size, 3) and shown.dtype == np.uint8
    np.testing.assert_allclose(shown.astype(int), data.test.images[rows].astype(int), atol=2)
    fig = tip_adapter_figures.cam_grid_figure(
        shown, {"zero-shot": zs[1], "1 shot": tip[1]}, ["a", "b", "c"]
    )
    assert len([ax for ax in fig.axes if ax.images]) == 3 * 3
