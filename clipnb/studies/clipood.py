"""CLIPood experiments: finetune the image tower with CE or MMS, average weights, select on val.

One *trial* finetunes CLIP's image encoder and image projection (text side frozen, as in the
paper) with one loss (cross-entropy, or Margin Metric Softmax with margin ``lambda``), one learning
rate and one number of steps, while several weight averages ride along on the same trajectory: the
raw model, an EMA and Beta Moving Averages for each ``beta`` of the grid (``beta = 1`` is the
uniform average). Every model is then scored on every evaluation set, each against its own class
names' prompts.

A *method* is a loss kind and an average kind (ERM = CE + raw, CLIPood = MMS + BMA, ...). Its
hyper-parameters are the trial settings and ``beta`` that maximise accuracy on the ``val`` set
(built from training domains / base classes only), found on seed 0's grid; the other seeds rerun
only the selected settings.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch

from clipnb.core.evaluation import accuracy, select_on_validation, zero_shot_logits
from clipnb.core.features import SINGLE_TEMPLATE, class_embeddings, encode_images, image_tensors
from clipnb.core.imagesets import ImageSet
from clipnb.core.models import ClipBundle
from clipnb.core.utils import seed_everything
from clipnb.data.domains import harmonic_mean
from clipnb.methods.clipood import (
    BetaMovingAverage,
    ExponentialMovingAverage,
    margin_metric_softmax,
)
from clipnb.methods.finetune import (
    IMAGE_PARTS,
    FinetuneResult,
    LossFn,
    _with_average,
    cross_entropy_loss,
    evaluate_pixels,
    finetune,
)
from clipnb.methods.finetune import prompt_texts as _prompt_texts

#: The template of the paper's prompts (also the zero-shot baseline's).
TEMPLATE = SINGLE_TEMPLATE[0]

#: method -> (loss kind, average kind). "ce": margin 0; "mms": margin > 0.
METHODS: dict[str, tuple[str, str]] = {
    "ERM (CE)": ("ce", "raw"),
    "CE + BMA": ("ce", "bma"),
    "MMS": ("mms", "raw"),
    "CLIPood (MMS + BMA)": ("mms", "bma"),
}
#: The weight-averaging ablation, all on the MMS loss.
ABLATION: dict[str, tuple[str, str]] = {
    "MMS + EMA": ("mms", "ema"),
    "MMS + uniform average": ("mms", "uniform"),
}


def mms_loss(margin: float) -> LossFn:
    """A ``finetune`` loss: Margin Metric Softmax with ``lambda = margin`` and ``tau = 1 / logit_scale``.

    ``margin = 0`` returns finetune's plain cross-entropy (identical by eq. 3).
    """
    if margin == 0:
        return cross_entropy_loss

    def loss(
        image_features: torch.Tensor,
        text_features: torch.Tensor,
        labels: torch.Tensor,
        logit_scale: float,
    ) -> torch.Tensor:
        return margin_metric_softmax(
            image_features, text_features, labels, temperature=1.0 / logit_scale, margin=margin
        )

    return loss


def beta_key(beta: float) -> str:
    return f"bma{beta:g}"


def make_averagers(
    betas: Sequence[float], steps: int, ema_decay: float
) -> dict[str, ExponentialMovingAverage | BetaMovingAverage]:
    """``raw`` (EMA with decay 0 = the latest weights, listed first), ``ema`` and one BMA per beta."""
    out: dict[str, Any] = {
        "raw": ExponentialMovingAverage(decay=0.0),
        "ema": ExponentialMovingAverage(decay=ema_decay),
    }
    for b in betas:
        out[beta_key(b)] = BetaMovingAverage(beta=float(b), total_steps=steps)
    return out


@dataclass(frozen=True)
class TrialConfig:
    """What one finetuning run is: steps, learning rate, MMS margin (0 = CE) and seed."""

    steps: int
    lr: float
    margin: float
    seed: int


@dataclass
class Evaluator:
    """Scores models on named sets, each against its own class names; pixels prepared once."""

    bundle: ClipBundle
    sets: Mapping[str, ImageSet]
    _pixels: dict[str, torch.Tensor] = field(default_factory=dict)

    def pixels(self, name: str) -> torch.Tensor:
        if name not in self._pixels:
            self._pixels[name] = image_tensors(self.bundle, self.sets[name])
        return self._pixels[name]

    def score(self, model: torch.nn.Module, names: Sequence[str] | None = None) -> dict[str, float]:
        """Accuracy (%) of ``model`` on each set (or on ``names`` only)."""
        out = {}
        for name in self.sets if names is None else names:
            split = self.sets[name]
            tokens = self.bundle.tokenize(_prompt_texts(split.class_names, TEMPLATE))
            labels = torch.as_tensor(split.labels)
            out[name] = evaluate_pixels(model, tokens, self.pixels(name), labels)
        return out


def zero_shot(bundle: ClipBundle, split: ImageSet) -> float:
    """Zero-shot accuracy (%) with the paper's single prompt (features from the cache)."""
    weights = class_embeddings(bundle, split.class_names, (TEMPLATE,))
    return accuracy(
        zero_shot_logits(encode_images(bundle, split), weights, bundle.logit_scale), split.labels
    )


def _finetune_image_side(
    bundle: ClipBundle,
    train: ImageSet,
    config: TrialConfig,
    batch_size: int,
    averagers: Mapping[str, Any],
    **evaluation: Any,
) -> FinetuneResult:
    """CLIPood's training: image side only, MMS at ``config.margin``, every average carried along."""
    return finetune(
        bundle,
        IMAGE_PARTS,
        train,
        _prompt_texts(train.class_names, TEMPLATE),
        steps=config.steps,
        lr=config.lr,
        batch_size=batch_size,
        seed=config.seed,
        loss_fn=mms_loss(config.margin),
        averager=averagers,
        **evaluation,
    )


def run_trial(
    bundle: ClipBundle,
    train: ImageSet,
    evaluator: Evaluator,
    config: TrialConfig,
    *,
    betas: Sequence[float],
    ema_decay: float,
    batch_size: int,
    members: Sequence[str] | None = None,
    splits: Sequence[str] | None = None,
) -> list[dict[str, Any]]:
    """Finetune once and score the weight averages on the sets: long-format records.

    ``members`` (keys of :func:`make_averagers`) and ``splits`` (names in the evaluator) restrict
    what is scored; by default everything is.
    """
    seed_everything(config.seed)
    averagers = make_averagers(betas, config.steps, ema_decay)
    if members is not None:
        unknown = set(members) - set(averagers)
        if unknown:
            raise ValueError(
                f"unknown weight averages {sorted(unknown)}; known: {list(averagers)}."
            )
        averagers = {k: v for k, v in averagers.items() if k == "raw" or k in members}
    result = _finetune_image_side(bundle, train, config, batch_size, averagers)
    raw = result.bundle.model  # the first averager: the latest weights
    scratch = None  # one copy whose trainable weights each average overwrites in turn
    records = []
    for key, avg in averagers.items():
        if members is not None and key not in members:
            continue
        if key == "raw":
            model = raw
        else:
            if scratch is None:
                scratch = _with_average(raw, avg)
            else:
                scratch.load_state_dict(avg.state_dict(), strict=False)
            model = scratch
        for split, acc in evaluator.score(model, splits).items():
            records.append({**config.__dict__, "member": key, "split": split, "accuracy": acc})
    return records


def method_candidates(
    kind: tuple[str, str], configs: Sequence[TrialConfig], betas: Sequence[float]
) -> list[tuple[TrialConfig, str]]:
    """The (trial, weight average) pairs a method may pick from."""
    loss, average = kind
    members = {
        "raw": ["raw"],
        "ema": ["ema"],
        "bma": [beta_key(b) for b in betas],
        "uniform": [beta_key(1.0)] if 1.0 in [float(b) for b in betas] else [],
    }[average]
    keep = [c for c in configs if (c.margin == 0) == (loss == "ce")]
    return [(c, m) for c in keep for m in members]


@dataclass
class Experiment:
    """A grid on seed 0, the selected settings per method, and every method's scores per seed."""

    grid: pd.DataFrame
    selected: dict[str, tuple[TrialConfig, str]]
    results: pd.DataFrame
    trials_run: int


def run_experiment(
    bundle: ClipBundle,
    train: ImageSet | Callable[[int], ImageSet],
    eval_sets: Mapping[str, ImageSet],
    *,
    seeds: Sequence[int],
    steps: Sequence[int],
    lrs: Sequence[float],
    margins: Sequence[float],
    betas: Sequence[float],
    ema_decay: float,
    batch_size: int,
    methods: Mapping[str, tuple[str, str]] | None = None,
    selection_split: str = "val",
    progress: bool = True,
) -> Experiment:
    """Grid on ``seeds[0]``, selection on ``selection_split``, then the selected settings per seed.

    ``train`` is a set or a function ``seed -> set`` (few-shot draws). ``eval_sets`` must contain
    ``selection_split``; the others (test sets) are only reported: ``results`` holds their rows
    (method, seed, split, accuracy and the selected settings). The other seeds rerun only the
    selected settings and score only the averages and sets the methods report.
    """
    from tqdm.auto import tqdm

    methods = dict(methods or {**METHODS, **ABLATION})
    if selection_split not in eval_sets:
        raise ValueError(f"eval_sets must contain the selection split {selection_split!r}.")
    if not any(m == 0 for m in margins) or not any(m > 0 for m in margins):
        raise ValueError(f"margins needs 0 (CE) and at least one value > 0 (MMS), got {margins}.")
    train_for = train if callable(train) else (lambda _seed: train)
    evaluator = Evaluator(bundle, eval_sets)
    done: dict[TrialConfig, list[dict[str, Any]]] = {}

    grid_configs = [
        TrialConfig(int(t), float(lr), float(m), int(seeds[0]))
        for t, lr, m in itertools.product(steps, lrs, margins)
    ]

    def trial(config: TrialConfig, **subset: Any) -> list[dict[str, Any]]:
        return run_trial(
            bundle,
            train_for(config.seed),
            evaluator,
            config,
            betas=betas,
            ema_decay=ema_decay,
            batch_size=batch_size,
            **subset,
        )

    for config in tqdm(grid_configs, desc="grid (seed 0)", disable=not progress, leave=False):
        done[config] = trial(config)
    grid = pd.DataFrame([r for c in grid_configs for r in done[c]])
    scores = grid.set_index(["steps", "lr", "margin", "member", "split"])["accuracy"]

    selected = {}
    for method, kind in methods.items():
        candidates = method_candidates(kind, grid_configs, betas)
        if not candidates:
            continue
        best, _ = select_on_validation(
            candidates,
            lambda cm: scores[(cm[0].steps, cm[0].lr, cm[0].margin, cm[1], selection_split)],
        )
        selected[method] = best

    # Other seeds: only the selected settings, only the averages they use, only the report sets.
    needed: dict[tuple[int, float, float], set[str]] = {}
    for config, member in selected.values():
        needed.setdefault((config.steps, config.lr, config.margin), set()).add(member)
    report = [name for name in eval_sets if name != selection_split]
    extra = [
        (TrialConfig(t, lr, m, int(s)), sorted(members))
        for s in seeds[1:]
        for (t, lr, m), members in needed.items()
    ]
    for config, members in tqdm(
        extra, desc="selected settings, other seeds", disable=not progress, leave=False
    ):
        done[config] = trial(config, members=members, splits=report)

    rows = []
    for method, (config, member) in selected.items():
        for s in seeds:
            for r in done[TrialConfig(config.steps, config.lr, config.margin, int(s))]:
                if r["member"] == member and r["split"] in report:
                    rows.append({"method": method, **r})
    return Experiment(grid, selected, pd.DataFrame(rows), trials_run=len(done))


def trajectory(
    bundle: ClipBundle,
    train: ImageSet,
    eval_sets: Mapping[str, ImageSet],
    config: TrialConfig,
    *,
    beta: float,
    ema_decay: float,
    batch_size: int,
    every: int,
) -> pd.DataFrame:
    """Accuracy on each of ``eval_sets`` every ``every`` steps: the raw model, its EMA and its BMA.

    The sets must share the training classes. Step 0 is the pretrained model (all three
    coincide). Columns: step, model, split, accuracy.
    """
    seed_everything(config.seed)
    averagers = {
        "EMA": ExponentialMovingAverage(decay=ema_decay),
        "BMA": BetaMovingAverage(beta=beta, total_steps=config.steps),
    }
    result = _finetune_image_side(
        bundle, train, config, batch_size, averagers, eval_sets=dict(eval_sets), eval_every=every
    )
    rows = [
        {"step": 0, "model": m, "split": name, "accuracy": acc}
        for name, acc in Evaluator(bundle, eval_sets).score(bundle.model).items()
        for m in ("raw", *averagers)
    ]
    for step, scores in result.evals:
        for name in eval_sets:
            rows.append({"step": step, "model": "raw", "split": name, "accuracy": scores[name]})
            rows += [
                {"step": step, "model": k, "split": name, "accuracy": scores[f"{name}/{k}"]}
                for k in averagers
            ]
    return pd.DataFrame(rows)


# --- reading the seed-0 grid -----------------------------------------------------------------------


def member_beta(member: str, default: float) -> float:
    """The ``beta`` of a BMA member key (``"bma0.5"`` -> 0.5); ``default`` for other members."""
    return float(member[3:]) if member.startswith("bma") else float(default)


def _at(grid: pd.DataFrame, config: TrialConfig, margin: bool = True) -> pd.DataFrame:
    keep = (grid["steps"] == config.steps) & (grid["lr"] == config.lr)
    if margin:
        keep &= grid["margin"] == config.margin
    return grid[keep]


def lambda_sweep(grid: pd.DataFrame, config: TrialConfig, member: str) -> pd.DataFrame:
    """Accuracy against the margin at ``config``'s steps and lr: the raw model and ``member``.

    Columns: margin, model (``raw`` or ``BMA``), split, accuracy.
    """
    rows = _at(grid, config, margin=False)
    rows = rows[rows["member"].isin(["raw", member])]
    return rows.assign(model=np.where(rows["member"] == "raw", "raw", "BMA"))[
        ["margin", "model", "split", "accuracy"]
    ]


def beta_sweep(grid: pd.DataFrame, config: TrialConfig) -> pd.DataFrame:
    """Accuracy of every BMA member against ``beta`` at ``config``. Columns: beta, split, accuracy."""
    rows = _at(grid, config)
    rows = rows[rows["member"].str.startswith("bma")]
    return rows.assign(beta=[member_beta(m, 0.0) for m in rows["member"]])[
        ["beta", "split", "accuracy"]
    ]


def average_references(grid: pd.DataFrame, config: TrialConfig) -> pd.DataFrame:
    """The raw model and the EMA at ``config``. Columns: model (``raw``/``EMA``), split, accuracy."""
    rows = _at(grid, config)
    rows = rows[rows["member"].isin(["raw", "ema"])]
    return rows.assign(model=rows["member"].map({"raw": "raw", "ema": "EMA"}))[
        ["model", "split", "accuracy"]
    ]


def with_harmonic_mean(records: pd.DataFrame, by: Sequence[str]) -> pd.DataFrame:
    """``records`` plus one ``split = "H"`` row per group: the harmonic mean of base and new."""
    wide = records.pivot_table(index=list(by), columns="split", values="accuracy", sort=False)
    missing = {"base", "new"} - set(wide.columns)
    if missing:
        raise ValueError(f"records need 'base' and 'new' splits, missing {sorted(missing)}.")
    h = [harmonic_mean(b, n) for b, n in zip(wide["base"], wide["new"], strict=True)]
    extra = wide.index.to_frame(index=False).assign(split="H", accuracy=h)
    return pd.concat([records, extra], ignore_index=True)


def settings_table(selected: Mapping[str, Mapping[str, tuple[TrialConfig, str]]]) -> pd.DataFrame:
    """Chosen settings as short labels: rows = methods, columns = the keys of ``selected``.

    A label reads ``lambda · average · lr · steps``, e.g. ``λ=0.3 · bma0.5 · lr=1e-04 · 20 steps``.
    """
    return pd.DataFrame(
        {
            column: {
                method: f"λ={c.margin:g} · {member} · lr={c.lr:.0e} · {c.steps} steps"
                for method, (c, member) in per_method.items()
            }
            for column, per_method in selected.items()
        }
    )


def selected_scores(
    grid: pd.DataFrame, selected: Mapping[str, tuple[TrialConfig, str]], split: str = "val"
) -> pd.Series:
    """Each method's seed-0 accuracy on ``split`` at the settings it chose (indexed by method)."""
    scores = grid.set_index(["steps", "lr", "margin", "member", "split"])["accuracy"]
    return pd.Series(
        {
            method: float(scores[(c.steps, c.lr, c.margin, member, split)])
            for method, (c, member) in selected.items()
        },
        name=split,
    )
