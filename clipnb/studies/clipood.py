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
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import matplotlib.figure
import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from clipnb.core import executor, report
from clipnb.core.evaluation import accuracy, select_on_validation, zero_shot_logits
from clipnb.core.features import SINGLE_TEMPLATE, class_embeddings, encode_images, image_tensors
from clipnb.core.imagesets import ImageSet, few_shot
from clipnb.core.models import ClipBundle, model_parts
from clipnb.core.utils import seed_everything
from clipnb.data import domains
from clipnb.data.domains import harmonic_mean
from clipnb.data.registry import load_dataset
from clipnb.methods.backbones import load_model
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
from clipnb.studies.verdicts import join_words

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


@dataclass
class TrialInputs:
    """What every trial of an experiment reads (sent to Ray's object store once).

    ``train`` is a set or a function ``seed -> set`` (few-shot draws).
    """

    bundle: ClipBundle
    train: ImageSet | Callable[[int], ImageSet]
    evaluator: Evaluator
    betas: tuple[float, ...]
    ema_decay: float
    batch_size: int


def clipood_trial(spec: dict[str, Any], inputs: TrialInputs) -> list[dict[str, Any]]:
    """:func:`run_trial` of ``spec['config']`` (a :class:`TrialConfig` as a dict), restricted to
    ``spec['members']`` and ``spec['splits']`` when given."""
    config = TrialConfig(**spec["config"])
    train = inputs.train(config.seed) if callable(inputs.train) else inputs.train
    return run_trial(
        inputs.bundle,
        train,
        inputs.evaluator,
        config,
        betas=inputs.betas,
        ema_decay=inputs.ema_decay,
        batch_size=inputs.batch_size,
        members=spec.get("members"),
        splits=spec.get("splits"),
    )


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
    journal_key: Any = None,
) -> Experiment:
    """Grid on ``seeds[0]``, selection on ``selection_split``, then the selected settings per seed.

    Each finetuning run is a trial of :func:`clipnb.core.executor.map_trials`; ``journal_key``
    names the experiment within its study so that finished trials survive a failed one.

    ``train`` is a set or a function ``seed -> set`` (few-shot draws). ``eval_sets`` must contain
    ``selection_split``; the others (test sets) are only reported: ``results`` holds their rows
    (method, seed, split, accuracy and the selected settings). The other seeds rerun only the
    selected settings and score only the averages and sets the methods report.
    """
    methods = dict(methods or {**METHODS, **ABLATION})
    if selection_split not in eval_sets:
        raise ValueError(f"eval_sets must contain the selection split {selection_split!r}.")
    if not any(m == 0 for m in margins) or not any(m > 0 for m in margins):
        raise ValueError(f"margins needs 0 (CE) and at least one value > 0 (MMS), got {margins}.")
    evaluator = Evaluator(bundle, eval_sets)
    for name in eval_sets:  # prepared once here, not in every trial's process
        evaluator.pixels(name)
    inputs = TrialInputs(bundle, train, evaluator, tuple(betas), ema_decay, batch_size)
    # Finished trials are saved only when the caller names the experiment within its study.
    journal = (
        None
        if journal_key is None
        else [journal_key, bundle.fingerprint, {k: v.fingerprint for k, v in eval_sets.items()}]
    )
    done: dict[TrialConfig, list[dict[str, Any]]] = {}

    grid_configs = [
        TrialConfig(int(t), float(lr), float(m), int(seeds[0]))
        for t, lr, m in itertools.product(steps, lrs, margins)
    ]
    grid_runs = executor.map_trials(
        clipood_trial,
        [{"config": c.__dict__} for c in grid_configs],
        inputs,
        desc="grid (seed 0)",
        progress=progress,
        journal=journal,
    )
    done.update(zip(grid_configs, grid_runs, strict=True))
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
    extra_runs = executor.map_trials(
        clipood_trial,
        [{"config": c.__dict__, "members": m, "splits": report} for c, m in extra],
        inputs,
        desc="selected settings, other seeds",
        progress=progress,
        journal=journal,
    )
    done.update(zip((c for c, _ in extra), extra_runs, strict=True))

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


# --- the chapter ---------------------------------------------------------------------------------

CLIPOOD = "CLIPood (MMS + BMA)"
#: The rows of the main table: zero-shot, then the four finetuned methods.
MAIN_METHODS = ["zero-shot", *METHODS]
FINETUNED = list(METHODS)
#: The rows of the averaging ablation, all on the MMS loss.
ABLATION_METHODS = ["MMS", "MMS + EMA", "MMS + uniform average", CLIPOOD]
#: What the BMA changes: each pair is (without, with), on either loss.
BMA_PAIRS = {
    "with cross-entropy": ("ERM (CE)", "CE + BMA"),
    "with the MMS loss": ("MMS", CLIPOOD),
}
#: What the margin loss changes: each pair is (cross-entropy, MMS), without or with the BMA.
MMS_PAIRS = {
    "without the BMA": ("ERM (CE)", "MMS"),
    "with the BMA": ("CE + BMA", CLIPOOD),
}


@dataclass
class ClipoodResults:
    """What the chapter shows: the settings it ran with, every score and the figures' data.

    ``dg`` holds one row per (benchmark, held-out domain, method, seed) on the held-out test set
    (zero-shot has seed -1); ``dg_val`` each method's seed-0 accuracy on the training domains'
    validation split, indexed by (benchmark, held-out); ``dg_grids`` / ``dg_selected`` the seed-0
    grid and the chosen settings per held-out domain; ``curve`` the trajectory of one run;
    ``b2n`` the base-to-new rows, harmonic mean included.
    """

    bundle_name: str
    n_trainable: int
    logit_scale: float
    benchmarks: dict[str, list[str]]  # benchmark -> its domains, in order
    seeds: list[int]
    steps: list[int]
    lrs: list[float]
    margins: list[float]
    betas: list[float]
    ema_decay: float
    batch_size: int
    b2n_datasets: list[str]
    b2n_shots: int
    curve_domain: str
    dg: pd.DataFrame
    dg_val: pd.DataFrame
    dg_selected: dict[tuple[str, str], dict[str, tuple[TrialConfig, str]]]
    dg_train_sizes: dict[tuple[str, str], int]
    ood_top_class_pct: float
    ood_n_classes: int
    curve: pd.DataFrame
    curve_beta: float
    curve_n_classes: int
    b2n: pd.DataFrame
    dg_grids: dict[tuple[str, str], pd.DataFrame] = field(default_factory=dict)
    wall_minutes: float = float("nan")
    cpu_minutes: float = float("nan")

    @property
    def first(self) -> str:
        """The benchmark the prose reads (the world's four styles in the embedded profile)."""
        return next(iter(self.benchmarks))

    @property
    def ood_domain(self) -> str:
        """The held-out domain the prose singles out: ``sketch`` if there is one, else the last."""
        domains = self.benchmarks[self.first]
        return "sketch" if "sketch" in domains else domains[-1]

    @property
    def avg_col(self) -> str:
        return f"{self.first} · average"

    @property
    def ood_col(self) -> str:
        return f"{self.first} · {self.ood_domain}"


def _tuples(options: Mapping[str, Any]) -> dict[str, Any]:
    """Dataset options from the parameters cell (lists) as the loaders take them (tuples)."""
    return {k: tuple(v) if isinstance(v, list) else v for k, v in options.items()}


def _train_draws(base: Any, shots: int) -> Callable[[int], ImageSet]:
    """The training set of each seed: ``shots`` images per class drawn by the seed (all if 0)."""

    def train_for(seed: int) -> ImageSet:
        return few_shot(base.train, shots, seed) if shots else base.train

    return train_for


def _leave_one_domain_out(
    bundle: ClipBundle,
    benchmarks: Sequence[domains.Benchmark],
    options: Mapping[str, Any],
    seeds: Sequence[int],
    grid_settings: Mapping[str, Any],
) -> dict[str, Any]:
    """Zero-shot and :func:`run_experiment` with every domain of every benchmark held out in turn.

    Returns the test ``records``, each method's seed-0 ``val`` accuracy on the training domains,
    and per held-out domain its ``grids``, ``selected`` settings and ``splits``.
    """
    out: dict[str, Any] = {"records": [], "val": [], "grids": {}, "selected": {}, "splits": {}}
    jobs = [(b, d) for b in benchmarks for d in b.domains]
    for bench, held_out in tqdm(jobs, desc="leave one domain out"):
        split = domains.leave_one_domain_out(bench, held_out, **options)
        key = (bench.name, held_out)
        out["splits"][key] = split
        column = {"benchmark": bench.name, "held-out": held_out}
        zs = zero_shot(bundle, split.test)
        out["records"].append({**column, "method": "zero-shot", "seed": -1, "accuracy": zs})
        exp = run_experiment(
            bundle,
            split.train,
            {"val": split.val, "test": split.test},
            seeds=seeds,
            progress=False,
            journal_key=["leave one domain out", bench.name, held_out, split.train.fingerprint],
            **grid_settings,
        )
        out["grids"][key], out["selected"][key] = exp.grid, exp.selected
        out["records"] += [{**column, **r} for r in exp.results.to_dict("records")]
        out["val"].append(
            {
                **column,
                "zero-shot": zero_shot(bundle, split.val),
                **selected_scores(exp.grid, exp.selected, "val").to_dict(),
            }
        )
    return out


def _base_to_new(
    bundle: ClipBundle,
    datasets: Sequence[str],
    world_options: Mapping[str, Any],
    shots: int,
    seeds: Sequence[int],
    grid_settings: Mapping[str, Any],
) -> pd.DataFrame:
    """Zero-shot and the four methods trained on the base classes, tested on base and new.

    Settings are chosen on the base classes' validation split; the new classes are never seen
    before the test. Rows: dataset, method, seed, split (base, new, H), accuracy.
    """
    records = []
    for dataset in tqdm(datasets, desc="base to new"):
        options = world_options if dataset.startswith("world-") else {}
        base, new = domains.base_to_new(load_dataset(dataset, **options))
        for half, test in (("base", base.test), ("new", new.test)):
            records.append(
                {
                    "dataset": dataset,
                    "method": "zero-shot",
                    "seed": -1,
                    "split": half,
                    "accuracy": zero_shot(bundle, test),
                }
            )
        exp = run_experiment(
            bundle,
            _train_draws(base, shots),
            {"val": base.val, "base": base.test, "new": new.test},
            seeds=seeds,
            methods=METHODS,
            progress=False,
            journal_key=["base to new", dataset, base.train.fingerprint, shots],
            **grid_settings,
        )
        records += [{"dataset": dataset, **r} for r in exp.results.to_dict("records")]
    return with_harmonic_mean(pd.DataFrame(records), by=["dataset", "method", "seed"])


def run(
    *,
    profile: str,
    dg_datasets: Sequence[str],
    dg_options: Mapping[str, Any],
    b2n_datasets: Sequence[str],
    b2n_options: Mapping[str, Any],
    b2n_shots: int,
    seeds: Sequence[int],
    steps: Sequence[int],
    lrs: Sequence[float],
    margins: Sequence[float],
    betas: Sequence[float],
    ema_decay: float,
    batch_size: int,
    curve_domain: str,
    curve_points: int,
) -> ClipoodResults:
    """The whole chapter: leave one domain out, one run's trajectory, then base to new.

    Every held-out domain gets its own :func:`run_experiment` (grid and selection on the training
    domains' validation split, then the chosen settings on every seed); the trajectory reruns
    CLIPood's settings for ``curve_domain``; base to new trains on the base classes only. The
    steps run in this order, so the random draws are those of the chapter.
    """
    started = time.perf_counter()
    seed_everything(seeds[0])
    bundle = load_model(profile)
    name, logit_scale = bundle.name, bundle.logit_scale
    n_trainable = sum(p.numel() for part in IMAGE_PARTS for p in model_parts(bundle.model)[part])
    benchmarks = domains.domain_benchmarks(dg_datasets)
    grid_settings = {
        "steps": steps,
        "lrs": lrs,
        "margins": margins,
        "betas": betas,
        "ema_decay": ema_decay,
        "batch_size": batch_size,
    }
    dg = _leave_one_domain_out(bundle, benchmarks, _tuples(dg_options), seeds, grid_settings)
    dg_splits, dg_selected = dg["splits"], dg["selected"]

    first = benchmarks[0]
    ood_domain = "sketch" if "sketch" in first.domains else first.domains[-1]
    ood_test = dg_splits[(first.name, ood_domain)].test
    ood_pred = zero_shot_logits(
        encode_images(bundle, ood_test),
        class_embeddings(bundle, ood_test.class_names, (TEMPLATE,)),
    ).argmax(dim=-1)

    split = dg_splits[(first.name, curve_domain)]
    config, member = dg_selected[(first.name, curve_domain)][CLIPOOD]
    curve = trajectory(
        bundle,
        split.train,
        {"test": split.test, "val": split.val},
        config,
        beta=member_beta(member, default=betas[0]),
        ema_decay=ema_decay,
        batch_size=batch_size,
        every=max(1, config.steps // curve_points),
    )

    b2n = _base_to_new(bundle, b2n_datasets, _tuples(b2n_options), b2n_shots, seeds, grid_settings)
    return ClipoodResults(
        bundle_name=name,
        n_trainable=n_trainable,
        logit_scale=logit_scale,
        benchmarks={b.name: list(b.domains) for b in benchmarks},
        seeds=list(seeds),
        steps=list(steps),
        lrs=list(lrs),
        margins=list(margins),
        betas=list(betas),
        ema_decay=ema_decay,
        batch_size=batch_size,
        b2n_datasets=list(b2n_datasets),
        b2n_shots=b2n_shots,
        curve_domain=curve_domain,
        dg=pd.DataFrame(dg["records"]),
        dg_val=pd.DataFrame(dg["val"]).set_index(["benchmark", "held-out"]),
        dg_selected=dg_selected,
        dg_train_sizes={key: len(s.train) for key, s in dg_splits.items()},
        ood_top_class_pct=100 * np.bincount(ood_pred.numpy()).max() / len(ood_pred),
        ood_n_classes=ood_test.n_classes,
        curve=curve,
        curve_beta=member_beta(member, default=betas[0]),
        curve_n_classes=split.test.n_classes,
        b2n=b2n,
        dg_grids=dg["grids"],
        wall_minutes=(time.perf_counter() - started) / 60,
        cpu_minutes=time.process_time() / 60,
    )


# --- tables --------------------------------------------------------------------------------------


def _dg_seed_averages(results: ClipoodResults) -> pd.DataFrame:
    """Per benchmark, method and seed: the accuracy averaged over the held-out domains."""
    dg = results.dg
    avg = dg.groupby(["benchmark", "method", "seed"], sort=False)["accuracy"].mean().reset_index()
    avg["held-out"] = "average"
    return avg


def dg_all(results: ClipoodResults) -> pd.DataFrame:
    """The held-out rows plus their averages over held-out domains (``held-out = "average"``);
    ``column`` names the table's column (``benchmark · held-out``)."""
    out = pd.concat([results.dg, _dg_seed_averages(results)], ignore_index=True)
    out["column"] = out["benchmark"] + " · " + out["held-out"]
    return out


def dg_means(results: ClipoodResults) -> pd.DataFrame:
    """Mean over seeds of every method (rows) on every held-out column and average (columns)."""
    return report.mean_table(dg_all(results), index="method", columns="column")


def dg_table(results: ClipoodResults) -> pd.DataFrame:
    """Zero-shot and the four finetuned methods on every held-out domain, mean ± std over seeds."""
    rows = dg_all(results)
    return report.mean_std_table(
        rows[rows["method"].isin(MAIN_METHODS)], index="method", columns="column"
    )


def dg_val_table(results: ClipoodResults) -> pd.DataFrame:
    """Seed 0's accuracy on the training domains' validation split at each method's settings."""
    return results.dg_val[["zero-shot", *METHODS]].round(1)


def chosen_settings_table(results: ClipoodResults) -> pd.DataFrame:
    """The settings each method chose on validation, for every held-out domain."""
    return settings_table({f"{b} · {d}": sel for (b, d), sel in results.dg_selected.items()})


def ablation_table(results: ClipoodResults) -> pd.DataFrame:
    """The averaging ablation (all on the MMS loss), mean ± std over seeds."""
    rows = dg_all(results)
    return report.mean_std_table(
        rows[rows["method"].isin(ABLATION_METHODS)], index="method", columns="column"
    ).loc[ABLATION_METHODS]


def _b2n_all(results: ClipoodResults) -> pd.DataFrame:
    """The base-to-new rows plus their average over datasets; ``column`` is ``dataset · split``."""
    b2n = results.b2n
    avg = b2n.groupby(["method", "seed", "split"], sort=False)["accuracy"].mean().reset_index()
    avg["dataset"] = "average"
    out = pd.concat([b2n, avg], ignore_index=True)
    out["column"] = out["dataset"] + " · " + out["split"]
    return out


def b2n_table(results: ClipoodResults) -> pd.DataFrame:
    """Base, new and harmonic mean per dataset and on average, mean ± std over seeds."""
    return report.mean_std_table(_b2n_all(results), index="method", columns="column")


def scale_table(results: ClipoodResults) -> pd.DataFrame:
    """This build's scale beside the source's."""
    r = results
    curve_images = r.dg_train_sizes[(r.first, r.curve_domain)]
    return pd.DataFrame(
        {
            "this build": [
                f"{r.bundle_name} ({r.n_trainable / 1e6:.2f} M trainable)",
                ", ".join(r.benchmarks)
                + f" ({sum(len(d) for d in r.benchmarks.values())} held-out runs)",
                f"{curve_images} images",
                f"{max(r.steps)} steps × {r.batch_size}",
                f"{len(r.steps) * len(r.lrs) * len(r.margins)} runs × {len(r.betas)} β",
                f"{r.wall_minutes:.1f} min wall, {r.cpu_minutes:.1f} min CPU",
            ],
            "source (CLIPood)": [
                "CLIP ViT-B/16 (86 M image tower)",
                "PACS, VLCS, OfficeHome, TerraIncognita, DomainNet",
                "thousands to ~500 k images",
                "thousands of steps",
                "tuned per benchmark",
                "GPU hours",
            ],
        },
        index=[
            "model",
            "benchmarks",
            "training set (one split)",
            "finetuning",
            "grid per held-out domain",
            "wall time",
        ],
    )


# --- what the prose cites ------------------------------------------------------------------------


def _chosen_betas(results: ClipoodResults) -> list[float]:
    """The beta of CLIPood's chosen BMA for every held-out domain (NaN if it chose none)."""
    return [member_beta(sel[CLIPOOD][1], default=np.nan) for sel in results.dg_selected.values()]


def _theta0_weights(results: ClipoodResults) -> dict[str, float]:
    """How much weight (%) each average leaves on the pretrained weights theta_0 after T steps.

    The BMA is read at the beta CLIPood chose most often.
    """
    steps, decay = results.steps[0], results.ema_decay
    bma_beta = pd.Series(_chosen_betas(results)).mode().iloc[0]
    bma = BetaMovingAverage(beta=float(bma_beta), total_steps=steps)
    alphas = np.array([bma.weight(t) for t in range(steps + 1)])
    return {
        "MMS": 0.0,
        "MMS + EMA": 100 * decay**steps,
        "MMS + uniform average": 100 / (steps + 1),
        CLIPOOD: 100 * alphas[0] / alphas.sum(),
    }


def _curve_ends(results: ClipoodResults) -> tuple[pd.Series, float]:
    """Each model's last test accuracy along the trajectory, and the pretrained model's."""
    curve = results.curve
    final = curve[(curve["step"] == curve["step"].max()) & (curve["split"] == "test")]
    start = curve[(curve["step"] == 0) & (curve["split"] == "test")]["accuracy"].iloc[0]
    return final.set_index("model")["accuracy"], start


def numbers(results: ClipoodResults) -> dict[str, float]:
    """Every number the prose glues, by its glue key."""
    r = results
    return {
        "n_trainable_m": r.n_trainable / 1e6,
        "logit_scale": r.logit_scale,
        "n_seeds": len(r.seeds),
        "n_grid": len(r.steps) * len(r.lrs) * len(r.margins),
        "lr_first": r.lrs[0],
        "steps_first": r.steps[0],
        "batch_size": r.batch_size,
        **_dg_numbers(r),
        **_ablation_numbers(r),
        **_curve_numbers(r),
        **_b2n_numbers(r),
    }


def _dg_numbers(results: ClipoodResults) -> dict[str, float]:
    """Leave one domain out: every method on average and on the OOD style, and their gaps."""
    means, avg_col = dg_means(results), results.avg_col
    avg = means[avg_col]
    out = {}
    for key, method in [
        ("zs", "zero-shot"),
        ("erm", "ERM (CE)"),
        ("ce_bma", "CE + BMA"),
        ("mms", "MMS"),
        ("clipood", CLIPOOD),
    ]:
        out[f"dg_{key}_avg"] = means.loc[method, avg_col]
        out[f"dg_{key}_ood"] = means.loc[method, results.ood_col]
    seeds = _dg_seed_averages(results)
    first = seeds[seeds["benchmark"] == results.first]
    clipood_seeds = first[first["method"] == CLIPOOD]["accuracy"].to_numpy()
    erm_seeds = first[first["method"] == "ERM (CE)"]["accuracy"].to_numpy()
    finetuned = first[first["method"].isin(FINETUNED)]
    val = results.dg_val
    return {
        **out,
        "dg_gain_vs_erm": avg[CLIPOOD] - avg["ERM (CE)"],
        "dg_gain_bma_vs_erm": avg["CE + BMA"] - avg["ERM (CE)"],
        "dg_gain_vs_zs": avg[CLIPOOD] - avg["zero-shot"],
        "dg_gain_seeds_min": float(np.min(clipood_seeds - erm_seeds)),
        "dg_bma_gain_mms": avg[CLIPOOD] - avg["MMS"],
        "dg_mms_gain_ce": avg["MMS"] - avg["ERM (CE)"],
        "dg_mms_gain_bma": avg[CLIPOOD] - avg["CE + BMA"],
        "dg_seed_std": finetuned.groupby("method")["accuracy"].std().mean(),
        "ood_top_class_pct": results.ood_top_class_pct,
        "chance": 100 / results.ood_n_classes,
        "dg_val_zs": val["zero-shot"].mean(),
        "dg_val_erm": val["ERM (CE)"].mean(),
        "dg_val_clipood": val[CLIPOOD].mean(),
        "dg_val_best_gain": val[FINETUNED].mean().max() - val["zero-shot"].mean(),
    }


def _ablation_numbers(results: ClipoodResults) -> dict[str, float]:
    """The averaging ablation and the weight each average leaves on theta_0."""
    means, avg_col = dg_means(results), results.avg_col
    theta0 = _theta0_weights(results)
    return {
        "dg_ema_avg": means.loc["MMS + EMA", avg_col],
        "dg_uniform_avg": means.loc["MMS + uniform average", avg_col],
        "ema_decay": results.ema_decay,
        "ema_theta0_pct": 100 * results.ema_decay ** results.steps[0],
        "uniform_theta0_pct": theta0["MMS + uniform average"],
        "bma_theta0_pct": theta0[CLIPOOD],
        "bma_beta": pd.Series(_chosen_betas(results)).mode().iloc[0],
    }


def _curve_numbers(results: ClipoodResults) -> dict[str, float]:
    """Where the raw weights, the EMA and the BMA start, sink and end along one run."""
    final, start = _curve_ends(results)
    test = results.curve[results.curve["split"] == "test"]
    return {
        **{f"curve_final_{m.lower()}": final[m] for m in ("raw", "EMA", "BMA")},
        "curve_start": start,
        "curve_min_raw": test[test["model"] == "raw"]["accuracy"].min(),
        "curve_beta": results.curve_beta,
    }


def _b2n_numbers(results: ClipoodResults) -> dict[str, float]:
    """Base, new and H on average over the datasets, and each method's change from zero-shot."""
    means = report.mean_table(_b2n_all(results), index="method", columns="column")
    out: dict[str, float] = {"b2n_shots": results.b2n_shots}
    for key, method in [("zs", "zero-shot"), ("erm", "ERM (CE)"), ("clipood", CLIPOOD)]:
        for half in ("base", "new", "H"):
            out[f"b2n_{key}_{half.lower()}"] = means.loc[method, f"average · {half}"]
    out["b2n_n_datasets"] = len(results.b2n_datasets)
    base, new = means["average · base"], means["average · new"]
    for key, method in [("erm", "ERM (CE)"), ("clipood", CLIPOOD)]:
        out[f"b2n_{key}_base_delta"] = base[method] - base["zero-shot"]
        out[f"b2n_{key}_new_delta"] = new[method] - new["zero-shot"]
    return out


def effect_words(means: pd.Series, pairs: Mapping[str, tuple[str, str]]) -> str:
    """In which of two settings the second method of each pair beats the first, in words."""
    up = [name for name, (plain, changed) in pairs.items() if means[changed] > means[plain]]
    if len(up) == 1:
        return f"{up[0]} only"
    return "in both settings" if up else "in neither setting"


def verdicts(results: ClipoodResults) -> dict[str, str]:
    """Every computed phrase the prose glues with ``{glue:md}``, by its glue key."""
    return {
        **_dg_verdicts(results),
        **_ablation_verdicts(results),
        **_curve_verdicts(results),
        **_b2n_verdicts(results),
    }


def _dg_verdicts(results: ClipoodResults) -> dict[str, str]:
    """Which finetuned model is best out of distribution, what BMA and MMS add, and whether
    finetuning beats zero-shot at all (on held-out domains and on the training ones)."""
    means = dg_means(results)
    avg = means[results.avg_col]
    best = avg[FINETUNED].idxmax()
    beat_zs = [m for m in FINETUNED if avg[m] > avg["zero-shot"]]
    if not beat_zs:
        vs_zs = "none of the four finetuned models comes out ahead"
    elif len(beat_zs) == len(FINETUNED):
        vs_zs = "all four finetuned models come out ahead"
    else:
        vs_zs = f"only {join_words(beat_zs)} {'comes' if len(beat_zs) == 1 else 'come'} out ahead"
    chance = 100 / results.ood_n_classes
    ood_accs = means.loc[MAIN_METHODS, results.ood_col]
    ood_dev = float((ood_accs - chance).abs().max())
    val = results.dg_val
    val_means = val[FINETUNED].mean()
    val_gain = val_means.max() - val["zero-shot"].mean()
    n_train = results.dg_train_sizes[(results.first, results.ood_domain)]
    return {
        "dg_best_finetuned": f"the best finetuned model is {best}"
        + (", as in the source" if best == CLIPOOD else ", not CLIPood as in the source"),
        "dg_bma_effect": effect_words(avg, BMA_PAIRS),
        "dg_mms_effect": effect_words(avg, MMS_PAIRS),
        "dg_vs_zs_words": vs_zs,
        "dg_erm_story": _erm_story(avg),
        "dg_headline": (
            "does not appear here; what can be compared is how much each method loses"
            if not beat_zs
            else f"appears here for {join_words(beat_zs)}"
        ),
        "ood_verdict": (
            f"every method, finetuned or not, stays within {ood_dev:.1f} points of chance there,"
            " so that style is a floor rather than a test of transfer"
            if ood_dev < 5
            else f"the methods range from {ood_accs.min():.1f} to {ood_accs.max():.1f} % there"
        ),
        "dg_val_best": val_means.idxmax(),
        "dg_val_verdict": (
            f"{results.steps[0]} steps over {n_train} training images barely fit even the styles"
            " the model trains on"
            if val_gain < 10
            else "finetuning does fit the styles it trains on, so the held-out columns measure"
            " transfer"
        ),
    }


def _erm_story(avg: pd.Series) -> str:
    """What plain finetuning costs (or gains) on held-out domains, and what the BMA gives back."""
    erm_loss = avg["zero-shot"] - avg["ERM (CE)"]
    bma_back = avg["CE + BMA"] - avg["ERM (CE)"]
    if erm_loss > 0:
        share = "none" if bma_back <= 0 else "all" if bma_back >= erm_loss else "part"
        return (
            f"plain finetuning (ERM) costs {erm_loss:.1f} points of held-out accuracy, and"
            f" averaging with the pretrained weights (CE + BMA) gives {share} of it back"
        )
    return (
        f"plain finetuning (ERM) gains {-erm_loss:.1f} points of held-out accuracy, and averaging"
        f" with the pretrained weights (CE + BMA) changes that by {bma_back:+.1f}"
    )


def _ablation_verdicts(results: ClipoodResults) -> dict[str, str]:
    """The betas CLIPood chose, and whether held-out accuracy follows the weight on theta_0."""
    betas = _chosen_betas(results)
    theta0 = _theta0_weights(results)
    means, avg_col = dg_means(results), results.avg_col
    by_theta0 = sorted(theta0, key=theta0.get)
    by_accuracy = sorted(theta0, key=lambda m: means.loc[m, avg_col])
    return {
        "clipood_betas": (
            f"β = {betas[0]:g} for every held-out domain"
            if len(set(betas)) == 1
            else "β = " + ", ".join(f"{b:g}" for b in betas) + " for the held-out domains in turn"
        ),
        "ablation_order": "follows" if by_theta0 == by_accuracy else "does not follow",
    }


def _curve_verdicts(results: ClipoodResults) -> dict[str, str]:
    """Which average ends nearest the pretrained model, and the shape of the BMA's weights."""
    final, start = _curve_ends(results)
    closest = (final - start).abs().idxmin()
    beta = results.curve_beta
    return {
        "curve_closest": (
            f"{'the raw weights end' if closest == 'raw' else f'the {closest} ends'} closest to"
            " the pretrained model's accuracy"
        ),
        "curve_bma_shape": "U-shaped" if beta < 1 else "uniform" if beta == 1 else "centre-heavy",
    }


def _b2n_verdicts(results: ClipoodResults) -> dict[str, str]:
    """Does finetuning raise the base classes, and does CLIPood keep the new ones."""
    means = report.mean_table(_b2n_all(results), index="method", columns="column")
    base, new, h = (means[f"average · {half}"] for half in ("base", "new", "H"))
    clipood_new = new[CLIPOOD]
    if clipood_new >= new["zero-shot"]:
        words = "CLIPood keeps the new classes at or above zero-shot"
    else:
        words = "CLIPood's new-class accuracy stays below zero-shot's"
    words += " and above ERM's" if clipood_new > new["ERM (CE)"] else " and does not exceed ERM's"
    return {
        "b2n_erm_base_verdict": (
            "plain finetuning raises the base classes it trains on, as in the source"
            if base["ERM (CE)"] > base["zero-shot"]
            else "plain finetuning lowers even the base classes it trains on"
        ),
        "b2n_clipood_new_verdict": words,
        "b2n_bma_effect": effect_words(h, BMA_PAIRS),
    }


# --- figures -------------------------------------------------------------------------------------


def sweep_frames(results: ClipoodResults) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Seed 0's grid at CLIPood's chosen settings, mean over held-out domains: accuracy against
    lambda (raw and BMA), against beta (BMA), and the raw model and EMA (columns: splits)."""
    lam_rows, beta_rows = [], []
    for key, grid in results.dg_grids.items():
        config, member = results.dg_selected[key][CLIPOOD]
        lam_rows.append(lambda_sweep(grid, config, member).assign(domain=key[1]))
        beta_rows.append(beta_sweep(grid, config).assign(domain=key[1]))
    lam = pd.concat(lam_rows).groupby(["margin", "model", "split"])["accuracy"].mean()
    beta = pd.concat(beta_rows).groupby(["beta", "split"])["accuracy"].mean()
    refs = (
        pd.concat(
            average_references(grid, results.dg_selected[key][CLIPOOD][0])
            for key, grid in results.dg_grids.items()
        )
        .groupby(["model", "split"])["accuracy"]
        .mean()
    )
    return lam.unstack("split"), beta.unstack("split"), refs.unstack("split")


def sweeps_figure(results: ClipoodResults) -> matplotlib.figure.Figure:
    """Accuracy against lambda (raw and BMA) and against beta (BMA, with the raw model and EMA)."""
    import matplotlib.pyplot as plt

    lam, beta, refs = sweep_frames(results)
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    ax = axes[0]
    for (model, style), colour in zip([("raw", "--"), ("BMA", "-")], ["C0", "C3"], strict=True):
        part = lam.xs(model, level="model")
        ax.plot(
            part.index,
            part["test"],
            style,
            marker="o",
            color=colour,
            label=f"{model}, held-out test",
        )
        ax.plot(
            part.index,
            part["val"],
            style,
            marker="x",
            color=colour,
            alpha=0.45,
            label=f"{model}, training-domain val",
        )
    ax.set(
        xlabel="margin weight $\\lambda$ (0 = cross-entropy)",
        ylabel="accuracy (%)",
        title="Accuracy vs $\\lambda$",
    )
    ax.legend(fontsize=8)
    ax = axes[1]
    ax.plot(beta.index, beta["test"], "-o", color="C3", label="BMA, held-out test")
    ax.plot(beta.index, beta["val"], "-x", color="C3", alpha=0.45, label="BMA, training-domain val")
    for model, colour in [("raw", "C0"), ("EMA", "C2")]:
        ax.axhline(refs.loc[model, "test"], ls="--", color=colour, label=f"{model}, held-out test")
    ax.set_xscale("log")
    ax.set_xticks(beta.index, [f"{b:g}" for b in beta.index])
    ax.set_xticks([], minor=True)
    ax.set(
        xlabel="$\\beta$ (1 = uniform average)", ylabel="accuracy (%)", title="Accuracy vs $\\beta$"
    )
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def steps_figure(results: ClipoodResults) -> matplotlib.figure.Figure:
    """Accuracy along one CLIPood run: raw weights, EMA and BMA, held-out test and training val."""
    import matplotlib.pyplot as plt

    curve = results.curve
    fig, ax = plt.subplots(figsize=(7, 4))
    for (model, colour), (split_name, style) in itertools.product(
        [("raw", "C0"), ("EMA", "C2"), ("BMA", "C3")],
        [("test", "-o"), ("val", "--x")],
    ):
        part = curve[(curve["model"] == model) & (curve["split"] == split_name)]
        where = (
            f"held-out {results.curve_domain}" if split_name == "test" else "training-domain val"
        )
        ax.plot(part["step"], part["accuracy"], style, color=colour, label=f"{model}, {where}")
    ax.axhline(100 / results.curve_n_classes, ls=":", color="grey", label="chance")
    ax.set(
        xlabel="finetuning step",
        ylabel="accuracy (%)",
        title="Raw weights, EMA and BMA along one run",
    )
    ax.legend(fontsize=8, ncol=2)
    fig.tight_layout()
    return fig


def figures(results: ClipoodResults) -> dict[str, matplotlib.figure.Figure]:
    """Every figure of the chapter, by its glue key."""
    return {
        "fig_clipood_sweeps": sweeps_figure(results),
        "fig_clipood_steps": steps_figure(results),
    }
