"""Tests for clipnb.methods.gradcam (random-init open_clip models, CPU, no network)."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import open_clip
import pytest
import torch
import torch.nn.functional as F
from pytorch_grad_cam import HiResCAM

from clipnb.methods.gradcam import (
    ClipClassifier,
    ClipGradCAM,
    ViTReshapeTransform,
    cam_mass_in_mask,
    overlay,
    reshape_transform_for,
    target_layers_for,
)

# ------------------------------------------------------------------------------------ helpers


def make_tiny_vit(seed: int = 0) -> open_clip.CLIP:
    """A ~0.1M-parameter CLIP: 32x32 images, 4x4 patches -> 8x8 grid, embed dim 32."""
    torch.manual_seed(seed)
    model = open_clip.CLIP(
        embed_dim=32,
        vision_cfg=open_clip.CLIPVisionCfg(
            layers=2, width=64, patch_size=4, image_size=32, head_width=32
        ),
        text_cfg=open_clip.CLIPTextCfg(
            context_length=16, vocab_size=49408, width=64, heads=2, layers=2
        ),
    )
    return model.eval()


def unit_rows(n: int, dim: int, seed: int = 1) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(n, dim, generator=gen), dim=-1)


def images(batch: int, size: int, seed: int = 2) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 3, size, size, generator=gen)


def snapshot(model: torch.nn.Module) -> dict[str, tuple[torch.Tensor, bool]]:
    return {n: (p.detach().clone(), p.requires_grad) for n, p in model.named_parameters()}


def assert_unchanged(model: torch.nn.Module, before: dict[str, tuple[torch.Tensor, bool]]) -> None:
    after = dict(model.named_parameters())
    assert after.keys() == before.keys()
    for name, (value, flag) in before.items():
        p = after[name]
        assert torch.equal(p.detach(), value), f"{name} changed"
        assert p.requires_grad == flag, f"{name}.requires_grad not restored"


def assert_valid_cam(cam: np.ndarray, batch: int, size: int) -> None:
    assert isinstance(cam, np.ndarray)
    assert cam.shape == (batch, size, size)
    assert cam.dtype == np.float32
    assert np.isfinite(cam).all()
    assert cam.min() >= 0.0 and cam.max() <= 1.0
    # a real (non-degenerate) map: min-max scaled, so each one reaches ~1
    assert np.allclose(cam.reshape(batch, -1).max(axis=1), 1.0, atol=1e-4)


def no_hooks(layers: list[torch.nn.Module]) -> bool:
    return all(len(layer._forward_hooks) == 0 for layer in layers)


@pytest.fixture(scope="module")
def vit_b32() -> open_clip.CLIP:
    torch.manual_seed(0)
    return open_clip.create_model("ViT-B-32-quickgelu", pretrained=None).eval()


@pytest.fixture(scope="module")
def rn50() -> open_clip.CLIP:
    torch.manual_seed(0)
    return open_clip.create_model("RN50", pretrained=None).eval()


# ------------------------------------------------------------------------- ClipClassifier


def test_classifier_scores_are_cosine_similarities_and_scaled_zero_shot_logits() -> None:
    model = make_tiny_vit()
    gen = torch.Generator().manual_seed(3)
    tokens = torch.randint(1, 49000, (5, 16), generator=gen)
    tokens[:, -1] = 49407  # end-of-text: the argmax position the text tower pools
    x = images(3, 32)
    with torch.no_grad():
        text_features = model.encode_text(tokens, normalize=True)
        scores = ClipClassifier(model, text_features)(x)
        # independent cosine similarity
        img = model.encode_image(x)
        cos = torch.stack(
            [
                torch.stack(
                    [F.cosine_similarity(img[b], text_features[c], dim=0) for c in range(5)]
                )
                for b in range(3)
            ]
        )
        # zero-shot logits from the model's own forward
        img_f, txt_f, scale = model(x, tokens)
        zero_shot = scale * img_f @ txt_f.T
    assert scores.shape == (3, 5)
    torch.testing.assert_close(scores, cos, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(scores, zero_shot / model.logit_scale.exp(), atol=1e-5, rtol=1e-5)
    assert scores.abs().max() <= 1.0 + 1e-6


def test_classifier_normalises_text_features_and_uses_logit_fn() -> None:
    model = make_tiny_vit()
    tf = unit_rows(4, 32)
    x = images(2, 32)
    with torch.no_grad():
        a = ClipClassifier(model, tf)(x)
        b = ClipClassifier(model, 7.0 * tf)(x)  # scaled rows give the same cosines
        seen = {}

        def logit_fn(feats: torch.Tensor) -> torch.Tensor:
            seen["norms"] = feats.norm(dim=-1)
            return 100.0 * feats @ tf.T

        c = ClipClassifier(model, None, logit_fn=logit_fn)(x)
    torch.testing.assert_close(a, b)
    torch.testing.assert_close(c, 100.0 * a, atol=1e-4, rtol=1e-5)
    torch.testing.assert_close(seen["norms"], torch.ones(2))  # logit_fn gets unit-norm features


@pytest.mark.parametrize(
    ("text_features", "logit_fn", "match"),
    [
        (None, None, "text_features"),
        (torch.randn(32), None, "2-D"),
        (torch.zeros(3, 32), None, "zero"),
    ],
)
def test_classifier_rejects_bad_heads(text_features, logit_fn, match) -> None:
    with pytest.raises(ValueError, match=match):
        ClipClassifier(make_tiny_vit(), text_features, logit_fn=logit_fn)


def test_classifier_rejects_mismatched_embedding_dim() -> None:
    with pytest.raises(ValueError, match="same model"), torch.no_grad():
        ClipClassifier(make_tiny_vit(), unit_rows(3, 16))(images(1, 32))


# ----------------------------------------------------------- target layers / reshape transform


def test_target_layers_point_at_the_right_modules(vit_b32, rn50) -> None:
    tiny = make_tiny_vit()
    assert target_layers_for(tiny) == [tiny.visual.transformer.resblocks[-1].ln_1]
    assert target_layers_for(vit_b32) == [vit_b32.visual.transformer.resblocks[-1].ln_1]
    assert target_layers_for(rn50) == [rn50.visual.layer4[-1]]
    assert reshape_transform_for(rn50) is None


def test_unsupported_tower_raises() -> None:
    class Fake(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.visual = torch.nn.Linear(3, 3)

    for bad in (Fake(), torch.nn.Linear(3, 3)):
        with pytest.raises(ValueError, match=r"VisionTransformer.*ModifiedResNet"):
            target_layers_for(bad)
        with pytest.raises(ValueError, match="Unsupported image tower"):
            reshape_transform_for(bad)
        with pytest.raises(ValueError, match="Unsupported image tower"):
            ClipGradCAM(bad, unit_rows(2, 3))


def test_reshape_transform_on_real_tiny_vit_activations() -> None:
    model = make_tiny_vit()
    captured = []
    layer = target_layers_for(model)[0]
    handle = layer.register_forward_hook(lambda mod, inp, out: captured.append(out.detach()))
    with torch.no_grad():
        model.encode_image(images(2, 32))
    handle.remove()
    act = captured[0]
    assert act.shape == (2, 1 + 64, 64)  # open_clip 3.x: batch-first, class token + 8x8 patches
    transform = reshape_transform_for(model)
    assert isinstance(transform, ViTReshapeTransform)
    assert transform.grid_size == (8, 8)
    grid = transform(act)
    assert grid.shape == (2, 64, 8, 8)
    # patch token k of image b lands at row k // 8, column k % 8 (class token dropped)
    torch.testing.assert_close(grid[1, :, 2, 5], act[1, 1 + 2 * 8 + 5])
    torch.testing.assert_close(grid[0, :, 0, 0], act[0, 1])
    # sequence-first input [L, B, D] gives the same grid, declared or inferred
    seq_first = act.transpose(0, 1)
    torch.testing.assert_close(ViTReshapeTransform((8, 8), batch_first=False)(seq_first), grid)
    torch.testing.assert_close(ViTReshapeTransform((8, 8), batch_first=None)(seq_first), grid)
    torch.testing.assert_close(ViTReshapeTransform((8, 8), batch_first=None)(act), grid)
    # extra prefix tokens (e.g. registers) are dropped too
    with_registers = torch.cat([act[:, :1], torch.zeros(2, 4, 64), act[:, 1:]], dim=1)
    torch.testing.assert_close(transform(with_registers), grid)
    with pytest.raises(ValueError, match="image size"):
        transform(act[:, :30])


def test_reshape_transform_grid_for_vit_b32(vit_b32) -> None:
    transform = reshape_transform_for(vit_b32)
    assert transform.grid_size == (7, 7)
    assert transform(torch.zeros(2, 50, 768)).shape == (2, 768, 7, 7)


# ------------------------------------------------------------------------------ ClipGradCAM


def test_cam_on_tiny_vit_shape_range_and_state_restored() -> None:
    model = make_tiny_vit()
    model.train()  # the CAM runs in eval mode but must hand back a training model
    for name, p in model.named_parameters():
        p.requires_grad_(name.startswith("visual.conv1") or name.startswith("text"))
    model.visual.conv1.weight.grad = torch.full_like(model.visual.conv1.weight, 0.5)
    before = snapshot(model)
    layers = target_layers_for(model)
    with ClipGradCAM(model, unit_rows(4, 32)) as cam:
        assert not no_hooks(layers)
        out = cam(images(3, 32), [0, 1, 3])
        assert cam.scores is not None and cam.scores.shape == (3, 4)
    assert_valid_cam(out, 3, 32)
    assert_unchanged(model, before)
    assert no_hooks(layers)
    assert all(m.training for m in model.modules())
    torch.testing.assert_close(model.visual.conv1.weight.grad, torch.full((64, 3, 4, 4), 0.5))
    assert all(p.grad is None for n, p in model.named_parameters() if n != "visual.conv1.weight")


def test_cam_works_on_frozen_model_and_under_no_grad() -> None:
    model = make_tiny_vit()
    for p in model.parameters():
        p.requires_grad_(False)
    before = snapshot(model)
    with ClipGradCAM(model, unit_rows(4, 32)) as cam, torch.no_grad():
        out = cam(images(2, 32), 2)  # a single int applies to every image
    assert_valid_cam(out, 2, 32)
    assert_unchanged(model, before)
    assert all(p.grad is None for p in model.parameters())


def test_target_class_changes_the_cam() -> None:
    model = make_tiny_vit()
    tf = unit_rows(3, 32)
    tf[1] = -tf[0]  # the opposite concept: its gradients flip sign
    tf[2] = tf[0]  # a duplicate of class 0
    x = images(1, 32)
    with ClipGradCAM(model, tf) as cam:
        cam0, cam1, cam2 = (cam(x, [c])[0] for c in range(3))
    assert np.abs(cam0 - cam1).max() > 0.5
    np.testing.assert_allclose(cam0, cam2, atol=1e-5)
    # ReLU keeps the positive evidence for one class, which is the negative for the other
    hot0, hot1 = cam0 > 0.5, cam1 > 0.5
    assert hot0.any() and hot1.any() and not (hot0 & hot1).any()


def test_cam_is_deterministic_and_batch_independent() -> None:
    model = make_tiny_vit()
    x = images(2, 32)
    with ClipGradCAM(model, unit_rows(4, 32)) as cam:
        both = cam(x, [1, 2])
        first = cam(x[:1], [1])
        again = cam(x, [1, 2])
    np.testing.assert_array_equal(both, again)
    np.testing.assert_allclose(both[:1], first, atol=1e-5)


def test_logit_fn_cam_matches_scaled_cosine_head_and_other_methods_run() -> None:
    model = make_tiny_vit()
    tf = unit_rows(4, 32)
    x = images(2, 32)
    with ClipGradCAM(model, tf) as cam:
        ref = cam(x, [0, 3])
    with ClipGradCAM(model, None, logit_fn=lambda f: 50.0 * f @ tf.T) as cam:
        scaled = cam(x, [0, 3])
    np.testing.assert_allclose(ref, scaled, atol=1e-4)  # Grad-CAM ignores a positive scale
    with ClipGradCAM(model, tf, method=HiResCAM) as cam:
        assert_valid_cam(cam(x, [0, 3]), 2, 32)


def test_bad_cam_inputs_raise() -> None:
    model = make_tiny_vit()
    with pytest.raises(ValueError, match="CAM class"):
        ClipGradCAM(model, unit_rows(2, 32), method=lambda **kw: None)
    with ClipGradCAM(model, unit_rows(2, 32)) as cam:
        with pytest.raises(ValueError, match="one class index per image"):
            cam(images(2, 32), [0])
        with pytest.raises(ValueError, match="out of range"):
            cam(images(1, 32), [2])
        with pytest.raises(ValueError, match="out of range"):
            cam(images(1, 32), [-1])
        with pytest.raises(ValueError, match="expects"):
            cam(images(1, 64), [0])
        with pytest.raises(ValueError, match="unsqueeze"):
            cam(images(1, 32)[0], [0])
    with pytest.raises(ValueError, match="closed"):
        cam(images(1, 32), [0])
    with ClipGradCAM(model, None, logit_fn=lambda f: f[:, :2]) as cam:
        with pytest.raises(ValueError, match="out of range"):
            cam(images(1, 32), [5])
    assert no_hooks(target_layers_for(model))


def test_full_size_vit_b32(vit_b32) -> None:
    dim = vit_b32.text_projection.shape[1]
    tf = unit_rows(3, dim)
    x = images(1, 224)
    before = snapshot(vit_b32)
    with ClipGradCAM(vit_b32, tf) as cam:
        out = cam(x, [2])
        scores = cam.scores
    assert_valid_cam(out, 1, 224)
    assert_unchanged(vit_b32, before)
    assert no_hooks(target_layers_for(vit_b32))
    # cosine similarities of the explained forward pass (checked exactly on the tiny model)
    assert scores.shape == (1, 3) and scores.abs().max() <= 1.0 + 1e-6


def test_full_size_rn50(rn50) -> None:
    dim = rn50.text_projection.shape[1]
    before = snapshot(rn50)
    with ClipGradCAM(rn50, unit_rows(3, dim)) as cam:
        out = cam(images(1, 224), [0])
    assert_valid_cam(out, 1, 224)
    assert_unchanged(rn50, before)
    assert no_hooks(target_layers_for(rn50))


# ------------------------------------------------------------------------ mass and overlay


def test_cam_mass_in_mask() -> None:
    mask = np.zeros((4, 4), dtype=bool)
    mask[:, :2] = True
    inside_only = np.where(mask, 0.7, 0.0)
    outside_only = np.where(mask, 0.0, 0.3)
    uniform = np.ones((4, 4))
    assert cam_mass_in_mask(inside_only, mask) == 1.0
    assert cam_mass_in_mask(outside_only, mask) == 0.0
    assert cam_mass_in_mask(uniform, mask) == pytest.approx(0.5)
    assert np.isnan(cam_mass_in_mask(np.zeros((4, 4)), mask))
    skewed = np.where(mask, 3.0, 1.0)
    assert cam_mass_in_mask(skewed, mask) == pytest.approx(0.75)
    batch = np.stack([inside_only, outside_only, uniform, np.zeros((4, 4))])
    for m in (mask, np.broadcast_to(mask, (4, 4, 4)), mask.astype(np.uint8)):
        got = cam_mass_in_mask(batch, m)
        assert isinstance(got, np.ndarray) and got.shape == (4,)
        np.testing.assert_allclose(got[:3], [1.0, 0.0, 0.5])
        assert np.isnan(got[3])


def test_cam_mass_in_mask_rejects_bad_input() -> None:
    cam = np.ones((4, 4))
    with pytest.raises(ValueError, match="boolean"):
        cam_mass_in_mask(cam, np.full((4, 4), 0.3))
    with pytest.raises(ValueError, match="does not match"):
        cam_mass_in_mask(cam, np.ones((5, 5), dtype=bool))
    with pytest.raises(ValueError, match="non-negative"):
        cam_mass_in_mask(-cam, np.ones((4, 4), dtype=bool))
    with pytest.raises(ValueError, match=r"\[H, W\]"):
        cam_mass_in_mask(np.ones(4), np.ones(4, dtype=bool))


def test_overlay() -> None:
    gen = np.random.default_rng(0)
    image = gen.integers(0, 256, size=(8, 6, 3), dtype=np.uint8)
    cam = np.linspace(0.0, 1.0, 48).reshape(8, 6)
    out = overlay(image, cam)
    assert out.shape == (8, 6, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(overlay(image, cam, alpha=0.0), image)
    heat = overlay(image, cam, alpha=1.0)
    # jet: low values are blue, high values are red
    assert heat[0, 0, 2] > 100 and heat[0, 0, 0] == 0
    assert heat[-1, -1, 0] > 100 and heat[-1, -1, 2] == 0
    assert not np.array_equal(out, image)
    with pytest.raises(ValueError, match="uint8"):
        overlay(image.astype(np.float32), cam)
    with pytest.raises(ValueError, match="H x W"):
        overlay(image, cam.T)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        overlay(image, cam * 2)
    with pytest.raises(ValueError, match="alpha"):
        overlay(image, cam, alpha=1.5)
