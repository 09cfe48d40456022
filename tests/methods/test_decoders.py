"""Tests for clipnb.core.spatial and clipnb.methods.decoders (random-init open_clip towers, no network)."""

from __future__ import annotations

import math
from functools import partial

import open_clip
import pytest
import torch
import torch.nn.functional as F
from open_clip.modified_resnet import ModifiedResNet

from clipnb.core.spatial import _to_batch_first, spatial_features, tower_kind
from clipnb.methods.decoders import (
    VQVAE,
    ConvDecoder,
    ConvEncoder,
    SegmentationDecoder,
    UNet,
    VectorQuantizerEMA,
    codebook_perplexity,
    ema_update,
    miou,
    psnr,
    train_decoder,
    vqvae_loss,
)

pytestmark = pytest.mark.usefixtures("one_thread")


def _tiny_clip() -> open_clip.CLIP:
    torch.manual_seed(0)
    return open_clip.CLIP(
        embed_dim=32,
        vision_cfg=open_clip.CLIPVisionCfg(
            layers=2, width=64, patch_size=4, image_size=32, head_width=32
        ),
        text_cfg=open_clip.CLIPTextCfg(
            context_length=16, vocab_size=49408, width=64, heads=2, layers=2
        ),
    )


@pytest.fixture(scope="module")
def tiny_vit() -> torch.nn.Module:
    return _tiny_clip().visual


@pytest.fixture()
def tiny_resnet() -> torch.nn.Module:
    torch.manual_seed(0)
    return ModifiedResNet(layers=[1, 1, 1, 1], output_dim=32, heads=2, image_size=64, width=16)


def _snapshot(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def _assert_same_state(module: torch.nn.Module, before: dict[str, torch.Tensor]) -> None:
    after = module.state_dict()
    assert after.keys() == before.keys()
    for key, value in before.items():
        assert torch.equal(after[key], value), f"{key} changed"


# --------------------------------------------------------------------------- spatial features


def test_tiny_vit_features_are_last_block_patch_tokens(tiny_vit: torch.nn.Module) -> None:
    images = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    feats = spatial_features(tiny_vit, images)
    assert feats.shape == (3, 64, 8, 8)
    assert tower_kind(tiny_vit) == "vit"
    tiny_vit.eval()
    with torch.no_grad():
        out = tiny_vit.forward_intermediates(images, indices=1, intermediates_only=True)
        ref = out["image_intermediates"][-1]
        normed = tiny_vit.forward_intermediates(
            images, indices=1, intermediates_only=True, normalize_intermediates=True
        )["image_intermediates"][-1]
    # Same tokens, same spatial order as open_clip's own reference; before ln_post.
    torch.testing.assert_close(feats, ref, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(feats, normed, atol=1e-3)
    # Batched extraction gives the same result.
    torch.testing.assert_close(spatial_features(tiny_vit, images, batch_size=2), feats)


def test_layout_detection_handles_both_orders_and_ambiguous_batch() -> None:
    gen = torch.Generator().manual_seed(0)
    for batch, length in [(2, 5), (5, 5)]:
        nld = torch.randn(batch, length, 4, generator=gen)
        nld[:, 0] = torch.tensor([1.0, 2.0, 3.0, 4.0])  # shared class token, as in a ViT input
        lnd = nld.transpose(0, 1).contiguous()
        assert torch.equal(_to_batch_first(nld, nld, batch), nld)
        assert torch.equal(_to_batch_first(lnd, lnd, batch), nld)
    with pytest.raises(ValueError, match="batch size"):
        _to_batch_first(torch.zeros(3, 4, 2), torch.zeros(3, 4, 2), batch=7)


def test_resnet_features_are_layer4(tiny_resnet: torch.nn.Module) -> None:
    images = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    feats = spatial_features(tiny_resnet, images)
    assert feats.shape == (2, 512, 2, 2)
    tiny_resnet.eval()
    with torch.no_grad():
        ref = tiny_resnet.forward_intermediates(images, indices=1, intermediates_only=True)
    torch.testing.assert_close(feats, ref["image_intermediates"][-1])


def test_unsupported_tower_and_bad_images(tiny_vit: torch.nn.Module) -> None:
    with pytest.raises(ValueError, match="VisionTransformer"):
        spatial_features(torch.nn.Conv2d(3, 4, 3), torch.zeros(1, 3, 8, 8))
    with pytest.raises(ValueError, match=r"\[B, 3, H, W\]"):
        spatial_features(tiny_vit, torch.zeros(1, 1, 32, 32))


@pytest.mark.parametrize(
    ("name", "shape"), [("ViT-B-32", (1, 768, 7, 7)), ("RN50", (1, 2048, 7, 7))]
)
def test_full_size_towers(name: str, shape: tuple[int, ...]) -> None:
    torch.manual_seed(0)
    visual = open_clip.create_model(name, pretrained=None).visual
    image = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    assert spatial_features(visual, image).shape == shape


@pytest.mark.parametrize("tower", ["vit", "resnet"])
def test_tower_bit_identical_after_training_decoders(
    tower: str, tiny_vit: torch.nn.Module, tiny_resnet: torch.nn.Module
) -> None:
    visual, size = (tiny_vit, 32) if tower == "vit" else (tiny_resnet, 64)
    visual.train()  # BatchNorm stats / patch dropout must still stay untouched
    before = _snapshot(visual)
    images = torch.rand(4, 3, size, size, generator=torch.Generator().manual_seed(3))
    feats = spatial_features(visual, images)
    channels, grid = feats.shape[1], tuple(feats.shape[-2:])

    vq = VQVAE(channels, grid, size, n_codes=8, code_dim=8, hidden=16,
               frozen_encoder=partial(spatial_features, visual))  # fmt: skip
    assert not {id(p) for p in vq.parameters()} & {id(p) for p in visual.parameters()}
    train_decoder(vq, images, images, vqvae_loss, steps=3, batch_size=2, progress=False)
    seg = SegmentationDecoder(channels, 3, grid, size, hidden=16)
    labels = torch.randint(3, (4, size, size), generator=torch.Generator().manual_seed(4))
    train_decoder(seg, feats, labels, F.cross_entropy, steps=3, batch_size=2, progress=False)

    _assert_same_state(visual, before)
    assert visual.training
    assert all(p.grad is None for p in visual.parameters())


# --------------------------------------------------------------------------- vector quantiser


def test_ema_update_matches_hand_computation() -> None:
    z = torch.tensor([[1.0, 0.0], [3.0, 0.0], [0.0, 2.0]])
    codes = torch.tensor([0, 0, 1])
    size0 = torch.tensor([1.0, 1.0])
    sum0 = torch.tensor([[0.0, 0.0], [0.0, 1.0]])
    size, total, book = ema_update(z, codes, size0, sum0, decay=0.5, eps=0.1)
    # n = [2, 1], s = [[4, 0], [0, 2]]; N = .5·[1,1] + .5·[2,1]; m = .5·m0 + .5·s
    torch.testing.assert_close(size, torch.tensor([1.5, 1.0]))
    torch.testing.assert_close(total, torch.tensor([[2.0, 0.0], [0.0, 1.5]]))
    # Laplace: Ñ = (N + .1) / (2.5 + .2) · 2.5 -> e_0 = 2·2.7/(1.6·2.5), e_1 = 1.5·2.7/(1.1·2.5)
    torch.testing.assert_close(book, torch.tensor([[1.35, 0.0], [0.0, 4.05 / 2.75]]))
    assert torch.equal(size0, torch.tensor([1.0, 1.0]))  # pure: inputs untouched
    # Without smoothing the codebook is exactly m / N.
    _, _, plain = ema_update(z, codes, size0, sum0, decay=0.5, eps=0.0)
    torch.testing.assert_close(plain, torch.tensor([[2.0 / 1.5, 0.0], [0.0, 1.5]]))


def test_quantizer_applies_ema_only_in_training() -> None:
    vq = VectorQuantizerEMA(2, 2, decay=0.5, eps=0.1, data_init=False)
    vq.codebook.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0]]))
    vq.embed_sum.copy_(torch.tensor([[0.0, 0.0], [0.0, 1.0]]))
    z = torch.tensor([[1.0, 0.0], [3.0, 0.0], [0.0, 2.0]]).t().reshape(1, 2, 1, 3)
    vq.eval()
    quantised, _, codes = vq(z)
    assert codes.tolist() == [[[0, 0, 1]]]
    torch.testing.assert_close(quantised[0, :, 0].t(), torch.tensor([[1.0, 0], [1, 0], [0, 1]]))
    assert torch.equal(vq.codebook, torch.tensor([[1.0, 0.0], [0.0, 1.0]]))
    vq.train()
    vq(z)
    torch.testing.assert_close(vq.codebook, torch.tensor([[1.35, 0.0], [0.0, 4.05 / 2.75]]))
    torch.testing.assert_close(vq.cluster_size, torch.tensor([1.5, 1.0]))


def test_quantizer_data_init_uses_encoder_vectors() -> None:
    torch.manual_seed(0)
    vq = VectorQuantizerEMA(4, 3, decay=0.0)
    z = torch.randn(2, 3, 4, 4) * 10
    _, _, codes = vq(z)
    assert bool(vq.initialised)
    assert codebook_perplexity(codes, 4) > 1.0


def test_straight_through_gradient_reaches_encoder() -> None:
    vq = VectorQuantizerEMA(4, 3, commitment_cost=0.25)
    z = torch.randn(2, 3, 2, 2, requires_grad=True)
    quantised, _, _ = vq(z)
    quantised.sum().backward()
    torch.testing.assert_close(z.grad, torch.ones_like(z))  # identity gradient

    torch.manual_seed(0)
    model = VQVAE(16, 8, 32, n_codes=8, code_dim=4, hidden=16,
                  encoder=ConvEncoder(16, 32, 8, hidden=16))  # fmt: skip
    images = torch.rand(2, 3, 32, 32)
    recon, _, codes = model(images)
    assert recon.shape == images.shape and codes.shape == (2, 8, 8)
    F.mse_loss(recon, images).backward()
    grads = [p.grad for p in model.encoder.parameters()]
    assert all(g is not None for g in grads)
    assert sum(float(g.abs().sum()) for g in grads) > 0


def test_decode_codes_and_validation() -> None:
    torch.manual_seed(0)
    model = VQVAE(8, 7, 224, n_codes=16, code_dim=4, hidden=16)
    codes = torch.randint(16, (2, 7, 7), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        images = model.decode_codes(codes)
    assert images.shape == (2, 3, 224, 224)
    assert 0.0 <= float(images.min()) and float(images.max()) <= 1.0
    with pytest.raises(ValueError, match="codes must be integers"):
        model.decode_codes(torch.full((1, 7, 7), 16))
    with pytest.raises(ValueError, match="not both"):
        VQVAE(8, 7, 224, encoder=ConvEncoder(8, 224, 7), frozen_encoder=lambda x: x)
    with pytest.raises(ValueError, match="in_size"):
        model(torch.zeros(1, 8, 8, 8))  # features on the wrong grid


def test_codebook_perplexity() -> None:
    assert codebook_perplexity(torch.arange(4).repeat(5), 4) == pytest.approx(4.0)
    assert codebook_perplexity(torch.zeros(10, dtype=torch.long), 4) == pytest.approx(1.0)


# --------------------------------------------------------------------------- decoders


@pytest.mark.parametrize(
    ("in_size", "out_size", "stages"), [(8, 32, 2), (7, 224, 5), (7, 30, 3), ((4, 8), (16, 32), 2)]
)
def test_decoder_output_sizes(in_size, out_size, stages) -> None:
    dec = ConvDecoder(12, out_size, in_size, hidden=16)
    assert dec.n_stages == stages
    h, w = (in_size, in_size) if isinstance(in_size, int) else in_size
    oh, ow = (out_size, out_size) if isinstance(out_size, int) else out_size
    assert dec(torch.randn(1, 12, h, w)).shape == (1, 3, oh, ow)
    seg = SegmentationDecoder(12, 5, in_size, out_size, hidden=16)
    assert seg(torch.randn(2, 12, h, w)).shape == (2, 5, oh, ow)


def test_encoder_unet_and_size_errors() -> None:
    assert ConvEncoder(10, 32, 8, hidden=16)(torch.rand(2, 3, 32, 32)).shape == (2, 10, 8, 8)
    assert ConvEncoder(10, 224, 7, hidden=16).n_stages == 5
    assert UNet(4, base=8)(torch.rand(2, 3, 30, 30)).shape == (2, 4, 30, 30)
    assert SegmentationDecoder(6, 2, 8, 8, hidden=8)(torch.rand(2, 6, 8, 8)).shape == (2, 2, 8, 8)
    with pytest.raises(ValueError, match="must not be smaller"):
        ConvDecoder(4, 4, 8)
    with pytest.raises(ValueError, match="matching in_size"):
        ConvDecoder(4, 32, 8)(torch.zeros(1, 4, 7, 7))


# --------------------------------------------------------------------------- metrics


def test_miou() -> None:
    target = torch.tensor([[[0, 0], [1, 1]]])
    assert miou(target.clone(), target, n_classes=3) == 1.0
    assert miou(torch.full_like(target, 2), torch.zeros_like(target), n_classes=3) == 0.0
    assert miou(1 - target, target, n_classes=2) == 0.0
    # class 0: I=2, U=3; class 1: I=1, U=2 -> (2/3 + 1/2) / 2
    pred = torch.tensor([[[0, 1], [1, 0]]])
    target2 = torch.tensor([[[0, 0], [1, 0]]])
    assert miou(pred, target2, 2) == pytest.approx((2 / 3 + 1 / 2) / 2)
    # absent class 2: ignored by default, counted as 1.0 otherwise
    assert miou(target.clone(), target, 3, ignore_absent=False) == 1.0
    assert miou(pred, target2, 3, ignore_absent=False) == pytest.approx((2 / 3 + 1 / 2 + 1) / 3)
    # ignore_index drops those target pixels
    masked = torch.tensor([[[0, 255], [1, 255]]])
    assert miou(torch.tensor([[[0, 1], [1, 1]]]), masked, 2, ignore_index=255) == 1.0
    with pytest.raises(ValueError, match="outside"):
        miou(target, target, n_classes=1)
    with pytest.raises(ValueError, match="argmax"):
        miou(target.float(), target, n_classes=2)


def test_psnr() -> None:
    x = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    assert psnr(x, x.clone()) == math.inf
    zeros = torch.zeros(1, 3, 4, 4)
    assert psnr(zeros, torch.full_like(zeros, 0.1)) == pytest.approx(10 * math.log10(1 / 0.01))
    noisy = (x + 0.05 * torch.randn(x.shape, generator=torch.Generator().manual_seed(1))).clamp(
        0, 1
    )
    mse = float(((x.double() - noisy.double()) ** 2).mean())
    assert psnr(x, noisy) == pytest.approx(10 * math.log10(1 / mse))
    assert psnr(zeros, torch.full_like(zeros, 25.5), data_range=255) == pytest.approx(20.0)
    with pytest.raises(ValueError, match="equal shapes"):
        psnr(zeros, x)


# --------------------------------------------------------------------------- training


def _toy_segmentation() -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(5)
    feats = torch.randn(8, 6, 4, 4, generator=gen)
    # label = sign of channel 0, upsampled: learnable from the features
    labels = (F.interpolate(feats[:, :1], size=16, mode="nearest")[:, 0] > 0).long()
    return feats, labels


def test_training_lowers_loss_and_records_val() -> None:
    feats, labels = _toy_segmentation()
    torch.manual_seed(0)
    seg = SegmentationDecoder(6, 2, 4, 16, hidden=16)
    hist = train_decoder(seg, feats, labels, F.cross_entropy, steps=30, lr=1e-2, batch_size=4,
                         seed=0, val=(feats, labels), eval_every=10, progress=False)  # fmt: skip
    assert len(hist["train_loss"]) == 30
    assert hist["val_step"] == [10, 20, 30]
    assert hist["val_loss"][-1] < 0.5 * hist["val_loss"][0]
    assert not seg.training

    torch.manual_seed(0)
    blocks = torch.rand(4, 3, 2, 2, generator=torch.Generator().manual_seed(6))
    images = F.interpolate(blocks, size=16, mode="nearest")  # 2x2 colour blocks
    vq = VQVAE(8, 4, 16, n_codes=16, code_dim=4, hidden=16, encoder=ConvEncoder(8, 16, 4, 16))
    hist = train_decoder(vq, images, images, vqvae_loss, steps=40, lr=1e-2, batch_size=4,
                         progress=False)  # fmt: skip
    assert sum(hist["train_loss"][-5:]) < 0.9 * sum(hist["train_loss"][:5])


def test_training_is_deterministic_and_keeps_global_rng() -> None:
    feats, labels = _toy_segmentation()

    def make() -> torch.nn.Module:  # dropout makes the loop depend on the torch RNG as well
        return torch.nn.Sequential(torch.nn.Dropout(0.3), SegmentationDecoder(6, 2, 4, 16, 8))

    def run(seed: int) -> list[float]:
        model = make()
        model.load_state_dict(init)  # identical initial weights
        hist = train_decoder(
            model, feats, labels, F.cross_entropy, steps=6, batch_size=3, seed=seed, progress=False
        )
        return hist["train_loss"]

    init = make().state_dict()
    assert run(1) == run(1)
    assert run(1) != run(2)
    # The caller's global RNG stream is not disturbed by training.
    model = make()
    torch.manual_seed(123)
    train_decoder(model, feats, labels, F.cross_entropy, steps=2, batch_size=3, progress=False)
    after = torch.rand(3)
    torch.manual_seed(123)
    assert torch.equal(torch.rand(3), after)


def test_train_decoder_validation() -> None:
    feats, labels = _toy_segmentation()
    seg = SegmentationDecoder(6, 2, 4, 16, hidden=8)
    with pytest.raises(ValueError, match="same non-zero length"):
        train_decoder(seg, feats, labels[:3], F.cross_entropy, steps=1, progress=False)
    with pytest.raises(ValueError, match="lower lr"):
        train_decoder(seg, feats, labels, lambda out, y: out.sum() * math.nan, steps=1,
                      progress=False)  # fmt: skip
    with pytest.raises(ValueError, match="no trainable parameters"):
        train_decoder(torch.nn.Identity(), feats, labels, F.cross_entropy, steps=1)
