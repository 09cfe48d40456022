"""The saliency protocol: its scores find a known object, and its sanity check tells a map that
follows the weights from one that only follows the input."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest
import torch
from scipy.ndimage import sobel

from clipnb.methods import saliency
from clipnb.methods.gradcam import clip_cams, target_layers_for
from clipnb.methods.saliency import CamSetting
from tests.methods.test_gradcam import make_tiny_vit, unit_rows

SIZE = 32
SQUARE = (slice(8, 16), slice(18, 26))  # rows, columns of the object


def square_masks(n: int) -> np.ndarray:
    masks = np.zeros((n, SIZE, SIZE), dtype=bool)
    masks[:, SQUARE[0], SQUARE[1]] = True
    return masks


class SquareScorer(torch.nn.Module):
    """A model whose score depends only on the pixels inside the square."""

    def __init__(self) -> None:
        super().__init__()
        weight = torch.zeros(1, 3, SIZE, SIZE)
        weight[..., SQUARE[0], SQUARE[1]] = torch.linspace(0.5, 1.5, 64).view(8, 8)
        self.weight = torch.nn.Parameter(weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x * self.weight).flatten(1).sum(1, keepdim=True)


def input_gradient(model: torch.nn.Module, x: torch.Tensor) -> np.ndarray:
    """|d score / d pixel| summed over channels: the simplest map that follows the model."""
    x = x.clone().requires_grad_(True)
    model(x).sum().backward()
    return x.grad.abs().sum(1).numpy()


def test_scores_find_the_square_a_model_looks_at() -> None:
    x = torch.rand(6, 3, SIZE, SIZE)
    maps, masks = input_gradient(SquareScorer(), x), square_masks(6)
    assert saliency.pointing_game(maps, masks) == pytest.approx(np.ones(6))
    assert saliency.mass_in_mask(maps, masks) == pytest.approx(np.ones(6))
    # a uniform map, and a map of zeros, score the square's share of the image
    area = masks[0].mean()
    assert saliency.pointing_game(np.ones(masks.shape), masks) == pytest.approx(area)
    assert saliency.mass_in_mask(np.ones(masks.shape), masks) == pytest.approx(area)
    assert saliency.mass_in_mask(np.zeros(masks.shape), masks) == pytest.approx(area)
    # a map pointing off the object misses
    off = np.zeros(masks.shape)
    off[:, 30, 1] = 1.0
    assert saliency.pointing_game(off, masks) == pytest.approx(0.0)
    assert saliency.mass_in_mask(off, masks) == pytest.approx(0.0)


def test_scores_reject_mismatched_or_empty_masks() -> None:
    with pytest.raises(ValueError, match="same shape"):
        saliency.pointing_game(np.ones((2, 8, 8)), np.ones((2, 4, 4), bool))
    with pytest.raises(ValueError, match="at least one object pixel"):
        saliency.mass_in_mask(np.ones((1, 8, 8)), np.zeros((1, 8, 8), bool))
    with pytest.raises(ValueError, match="non-negative"):
        saliency.mass_in_mask(-np.ones((1, 8, 8)), np.ones((1, 8, 8), bool))


def test_rank_correlation() -> None:
    a = np.random.default_rng(0).random((3, 5, 5))
    assert saliency.rank_correlation(a, a) == pytest.approx(np.ones(3))
    assert saliency.rank_correlation(a, -a) == pytest.approx(-np.ones(3))
    assert saliency.rank_correlation(a, a**3 + 2) == pytest.approx(np.ones(3))  # ranks only
    assert saliency.rank_correlation(a, np.ones_like(a)) == pytest.approx(np.zeros(3))


def test_cascade_is_cumulative_and_leaves_the_model_alone() -> None:
    model = make_tiny_vit()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    names = [name for name, _ in saliency.cascade_stages(model)]
    assert names == ["head", "block 2", "block 1", "embedding"]
    changed = []
    for _stage, randomised in saliency.randomised_cascade(model, seed=0):
        state = randomised.state_dict()
        changed.append(
            {
                k
                for k, v in state.items()
                if k.startswith("visual.") and not torch.equal(v, before[k])
            }
        )
        assert not any(k.startswith("text") or k.startswith("transformer") for k in changed[-1])
    for earlier, later in itertools.pairwise(changed):
        assert earlier < later  # each stage adds to the ones above
    assert (
        "visual.proj" in changed[0]
        and "visual.transformer.resblocks.1.mlp.c_fc.weight" in changed[1]
    )
    assert "visual.transformer.resblocks.0.attn.in_proj_weight" not in changed[1]
    assert "visual.conv1.weight" in changed[-1]
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_randomisation_check_separates_input_from_weights() -> None:
    """An edge detector ignores the weights (high correlation with the randomised tower's
    maps); Grad-CAM follows them (low correlation)."""
    model = make_tiny_vit()
    text = unit_rows(3, 32)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(6, 3, SIZE, SIZE, generator=gen)
    x[:, :, SQUARE[0], SQUARE[1]] += 3.0
    classes, masks = np.array([0, 1, 2, 0, 1, 2]), square_masks(6)

    def edges(_model, _setting, px, _classes):
        gray = px.mean(1).numpy()
        return np.hypot(sobel(gray, axis=1), sobel(gray, axis=2))

    def gradcam(m, setting, px, cl):
        return clip_cams(m, text, setting, px, cl)

    common = dict(pixels=x, classes=classes, masks=masks, seeds=[0, 1], progress=False)
    edge_table = saliency.validate(model, edges, methods=["EigenCAM"], **common)
    grad_table = saliency.validate(
        model, gradcam, methods=["GradCAM"], layers=["block 2"], **common
    )
    assert edge_table.rho_random.min() > 0.99
    assert grad_table.rho_random.mean() < 0.5
    assert set(grad_table.columns) >= {"pointing", "mass", "area", "rho_head", "rho_embedding"}
    assert len(edge_table) == 2 * 2  # seeds x layers
    assert saliency.choose(pd.concat([edge_table, grad_table])) == CamSetting("GradCAM", "block 2")


def test_choose_prefers_mass_among_settings_that_pass_the_check() -> None:
    table = pd.DataFrame(
        [
            {"method": "EigenCAM", "layer": "block 1", "mass": 60.0, "rho_random": 0.9},
            {"method": "GradCAM", "layer": "block 1", "mass": 30.0, "rho_random": 0.1},
            {"method": "HiResCAM", "layer": "block 2", "mass": 40.0, "rho_random": 0.2},
        ]
    )
    assert saliency.choose(table) == CamSetting("HiResCAM", "block 2")
    # nothing passes: the setting that depends most on the weights
    assert saliency.choose(table, max_random_correlation=0.05) == CamSetting("GradCAM", "block 1")


def test_layers_and_settings() -> None:
    model = make_tiny_vit()
    assert list(saliency.cam_layers(model)) == ["block 1", "block 2"]
    assert target_layers_for(model, "block 1") == [model.visual.transformer.resblocks[0]]
    assert target_layers_for(model, "") == [model.visual.transformer.resblocks[-1]]
    with pytest.raises(ValueError, match="Known: block 1, block 2"):
        target_layers_for(model, "block 9")
    with pytest.raises(ValueError, match="Known: GradCAM"):
        CamSetting("SmoothGrad")
    assert saliency.candidate_layers(model, 1) == ["block 1", "block 2"]
    assert saliency.candidate_layers(model, 2) == ["block 2"]


@pytest.mark.parametrize("method", list(saliency.CAM_METHODS))
def test_every_method_gives_maps_on_every_layer(method: str) -> None:
    model = make_tiny_vit()
    x = torch.randn(2, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(3))
    for layer in saliency.cam_layers(model):
        maps = clip_cams(model, unit_rows(3, 32), CamSetting(method, layer), x, [0, 2])
        assert maps.shape == (2, SIZE, SIZE)
        assert np.isfinite(maps).all() and maps.min() >= 0 and maps.max() <= 1
