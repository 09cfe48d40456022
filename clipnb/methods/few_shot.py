"""Few-shot comparisons on cached features: every method at k shots, one protocol.

A *method* is a function that receives a :class:`FewShotProblem` (the k-shot train features, the
validation split and the zero-shot classifier, never the test split), chooses its own
hyper-parameters and epochs on the validation split, and returns a :class:`Fitted` predictor.
:func:`run_few_shot` draws the k-shot sets with :func:`clipnb.core.imagesets.few_shot_indices` (so they are the
same images as :func:`clipnb.few_shot` would draw), fits every method at every (shots, seed) and reads
the test split once per final number.

Example::

    task = load_feature_task(bundle, "digits")
    methods = {"zero-shot": zero_shot_method(), "Tip-Adapter": tip_adapter_method()}
    records = run_few_shot(task, methods, shots=[1, 2, 4], seeds=[0, 1, 2])
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

from clipnb.core import executor
from clipnb.core.evaluation import PROBE_CS, accuracy, fit_linear_probe, select_on_validation
from clipnb.core.features import SINGLE_TEMPLATE, SplitFeatures, class_embeddings, encode_dataset
from clipnb.core.imagesets import few_shot_indices
from clipnb.core.models import ClipBundle
from clipnb.core.utils import array_hash, seed_everything, stable_hash
from clipnb.data.registry import load_dataset
from clipnb.methods.heads import LinearHead, train_head
from clipnb.methods.saliency import CamSetting
from clipnb.methods.tip_adapter import TipAdapter, TipAdapterF, search_alpha_beta

__all__ = [
    "ALPHA_FRACTIONS",
    "TIP_BETAS",
    "FeatureTask",
    "FewShotProblem",
    "Fitted",
    "cams_over_shots",
    "few_shot_problem",
    "head_method",
    "linear_probe_method",
    "load_feature_task",
    "run_few_shot",
    "tip_adapter_f_method",
    "tip_adapter_method",
    "zero_shot_method",
]

#: Tip-Adapter's residual ratio alpha as a fraction of the logit scale: alpha = f * logit_scale.
#: The zero-shot logits are ``logit_scale * cos``, so the cache term only competes with them when
#: alpha is on that scale; with real CLIP (logit scale 100) the paper's alpha ~ 1 is f = 0.01.
#: ``0`` (pure zero-shot) is in the grid, so validation can decline the cache; at the top the cache
#: outweighs the prompts (a soft nearest-neighbour classifier).
ALPHA_FRACTIONS: tuple[float, ...] = (0.0, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0)
#: Tip-Adapter's affinity sharpness beta (the paper searches roughly 0.1..10; small models with
#: crowded feature spaces need sharper affinities, so the grid goes further).
TIP_BETAS: tuple[float, ...] = (0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0)


@dataclass
class FeatureTask:
    """A dataset as cached, normalised features plus its zero-shot classifier."""

    name: str
    train: SplitFeatures
    val: SplitFeatures
    test: SplitFeatures
    class_weights: Tensor
    logit_scale: float

    @property
    def class_names(self) -> list[str]:
        return self.train.class_names

    def fingerprint(self) -> str:
        """A hash of the features and the zero-shot head (what the trials' results depend on)."""
        tensors = [self.train.x, self.train.y, self.val.x, self.val.y, self.test.x, self.test.y]
        tensors.append(self.class_weights)
        return stable_hash(
            [[array_hash(t.detach().cpu().numpy()) for t in tensors], self.logit_scale]
        )


def load_feature_task(
    bundle: ClipBundle,
    name: str,
    templates: Sequence[str] = SINGLE_TEMPLATE,
    **options: Any,
) -> FeatureTask:
    """Load a registered dataset, encode its splits (feature cache) and its class prompts."""
    data = load_dataset(name, **options)
    feats = encode_dataset(bundle, data)
    return FeatureTask(
        name=name,
        train=feats["train"],
        val=feats["val"],
        test=feats["test"],
        class_weights=class_embeddings(bundle, data.class_names, templates),
        logit_scale=bundle.logit_scale,
    )


@dataclass(frozen=True)
class FewShotProblem:
    """What a method may see: k-shot train features, the validation split, the zero-shot head.

    There is deliberately no test split here: every choice a method makes is made on ``val``.
    """

    train: SplitFeatures
    val: SplitFeatures
    class_weights: Tensor
    logit_scale: float
    shots: int
    seed: int

    @property
    def n_classes(self) -> int:
        return int(self.class_weights.shape[0])


#: ``features [N, D] -> logits [N, C]``
Predictor = Callable[[Tensor], Tensor]


@dataclass
class Fitted:
    """A fitted method: its predictor, what it chose on validation, and the fitted object."""

    predict: Predictor
    info: dict[str, float] = field(default_factory=dict)
    model: Any = None


Method = Callable[[FewShotProblem], Fitted]


def few_shot_problem(task: FeatureTask, shots: int, seed: int) -> FewShotProblem:
    """The k-shot problem of ``task`` for one seed (the same draw as :func:`clipnb.few_shot`)."""
    idx = torch.as_tensor(
        few_shot_indices(task.train.y.numpy(), shots, seed, task.train.class_names)
    )
    train = SplitFeatures(task.train.x[idx], task.train.y[idx], task.train.class_names)
    return FewShotProblem(train, task.val, task.class_weights, task.logit_scale, shots, seed)


def few_shot_trial(
    spec: dict[str, Any], shared: tuple[FeatureTask, Mapping[str, Method]]
) -> list[dict[str, Any]]:
    """Every method fitted on one (shots, seed) draw and scored once on the test split."""
    task, methods = shared
    k, seed = int(spec["shots"]), int(spec["seed"])
    problem = few_shot_problem(task, k, seed)
    records = []
    for name, method in methods.items():
        seed_everything(seed)
        fitted = method(problem)
        with torch.no_grad():
            acc = accuracy(fitted.predict(task.test.x), task.test.y)
        records.append(
            {"dataset": task.name, "method": name, "shots": k, "seed": seed, "accuracy": acc}
            | fitted.info
        )
    return records


def run_few_shot(
    task: FeatureTask,
    methods: Mapping[str, Method],
    shots: Sequence[int],
    seeds: Sequence[int],
    progress: bool = True,
) -> list[dict[str, Any]]:
    """Fit every method at every (shots, seed) and score it once on the test split.

    Each (shots, seed) is a trial of :func:`clipnb.core.executor.map_trials` (in this process, or
    a Ray task with the task's features in the object store). Returns long-format records:
    ``dataset, method, shots, seed, accuracy`` (test, %) plus what each method chose on
    validation (its ``info``), ready for :func:`clipnb.core.report.mean_std_table`.
    """
    if not methods:
        raise ValueError("methods is empty; pass e.g. {'zero-shot': zero_shot_method()}.")
    specs = [{"shots": int(k), "seed": int(s)} for k, s in itertools.product(shots, seeds)]
    runs = executor.map_trials(
        few_shot_trial,
        specs,
        (task, dict(methods)),
        desc=f"few-shot {task.name}",
        progress=progress,
        journal=[task.name, task.fingerprint(), list(methods)],
    )
    return [r for run in runs for r in run]


# --------------------------------------------------------------------------------- methods


def zero_shot_method() -> Method:
    """Zero-shot CLIP: ``logit_scale * f W^T``; ignores the few-shot examples."""

    def fit(p: FewShotProblem) -> Fitted:
        w, s = p.class_weights, p.logit_scale

        def predict(x: Tensor) -> Tensor:
            return s * x @ w.T

        return Fitted(predict, {"val_accuracy": accuracy(predict(p.val.x), p.val.y)})

    return fit


def linear_probe_method(Cs: Sequence[float] = PROBE_CS, max_iter: int = 1000) -> Method:
    """Logistic regression on the k-shot features, C chosen on validation."""

    def fit(p: FewShotProblem) -> Fitted:
        probe = fit_linear_probe(
            p.train.x, p.train.y.numpy(), p.val.x, p.val.y.numpy(), Cs, max_iter
        )

        def predict(x: Tensor) -> Tensor:
            return torch.as_tensor(probe.classifier.predict_proba(np.asarray(x)))

        return Fitted(predict, {"C": probe.C, "val_accuracy": max(probe.val_scores)}, probe)

    return fit


def head_method(
    init: str = "zero_shot",
    epochs: int = 100,
    lr: float | Sequence[float] = 1e-3,
    weight_decay: float = 0.0,
    batch_size: int = 256,
) -> Method:
    """A linear head (zero-shot or random init) trained with Adam; epoch (and lr) chosen on val.

    Uses :class:`clipnb.methods.heads.LinearHead` and :func:`clipnb.methods.heads.train_head` (epoch 0, the
    initial head, is a candidate: a zero-shot-initialised head never falls below zero-shot on val).
    ``lr`` may be a sequence: each is trained and the best validation accuracy wins (first on ties).
    """
    if init not in ("zero_shot", "random"):
        raise ValueError(f"init must be 'zero_shot' or 'random', not {init!r}.")
    lrs = [float(lr)] if isinstance(lr, int | float) else [float(v) for v in lr]
    if not lrs:
        raise ValueError("lr must be a float or a non-empty sequence of floats.")

    def fit(p: FewShotProblem) -> Fitted:
        trained = {}

        def val_score(rate: float) -> float:
            if init == "zero_shot":
                head = LinearHead.zero_shot(p.class_weights, p.logit_scale)
            else:
                head = LinearHead.random(p.class_weights.shape[1], p.n_classes, seed=p.seed)
            trained[rate] = train_head(
                head,
                p.train.x,
                p.train.y,
                p.val.x,
                p.val.y,
                epochs=epochs,
                lr=rate,
                weight_decay=weight_decay,
                batch_size=batch_size,
                seed=p.seed,
            )
            return trained[rate][1].best_val

        best, _ = select_on_validation(lrs, val_score)
        head, record = trained[best]
        head.eval()
        info = {"epoch": float(record.best_epoch), "lr": best, "val_accuracy": record.best_val}
        return Fitted(head, info, head)

    return fit


def tip_adapter_method(
    alpha_fractions: Sequence[float] = ALPHA_FRACTIONS, betas: Sequence[float] = TIP_BETAS
) -> Method:
    """Training-free Tip-Adapter, (alpha, beta) from a grid search on validation.

    alpha is searched as ``alpha_fractions * logit_scale`` (see :data:`ALPHA_FRACTIONS`).
    """

    def fit(p: FewShotProblem) -> Fitted:
        alphas = [f * p.logit_scale for f in alpha_fractions]
        a, b, grid = search_alpha_beta(
            TipAdapter,
            p.train.x,
            p.train.y,
            p.val.x,
            p.val.y,
            p.class_weights,
            p.logit_scale,
            alphas,
            betas,
        )
        adapter = TipAdapter(alpha=a, beta=b).fit(
            p.train.x, p.train.y, p.class_weights, p.logit_scale
        )
        info = {
            "alpha": a,
            "alpha_fraction": a / p.logit_scale,
            "beta": b,
            "val_accuracy": 100.0 * float(grid.max()),
        }
        return Fitted(adapter.forward_logits, info, adapter)

    return fit


def tip_adapter_f_method(
    alpha_fractions: Sequence[float] = ALPHA_FRACTIONS,
    betas: Sequence[float] = TIP_BETAS,
    epochs: int = 20,
    lr: float | Sequence[float] = 1e-3,
    batch_size: int = 256,
) -> Method:
    """Tip-Adapter-F with every choice made on validation.

    As in the paper: (alpha, beta) start from the training-free search, the keys are fine-tuned
    with cross-entropy, and (alpha, beta) are searched again with the fine-tuned keys. The epoch
    whose keys are kept is the best on validation (the original code picked it on test). ``lr``
    may be a sequence, each tried and the best validation accuracy kept: the affinity
    ``exp(-beta (1 - f K^T))`` reacts to a key step in proportion to beta, so the paper's 1e-3
    (set for beta of order 1) is too large for the sharp affinities small models need.
    """
    search_free = tip_adapter_method(alpha_fractions, betas)
    lrs = [float(lr)] if isinstance(lr, int | float) else [float(v) for v in lr]
    if not lrs:
        raise ValueError("lr must be a float or a non-empty sequence of floats.")

    def fit(p: FewShotProblem) -> Fitted:
        start = search_free(p).info
        trained: dict[float, TipAdapterF] = {}

        def val_after_training(rate: float) -> float:
            trained[rate] = TipAdapterF(
                alpha=start["alpha"],
                beta=start["beta"],
                lr=rate,
                epochs=epochs,
                batch_size=batch_size,
                seed=p.seed,
                keep_history=False,
            ).fit(p.train.x, p.train.y, p.class_weights, p.logit_scale, p.val.x, p.val.y)
            return max(trained[rate].val_curve_ or [0.0])

        best_lr, _ = select_on_validation(lrs, val_after_training)
        adapter = trained[best_lr]
        pairs = [(f * p.logit_scale, b) for f in alpha_fractions for b in betas]

        def val_score(pair: tuple[float, float]) -> float:
            adapter.alpha, adapter.beta = pair
            return adapter.score(p.val.x, p.val.y)

        (a, b), scores = select_on_validation(pairs, val_score)
        adapter.alpha, adapter.beta = a, b
        info = {
            "alpha": a,
            "alpha_fraction": a / p.logit_scale,
            "beta": b,
            "epoch": float(adapter.best_epoch_ + 1),
            "lr": best_lr,
            "val_accuracy": 100.0 * max(scores),
        }
        return Fitted(adapter.forward_logits, info, adapter)

    return fit


# ----------------------------------------------------------------------------- Grad-CAM


def cams_over_shots(
    bundle: ClipBundle,
    task: FeatureTask,
    method: Method,
    shots: Sequence[int],
    seed: int,
    pixels: Tensor,
    classes: Sequence[int],
    setting: CamSetting,
) -> dict[int, np.ndarray]:
    """CAMs ``{shots: [B, H, W]}`` (``setting``'s method and layer) of ``method``'s logits.

    At each shot count the method is fitted on the k-shot draw of ``seed`` (choices on val, as in
    :func:`run_few_shot`) and its predictor, which must be differentiable in the normalised image
    embedding (zero-shot, heads, Tip-Adapter), becomes :class:`clipnb.methods.gradcam.ClipGradCAM`'s
    ``logit_fn``; the map is for ``classes[b]`` on image ``b``.
    """
    from clipnb.methods.gradcam import clip_cams

    maps: dict[int, np.ndarray] = {}
    for k in shots:
        seed_everything(int(seed))
        fitted = method(few_shot_problem(task, int(k), int(seed)))
        maps[int(k)] = clip_cams(
            bundle.model, None, setting, pixels, list(classes), logit_fn=fitted.predict
        )
    return maps
