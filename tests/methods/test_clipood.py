"""Tests for clipnb.methods.clipood (Margin Metric Softmax and weight averaging)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from scipy import stats
from torch import nn

from clipnb.methods.clipood import (
    BetaMovingAverage,
    ExponentialMovingAverage,
    UniformAverage,
    beta_pdf,
    margin_metric_softmax,
    text_margins,
)


def _features(n: int, dim: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(n, dim, generator=g), dim=-1)


# ------------------------------------------------------------------ MMS loss
def test_text_margins_properties() -> None:
    text = _features(7, 16, seed=0)
    d = text_margins(text)
    assert d.shape == (7, 7)
    assert torch.equal(torch.diagonal(d), torch.zeros(7))
    assert torch.equal(d, d.T)
    assert d.min() >= 0 and d.max() <= 2
    torch.testing.assert_close(d, (1 - text @ text.T).fill_diagonal_(0), atol=1e-6, rtol=0)
    # opposite embeddings are at the maximal margin
    assert text_margins(torch.stack([text[0], -text[0]]))[0, 1] == pytest.approx(2.0)


def test_zero_margin_equals_cross_entropy() -> None:
    img, txt = _features(12, 16, seed=1), _features(5, 16, seed=2)
    labels = torch.arange(12) % 5
    tau = 0.01
    loss = margin_metric_softmax(img, txt, labels, temperature=tau, margin=0.0)
    cosine = F.normalize(img, dim=-1) @ F.normalize(txt, dim=-1).T  # S(I, T_c)
    ce = F.cross_entropy(cosine / tau, labels)
    assert loss.ndim == 0
    torch.testing.assert_close(loss, ce, atol=1e-6, rtol=0)
    # S is a cosine: rescaling the (unnormalised) image embeddings changes nothing
    scaled = margin_metric_softmax(3.0 * img, txt, labels, temperature=tau, margin=0.0)
    torch.testing.assert_close(scaled, loss, atol=0, rtol=1e-6)


def test_mms_matches_equation_3() -> None:
    img, txt = _features(6, 8, seed=3), _features(4, 8, seed=4)
    labels = torch.tensor([0, 1, 2, 3, 1, 2])
    tau, lam = 0.07, 0.3
    total = 0.0
    for i in range(6):
        y = int(labels[i])
        s = [float(img[i] @ txt[c]) for c in range(4)]
        d = [1.0 - float(txt[y] @ txt[c]) for c in range(4)]
        d[y] = 0.0
        denom = sum(math.exp((s[c] + lam * d[c]) / tau) for c in range(4))
        total += -math.log(math.exp(s[y] / tau) / denom)
    loss = margin_metric_softmax(img, txt, labels, temperature=tau, margin=lam)
    assert float(loss) == pytest.approx(total / 6, rel=1e-5)


def test_margin_only_increases_the_loss() -> None:
    img, txt = _features(10, 16, seed=5), _features(6, 16, seed=6)
    labels = torch.arange(10) % 6
    for i in range(10):
        ce = margin_metric_softmax(img[i : i + 1], txt, labels[i : i + 1], 0.05, 0.0)
        mms = margin_metric_softmax(img[i : i + 1], txt, labels[i : i + 1], 0.05, 0.5)
        assert mms > ce
    # and monotonically in the margin
    losses = [float(margin_metric_softmax(img, txt, labels, 0.05, m)) for m in (0.0, 0.1, 1.0)]
    assert losses == sorted(losses) and losses[0] < losses[-1]


def test_gradients_reach_images_not_texts() -> None:
    img = _features(4, 8, seed=7).requires_grad_(True)
    txt = _features(3, 8, seed=8).requires_grad_(True)
    loss = margin_metric_softmax(img, txt, torch.tensor([0, 1, 2, 0]), 0.01, 0.2)
    loss.backward()
    assert img.grad is not None and img.grad.abs().sum() > 0
    assert txt.grad is None


def test_mms_rejects_bad_input() -> None:
    img, txt = _features(4, 8, seed=9), _features(3, 8, seed=10)
    labels = torch.tensor([0, 1, 2, 0])
    with pytest.raises(ValueError, match="temperature"):
        margin_metric_softmax(img, txt, labels, 0.0, 0.1)
    with pytest.raises(ValueError, match="margin"):
        margin_metric_softmax(img, txt, labels, 0.01, -0.1)
    with pytest.raises(ValueError, match=r"\[0, 3\)"):
        margin_metric_softmax(img, txt, labels + 1, 0.01, 0.1)
    with pytest.raises(ValueError, match="dim"):
        margin_metric_softmax(img[:, :4], txt, labels, 0.01, 0.1)


# ------------------------------------------------------------- weight averaging
def _trajectory(steps: int, seed: int = 0, bn: bool = False) -> tuple[nn.Module, list[dict]]:
    """SGD trajectory of a tiny model: returns the model and [theta_0, ..., theta_T]."""
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3)) if bn else nn.Linear(4, 3)
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    g = torch.Generator().manual_seed(seed)
    states = [{k: v.clone() for k, v in model.state_dict().items()}]
    for _ in range(steps):
        x = torch.randn(8, 4, generator=g)
        loss = (model(x) - 1.0).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        states.append({k: v.clone() for k, v in model.state_dict().items()})
    return model, states


def _weighted_mean(states: list[dict], weights: list[float]) -> dict[str, torch.Tensor]:
    total = sum(weights)
    return {
        k: sum(w * s[k].double() for w, s in zip(weights, states, strict=True)) / total
        for k in states[0]
        if states[0][k].is_floating_point()
    }


def test_beta_pdf_matches_scipy() -> None:
    for a in (0.5, 1.0, 2.5):
        for x in (0.01, 0.3, 0.5, 0.97):
            assert beta_pdf(x, a, a) == pytest.approx(stats.beta.pdf(x, a, a), rel=1e-10)
    with pytest.raises(ValueError, match="open interval"):
        beta_pdf(1.0, 2.0, 2.0)


def test_bma_with_beta_one_is_uniform_average() -> None:
    total = 10
    _, states = _trajectory(total)
    bma = BetaMovingAverage(beta=1.0, total_steps=total)
    for t, s in enumerate(states):
        bma.update(s, t)
    expected = _weighted_mean(states, [1.0] * len(states))
    out = bma.state_dict()
    for k, v in expected.items():
        assert out[k].dtype == torch.float32
        torch.testing.assert_close(out[k].double(), v, atol=1e-6, rtol=0)
    assert bma.weight_sum_ == pytest.approx(total + 1)
    # the average differs from both ends of the trajectory
    assert not torch.allclose(out["weight"], states[-1]["weight"])
    assert not torch.allclose(out["weight"], states[0]["weight"])
    uni = UniformAverage()
    for t, s in enumerate(states):
        uni.update(s, t)
    for k in expected:
        torch.testing.assert_close(uni.state_dict()[k], out[k], atol=1e-6, rtol=0)


def test_bma_matches_equation_5_with_paper_indexing() -> None:
    total, beta = 8, 0.5
    model, states = _trajectory(total, seed=1)
    bma = BetaMovingAverage(beta=beta, total_steps=total)
    for t, s in enumerate(states):
        bma.update(s, t)
    weights = [stats.beta.pdf((t + 0.5) / (total + 1), beta, beta) for t in range(total + 1)]
    for k, v in _weighted_mean(states, weights).items():
        torch.testing.assert_close(bma.state_dict()[k].double(), v, atol=1e-6, rtol=0)
    # the U-shaped Beta(0.5, 0.5) weights favour both ends: not the uniform mean
    uniform = _weighted_mean(states, [1.0] * len(states))
    assert not torch.allclose(bma.state_dict()["weight"].double(), uniform["weight"], atol=1e-4)
    # copy_to loads the averaged weights into a model
    bma.copy_to(model)
    torch.testing.assert_close(model.weight.detach(), bma.state_dict()["weight"])


def test_bma_accepts_modules_and_validates_steps() -> None:
    model, _ = _trajectory(0)
    bma = BetaMovingAverage(beta=0.5, total_steps=3)
    with pytest.raises(ValueError, match="total_steps"):
        bma.update(model, 4)
    assert not hasattr(bma, "average_")  # a rejected update leaves no state behind
    bma.update(model, 0)
    with pytest.raises(ValueError, match="increase"):
        bma.update(model, 0)
    with pytest.raises(ValueError, match="keys"):
        bma.update({"weight": model.weight.detach()}, 1)
    with pytest.raises(ValueError, match="beta"):
        BetaMovingAverage(beta=0.0, total_steps=3).update(model, 0)
    with pytest.raises(ValueError, match="update"):
        BetaMovingAverage(beta=0.5, total_steps=3).state_dict()


def test_ema_decay_zero_is_last_state_and_half_is_mean() -> None:
    _, states = _trajectory(5, seed=2)
    ema = ExponentialMovingAverage(decay=0.0)
    for t, s in enumerate(states):
        ema.update(s, t)
    for k in ("weight", "bias"):
        torch.testing.assert_close(ema.state_dict()[k], states[-1][k], atol=0, rtol=0)
    half = ExponentialMovingAverage(decay=0.5)
    half.update(states[0], 0).update(states[1], 1)
    torch.testing.assert_close(
        half.state_dict()["weight"],
        (states[0]["weight"] + states[1]["weight"]) / 2,
        atol=1e-7,
        rtol=0,
    )
    with pytest.raises(ValueError, match="decay"):
        ExponentialMovingAverage(decay=1.5).update(states[0], 0)


@pytest.mark.parametrize(
    "averager",
    [BetaMovingAverage(beta=0.5, total_steps=4), ExponentialMovingAverage(0.9), UniformAverage()],
)
def test_integer_buffers_come_from_latest_state(averager) -> None:
    model, states = _trajectory(4, seed=3, bn=True)
    key = "1.num_batches_tracked"
    assert [int(s[key]) for s in states] == [0, 1, 2, 3, 4]
    for t, s in enumerate(states):
        averager.update(s, t)
    out = averager.state_dict()
    assert out[key].dtype == torch.long and int(out[key]) == 4
    # float buffers (BatchNorm running stats) are averaged, not copied
    assert not torch.allclose(out["1.running_mean"], states[-1]["1.running_mean"])
    averager.copy_to(model)
    assert int(model.state_dict()[key]) == 4
