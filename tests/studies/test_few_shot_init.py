"""Checks behind the chapter "Few-shot initialisation" (LinearHead itself: tests/methods/test_finetune.py)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

import clipnb
from clipnb.core.features import SplitFeatures
from clipnb.methods import few_shot
from clipnb.methods.heads import LinearHead, train_head


def _task(n_classes: int = 4, dim: int = 16) -> few_shot.FeatureTask:
    """Features scattered around known class directions; the zero-shot weights are those directions."""
    g = torch.Generator().manual_seed(0)
    weights = F.normalize(torch.randn(n_classes, dim, generator=g), dim=-1)

    def split(n: int) -> SplitFeatures:
        y = torch.arange(n_classes).repeat_interleave(n)
        x = F.normalize(weights[y] + 0.6 * torch.randn(len(y), dim, generator=g), dim=-1)
        return SplitFeatures(x, y, [f"c{i}" for i in range(n_classes)])

    return few_shot.FeatureTask("toy", split(8), split(10), split(25), weights, 50.0)


def test_zero_shot_initialised_head_at_zero_epochs_is_zero_shot():
    task = _task()
    methods = {
        "zero-shot": few_shot.zero_shot_method(),
        "zero-shot init": few_shot.head_method("zero_shot", epochs=0),
    }
    records = few_shot.run_few_shot(task, methods, shots=[1, 2], seeds=[0, 1], progress=False)
    by_method = {}
    for r in records:
        by_method.setdefault(r["method"], []).append(r["accuracy"])
    assert by_method["zero-shot"] == by_method["zero-shot init"]
    head = LinearHead.zero_shot(task.class_weights, task.logit_scale)
    zs = clipnb.zero_shot_logits(task.test.x, task.class_weights, task.logit_scale)
    with torch.no_grad():
        assert torch.equal(head(task.test.x).argmax(-1), zs.argmax(-1))


def test_training_never_leaves_a_zero_shot_head_below_zero_shot_on_validation():
    task = _task()
    # Validation = the class directions themselves: zero-shot is perfect there, so no epoch can
    # beat epoch 0 and the trained head must come back as the zero-shot classifier.
    val_x, val_y = task.class_weights.clone(), torch.arange(len(task.class_weights))
    problem = few_shot.few_shot_problem(task, 1, seed=0)
    head = LinearHead.zero_shot(task.class_weights, task.logit_scale)
    head, record = train_head(
        head, problem.train.x, problem.train.y, val_x, val_y, epochs=20, lr=0.5, seed=0
    )
    assert record.val_accuracy[0] == 100.0 and record.best_epoch == 0
    assert len(record.val_accuracy) == 21
    zs = clipnb.zero_shot_logits(task.test.x, task.class_weights, task.logit_scale)
    with torch.no_grad():
        assert torch.allclose(head(task.test.x), zs, atol=1e-4)


def test_random_and_zero_shot_heads_differ_and_are_reproducible():
    task = _task()
    method = few_shot.head_method("random", epochs=5, lr=[0.01, 0.1])
    problem = few_shot.few_shot_problem(task, 2, seed=0)
    a, b = method(problem), method(problem)
    assert a.info == b.info
    with torch.no_grad():
        assert torch.equal(a.predict(task.test.x), b.predict(task.test.x))
