"""Tests for clipnb.methods.tip_adapter (Tip-Adapter, Tip-Adapter-F, alpha/beta search)."""

from __future__ import annotations

from functools import partial
from typing import ClassVar

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from clipnb.methods.tip_adapter import ALPHAS, BETAS, TipAdapter, TipAdapterF, search_alpha_beta

LOGIT_SCALE = 100.0


def make_task(
    n_classes: int = 5,
    dim: int = 32,
    shots: int = 4,
    n_val: int = 40,
    noise: float = 0.6,
    seed: int = 0,
    bad_zero_shot: bool = False,
) -> dict[str, torch.Tensor]:
    """Gaussian class clusters on the sphere; zero-shot weights near the class centres.

    With ``bad_zero_shot`` the text embeddings are cyclically shifted, so the zero-shot
    classifier is systematically wrong and only the cache can fix it.
    """
    g = torch.Generator().manual_seed(seed)
    centres = F.normalize(torch.randn(n_classes, dim, generator=g), dim=-1)

    def sample(n_per_class: int) -> tuple[torch.Tensor, torch.Tensor]:
        y = torch.arange(n_classes).repeat_interleave(n_per_class)
        x = centres[y] + noise * torch.randn(len(y), dim, generator=g) / dim**0.5
        return F.normalize(x, dim=-1), y

    keys, labels = sample(shots)
    val_x, val_y = sample(n_val // n_classes)
    zs = F.normalize(centres + 0.3 * torch.randn(n_classes, dim, generator=g) / dim**0.5, dim=-1)
    if bad_zero_shot:
        zs = zs.roll(1, dims=0)
    return {"keys": keys, "labels": labels, "val_x": val_x, "val_y": val_y, "zs": zs}


# --------------------------------------------------------------------- TipAdapter
def test_alpha_zero_is_exactly_zero_shot() -> None:
    t = make_task()
    adapter = TipAdapter(alpha=0.0, beta=5.0).fit(t["keys"], t["labels"], t["zs"], LOGIT_SCALE)
    zs_logits = LOGIT_SCALE * t["val_x"] @ t["zs"].T
    assert torch.equal(adapter.logits(t["val_x"]), zs_logits)
    assert torch.equal(adapter.predict(t["val_x"]), zs_logits.argmax(dim=1))


def test_logits_match_paper_formula() -> None:
    t = make_task(seed=1, n_val=10, shots=2)
    alpha, beta = 1.7, 3.3
    adapter = TipAdapter(alpha=alpha, beta=beta).fit(t["keys"], t["labels"], t["zs"], LOGIT_SCALE)
    f = t["val_x"]
    expected = torch.empty(f.shape[0], t["zs"].shape[0])
    for b in range(f.shape[0]):
        for c in range(t["zs"].shape[0]):
            cache = sum(
                float(torch.exp(-beta * (1 - f[b] @ t["keys"][n])))
                for n in range(len(t["labels"]))
                if t["labels"][n] == c
            )
            expected[b, c] = LOGIT_SCALE * float(f[b] @ t["zs"][c]) + alpha * cache
    torch.testing.assert_close(adapter.logits(f), expected, atol=1e-4, rtol=1e-5)
    # one-hot values and stored fitted attributes
    assert adapter.values_.shape == (len(t["labels"]), t["zs"].shape[0])
    assert torch.equal(adapter.values_.argmax(dim=1), t["labels"])
    assert torch.equal(adapter.values_.sum(dim=1), torch.ones(len(t["labels"])))
    assert adapter.logit_scale_ == LOGIT_SCALE


def test_cache_overrides_zero_shot_for_a_cached_query() -> None:
    t = make_task(seed=2)
    query = t["keys"][:1]
    zs_pred = int((query @ t["zs"].T).argmax())
    wrong_label = (zs_pred + 1) % t["zs"].shape[0]
    labels = t["labels"].clone()
    labels[0] = wrong_label  # the cache says something the zero-shot classifier does not
    zero_shot = TipAdapter(alpha=0.0).fit(t["keys"], labels, t["zs"], LOGIT_SCALE)
    assert int(zero_shot.predict(query)) == zs_pred != wrong_label
    adapter = TipAdapter(alpha=1000.0, beta=1000.0).fit(t["keys"], labels, t["zs"], LOGIT_SCALE)
    assert int(adapter.predict(query)) == wrong_label


def test_score_and_input_validation() -> None:
    t = make_task()
    adapter = TipAdapter()
    with pytest.raises(ValueError, match="fit"):
        adapter.predict(t["val_x"])
    with pytest.raises(ValueError, match="normalise"):
        adapter.fit(2 * t["keys"], t["labels"], t["zs"], LOGIT_SCALE)
    with pytest.raises(ValueError, match=r"\[0, 5\)"):
        adapter.fit(t["keys"], t["labels"] + 1, t["zs"], LOGIT_SCALE)
    with pytest.raises(ValueError, match="feature dim"):
        adapter.fit(t["keys"][:, :16], t["labels"], t["zs"], LOGIT_SCALE)
    with pytest.raises(ValueError, match="logit_scale"):
        adapter.fit(t["keys"], t["labels"], t["zs"], -1.0)
    with pytest.raises(ValueError, match="beta"):
        TipAdapter(beta=-1.0).fit(t["keys"], t["labels"], t["zs"], LOGIT_SCALE)
    adapter.fit(t["keys"], t["labels"], t["zs"], torch.tensor(LOGIT_SCALE))
    acc = adapter.score(t["val_x"], t["val_y"])
    assert acc == pytest.approx(float((adapter.predict(t["val_x"]) == t["val_y"]).float().mean()))


# ------------------------------------------------------------------ grid search
def test_search_picks_a_clearly_better_setting() -> None:
    t = make_task(bad_zero_shot=True, seed=3)
    # zero-shot logits span ~logit_scale, so the cache needs a large alpha to override them
    alphas, betas = (0.0, 500.0), (1.0, 5.0)
    a, b, grid = search_alpha_beta(
        TipAdapter,
        t["keys"],
        t["labels"],
        t["val_x"],
        t["val_y"],
        t["zs"],
        LOGIT_SCALE,
        alphas,
        betas,
    )
    assert grid.shape == (2, 2)
    assert a in alphas and b in betas
    assert a == 500.0
    # alpha = 0 is the (deliberately wrong) zero-shot classifier
    assert grid[0].max() < 0.2 < 0.8 < grid.max()
    i, j = alphas.index(a), betas.index(b)
    assert grid[i, j] == grid.max()
    # grid values are the actual validation accuracies
    acc = TipAdapter(alpha=a, beta=b).fit(t["keys"], t["labels"], t["zs"], LOGIT_SCALE)
    assert acc.score(t["val_x"], t["val_y"]) == pytest.approx(grid[i, j])


class _SpyAdapter(TipAdapter):
    """Constant predictor that records exactly which tensors it was given."""

    calls: ClassVar[list[tuple[str, object]]] = []

    def fit(self, keys, labels, zs_weights, logit_scale):  # type: ignore[override]
        _SpyAdapter.calls.append(("fit", (keys, labels, zs_weights, logit_scale)))
        return super().fit(keys, labels, zs_weights, logit_scale)

    def predict(self, features):  # type: ignore[override]
        _SpyAdapter.calls.append(("predict", features))
        return torch.zeros(features.shape[0], dtype=torch.long)


def test_search_uses_only_given_data_and_breaks_ties_deterministically() -> None:
    t = make_task(seed=4)
    _SpyAdapter.calls = []
    alphas, betas = (3.0, 1.0, 2.0), (7.0, 0.5)
    a, b, grid = search_alpha_beta(
        _SpyAdapter,
        t["keys"],
        t["labels"],
        t["val_x"],
        t["val_y"],
        t["zs"],
        LOGIT_SCALE,
        alphas,
        betas,
    )
    # a constant predictor makes every cell tie: the first cell wins
    assert (a, b) == (3.0, 7.0)
    assert np.all(grid == grid[0, 0])
    assert grid[0, 0] == pytest.approx(float((t["val_y"] == 0).float().mean()))
    fits = [args for kind, args in _SpyAdapter.calls if kind == "fit"]
    preds = [args for kind, args in _SpyAdapter.calls if kind == "predict"]
    assert len(fits) == len(preds) == len(alphas) * len(betas)
    for keys, labels, zs, scale in fits:  # type: ignore[misc]
        assert (
            keys is t["keys"] and labels is t["labels"] and zs is t["zs"] and scale == LOGIT_SCALE
        )
    for features in preds:
        assert torch.equal(features, t["val_x"])  # only the validation split is ever scored


def test_search_tie_break_first_max_on_real_adapter() -> None:
    t = make_task(seed=5)
    # alpha = 0 for every beta gives identical (zero-shot) accuracies: the first beta must win
    a, b, grid = search_alpha_beta(
        TipAdapter,
        t["keys"],
        t["labels"],
        t["val_x"],
        t["val_y"],
        t["zs"],
        LOGIT_SCALE,
        (0.0,),
        BETAS,
    )
    assert a == 0.0 and b == BETAS[0]
    assert np.all(grid == grid[0, 0])
    with pytest.raises(ValueError, match="non-empty"):
        search_alpha_beta(
            TipAdapter,
            t["keys"],
            t["labels"],
            t["val_x"],
            t["val_y"],
            t["zs"],
            LOGIT_SCALE,
            (),
            BETAS,
        )


def test_default_grids_are_exported() -> None:
    assert len(ALPHAS) >= 3 and len(BETAS) >= 3
    assert all(a > 0 for a in ALPHAS) and all(b > 0 for b in BETAS)


# ----------------------------------------------------------------- TipAdapter-F
def _full_train_loss(adapter: TipAdapter, keys: torch.Tensor, t: dict[str, torch.Tensor]) -> float:
    logits = adapter._logits_with_keys(t["keys"], keys)
    return float(F.cross_entropy(logits, t["labels"]))


def test_tip_adapter_f_lowers_train_loss() -> None:
    t = make_task(seed=6, bad_zero_shot=True, shots=8)
    adapter = TipAdapterF(alpha=2.0, beta=2.0, lr=1e-2, epochs=8, batch_size=8, seed=0)
    adapter.fit(t["keys"], t["labels"], t["zs"], LOGIT_SCALE)
    before = _full_train_loss(adapter, adapter.init_keys_, t)
    after = _full_train_loss(adapter, adapter.keys_, t)
    assert after < 0.8 * before
    assert adapter.train_loss_curve_[-1] < adapter.train_loss_curve_[0]
    assert adapter.val_curve_ is None
    assert adapter.best_epoch_ == adapter.epochs - 1
    assert len(adapter.keys_history_) == adapter.epochs
    assert torch.equal(adapter.keys_, adapter.keys_history_[-1])
    assert not torch.equal(adapter.keys_, adapter.init_keys_)


def test_tip_adapter_f_selects_best_val_epoch() -> None:
    # noisy clusters + a noisy text classifier: the cache overfits after a few epochs
    t = make_task(seed=1, shots=4, noise=3.0, n_val=100)
    g = torch.Generator().manual_seed(1)
    zs = F.normalize(t["zs"] + 0.25 * torch.randn(t["zs"].shape, generator=g), dim=-1)
    adapter = TipAdapterF(alpha=5.0, beta=3.0, lr=5e-2, epochs=10, batch_size=4, seed=1)
    adapter.fit(t["keys"], t["labels"], zs, 20.0, t["val_x"], t["val_y"])
    curve = adapter.val_curve_
    assert curve is not None and len(curve) == adapter.epochs
    assert adapter.best_epoch_ == int(np.argmax(curve))  # first maximum
    assert curve[adapter.best_epoch_] > curve[-1]  # the selection actually matters here
    assert torch.equal(adapter.keys_, adapter.keys_history_[adapter.best_epoch_])
    assert adapter.score(t["val_x"], t["val_y"]) == pytest.approx(max(curve))
    # later selection of another epoch from the stored snapshots
    adapter.use_epoch(0)
    assert adapter.score(t["val_x"], t["val_y"]) == pytest.approx(curve[0])
    with pytest.raises(ValueError, match="epoch"):
        adapter.use_epoch(adapter.epochs)
    with pytest.raises(ValueError, match="both"):
        TipAdapterF(epochs=1).fit(t["keys"], t["labels"], t["zs"], LOGIT_SCALE, t["val_x"])


def test_tip_adapter_f_is_deterministic_given_seed() -> None:
    t = make_task(seed=8, shots=8, bad_zero_shot=True)  # a non-zero loss, so keys really move

    def run(seed: int) -> TipAdapterF:
        # moderate alpha: with a huge one every key matches itself and the loss is ~0
        return TipAdapterF(alpha=2.0, beta=2.0, lr=1e-2, epochs=3, batch_size=4, seed=seed).fit(
            t["keys"], t["labels"], t["zs"], LOGIT_SCALE
        )

    a, b, c = run(0), run(0), run(1)
    assert torch.equal(a.keys_, b.keys_)
    assert a.train_loss_curve_ == b.train_loss_curve_
    assert not torch.equal(a.keys_, c.keys_)  # the seed drives the mini-batch order


def test_tip_adapter_f_in_search_and_without_history() -> None:
    t = make_task(seed=9, bad_zero_shot=True)
    factory = partial(TipAdapterF, epochs=2, batch_size=8, keep_history=False)
    a, b, grid = search_alpha_beta(
        factory,
        t["keys"],
        t["labels"],
        t["val_x"],
        t["val_y"],
        t["zs"],
        LOGIT_SCALE,
        (0.0, 500.0),
        (2.0,),
    )
    assert grid.shape == (2, 1) and a == 500.0 and b == 2.0
    assert grid[1, 0] > grid[0, 0]
    adapter = factory(alpha=1.0).fit(t["keys"], t["labels"], t["zs"], LOGIT_SCALE)
    assert adapter.keys_history_ == []
    with pytest.raises(ValueError, match="keep_history"):
        adapter.use_epoch(0)
