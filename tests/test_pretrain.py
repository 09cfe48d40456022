from __future__ import annotations

import pytest
import torch

from clipnb import pretrain, world
from clipnb.pretrain import PretrainConfig


def test_a_few_steps_lower_the_loss_on_a_fixed_batch():
    torch.manual_seed(0)
    bundle = pretrain.create_model("clipnb-ViT-tiny")
    batch = world.generate_captioned(32, seed=5)
    x, t = pretrain.to_tensor(batch.images, bundle), bundle.tokenize(batch.captions)
    loss_fn = pretrain.ClipLoss()
    opt = torch.optim.AdamW(bundle.model.parameters(), lr=1e-3)
    bundle.model.train()
    losses = []
    for _ in range(8):
        loss = pretrain.clip_step_loss(bundle, x, t, loss_fn)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] - 0.1


def test_to_tensor_equals_the_models_preprocess():
    bundle = pretrain.create_model("clipnb-ViT-tiny")
    batch = world.generate_captioned(3, seed=1)
    fast = pretrain.to_tensor(batch.images, bundle)
    slow = torch.stack(
        [bundle.preprocess(pretrain_image) for pretrain_image in map(_pil, batch.images)]
    )
    assert torch.allclose(fast, slow, atol=1e-6)


def _pil(array):
    from PIL import Image

    return Image.fromarray(array)


def test_checkpoint_is_cached_not_retrained(fresh_cache, monkeypatch):
    config = PretrainConfig(
        model="clipnb-ViT-tiny", steps=3, batch_size=8, warmup_steps=1, n_heldout=16
    )
    path = pretrain.ensure_pretrained(config, progress=False)
    record = pretrain.load_record(config)
    assert len(record.losses) == 3 and record.images_seen == 24
    # The saved record says what the run cost: wall time and the process's CPU time.
    assert record.seconds > 0 and record.cpu_seconds > 0

    def boom(*args, **kwargs):
        raise AssertionError("retrained although the checkpoint was cached")

    monkeypatch.setattr(pretrain, "pretrain", boom)
    assert pretrain.ensure_pretrained(config) == path
    # A different schedule is a different checkpoint.
    assert pretrain.checkpoint_path(PretrainConfig(model="clipnb-ViT-tiny", steps=4)) != path


def test_same_seed_same_weights(fresh_cache):
    config = PretrainConfig(
        model="clipnb-ViT-tiny", steps=2, batch_size=8, warmup_steps=1, n_heldout=16
    )
    a, _ = pretrain.pretrain(config, progress=False)
    b, _ = pretrain.pretrain(config, progress=False)
    for (name, pa), (_, pb) in zip(
        a.model.state_dict().items(), b.model.state_dict().items(), strict=True
    ):
        assert torch.equal(pa, pb), name


def test_retrieval_recall_perfect_and_shuffled():
    feats = torch.nn.functional.normalize(torch.randn(20, 8), dim=-1)
    assert pretrain.retrieval_recall(feats, feats)["image_to_text_R@1"] == 100.0
    shuffled = pretrain.retrieval_recall(feats, feats.roll(1, 0))
    assert shuffled["image_to_text_R@1"] < 50


def test_cosine_schedule():
    assert pretrain.cosine_lr(0, 1.0, 10, 100) == pytest.approx(0.1)
    assert pretrain.cosine_lr(10, 1.0, 10, 100) == pytest.approx(1.0)
    assert pretrain.cosine_lr(100, 1.0, 10, 100) == pytest.approx(0.0, abs=1e-12)
