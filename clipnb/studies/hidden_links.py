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
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from sklearn.metrics import roc_auc_score
from torch import nn
from tqdm.auto import tqdm

from clipnb.core.evaluation import select_on_validation
from clipnb.core.features import encode_images, image_tensors, text_features
from clipnb.core.imagesets import ImageSet
from clipnb.core.models import ClipBundle
from clipnb.methods.finetune import IMAGE_PARTS, TEXT_PARTS, set_trainable
from clipnb.methods.saliency import CamSetting

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
    from clipnb.core.report import mean_std_table

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
