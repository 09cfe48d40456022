from __future__ import annotations

import pytest
import torch

import clipnb
from clipnb.methods import finetune as ft
from clipnb.methods.clipood import BetaMovingAverage
from clipnb.methods.heads import LinearHead, train_head


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    bundle = clipnb.create_model("clipnb-ViT-tiny")
    data = clipnb.load_dataset("digits")
    return bundle, clipnb.few_shot(data.train, 2, seed=0), data.val.subset(range(40))


@pytest.mark.parametrize("part", ft.PARTS)
def test_only_the_chosen_part_changes(tiny, part):
    bundle, train, _ = tiny
    before = {k: v.clone() for k, v in bundle.model.state_dict().items()}
    result = ft.finetune(
        bundle, part, train, ft.prompt_texts(train.class_names), steps=2, lr=1e-2, batch_size=8
    )
    chosen = {id(p) for p in clipnb.core.models.model_parts(result.bundle.model)[part]}
    changed = set()
    for name, p in result.bundle.model.named_parameters():
        if not torch.equal(p, before[name]):
            changed.add(name)
            assert id(p) in chosen, f"{name} changed but is not part of {part}"
    assert changed, f"nothing in {part} changed"
    # The pretrained bundle itself is untouched.
    for k, v in bundle.model.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_finetuning_lowers_the_training_loss(tiny):
    bundle, train, _ = tiny
    result = ft.finetune(
        bundle,
        "text_projection",
        train,
        ft.prompt_texts(train.class_names),
        steps=30,
        lr=1e-2,
        batch_size=20,
    )
    assert result.train_loss[-1] < result.train_loss[0]


def test_bma_with_beta_one_is_the_uniform_average(tiny):
    bundle, train, val = tiny
    steps = 3
    avg = BetaMovingAverage(beta=1.0, total_steps=steps)
    result = ft.finetune(
        bundle,
        "image_projection",
        train,
        ft.prompt_texts(train.class_names),
        steps=steps,
        lr=1e-2,
        batch_size=8,
        averager=avg,
        eval_sets={"val": val},
    )
    raw = ft.finetune(
        bundle,
        "image_projection",
        train,
        ft.prompt_texts(train.class_names),
        steps=steps,
        lr=1e-2,
        batch_size=8,
    )
    assert not torch.equal(result.bundle.model.visual.proj, raw.bundle.model.visual.proj)
    assert set(result.evals[-1][1]) == {"val", "val/avg"}


def test_zero_shot_head_reproduces_zero_shot_exactly(tiny):
    bundle, train, val = tiny
    val_x = clipnb.encode_images(bundle, val, cache=False)
    weights = clipnb.class_embeddings(bundle, val.class_names, cache=False)
    head = LinearHead.zero_shot(weights, bundle.logit_scale)
    zs = clipnb.zero_shot_logits(val_x, weights, bundle.logit_scale)
    assert torch.equal(head(val_x).argmax(-1), zs.argmax(-1))
    assert torch.allclose(head(val_x), zs, atol=1e-4)
    train_x = clipnb.encode_images(bundle, train, cache=False)
    _trained, curve = train_head(
        head, train_x, torch.as_tensor(train.labels), val_x, torch.as_tensor(val.labels), epochs=0
    )
    assert curve.val_accuracy == [clipnb.accuracy(zs, val.labels)]
