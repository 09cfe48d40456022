from __future__ import annotations

import numpy as np
import pytest
import torch

from clipnb.data import world
from clipnb.methods import pretrain
from clipnb.methods.pretrain import PretrainConfig


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


TINY = {"model": "clipnb-ViT-tiny", "batch_size": 8, "warmup_steps": 1, "n_heldout": 16}


def test_checkpoint_is_cached_not_retrained(fresh_cache, monkeypatch):
    config = PretrainConfig(**TINY, steps=3, pool_size=20, supervised_steps=2)
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
    config = PretrainConfig(**TINY, steps=2, pool_size=20)
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


def test_the_pool_is_rendered_once_and_reused(fresh_cache, monkeypatch):
    config = PretrainConfig(**TINY, pool_size=24)
    pool = pretrain.load_pool(config, progress=False)
    assert pool.images.shape == (24, 32, 32, 3) and len(pool.scenes) == 24
    assert pretrain.pool_path(config).exists()

    def boom(*args, **kwargs):
        raise AssertionError("re-rendered although the pool was cached")

    monkeypatch.setattr(pretrain, "_render_pool", boom)
    again = pretrain.load_pool(config, progress=False)
    assert (again.images == pool.images).all() and again.scenes == pool.scenes
    # The schedule does not change the pool (the CLIP and its twin share it) ...
    assert pretrain.pool_path(PretrainConfig(**TINY, pool_size=24, steps=7)) == (
        pretrain.pool_path(config)
    )
    # ... its size does.
    assert pretrain.pool_path(PretrainConfig(**TINY, pool_size=25)) != pretrain.pool_path(config)


def test_a_change_in_what_the_world_draws_invalidates_pool_and_checkpoint(monkeypatch):
    config = PretrainConfig(**TINY, pool_size=24)
    pool, ckpt = pretrain.pool_path(config), pretrain.checkpoint_path(config)
    monkeypatch.setattr(world, "fingerprint", lambda image_size=32: "another world")
    assert pretrain.pool_path(config) != pool
    assert pretrain.checkpoint_path(config) != ckpt


def test_batches_visit_the_pool_once_per_pass_with_new_captions():
    config = PretrainConfig(**TINY, pool_size=20)
    pool = pretrain.ImagePool(np.zeros((20, 32, 32, 3), np.uint8), _scenes(20))
    first = [pretrain.batch_indices(config, step) for step in range(5)]  # 40 draws = 2 passes
    indices = np.concatenate([i for i, _ in first])
    epochs = np.concatenate([e for _, e in first])
    assert sorted(indices[:20]) == list(range(20)) and sorted(indices[20:]) == list(range(20))
    assert list(epochs) == [0] * 20 + [1] * 20
    assert not (indices[:20] == indices[20:]).all()  # each pass in its own order
    # The same image gets another caption in another pass (almost always: 20 images).
    i = np.array([3] * 20)
    caps = pretrain.pool_captions(config, pool, i, np.arange(20))
    assert len(set(caps)) > 1
    assert pretrain.pool_captions(config, pool, i[:1], np.zeros(1, int)) == caps[:1]


def _scenes(n):
    rng = np.random.default_rng(0)
    return [world.sample_scene(rng) for _ in range(n)]


def test_the_record_splits_step_time_and_counts_flops(fresh_cache):
    config = PretrainConfig(**TINY, steps=3, pool_size=24)
    _, record = pretrain.pretrain(config, progress=False)
    assert set(record.time_split) == {"batch", "forward_backward", "optimizer"}
    assert all(v >= 0 for v in record.time_split.values())
    assert record.time_split["forward_backward"] > 0
    assert record.flops_per_image > 0 and record.peak_flops > 0
    assert 0 < record.peak_fraction < 1
    table = record.time_split_table()
    assert list(table.index) == ["waiting for the batch", "forward + backward", "AdamW step"]
    assert table["share of step time (%)"].sum() == pytest.approx(100)
    assert table["seconds"].tolist() == list(record.time_split.values())


def test_flop_count_matches_the_dominant_matmuls():
    """FlopCounterMode's count for the tiny tower is at least its patch-embedding and MLP matmuls."""
    config = PretrainConfig(**TINY, pool_size=8)
    pool = pretrain.ImagePool(np.zeros((8, 32, 32, 3), np.uint8), _scenes(8))
    flops = pretrain.training_flops_per_image(config, pool, supervised=True)
    # Patch embedding: 16 patches x (3*8*8) x 32 outputs x 2 FLOPs, forward; backward ~2x more.
    patch = 16 * 3 * 8 * 8 * 32 * 2
    mlp = 2 * (17 * 32 * 128 * 2)  # fc1 and fc2 of the one block (16 patches + class token)
    assert flops >= 2 * (patch + mlp)


def test_matmul_peak_is_a_plausible_rate():
    rate = pretrain.matmul_peak_flops(n=256, repeats=2)
    assert 1e8 < rate < 1e14


def test_benchmark_reports_every_number(fresh_cache):
    result = pretrain.benchmark(PretrainConfig(**TINY, pool_size=24), steps=3, progress=False)
    for key in ("images_per_second", "flops_per_image", "peak_flops", "peak_fraction"):
        assert result[key] > 0, key
    shares = [v for k, v in result.items() if k.startswith("share_")]
    assert len(shares) == 3 and abs(sum(shares) - 1) < 1e-9


def test_the_cached_tokenizer_equals_the_bundles():
    bundle = pretrain.create_model("clipnb-ViT-tiny")
    captions = ["a red circle", "the digit seven in blue", "a red circle", "a photo of a star"]
    cached = pretrain.CachedTokenizer(bundle)
    assert torch.equal(cached(captions), bundle.tokenize(captions))
    assert torch.equal(cached(captions[::-1]), bundle.tokenize(captions[::-1]))
    assert len(cached.rows) == 3


def test_budget_verdict_says_when_a_run_is_over_and_by_how_much():
    fast = pretrain.PretrainRecord({}, seconds=7 * 60, peak_flops=190e9)
    slow = pretrain.PretrainRecord({}, seconds=9.5 * 60, peak_flops=150e9)
    assert "within" in pretrain.budget_verdict(fast, budget=8)
    assert "over" in pretrain.budget_verdict(slow, budget=8)
    assert "1.5 minutes" in pretrain.budget_verdict(slow, budget=8)
    assert "150 GFLOP/s" in pretrain.budget_verdict(slow, budget=8)
