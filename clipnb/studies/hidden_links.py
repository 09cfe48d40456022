"""Finetune CLIP as a "hateful / not hateful" classifier with per-sample prompts and filled links.

The classifier is CLIP's own zero-shot head with two candidate prompts per meme: with the caption
inside the prompt ("this photo says {caption}, it is (not) hateful") every meme has its own pair;
with shared prompts ("this photo is (not) hateful") all memes share one. For a meme with image
embedding :math:`I` and candidate text embeddings :math:`T_0, T_1` the logits are
:math:`s\\,I\\cdot T_c` and the loss is cross-entropy, on batches of one positive and one negative
meme (the source's setting). Two optional terms fill the hidden links (the source's sections
2.3.1–2.3.2):

* **alignment**: auxiliary emblem images, each paired with a text (its concept's name); the image
  must match "{text}, hateful" rather than "{text}, not hateful";
* **text self-learning**: a frozen copy of the pretrained model provides anchor embeddings of
  "hateful", "positive" and "happy"; the trainable text encoder must classify each chain sentence
  as "hateful" among them, and its own embedding of each anchor word as that word, which keeps
  "hateful" apart from its opposites.

The step (epoch) is chosen on the validation split's AUROC with
:func:`clipnb.core.evaluation.select_on_validation`.

The chapter (``notebooks/06_hidden_links.py``) is :func:`run` (every model it trains and scores),
its tables and figures, :func:`numbers` (every number its prose cites) and :func:`verdicts`
(every phrase its prose computes from them).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import matplotlib.figure
import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from sklearn.metrics import roc_auc_score
from torch import nn
from tqdm.auto import tqdm

from clipnb.core import executor
from clipnb.core.evaluation import accuracy, fit_linear_probe, select_on_validation
from clipnb.core.features import encode_images, encode_texts, image_tensors, text_features
from clipnb.core.imagesets import DatasetSplits, ImageSet
from clipnb.core.models import ClipBundle
from clipnb.core.report import display_images, image_grid, mean_std_table
from clipnb.core.utils import Stopwatch, seed_everything
from clipnb.data import memes
from clipnb.data.registry import load_dataset
from clipnb.methods import saliency
from clipnb.methods.backbones import load_model
from clipnb.methods.finetune import IMAGE_PARTS, TEXT_PARTS, set_trainable
from clipnb.methods.saliency import CamSetting
from clipnb.studies.verdicts import compare, is_are, join_words

#: The source's prompts with the caption inside (index = class: 0 not hateful, 1 hateful).
CAPTION_TEMPLATES: tuple[str, str] = (
    "this photo says {}, it is not hateful",
    "this photo says {}, it is hateful",
)
#: The source's shared prompts.
SHARED_TEMPLATES: tuple[str, str] = ("this photo is not hateful", "this photo is hateful")
#: Candidate texts of an auxiliary alignment image (the source's "Hitler, hateful").
AUX_TEMPLATES: tuple[str, str] = ("{}, not hateful", "{}, hateful")
#: Anchor words of the text self-learning step: the target first, then its contrasts.
ANCHORS: tuple[str, ...] = ("hateful", "positive", "happy")
PROMPT_FAMILIES = {"shared": SHARED_TEMPLATES, "caption": CAPTION_TEMPLATES}


def candidate_texts(
    texts: Sequence[str] | None, n: int, templates: Sequence[str]
) -> list[tuple[str, ...]]:
    """Each sample's candidate prompts: every template filled with the sample's text.

    Templates without ``{}`` (shared prompts) give the same candidates for every sample.
    """
    if texts is None:
        if any("{}" in t for t in templates):
            raise ValueError("these templates need the samples' texts (captions); the set has none")
        texts = [""] * n
    return [tuple(t.format(x) for t in templates) for x in texts]


def pair_batches(labels: np.ndarray, steps: int, seed: int) -> np.ndarray:
    """``[steps, 2]`` indices: one negative then one positive sample per step.

    Each class is visited in a fresh random order per pass (deterministic for a seed).
    """
    labels = np.asarray(labels)
    rng = np.random.default_rng([seed, 0xBA7C])
    columns = []
    for c in (0, 1):
        idx = np.flatnonzero(labels == c)
        if idx.size == 0:
            raise ValueError(
                f"class {c} has no samples: a positive/negative pair sampler needs both"
            )
        passes = -(-steps // idx.size)
        columns.append(np.concatenate([rng.permutation(idx) for _ in range(passes)])[:steps])
    return np.stack(columns, axis=1)


class FrozenReference:
    """A frozen copy of a CLIP model whose text encoder embeds the anchor words once.

    Nothing trains it: every parameter has ``requires_grad=False`` and the anchors are computed
    under ``torch.no_grad`` at construction.
    """

    def __init__(self, bundle: ClipBundle, anchors: Sequence[str] = ANCHORS) -> None:
        self.model = copy.deepcopy(bundle.model).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.words = tuple(anchors)
        with torch.no_grad():
            tokens = bundle.tokenize(list(self.words)).to(_device(self.model))
            self.anchors = F.normalize(text_features(self.model, tokens).float(), dim=-1)


def _device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


@torch.no_grad()
def _encode_text(model: nn.Module, tokens: torch.Tensor, batch: int = 512) -> torch.Tensor:
    """Normalised text embeddings of many token rows, in chunks (no gradient)."""
    chunks = [
        text_features(model, tokens[i : i + batch]).float() for i in range(0, len(tokens), batch)
    ]
    return F.normalize(torch.cat(chunks), dim=-1)


@dataclass
class MemeClassifier:
    """A (possibly finetuned) CLIP with a pair of candidate prompts per sample.

    ``base`` is the pretrained bundle: while the image tower is unchanged, image features come
    from its feature cache.
    """

    bundle: ClipBundle
    templates: tuple[str, ...]
    base: ClipBundle
    image_tower_changed: bool = False

    def image_features(self, split: ImageSet) -> torch.Tensor:
        if self.image_tower_changed:
            return encode_images(self.bundle, split, cache=False)
        return encode_images(self.base, split)

    @torch.no_grad()
    def text_features(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        """Normalised embeddings of distinct strings."""
        unique = sorted(set(texts))
        model = self.bundle.model.eval()
        feats = _encode_text(model, self.bundle.tokenize(unique).to(_device(model))).cpu()
        return dict(zip(unique, feats, strict=True))

    def candidate_features(self, split: ImageSet) -> torch.Tensor:
        """``[N, 2, D]`` embeddings of each sample's candidate prompts."""
        cands = candidate_texts(split.texts, len(split), self.templates)
        table = self.text_features([t for c in cands for t in c])
        return torch.stack([torch.stack([table[t] for t in c]) for c in cands])

    def scores(self, split: ImageSet) -> np.ndarray:
        """Logit of "hateful" minus logit of "not hateful" per sample (> 0: predicted hateful)."""
        img = self.image_features(split)
        text = self.candidate_features(split)
        scale = float(self.bundle.model.logit_scale.exp().item())
        logits = scale * torch.einsum("nd,ncd->nc", img, text)
        return (logits[:, 1] - logits[:, 0]).numpy()

    def cams(self, split: ImageSet, rows: Sequence[int], setting: CamSetting) -> np.ndarray:
        """CAMs ``[len(rows), H, W]`` (``setting``'s method and layer) for class "hateful", with
        each meme's own prompts."""
        from clipnb.methods.gradcam import clip_cams

        rows = [int(r) for r in rows]
        sub = split.subset(rows)
        pixels = image_tensors(self.bundle, sub).to(_device(self.bundle.model))
        text = self.candidate_features(sub)
        out = np.zeros((len(rows), *pixels.shape[-2:]), np.float32)
        keys = [tuple(t.tolist()) for t in text.flatten(1)]  # group memes with the same prompts
        for key in dict.fromkeys(keys):
            members = [i for i, k in enumerate(keys) if k == key]
            out[members] = clip_cams(
                self.bundle.model, text[members[0]], setting, pixels[members], [1] * len(members)
            )
        return out


@torch.no_grad()
def target_share(bundle: ClipBundle, reference: FrozenReference, sentences: Sequence[str]) -> float:
    """Share (%) of ``sentences`` that ``bundle``'s text encoder puts nearest the target anchor
    ("hateful") among the frozen reference's anchors."""
    model = bundle.model.eval()
    tokens = bundle.tokenize(list(sentences)).to(_device(model))
    feats = F.normalize(text_features(model, tokens).float(), dim=-1)
    nearest = (feats @ reference.anchors.to(feats.device).T).argmax(dim=1)
    return float((nearest == 0).float().mean().item() * 100)


def meme_metrics(scores: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """Accuracy and AUROC (%), and accuracy on linked (label 1) and confounder (label 0) memes."""
    scores, labels = np.asarray(scores, dtype=float), np.asarray(labels)
    pred = scores > 0
    both = len(np.unique(labels)) == 2
    return {
        "accuracy": float((pred == labels).mean() * 100),
        "AUROC": float(roc_auc_score(labels, scores) * 100) if both else float("nan"),
        "linked": float(pred[labels == 1].mean() * 100) if (labels == 1).any() else float("nan"),
        "confounders": float((~pred[labels == 0]).mean() * 100)
        if (labels == 0).any()
        else float("nan"),
    }


def grouped_metrics(clf: MemeClassifier, split: ImageSet) -> list[dict[str, float | str]]:
    """:func:`meme_metrics` overall and per ``domains`` group, as long-format records."""
    scores = clf.scores(split)
    records = [{"group": "all", **meme_metrics(scores, split.labels)}]
    groups = split.meta.get("groups")
    if split.domains is not None and groups is not None:
        for g, name in enumerate(groups):
            keep = split.domains == g
            if keep.any():
                records.append({"group": name, **meme_metrics(scores[keep], split.labels[keep])})
    return records


def cam_masses(cams: np.ndarray, masks: np.ndarray) -> pd.DataFrame:
    """Share of each CAM's mass on the emblem (mask 1) and on the caption's text region (mask 2),
    beside each region's share of the image's area (what a uniform map would give)."""
    from clipnb.data.memes import MASK_EMBLEM, MASK_TEXT
    from clipnb.methods.gradcam import cam_mass_in_mask

    masks = np.asarray(masks)
    return pd.DataFrame(
        {
            "emblem mass": cam_mass_in_mask(cams, masks == MASK_EMBLEM),
            "text mass": cam_mass_in_mask(cams, masks == MASK_TEXT),
            "emblem area": (masks == MASK_EMBLEM).mean(axis=(1, 2)),
            "text area": (masks == MASK_TEXT).mean(axis=(1, 2)),
        }
    )


class TokenRows:
    """Train only the token-embedding rows a run uses, as a zero-initialised offset.

    Adam (without weight decay) never moves a row whose gradient is always zero, so training the
    used rows alone follows exactly the trajectory of training the whole table, at a fraction of
    the cost (open_clip's table has 49,408 rows). :meth:`fold` adds the offset into the table.
    """

    def __init__(self, model: nn.Module, tokens: torch.Tensor) -> None:
        self.embedding: nn.Embedding = model.token_embedding
        weight = self.embedding.weight
        self.ids = torch.unique(tokens.to(weight.device))
        self.delta = nn.Parameter(torch.zeros(len(self.ids), weight.shape[1], dtype=weight.dtype))
        self.delta.data = self.delta.data.to(weight.device)
        self.lookup = torch.full(
            (weight.shape[0],), len(self.ids), dtype=torch.long, device=weight.device
        )
        self.lookup[self.ids] = torch.arange(len(self.ids), device=weight.device)
        weight.requires_grad_(False)
        self._handle = self.embedding.register_forward_hook(self._add)

    @staticmethod
    def applies(model: nn.Module) -> bool:
        emb = getattr(model, "token_embedding", None)
        return isinstance(emb, nn.Embedding) and emb.weight.requires_grad

    def _add(self, module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor):
        padded = torch.cat([self.delta, self.delta.new_zeros(1, self.delta.shape[1])])
        return output + padded[self.lookup[inputs[0]]]

    def fold(self) -> None:
        """Remove the hook and write the trained rows into the embedding table."""
        self._handle.remove()
        with torch.no_grad():
            self.embedding.weight[self.ids] += self.delta


@dataclass
class MemeTraining:
    """A finetuned meme classifier and how it got there."""

    classifier: MemeClassifier
    part: str
    steps: int
    chosen_step: int
    #: (step, validation AUROC %) at every evaluation
    val_curve: list[tuple[int, float]] = field(default_factory=list)
    train_loss: list[float] = field(default_factory=list)

    @property
    def best_val(self) -> float:
        """The validation AUROC of the chosen step."""
        return dict(self.val_curve)[self.chosen_step]


@dataclass
class _Texts:
    """Every string a run encodes, tokenised once, and each term's rows into it."""

    tokens: torch.Tensor
    memes: torch.Tensor  # [N, 2]
    aux: torch.Tensor  # [A, 2]
    chain: torch.Tensor  # [S + anchors]
    chain_target: torch.Tensor

    def chain_rows(self, batch: int, generator: torch.Generator) -> torch.Tensor:
        """Rows of ``chain`` for one step: ``batch`` random sentences (0: all) and every anchor."""
        n_sentences = int((self.chain_target == 0).sum()) - (1 if len(self.chain) else 0)
        if not len(self.chain) or batch <= 0 or batch >= n_sentences:
            return torch.arange(len(self.chain))
        picked = torch.randperm(n_sentences, generator=generator)[:batch]
        return torch.cat([picked, torch.arange(n_sentences, len(self.chain))])

    @classmethod
    def build(
        cls,
        bundle: ClipBundle,
        memes: list[tuple[str, ...]],
        aux: list[tuple[str, ...]],
        chain: Sequence[str],
        anchors: Sequence[str],
    ) -> _Texts:
        chain_texts = [*chain, *anchors] if chain else []
        strings = sorted({t for c in [*memes, *aux] for t in c} | set(chain_texts))
        slot = {t: i for i, t in enumerate(strings)}

        def rows(items: Sequence, dims: int) -> torch.Tensor:
            if dims == 2:
                return torch.tensor([[slot[t] for t in c] for c in items], dtype=torch.long)
            return torch.tensor([slot[t] for t in items], dtype=torch.long)

        # Chain sentences -> the target anchor (index 0); each anchor word -> itself.
        n_chain = len(chain_texts) - (len(anchors) if chain else 0)
        target = [0] * n_chain + (list(range(len(anchors))) if chain else [])
        return cls(
            tokens=bundle.tokenize(strings),
            memes=rows(memes, 2),
            aux=rows(aux, 2).reshape(-1, 2),
            chain=rows(chain_texts, 1),
            chain_target=torch.tensor(target, dtype=torch.long),
        )


def finetune_memes(
    bundle: ClipBundle,
    part: str,
    train: ImageSet,
    val: ImageSet,
    *,
    templates: Sequence[str] = CAPTION_TEMPLATES,
    steps: int,
    lr: float,
    seed: int = 0,
    eval_every: int = 50,
    pairs_per_step: int = 1,
    aux: ImageSet | None = None,
    aux_templates: Sequence[str] = AUX_TEMPLATES,
    aux_batch: int = 2,
    chain: Sequence[str] | None = None,
    chain_batch: int = 0,
    reference: FrozenReference | None = None,
    progress: bool = False,
    token_rows: bool = True,
) -> MemeTraining:
    """Finetune ``part`` of a copy of ``bundle.model`` on balanced pairs of ``train`` memes.

    Every step sees ``pairs_per_step`` negative and positive memes with their candidate prompts
    (``templates``), plus, if given, ``aux_batch`` alignment images of ``aux`` (their texts in
    ``aux_templates``, target "hateful") and ``chain_batch`` of the ``chain`` sentences (0: all)
    with every anchor word, against the frozen ``reference``'s anchors. The cross-entropy terms are summed; Adam, no weight decay.
    The validation AUROC is measured at step 0 and every ``eval_every`` steps; the returned model
    carries the weights of the step chosen on it. ``bundle`` and ``reference`` are never modified.
    ``token_rows`` trains the used token-embedding rows only (:class:`TokenRows`; same result).
    """
    if chain and reference is None:
        raise ValueError("chain sentences need a FrozenReference (the anchors' source)")
    if (aux is not None or chain) and part not in TEXT_PARTS:
        raise ValueError("alignment and self-learning train the text side: use a text part")
    model = copy.deepcopy(bundle.model)
    trainable = set_trainable(model, [part])
    model.eval()  # dropout-free towers; keeps any BatchNorm frozen
    device = _device(model)
    text_trains, image_trains = part in TEXT_PARTS, part in IMAGE_PARTS
    scale = float(model.logit_scale.exp().item())
    base = MemeClassifier(bundle, tuple(templates), bundle)
    texts = _Texts.build(
        bundle,
        candidate_texts(train.texts, len(train), templates),
        candidate_texts(aux.texts, len(aux), aux_templates) if aux is not None else [],
        list(chain or []),
        reference.words if reference is not None else (),
    )
    tokens = texts.tokens.to(device)
    rows = None
    if token_rows and TokenRows.applies(model):
        rows = TokenRows(model, tokens)
        trainable = [p for p in trainable if p is not rows.embedding.weight] + [rows.delta]
    frozen_text = None if text_trains else _encode_text(model, tokens)
    train_feats = None if image_trains else base.image_features(train).to(device)
    aux_feats = base.image_features(aux).to(device) if aux is not None else None
    labels = torch.as_tensor(train.labels, device=device)
    aux_labels = torch.as_tensor(aux.labels, device=device) if aux is not None else None
    batches = torch.as_tensor(pair_batches(train.labels, steps * pairs_per_step, seed))
    batches = batches.reshape(steps, 2 * pairs_per_step)
    generator = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(trainable, lr=lr)

    def current() -> MemeClassifier:
        return MemeClassifier(
            bundle.with_model(model, "memes"), tuple(templates), bundle, image_trains
        )

    result = MemeTraining(classifier=base, part=part, steps=steps, chosen_step=0)
    best: tuple[float, list[torch.Tensor]] = (-np.inf, [])
    checkpoints = {steps, *range(eval_every or steps, steps, eval_every or steps)}

    def evaluate(step: int) -> None:
        nonlocal best
        score = meme_metrics(current().scores(val), val.labels)["AUROC"]
        result.val_curve.append((step, score))
        if score > best[0]:  # the first best on ties, as select_on_validation
            best = (score, [p.detach().clone() for p in trainable])

    evaluate(0)
    for step in tqdm(range(1, steps + 1), desc=f"memes {part}", disable=not progress, leave=False):
        idx = batches[step - 1]
        aux_rows = (
            torch.randint(len(texts.aux), (aux_batch,), generator=generator)
            if aux is not None
            else None
        )
        chain_rows = texts.chain_rows(chain_batch, generator)
        if text_trains:
            used = [texts.memes[idx].flatten(), texts.chain[chain_rows]]
            if aux_rows is not None:
                used.append(texts.aux[aux_rows].flatten())
            needed = torch.unique(torch.cat(used))
            feats = F.normalize(text_features(model, tokens[needed]).float(), dim=-1)
            text = feats.new_zeros(len(tokens), feats.shape[1]).index_copy(
                0, needed.to(device), feats
            )
        else:
            text = frozen_text
        if image_trains:  # preprocess only this step's images (full-size sets do not fit memory)
            pixels = image_tensors(bundle, train, idx.numpy()).to(device)
            img = F.normalize(model.encode_image(pixels).float(), dim=-1)
        else:
            img = train_feats[idx]
        logits = scale * torch.einsum("bd,bcd->bc", img, text[texts.memes[idx]])
        loss = F.cross_entropy(logits, labels[idx])
        if aux_rows is not None:
            aux_logits = scale * torch.einsum(
                "bd,bcd->bc", aux_feats[aux_rows], text[texts.aux[aux_rows]]
            )
            loss = loss + F.cross_entropy(aux_logits, aux_labels[aux_rows])
        if len(chain_rows):
            chain_logits = scale * text[texts.chain[chain_rows]] @ reference.anchors.T
            target = texts.chain_target[chain_rows].to(device)
            loss = loss + F.cross_entropy(chain_logits, target)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        result.train_loss.append(float(loss.item()))
        if step in checkpoints:
            evaluate(step)

    chosen, _ = select_on_validation(
        [s for s, _ in result.val_curve], dict(result.val_curve).__getitem__
    )
    result.chosen_step = int(chosen)
    with torch.no_grad():
        for p, value in zip(trainable, best[1], strict=False):  # empty if val AUROC was nan
            p.copy_(value)
    if rows is not None:
        rows.fold()
    for p in model.parameters():
        p.requires_grad_(False)
    result.classifier = current()
    return result


def cam_rows(split: ImageSet, n: int) -> dict[str, np.ndarray]:
    """Up to ``n`` linked (label 1) memes per group (``domains``), the rows Grad-CAM explains."""
    groups = split.meta.get("groups")
    if split.domains is None or groups is None:
        return {"all": np.flatnonzero(split.labels == 1)[:n]}
    return {
        name: np.flatnonzero((split.labels == 1) & (split.domains == g))[:n]
        for g, name in enumerate(groups)
    }


def measure(
    clf: MemeClassifier, test: ImageSet, rows: dict[str, np.ndarray], setting: CamSetting
) -> tuple[list[dict], list[dict], dict[str, np.ndarray]]:
    """A final model's test numbers: metrics per group, mean CAM masses per group, first CAM maps.

    CAM masses need the memes' masks; without them (the full profile) only the maps are kept.
    """
    metrics = grouped_metrics(clf, test)
    masses, maps = [], {}
    for group, idx in rows.items():
        if len(idx) == 0:
            continue
        cams = clf.cams(test, idx, setting)
        maps[group] = cams[0]
        if test.masks is not None:
            masses.append({"group": group, **cam_masses(cams, test.masks[idx]).mean().to_dict()})
    return metrics, masses, maps


# --- tables and figures of the chapter ----------------------------------------------------------

METRICS: tuple[str, ...] = ("accuracy", "AUROC", "linked", "confounders")


def mean_where(frame: pd.DataFrame, value: str, **where: object) -> float:
    """Mean of column ``value`` over the rows where every ``column == value`` (nan if none)."""
    keep = np.ones(len(frame), dtype=bool)
    for column, wanted in where.items():
        keep &= (frame[column] == wanted).to_numpy()
    return float(frame.loc[keep, value].mean()) if keep.any() else float("nan")


def metric_table(
    results: pd.DataFrame, columns: Sequence[tuple[str, str]], index: str = "stage"
) -> pd.DataFrame:
    """Mean ± std over seeds: one row per ``index`` value, columns "{group} · {metric}" in order."""
    long = results.melt(
        id_vars=[index, "seed", "group"],
        value_vars=[m for m in METRICS if m in results],
        var_name="metric",
    )
    long["column"] = long["group"] + " · " + long["metric"]
    keep = [f"{g} · {m}" for g, m in columns]
    table = mean_std_table(
        long[long.column.isin(keep)], index=index, columns="column", value="value"
    )
    return table[[c for c in keep if c in table.columns]]


def _curves(ax, frame: pd.DataFrame, value: str, colour: str, label: str, **style) -> None:
    stats = frame.groupby("n")[value].agg(["mean", "std"])
    ax.errorbar(
        stats.index,
        stats["mean"],
        yerr=stats["std"].fillna(0),
        color=colour,
        capsize=3,
        label=label,
        **style,
    )


def plot_over_n(
    frame: pd.DataFrame,
    panels: Sequence[tuple[str, Sequence[tuple[str, str, str]], str]],
    series: Sequence[tuple[str, str, str]],
    chance: float | None = None,
):
    """Metrics against the number of auxiliary images ``n``, mean ± std over seeds.

    ``panels``: (title, [(column, label suffix, line style)], y label) per axis; ``series``:
    (experiment, label, colour) per curve family.
    """
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(panels), figsize=(4.8 * len(panels), 3.6), squeeze=False)
    for ax, (title, values, ylabel) in zip(axes[0], panels, strict=True):
        for experiment, label, colour in series:
            part = frame[frame.experiment == experiment]
            if not len(part):
                continue
            for value, suffix, ls in values:
                marker = "o" if ls == "-" else "s"
                _curves(ax, part, value, colour, f"{label}{suffix}", ls=ls, marker=marker)
        if len(frame):
            ax.set_xticks(sorted(frame["n"].unique()))
        if chance is not None:
            ax.axhline(chance, color="grey", ls=":")
        ax.set(xlabel="auxiliary images per emblem, n", ylabel=ylabel, title=title)
        ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def cam_rows_figure(
    image: np.ndarray, rows: Sequence[tuple[str, Sequence[tuple[str, np.ndarray]]]]
):
    """One row per model family: the meme, then its Grad-CAM overlays (title, map) side by side."""
    import matplotlib.pyplot as plt

    from clipnb.methods.gradcam import overlay

    width = 1 + max(len(maps) for _, maps in rows)
    fig, axes = plt.subplots(
        len(rows), width, figsize=(1.6 * width, 1.8 * len(rows)), squeeze=False
    )
    for ax in axes.flat:
        ax.axis("off")
    for r, (name, maps) in enumerate(rows):
        axes[r, 0].imshow(image)
        axes[r, 0].set_title(name, fontsize=8)
        for ax, (title, cam) in zip(axes[r, 1:], maps, strict=False):
            ax.imshow(overlay(image, cam))
            ax.set_title(title, fontsize=8)
    fig.tight_layout()
    return fig


# --- the chapter: one run, then its tables, figures, numbers and verdicts ------------------------

#: The stages of experiment 1 that the prose names.
ZERO_SHOT = "zero-shot · caption prompts"
FT_TEXT = "text encoder · caption prompts"
FT_IMAGE = "image encoder · caption prompts"
SELF_STAGE = "3a. + self-learning (no alignment)"
#: The probes' views of a meme (rows of the probe table).
EMBLEM_VIEW = "emblem alone (caption band blanked)"
TEXT_VIEW = "caption text alone"
IMAGE_VIEW = "meme image (emblem + printed word)"
BOTH_VIEW = "meme image + caption text"
#: How the verdicts name the auxiliary stages.
AUX_NAMES = {
    "align": "the alignment images",
    "self": "the self-learning step",
    "chain": "the whole pipeline",
}
#: The source's movements of the maps: onto the emblem with the alignment, onto the caption after
#: self-learning (experiment, region).
SOURCE_MOVES = {
    ("2", "emblem"): "onto the emblem with the alignment",
    ("3", "text"): "onto the caption after the self-learning step",
}
#: Curve families of the figures over ``n``: (experiment, label, colour).
FAMILIES = [("2", "alignment", "C0"), ("3", "self-learning + alignment", "C3")]
SHARE_COLUMNS = ["seed", "linked (trained)", "not linked (never seen)"]
MASS_COLUMNS = [
    "experiment",
    "stage",
    "n",
    "seed",
    "group",
    "emblem mass",
    "text mass",
    "emblem area",
    "text area",
]


@dataclass
class Results:
    """What the chapter shows, as plain data: enough for every table, figure, number and verdict.

    ``records`` holds one row per (experiment, stage, n, seed, test group) with the
    :data:`METRICS` in %; ``masses`` one row per (experiment, stage, n, seed, group) with the mean
    CAM masses in % and the regions' areas as fractions of the image (:data:`MASS_COLUMNS`).
    """

    seeds: list[int]
    aux_counts: list[int]
    cam_counts: list[int]
    synthetic: bool
    have_aux: bool
    #: labels of the test memes in each group ("shown", "hidden"; or "all"), for the chance bands
    test_labels: dict[str, np.ndarray]
    #: probe view -> test group -> accuracy (%)
    probes: dict[str, dict[str, float]]
    chosen_lr: dict[str, float]
    #: the step chosen on validation by each run of experiment 1
    chosen_steps: list[int]
    records: pd.DataFrame
    masses: pd.DataFrame
    #: per seed: share (%) of linked and of unlinked chain sentences nearest "hateful"
    shares: pd.DataFrame
    n_runs: int
    n_train: int
    cam_memes_used: int
    cam_grid: int
    cam_setting: str
    cam_reading: str
    # The raw data of the figures and the links table.
    data_note: str = ""
    links: pd.DataFrame = field(default_factory=pd.DataFrame)
    examples: list[np.ndarray] = field(default_factory=list)
    example_titles: list[str] = field(default_factory=list)
    #: (experiment, stage, n) -> group -> the first seed's CAM of the group's first meme
    example_maps: dict[tuple[str, str, int], dict[str, np.ndarray]] = field(default_factory=dict)
    #: group -> (the image the model saw, the caption) of the meme the CAM figures show
    cam_memes: dict[str, tuple[np.ndarray, str]] = field(default_factory=dict)

    @property
    def main_group(self) -> str:
        """The memes the question is about: hidden-link ones (all test memes without groups)."""
        return "hidden" if self.synthetic else "all"

    @property
    def cam_group(self) -> str:
        """The memes of the encoder CAM comparison: shown-link ones (all without groups)."""
        return "shown" if self.synthetic else "all"

    @property
    def first_group(self) -> str:
        return next(iter(self.test_labels))

    @property
    def n_max(self) -> int:
        return max(self.aux_counts)

    def acc_band(self, group: str) -> float:
        """Two standard errors (points) of a chance-level accuracy on one group of test memes."""
        if group not in self.test_labels:
            return np.nan
        return 100 / np.sqrt(max(len(self.test_labels[group]), 1))

    def auroc_band(self, group: str) -> float:
        """Two standard errors (points) of a chance-level AUROC (Hanley-McNeil) on one group."""
        if group not in self.test_labels:
            return np.nan
        y = self.test_labels[group]
        n1, n0 = max(int(y.sum()), 1), max(int(len(y) - y.sum()), 1)
        return 200 * np.sqrt((n1 + n0 + 1) / (12 * n1 * n0))


@dataclass
class MemeInputs:
    """What every finetuning run of the chapter reads (sent to Ray's object store once).

    ``aux_all``, ``chain`` and ``reference`` feed experiments 2 and 3 (``None`` without them);
    ``linked`` and ``unlinked`` are the chain sentences whose target share is measured.
    """

    bundle: ClipBundle
    data: DatasetSplits
    setting: CamSetting
    keep_seed: int
    steps: int
    eval_every: int
    pairs_per_step: int
    rows_cam: dict[str, np.ndarray]
    aux_all: ImageSet | None = None
    chain: Sequence[str] | None = None
    chain_batch: int = 0
    reference: FrozenReference | None = None
    linked: list[str] = field(default_factory=list)
    unlinked: list[str] = field(default_factory=list)


@dataclass
class MemeRun:
    """What one finetuning run gives the chapter: its test numbers (:func:`measure`), the
    first seed's CAM maps, the chosen step and its validation AUROC, and the target shares."""

    metrics: list[dict]
    masses: list[dict]
    maps: dict[str, np.ndarray]
    chosen_step: int
    best_val: float
    shares: dict[str, float] | None = None


def meme_trial(spec: dict[str, Any], inputs: MemeInputs) -> MemeRun:
    """One seeded finetuning run: ``spec`` names the part, prompt family, lr, seed, the number of
    alignment images per emblem (``n_aux``), whether the chain is self-learned, and whether to
    measure the chain sentences' target shares."""
    seed, n_aux = int(spec["seed"]), int(spec["n_aux"])
    extra: dict[str, Any] = {}
    if n_aux:
        extra["aux"] = memes.first_per_emblem(inputs.aux_all, n_aux)
    if spec["self_learning"]:
        extra |= {"chain": inputs.chain, "chain_batch": inputs.chain_batch}
        extra["reference"] = inputs.reference
    seed_everything(seed)
    run = finetune_memes(
        inputs.bundle, spec["part"], inputs.data.train, inputs.data.val,
        templates=PROMPT_FAMILIES[spec["family"]], steps=inputs.steps, lr=float(spec["lr"]),
        seed=seed, eval_every=inputs.eval_every, pairs_per_step=inputs.pairs_per_step, **extra,
    )  # fmt: skip
    metrics, masses, maps = measure(
        run.classifier, inputs.data.test, inputs.rows_cam, inputs.setting
    )
    shares = None
    if spec["shares"]:
        model = run.classifier.bundle
        shares = {
            "linked (trained)": target_share(model, inputs.reference, inputs.linked),
            "not linked (never seen)": target_share(model, inputs.reference, inputs.unlinked),
        }
    kept = maps if seed == inputs.keep_seed else {}
    return MemeRun(metrics, masses, kept, run.chosen_step, run.best_val, shares)


def _spec(
    part: str, family: str, lr: float, seed: int, n_aux: int = 0, self_learning: bool = False
) -> dict[str, Any]:
    return {"part": part, "family": family, "lr": float(lr), "seed": int(seed)} | {
        "n_aux": int(n_aux),
        "self_learning": self_learning,
        "shares": False,
    }


@dataclass
class _Ledger:
    """Every model's test numbers, in the order the chapter tells them."""

    keep_seed: int
    records: list[dict] = field(default_factory=list)
    masses: list[dict] = field(default_factory=list)
    example_maps: dict[tuple[str, str, int], dict[str, np.ndarray]] = field(default_factory=dict)

    def add(
        self, experiment: str, stage: str, n_aux: int, seed: int, measured: tuple | MemeRun
    ) -> None:
        """File a model's ``(metrics, masses, maps)`` (or a :class:`MemeRun`'s)."""
        if isinstance(measured, MemeRun):
            measured = (measured.metrics, measured.masses, measured.maps)
        metrics, cam, maps = measured
        keys = {"experiment": experiment, "stage": stage, "n": n_aux, "seed": seed}
        self.records.extend(keys | r for r in metrics)
        self.masses.extend(keys | r for r in cam)
        if seed == self.keep_seed:
            self.example_maps[(experiment, stage, n_aux)] = maps


def _experiments(
    inputs: MemeInputs,
    ledger: _Ledger,
    seeds: Sequence[int],
    lrs: Sequence[float],
    aux_counts: Sequence[int],
    progress: bool,
) -> tuple[dict[str, float], list[int], pd.DataFrame, int]:
    """Experiments 1–3 as two sweeps of trials: the learning rates on the first seed, then every
    other run. Returns the chosen learning rates, each experiment-1 run's chosen step, the target
    shares and the number of finetuning runs.

    Experiment 1: zero-shot, then either encoder finetuned with each family of prompts; each
    encoder's learning rate is the one whose first-seed run with the caption prompts has the best
    validation AUROC, and the shared prompts reuse it. Experiment 2: the text encoder with ``n``
    alignment images per emblem (``n = 0``: the experiment-1 run). Experiment 3: self-learning
    against a frozen copy, with ``n`` alignment images; the target shares are measured on each
    seed's run with the most alignment images.
    """
    journal = [
        inputs.bundle.fingerprint,
        inputs.data.train.fingerprint,
        inputs.data.test.fingerprint,
    ]
    parts = ("image_encoder", "text_encoder")
    choice_specs = [_spec(part, "caption", lr, seeds[0]) for part in parts for lr in lrs]
    choice_runs = executor.map_trials(
        meme_trial, choice_specs, inputs, desc="memes: learning rates", progress=progress,
        journal=journal,
    )  # fmt: skip
    chosen_lr, chosen = {}, {}
    for part in parts:
        tried = {
            spec["lr"]: run
            for spec, run in zip(choice_specs, choice_runs, strict=True)
            if spec["part"] == part
        }
        chosen_lr[part], _ = select_on_validation(
            list(lrs), lambda lr, tried=tried: tried[float(lr)].best_val
        )
        chosen[part] = tried[float(chosen_lr[part])]
    plain = [
        (family, part, seed) for family in ("caption", "shared") for part in parts for seed in seeds
    ]
    lr_text = chosen_lr["text_encoder"]
    have_aux = inputs.aux_all is not None
    specs = [
        _spec(part, family, chosen_lr[part], seed)
        for family, part, seed in plain
        if not (family == "caption" and seed == seeds[0])
    ]
    if have_aux:
        specs += [
            _spec("text_encoder", "caption", lr_text, seed, n_aux)
            for n_aux in aux_counts
            if n_aux
            for seed in seeds
        ]
        specs += [
            _spec("text_encoder", "caption", lr_text, seed, n_aux, self_learning=True)
            | {"shares": bool(inputs.linked) and n_aux == max(aux_counts)}
            for n_aux in aux_counts
            for seed in seeds
        ]
    runs = executor.map_trials(
        meme_trial, specs, inputs, desc="memes: finetuning runs", progress=progress,
        journal=journal,
    )  # fmt: skip
    by_key = {
        (s["part"], s["family"], s["seed"], s["n_aux"], s["self_learning"]): run
        for s, run in zip(specs, runs, strict=True)
    }
    for part in parts:  # the first seed's caption runs are the chosen learning-rate runs
        by_key[(part, "caption", seeds[0], 0, False)] = chosen[part]

    chosen_steps = []
    for family in ("caption", "shared"):
        zero_shot = MemeClassifier(inputs.bundle, PROMPT_FAMILIES[family], inputs.bundle)
        ledger.add(
            "1", f"zero-shot · {family} prompts", 0, seeds[0],
            measure(zero_shot, inputs.data.test, inputs.rows_cam, inputs.setting),
        )  # fmt: skip
        for part in parts:
            for seed in seeds:
                run = by_key[(part, family, seed, 0, False)]
                stage = f"{part.replace('_', ' ')} · {family} prompts"
                ledger.add("1", stage, 0, seed, run)
                chosen_steps.append(run.chosen_step)
    shares = []
    if have_aux:
        for n_aux in aux_counts:
            for seed in seeds:
                run = by_key[("text_encoder", "caption", seed, n_aux, False)]
                ledger.add("2", "memes + alignment", n_aux, seed, run)
        for n_aux in aux_counts:
            for seed in seeds:
                run = by_key[("text_encoder", "caption", seed, n_aux, True)]
                ledger.add("3", "memes + self-learning + alignment", n_aux, seed, run)
                if run.shares is not None:
                    shares.append({"seed": seed, **run.shares})
    frame = pd.DataFrame.from_records(shares, columns=SHARE_COLUMNS)
    return chosen_lr, chosen_steps, frame, len(choice_specs) + len(specs)


def _auxiliary(
    links: memes.LinkWorld | None, n_max: int, aux_dir: str, chain_yaml: str
) -> tuple[ImageSet | None, memes.ChainSpec | None, str]:
    """The auxiliary knowledge: generated with the memes, or the user's files in the full profile."""
    if links is not None:
        aux = memes.alignment_images(links, n_max)
        return aux, memes.ChainSpec(links.chain_sentences()), "generated with the memes"
    if aux_dir and chain_yaml and Path(aux_dir).is_dir() and Path(chain_yaml).is_file():
        aux, chain = memes.load_alignment_folder(aux_dir), memes.load_chain_yaml(chain_yaml)
        return aux, chain, f"read from {aux_dir} and {chain_yaml}"
    return None, None, "missing (set aux_dir and chain_yaml): only experiment 1 runs"


def _example_memes(test: ImageSet, synthetic: bool) -> tuple[list[np.ndarray], list[str]]:
    """The memes of the first figure: four of each group and label (eight of each label)."""
    if synthetic:
        rows = [
            np.flatnonzero((test.domains == g) & (test.labels == y))[:4]
            for g in (0, 1)
            for y in (1, 0)
        ]
        examples = np.concatenate(rows)
        info = memes.meme_table(test)
        titles = [
            f"{info.emblem[i]} · {info.word[i]}\n"
            f"{'hateful' if test.labels[i] else 'benign'} ({info.group[i]})"
            for i in examples
        ]
    else:
        examples = np.r_[np.flatnonzero(test.labels == 1)[:8], np.flatnonzero(test.labels == 0)[:8]]
        titles = [("hateful" if test.labels[i] else "benign") for i in examples]
    return [test.array(i) for i in examples], titles


def _probes(
    bundle: ClipBundle, data: DatasetSplits, synthetic: bool, groups: dict[str, np.ndarray]
) -> dict[str, dict[str, float]]:
    """Test accuracy (%) per group of a logistic-regression probe on each view of the memes.

    Each probe's regularisation is chosen on the validation split.
    """
    split_names = ("train", "val", "test")
    views = {
        TEXT_VIEW: {s: encode_texts(bundle, data.split(s).texts) for s in split_names},
        IMAGE_VIEW: {s: encode_images(bundle, data.split(s)) for s in split_names},
    }
    if synthetic:
        blanked = {
            s: encode_images(bundle, memes.without_caption(data.split(s))) for s in split_names
        }
        views = {EMBLEM_VIEW: blanked, **views}
    views[BOTH_VIEW] = {
        s: torch.cat([views[IMAGE_VIEW][s], views[TEXT_VIEW][s]], 1) for s in split_names
    }
    rows = {}
    for name, x in views.items():
        probe = fit_linear_probe(x["train"], data.train.labels, x["val"], data.val.labels)
        predicted = probe.classifier.predict(np.asarray(x["test"]))
        rows[name] = {g: accuracy(predicted[m], data.test.labels[m]) for g, m in groups.items()}
    return rows


def _split_sizes(data: DatasetSplits) -> pd.DataFrame:
    """How many memes each split holds (the table of a dataset without generated links)."""
    splits = (data.train, data.val, data.test)
    return pd.DataFrame({"split": ["train", "val", "test"], "memes": [len(s) for s in splits]})


def _meme_image(bundle: ClipBundle, split: ImageSet, row: int) -> tuple[np.ndarray, str]:
    """The meme as the model saw it (resized and cropped, so its CAMs overlay it) and its text."""
    return display_images(bundle, image_tensors(bundle, split, [row]))[0], split.texts[row]


def run(
    *,
    profile: str,
    dataset: str,
    seeds: Sequence[int],
    n_train: int,
    n_val: int,
    n_test: int,
    steps: int,
    eval_every: int,
    pairs_per_step: int,
    lrs: Sequence[float],
    chain_batch: int,
    aux_counts: Sequence[int],
    cam_counts: Sequence[int],
    cam_memes: int,
    aux_dir: str,
    chain_yaml: str,
    max_per_split: int,
    progress: bool = True,
    cam_protocol: dict[str, Any] | None = None,
) -> Results:
    """The whole chapter, in the order it tells it: the memes, the probes, experiments 1–3.

    Takes the notebook's parameters. Every finetuning run is a trial of
    :func:`clipnb.core.executor.map_trials` seeded with its own seed, so the numbers do not depend
    on the order the runs happen in, nor on the process (or Ray worker) that runs them.
    """
    seeds, aux_counts, cam_counts = list(seeds), list(aux_counts), list(cam_counts)
    seed_everything(seeds[0])
    bundle = load_model(profile)
    validation = saliency.validated_setting(bundle, profile, **(cam_protocol or {}))
    synthetic = dataset == "memes"
    if synthetic:
        data = load_dataset(dataset, n_train=n_train, n_val=n_val, n_test=n_test)
    else:
        data = load_dataset(dataset, max_per_split=max_per_split or None)
    train, val, test = data.train, data.val, data.test
    links = memes.DEFAULT_LINKS if synthetic else None
    aux_all, chain_spec, aux_note = _auxiliary(links, max(aux_counts), aux_dir, chain_yaml)
    groups = (
        {"shown": test.domains == 0, "hidden": test.domains == 1}
        if synthetic
        else {"all": np.ones(len(test), bool)}
    )
    examples, titles = _example_memes(test, synthetic)
    probes = _probes(bundle, data, synthetic, groups)
    rows_cam = cam_rows(test, cam_memes)
    have_aux = aux_all is not None
    inputs = MemeInputs(
        bundle, data, validation.setting, seeds[0], steps, eval_every, pairs_per_step, rows_cam,
    )  # fmt: skip
    if have_aux:
        inputs.aux_all, inputs.chain_batch = aux_all, chain_batch
        inputs.chain = chain_spec.sentences
        inputs.reference = FrozenReference(bundle, chain_spec.anchors)
        if links is not None:
            test_words = links.words_for("test")
            inputs.linked = links.chain_sentences(test_words)
            inputs.unlinked = [
                q for k in (1, 2, 3) for q in links.chain_sentences(test_words, shift=k)
            ]
    ledger = _Ledger(seeds[0])
    chosen_lr, chosen_steps, shares, n_runs = _experiments(
        inputs, ledger, seeds, lrs, aux_counts, progress
    )
    masses = pd.DataFrame.from_records(ledger.masses)
    if not len(masses):  # no masks (full profile): the maps only
        masses = pd.DataFrame(columns=MASS_COLUMNS)
    masses[["emblem mass", "text mass"]] *= 100
    cam_group, main_group = ("shown", "hidden") if synthetic else ("all", "all")
    return Results(
        seeds=seeds,
        aux_counts=aux_counts,
        cam_counts=cam_counts,
        synthetic=synthetic,
        have_aux=have_aux,
        test_labels={g: test.labels[m] for g, m in groups.items()},
        probes=probes,
        chosen_lr=chosen_lr,
        chosen_steps=chosen_steps,
        records=pd.DataFrame.from_records(ledger.records),
        masses=masses,
        shares=shares,
        n_runs=n_runs,
        n_train=len(train),
        cam_memes_used=max(len(r) for r in rows_cam.values()),
        cam_grid=bundle.model.visual.grid_size[0],
        cam_setting=validation.setting.label(),
        cam_reading=saliency.reading(validation),
        data_note=f"{dataset}: {len(train)} train, {len(val)} val, {len(test)} test memes;"
        f" auxiliary data {aux_note}",
        links=links.table() if links is not None else _split_sizes(data),
        examples=examples,
        example_titles=titles,
        example_maps=ledger.example_maps,
        cam_memes={
            g: _meme_image(bundle, test, int(rows_cam[g][0]))
            for g in dict.fromkeys((cam_group, main_group))
        },
    )


def minutes(clock: Stopwatch) -> dict[str, float]:
    """The chapter's wall time and CPU time so far (glue keys ``minutes`` and ``cpu_minutes``)."""
    elapsed = clock.read()
    return {"minutes": elapsed["seconds"] / 60, "cpu_minutes": elapsed["cpu_seconds"] / 60}


# --- the chapter's tables and figures ------------------------------------------------------------


def _closed(fig: matplotlib.figure.Figure) -> matplotlib.figure.Figure:
    """Close a figure for pyplot (so that figures do not pile up) and keep it for glue."""
    import matplotlib.pyplot as plt

    plt.close(fig)
    return fig


def _experiment1(results: Results) -> pd.DataFrame:
    records = results.records
    return records[records.experiment == "1"]


def _aux_stages(results: Results) -> dict[str, str]:
    """The auxiliary stages of the pipeline table, by the key of their glue names."""
    return {
        "align": f"2. + alignment ({results.n_max} images per emblem)",
        "self": SELF_STAGE,
        "chain": f"3b. + self-learning + alignment ({results.n_max} per emblem)",
    }


def _stages(results: Results) -> pd.DataFrame:
    """The records of each stage of the source's pipeline, renamed as the stages table shows them
    (the auxiliary stages at the most auxiliary images)."""
    records, exp1, n_max = results.records, _experiment1(results), results.n_max
    aux = _aux_stages(results)
    return pd.concat(
        [
            exp1[exp1.stage == ZERO_SHOT].assign(stage="0. zero-shot"),
            exp1[exp1.stage == FT_TEXT].assign(stage="1. memes only (text encoder)"),
            records[(records.experiment == "2") & (records.n == n_max)].assign(stage=aux["align"]),
            records[(records.experiment == "3") & (records.n == 0)].assign(stage=aux["self"]),
            records[(records.experiment == "3") & (records.n == n_max)].assign(stage=aux["chain"]),
        ]
    )


def _over_n(frame: pd.DataFrame, group: str) -> pd.DataFrame:
    """The rows of experiments 2 and 3 (every number of auxiliary images) on one test group."""
    return frame[frame.experiment.isin(["2", "3"]) & (frame.group == group)]


def _metric_columns(results: Results) -> list[tuple[str, str]]:
    columns = [(results.main_group, m) for m in METRICS]
    return columns + ([("shown", "accuracy"), ("shown", "AUROC")] if results.synthetic else [])


def links_table(results: Results) -> pd.DataFrame:
    """The hidden links (generated memes), or the splits' sizes."""
    return results.links


def probe_table(results: Results) -> pd.DataFrame:
    """Test accuracy (%) of the probes: one row per view of the memes, one column per group."""
    return pd.DataFrame(results.probes).T.round(1)


def chosen_lr_table(results: Results) -> pd.Series:
    return pd.Series(results.chosen_lr, name="learning rate chosen on validation")


def plain_table(results: Results) -> pd.DataFrame:
    """Experiment 1: every setting's test metrics (mean ± std over seeds)."""
    return metric_table(_experiment1(results), _metric_columns(results))


def stages_table(results: Results) -> pd.DataFrame:
    """Each stage of the source's pipeline on the same test memes (mean ± std over seeds)."""
    return metric_table(_stages(results), _metric_columns(results))


def share_table(results: Results) -> pd.DataFrame:
    """Share (%) of linked and unlinked chain sentences nearest "hateful" (mean and std)."""
    return results.shares.drop(columns="seed").agg(["mean", "std"]).round(1)


def cam_table(results: Results) -> pd.DataFrame:
    """CAM mass (%) on the emblem and on the caption, zero-shot and either encoder finetuned."""
    mass = results.masses
    stages = (ZERO_SHOT, FT_IMAGE, FT_TEXT)
    table = mass[(mass.experiment == "1") & mass.stage.isin(stages)].melt(
        id_vars=["stage", "seed", "group"],
        value_vars=["emblem mass", "text mass"],
        var_name="region",
    )
    table["column"] = table.group + " · " + table.region
    if not len(table):
        return table
    return mean_std_table(table, index="stage", columns="column", value="value")


def memes_figure(results: Results) -> matplotlib.figure.Figure:
    """Test memes with their emblem · word, label and group."""
    return _closed(image_grid(results.examples, results.example_titles, ncols=8, size=1.45))


def aux_curve_figure(results: Results) -> matplotlib.figure.Figure:
    """Hidden-link AUROC and the accuracies on hateful memes and on confounders against ``n``."""
    panels = [
        ("Hidden-link memes: AUROC", [("AUROC", "", "-")], "AUROC (%)"),
        (
            "Hateful memes vs confounders",
            [("linked", ": hateful", "-"), ("confounders", ": confounders", "--")],
            "accuracy (%)",
        ),
    ]
    over_n = _over_n(results.records, results.main_group)
    return _closed(plot_over_n(over_n, panels, FAMILIES, chance=50))


def cam_encoders_figure(results: Results) -> matplotlib.figure.Figure:
    """One shown-link meme's CAMs: zero-shot, image encoder and text encoder finetuned."""
    image, text = results.cam_memes[results.cam_group]
    models = (("zero-shot", ZERO_SHOT), ("image encoder", FT_IMAGE), ("text encoder", FT_TEXT))
    maps = [
        (name, results.example_maps[("1", stage, 0)][results.cam_group]) for name, stage in models
    ]
    return _closed(cam_rows_figure(image, [(f"meme: {text}", maps)]))


def cam_over_n_figure(results: Results) -> matplotlib.figure.Figure:
    """CAM mass on the emblem and on the caption of hidden-link memes against ``n``."""
    panel = (
        "Attention on hidden-link hateful memes",
        [("emblem mass", ": emblem", "-"), ("text mass", ": caption", "--")],
        "share of CAM mass (%)",
    )
    return _closed(plot_over_n(_over_n(results.masses, results.main_group), [panel], FAMILIES))


def cam_strip_figure(results: Results) -> matplotlib.figure.Figure:
    """One hidden-link meme's CAMs as ``n`` grows: alignment alone, then with self-learning."""
    main = results.main_group
    image, text = results.cam_memes[main]
    strip = [n for n in results.cam_counts if n in results.aux_counts] if results.have_aux else []
    rows = [
        (
            f"{name}\nmeme: {text}",
            [(f"n = {n}", results.example_maps[(experiment, stage, n)][main]) for n in strip],
        )
        for experiment, stage, name in (
            ("2", "memes + alignment", "alignment"),
            ("3", "memes + self-learning + alignment", "self-learning"),
        )
    ]
    return _closed(cam_rows_figure(image, rows))


# --- the chapter's numbers -----------------------------------------------------------------------


def _trade(results: Results) -> tuple[int, float, float]:
    """Do the accuracies on hateful memes and on confounders trade off from seed to seed?

    The rows of the auxiliary stages (main group), the correlation of the two accuracies across
    seeds within a stage (nan with one seed or no rows), and the largest std of the first.
    """
    stages = _stages(results)
    rows = stages[
        stages.stage.isin(_aux_stages(results).values()) & (stages.group == results.main_group)
    ]
    trade = np.nan
    if len(results.seeds) > 1 and len(rows):
        centred = rows.groupby("stage")[["linked", "confounders"]].transform(lambda c: c - c.mean())
        trade = float(centred["linked"].corr(centred["confounders"]))
    return len(rows), trade, float(rows.groupby("stage")["linked"].std().max())


def _cam_changes(
    results: Results,
) -> tuple[dict[tuple[str, str], float], dict[tuple[str, str], bool]]:
    """Per (experiment, region): how much the mean CAM mass moves from the fewest to the most
    auxiliary images, and whether it rises steadily."""
    over_n = _over_n(results.masses, results.main_group)
    curves = over_n.groupby(["experiment", "n"])[["emblem mass", "text mass"]].mean()
    changes, rising = {}, {}
    for experiment in ("2", "3"):
        for region in ("emblem", "text"):
            if experiment not in curves.index.get_level_values("experiment"):
                continue
            curve_n = curves.loc[experiment, f"{region} mass"]
            changes[(experiment, region)] = curve_n.iloc[-1] - curve_n.iloc[0]
            rising[(experiment, region)] = bool(curve_n.is_monotonic_increasing)
    return changes, rising


def numbers(results: Results) -> dict[str, float]:
    """Every number the chapter's prose cites, by glue name (the timing: :func:`minutes`)."""
    probes, first, main = results.probes, results.first_group, results.main_group
    exp1, stages, mass = _experiment1(results), _stages(results), results.masses
    out = {
        "probe_emblem": probes.get(EMBLEM_VIEW, {}).get(first, np.nan),
        "probe_text": probes[TEXT_VIEW][first],
        "probe_image": probes[IMAGE_VIEW][first],
        "probe_image_hidden": probes[IMAGE_VIEW].get("hidden", np.nan),
        "probe_both": probes[BOTH_VIEW][first],
        "acc_band_first": results.acc_band(first),
        "auroc_ft": mean_where(exp1, "AUROC", stage=FT_TEXT, group=main),
        "acc_ft": mean_where(exp1, "accuracy", stage=FT_TEXT, group=main),
        "auroc_ft_image": mean_where(exp1, "AUROC", stage=FT_IMAGE, group=main),
        "acc_ft_best": max(
            mean_where(exp1, "accuracy", stage=s, group=main) for s in exp1.stage.unique()
        ),
        "auroc_ft_shown": mean_where(exp1, "AUROC", stage=FT_TEXT, group="shown"),
        "acc_ft_shown": mean_where(exp1, "accuracy", stage=FT_TEXT, group="shown"),
        "auroc_ft_image_shown": mean_where(exp1, "AUROC", stage=FT_IMAGE, group="shown"),
        "chosen_step_mean": np.mean(results.chosen_steps),
    }
    for part in ("image", "text"):
        stage = f"{part} encoder · shared prompts"
        out[f"auroc_ft_{part}_shared_shown"] = mean_where(exp1, "AUROC", stage=stage, group="shown")
    out["band_main"] = results.auroc_band(main)
    out["band_shown"] = results.auroc_band("shown")
    out["band_main_top"] = 50 + out["band_main"]
    for key, stage in _aux_stages(results).items():
        for metric in ("AUROC", "linked", "confounders"):
            out[f"{metric.lower()}_{key}"] = mean_where(stages, metric, stage=stage, group=main)
        out[f"auroc_{key}_shown"] = mean_where(stages, "AUROC", stage=stage, group="shown")
    out["n_max"] = results.n_max
    _, out["trade_corr"], out["trade_std_max"] = _trade(results)
    out["share_linked"] = results.shares["linked (trained)"].mean()
    out["share_unlinked"] = results.shares["not linked (never seen)"].mean()
    out["cam_memes_used"] = results.cam_memes_used
    out["area_emblem"] = 100 * mean_where(mass, "emblem area", group=results.cam_group)
    out["area_text"] = 100 * mean_where(mass, "text area", group=results.cam_group)
    for key, stage in (("zs", ZERO_SHOT), ("img", FT_IMAGE), ("txt", FT_TEXT)):
        for region in ("emblem", "text"):
            out[f"cam_{key}_{region}"] = mean_where(
                mass, f"{region} mass", experiment="1", stage=stage, group=results.cam_group
            )
    over_n = _over_n(mass, main)
    for key, experiment in (("align", "2"), ("chain", "3")):
        for n_aux, tag in ((0, "0"), (results.n_max, "_max")):
            for region in ("emblem", "text"):
                out[f"cam_{key}{tag}_{region}"] = mean_where(
                    over_n, f"{region} mass", experiment=experiment, n=n_aux
                )
    spread = over_n.groupby(["experiment", "n"])[["emblem mass", "text mass"]].std()
    out["cam_spread"] = spread.mean().mean()
    out["area_emblem_hidden"] = 100 * mean_where(over_n, "emblem area")
    out["cam_grid"] = results.cam_grid
    out["n_runs"] = results.n_runs
    out["n_train_memes"] = results.n_train
    return out


# --- the chapter's verdicts ----------------------------------------------------------------------


def agree(items: Sequence[object] | int, singular: str, plural: str) -> str:
    """The verb that agrees with a list (or a count): ``singular`` for one, ``plural`` otherwise."""
    return singular if is_are(items) == "is" else plural


def versus_chance(value: float, band: float) -> str:
    """ "above chance", "below chance" or "at chance" (within ``band`` points of 50 %), or "not
    measured"."""
    return compare(float(value), 50.0, float(band), ("above chance", "below chance", "at chance"))


def _off_chance(verdict: str) -> bool:
    return verdict not in ("at chance", "not measured")


def _probe_alone_verdict(off: Sequence[str]) -> str:
    if not off:
        return (
            "both stay at chance: the confounders do their job, neither the picture nor the words"
            " alone carry the label"
        )
    return (
        f"{join_words(off)} {is_are(off)} off chance, so the confounders do not fully hide the"
        " label"
    )


def _probe_image_verdict(image_vs: str) -> str:
    if image_vs == "above chance":
        return (
            "above chance: the embedded CLIP's image features separate the few"
            " emblem-and-printed-word combinations of the training memes well enough to memorise"
            " which are hateful, much as an image-only model on real memes reads their overlaid"
            " text"
        )
    return (
        f"{image_vs}: a linear probe on the image features does not pick up which"
        " emblem-and-printed-word combinations are hateful"
    )


def _exp1_hidden_verdict(above: Sequence[str]) -> str:
    if not above:
        return "no setting ranks the memes above chance"
    return f"{join_words(above)} {agree(above, 'ranks', 'rank')} the memes above chance"


def _shown_conclusion(shown_learned: bool, finetuned_above: Sequence[str]) -> str:
    if shown_learned and not finetuned_above:
        return (
            "Finetuning learns the links it is shown; the hidden links are not in the labelled"
            " data, and finetuning on it does not find them."
        )
    if shown_learned:
        return (
            "Finetuning learns the links it is shown, and some of it carries over to hidden links."
        )
    return (
        "Finetuning does not clearly learn even the links it is shown at this scale, so the"
        " hidden-link numbers say little about missing links."
    )


def _stages_hidden_verdict(have_aux: bool, aux_off: Sequence[str]) -> str:
    if not have_aux:
        return "Without auxiliary data only the memes-only stage ran"
    if not aux_off:
        return "None of the stages moves the hidden-link AUROC off chance"
    return (
        f"{join_words(aux_off).capitalize()} {agree(aux_off, 'moves', 'move')} the hidden-link"
        " AUROC off chance"
    )


def _trade_verdict(n_rows: int, trade: float) -> str:
    if not n_rows:
        return "cannot be compared here (no auxiliary stages ran)"
    if np.isnan(trade):
        return "cannot be compared from seed to seed (one seed)"
    if trade < -0.5:
        return "swing in opposite directions from seed to seed"
    return "do not simply trade off against each other from seed to seed"


def _raising(shown_gain: dict[str, float]) -> list[str]:
    """The auxiliary stages that raise the shown-link AUROC above memes-only finetuning."""
    return [AUX_NAMES[k] for k, g in shown_gain.items() if g > 0]


def _aux_shown_verdict(shown_gain: dict[str, float], aux_off: Sequence[str]) -> str:
    raise_shown = _raising(shown_gain)
    if all(np.isnan(g) for g in shown_gain.values()):
        words = "this profile has no shown-link split"
    elif len(raise_shown) == len(shown_gain):
        words = (
            "each of the three raises it: extra training of the text side, on texts that name the"
            " concepts and the training words, helps the links the memes already teach"
        )
    elif raise_shown:
        words = f"only {join_words(raise_shown)} {agree(raise_shown, 'raises', 'raise')} it"
    else:
        words = "none of the three raises it"
    if not aux_off:
        return words + "; nothing here creates the links the memes do not teach"
    return (
        f"{words}; and {join_words(aux_off)} also {agree(aux_off, 'moves', 'move')} the hidden"
        " links off chance"
    )


def _share_verdict(gap: float) -> str:
    if np.isnan(gap):
        return "This is measured on the generated memes only."
    if abs(gap) < 10:
        return (
            "The two shares are close: the step taught the sentence's form (\"the {concept} keep"
            ' the {word}" is hateful), not which concept goes with which word.'
        )
    return (
        f'Linked sentences land nearest "hateful" {gap:+.1f} points more often than unlinked'
        " ones: the step taught some of the links themselves, not only the sentence's form."
    )


def _summary_share(gap: float) -> str:
    if np.isnan(gap):
        return "could not be probed without the generated memes"
    if abs(gap) < 10:
        return 'learns that a chain-shaped sentence is "hateful" whether or not its link exists'
    return "learns more than the sentence's form"


def _region(region: str) -> str:
    return "caption" if region == "text" else region


def _share_words(mass: dict[str, float], area: dict[str, float]) -> str:
    """Whether each region gets more or less CAM mass than its share of the image."""
    if any(np.isnan(v) for v in mass.values()):
        return "the masks needed to measure this are missing"
    parts = [
        f"the {_region(r)} gets {'more' if mass[r] > area[r] else 'less'} than its share"
        for r in ("emblem", "text")
    ]
    rest = 100 - mass["emblem"] - mass["text"]
    return f"{parts[0]}, {parts[1]}, and {rest:.0f} % lies elsewhere (on the background)"


def _move_words(mass: dict[str, float], zero_shot: dict[str, float]) -> str:
    """How a finetuned map's masses differ from the zero-shot map's."""
    if any(np.isnan(v) for v in [*mass.values(), *zero_shot.values()]):
        return "not measured"
    moves = [
        f"{'more' if mass[r] > zero_shot[r] else 'less'} on the {_region(r)}"
        for r in ("text", "emblem")
    ]
    return ", ".join(moves) + " than zero-shot"


def _exceeding(spread: float, changes: dict[tuple[str, str], float]) -> int:
    """How many of the CAM masses' moves exceed their spread over seeds."""
    return int(sum(abs(c) > spread for c in changes.values()))


def _cam_spread_verdict(spread: float, changes: dict[tuple[str, str], float]) -> str:
    n_exceed = _exceeding(spread, changes)
    if np.isnan(spread) or not changes:
        return "the spread over seeds cannot be measured here"
    if n_exceed == 0:
        return "at least as large as every one of these changes"
    if n_exceed == len(changes):
        return "smaller than every one of these changes"
    return f"larger than {len(changes) - n_exceed} of these {len(changes)} changes"


def _cam_source_verdict(seen: Sequence[str]) -> str:
    if len(seen) == len(SOURCE_MOVES):
        return "the maps show the steady movement the source described"
    if seen:
        return f"of the steady movements the source described, the maps show only the one {seen[0]}"
    return "the maps do not show the steady movement the source described"


def _cam_auc_verdict(n_off: int, n_settings: int) -> str:
    if n_off == 0:
        return (
            "the hidden-link AUROC stays at chance for every number of auxiliary images in both"
            " experiments, whatever the maps do"
        )
    return (
        f"the hidden-link AUROC leaves chance in {n_off} of the {n_settings} settings (figure of"
        " AUROC against the number of auxiliary images, above)"
    )


def _summary_exp1(finetuned_above: Sequence[str], shown_learned: bool) -> str:
    if not finetuned_above:
        words = (
            "finetuning either encoder of the embedded CLIP does not rise above chance on those"
            " links, as the source found on Hateful Memes"
        )
    else:
        words = (
            f"finetuning rises above chance on those links ({join_words(finetuned_above)}),"
            " unlike the source's finding on Hateful Memes"
        )
    if shown_learned:
        return words + ", while it does learn the links its training memes contain"
    return words + ", and it does not clearly learn even the links its training memes contain"


def _summary_aux(have_aux: bool, aux_off: Sequence[str], raise_shown: Sequence[str]) -> str:
    if not have_aux:
        return "could not be tried here (no auxiliary data)"
    if not aux_off:
        words = "leave the hidden-link AUROC at chance here"
    else:
        words = f"move the hidden-link AUROC off chance here ({join_words(aux_off)})"
    if not raise_shown:
        return words
    also = "instead" if not aux_off else "too"
    verb = agree(raise_shown, "raises", "raise")
    return f"{words}; {join_words(raise_shown)} {verb} the shown-link AUROC {also}"


def _summary_cam(spread: float, changes: dict[tuple[str, str], float]) -> str:
    n_exceed = _exceeding(spread, changes)
    if np.isnan(spread):
        return "their spread over seeds cannot be measured here"
    if changes and n_exceed == 0:
        return "their spread over seeds is as large as the moves"
    if changes:
        return (
            f"{n_exceed} of the {len(changes)} moves measured"
            f" {agree(n_exceed, 'exceeds', 'exceed')} their spread over seeds"
        )
    return "their masses could not be measured here"


def verdicts(results: Results) -> dict[str, str]:
    """Every phrase the chapter's prose computes from its numbers, by glue name.

    A result counts as above or below chance when it is more than two standard errors of a
    chance-level result from 50 % (:meth:`Results.acc_band`, :meth:`Results.auroc_band`).
    """
    num = numbers(results)
    first, main = results.first_group, results.main_group
    band_first = results.acc_band(first)
    alone = {"the emblem alone": num["probe_emblem"], "the caption text alone": num["probe_text"]}
    off = [k for k, v in alone.items() if _off_chance(versus_chance(v, band_first))]
    exp1 = _experiment1(results)
    hidden_vs = {
        s: versus_chance(mean_where(exp1, "AUROC", stage=s, group=main), num["band_main"])
        for s in exp1.stage.unique()
    }
    above = [s for s, v in hidden_vs.items() if v == "above chance"]
    finetuned_above = [s for s in above if not s.startswith("zero-shot")]
    acc_best_vs = versus_chance(num["acc_ft_best"], results.acc_band(main))
    matches = not finetuned_above and acc_best_vs != "above chance"
    shown_vs = {
        key: versus_chance(num[f"auroc_ft{key}_shown"], num["band_shown"])
        for key in ("", "_image", "_image_shared", "_text_shared")
    }
    shown_learned = shown_vs[""] == shown_vs["_image"] == "above chance"
    aux_off = [
        AUX_NAMES[k]
        for k in AUX_NAMES
        if _off_chance(versus_chance(num[f"auroc_{k}"], num["band_main"]))
    ]
    shown_gain = {k: num[f"auroc_{k}_shown"] - num["auroc_ft_shown"] for k in AUX_NAMES}
    n_trade_rows, trade, _ = _trade(results)
    gap = num["share_linked"] - num["share_unlinked"]
    cam_area = {r: num[f"area_{r}"] for r in ("emblem", "text")}
    cam_means = {
        key: {r: num[f"cam_{key}_{r}"] for r in ("emblem", "text")} for key in ("zs", "img", "txt")
    }
    changes, rising = _cam_changes(results)
    spread = num["cam_spread"]
    seen = [
        move
        for key, move in SOURCE_MOVES.items()
        if rising.get(key, False) and changes.get(key, 0) > spread
    ]
    auc_over_n = _over_n(results.records, main).groupby(["experiment", "n"])["AUROC"].mean()
    n_off = sum(versus_chance(v, num["band_main"]) != "at chance" for v in auc_over_n)
    return {
        "cam_setting": results.cam_setting,
        "cam_reading": results.cam_reading,
        "probe_alone_verdict": _probe_alone_verdict(off),
        "probe_image_verdict": _probe_image_verdict(versus_chance(num["probe_image"], band_first)),
        "probe_image_hidden_vs": versus_chance(
            num["probe_image_hidden"], results.acc_band("hidden")
        ),
        "exp1_hidden_verdict": _exp1_hidden_verdict(above),
        "exp1_source_verdict": "That matches the source's finding"
        if matches
        else "That departs from the source's finding",
        "ft_image_vs": hidden_vs[FT_IMAGE],
        "shown_text_vs": shown_vs[""],
        "shown_image_vs": shown_vs["_image"],
        "shown_image_shared_vs": shown_vs["_image_shared"],
        "shown_text_shared_vs": shown_vs["_text_shared"],
        "shown_conclusion": _shown_conclusion(shown_learned, finetuned_above),
        "aux_counts_words": ", ".join(str(n) for n in results.aux_counts),
        "stages_hidden_verdict": _stages_hidden_verdict(results.have_aux, aux_off),
        "trade_verdict": _trade_verdict(n_trade_rows, trade),
        "aux_shown_verdict": _aux_shown_verdict(shown_gain, aux_off),
        "share_verdict": _share_verdict(gap),
        "summary_share": _summary_share(gap),
        "cam_zs_verdict": _share_words(cam_means["zs"], cam_area),
        "cam_img_move": _move_words(cam_means["img"], cam_means["zs"]),
        "cam_txt_move": _move_words(cam_means["txt"], cam_means["zs"]),
        "cam_spread_verdict": _cam_spread_verdict(spread, changes),
        "cam_source_verdict": _cam_source_verdict(seen),
        "cam_auc_verdict": _cam_auc_verdict(n_off, len(auc_over_n)),
        "summary_exp1": _summary_exp1(finetuned_above, shown_learned),
        "summary_aux": _summary_aux(results.have_aux, aux_off, _raising(shown_gain)),
        "summary_cam": _summary_cam(spread, changes),
    }
