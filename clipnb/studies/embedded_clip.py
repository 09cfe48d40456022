"""The chapter "The embedded CLIP": the project's own CLIP, its pretraining, and which maps to trust.

:func:`run` loads the profile's pretrained checkpoint (training it only if the cache is empty)
and measures what the chapter reports: the pretraining record, retrieval on held-out pairs,
zero-shot accuracy on every world task and style and on the handwritten digits, and the saliency
protocol of :mod:`clipnb.methods.saliency` (the method × layer table, the chosen setting, example
maps). The table, figure and verdict functions turn its results into what the chapter shows and
cites; :func:`numbers` and :func:`verdicts` give every glued number and phrase.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from clipnb.core import report
from clipnb.core.evaluation import accuracy, zero_shot_logits
from clipnb.core.features import SINGLE_TEMPLATE, class_embeddings, encode_images, encode_texts
from clipnb.core.imagesets import array_imageset
from clipnb.core.models import ClipBundle, create_model
from clipnb.core.utils import seed_everything
from clipnb.data import world
from clipnb.data.registry import load_dataset
from clipnb.methods import pretrain, saliency
from clipnb.methods.pretrain import PretrainConfig, PretrainRecord
from clipnb.methods.saliency import (
    MAX_RANDOM_CORRELATION,
    CamSetting,
    SaliencyValidation,
    mass_in_mask,
)
from clipnb.studies.verdicts import compare, join_words

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = [
    "KAPPA_BOUNDS",
    "LEVELS",
    "SCORE_LABELS",
    "CamExamples",
    "EmbeddedClipResults",
    "ModelFacts",
    "cam_examples",
    "cascade_figure",
    "cascade_frame",
    "example_figure",
    "example_mass_table",
    "level",
    "loss_figure",
    "numbers",
    "recall_table",
    "run",
    "saliency_verdicts",
    "scale_table",
    "time_table",
    "validation_table",
    "verdicts",
    "world_figure",
    "zero_shot_figure",
    "zero_shot_table",
]

#: The dataset row of real handwritten digits, which the world never contains.
HANDWRITTEN = ("handwritten digit", "handwritten (OOD)")

#: How well pretraining taught a task, from the chance-corrected accuracy
#: kappa = (accuracy - chance) / (100 - chance): 0 at chance, 1 when perfect.
#: (lower bound of kappa, how well a task is learned, short adjective)
LEVELS: tuple[tuple[float, str, str], ...] = (
    (0.9, "learned almost completely", "near perfect"),
    (0.5, "learned well", "strong"),
    (0.2, "learned only partly", "partial"),
    (0.05, "barely learned", "weak"),
    (-np.inf, "not learned (zero-shot stays near chance)", "near chance"),
)
KAPPA_BOUNDS = [b for b, _, _ in LEVELS[:-1]]

#: How the prose names the world's tasks.
PLURAL = {"shape": "shapes", "colour": "colours", "digit": "printed digits"}

#: The photo task and handwritten digits differ by "the same kind of gap" as the source's
#: MNIST/Food101 (48 points) when they differ by more than this many points.
GAP_POINTS = 10

SCORE_LABELS = {
    "pointing": "pointing game, %",
    "mass": "mass in mask, %",
    "rho_random": "ρ with randomised tower",
}


@dataclass(frozen=True)
class ModelFacts:
    """The sizes of the model that the chapter reports."""

    image_width: int
    text_width: int
    patch_size: int
    image_size: int
    grid: tuple[int, int]
    n_params: int
    n_token_params: int
    n_cam_layers: int

    @classmethod
    def of(cls, bundle: ClipBundle) -> ModelFacts:
        visual = bundle.model.visual
        return cls(
            image_width=visual.transformer.width,
            text_width=bundle.model.transformer.width,
            patch_size=visual.patch_size[0],
            image_size=bundle.image_size,
            grid=(visual.grid_size[0], visual.grid_size[1]),
            n_params=sum(p.numel() for p in bundle.model.parameters()),
            n_token_params=bundle.model.token_embedding.weight.numel(),
            n_cam_layers=len(saliency.cam_layers(bundle.model)),
        )


@dataclass
class CamExamples:
    """Example maps: the images as the model saw them, their masks and classes, and the maps of
    each method at the chosen layer (plus the chosen method on the fully randomised tower)."""

    images: np.ndarray
    masks: np.ndarray
    titles: list[str]
    maps: dict[str, np.ndarray]


@dataclass
class EmbeddedClipResults:
    """Everything the chapter measures.

    ``zero_shot`` has one row per dataset: ``dataset, task, style, classes, test images,
    zero-shot %, chance %``; ``recall`` holds image→text and text→image recall@1 and @5 (%).
    """

    config: PretrainConfig
    record: PretrainRecord
    twin: PretrainRecord
    model: ModelFacts
    world_examples: list[tuple[np.ndarray, str]]
    n_pairs: int
    recall: dict[str, float]
    zero_shot: pd.DataFrame
    validation: SaliencyValidation
    cam_examples: CamExamples


# --- the computation --------------------------------------------------------------------------------


def world_examples(per_style: int = 6) -> list[tuple[np.ndarray, str]]:
    """A few captioned images of each style, each labelled ``[style] caption``."""
    examples = []
    for style in world.STYLES:
        batch = world.generate_captioned(
            per_style, seed=123 + world.STYLES.index(style), styles=(style,)
        )
        examples += [
            (img, f"[{style}] {cap}") for img, cap in zip(batch.images, batch.captions, strict=True)
        ]
    return examples


def heldout_recall(
    bundle: ClipBundle, config: PretrainConfig, n_retrieval: int
) -> tuple[int, dict[str, float]]:
    """Recall@k on (at most ``n_retrieval``) held-out image–caption pairs, and how many pairs."""
    held = pretrain.heldout_batch(config)
    n_pairs = min(n_retrieval, len(held.captions))
    held_set = array_imageset(
        "world-heldout-pairs",
        held.images[:n_pairs],
        np.zeros(n_pairs),
        ["pair"],
        ["heldout", config.key(), n_pairs],
    )
    image_feats = encode_images(bundle, held_set)
    text_feats = encode_texts(bundle, held.captions[:n_pairs])
    return n_pairs, pretrain.retrieval_recall(image_feats, text_feats)


def zero_shot_rows(bundle: ClipBundle, n_per_class: int) -> pd.DataFrame:
    """Zero-shot accuracy ("a photo of a {c}.") on every world task in every style, and on the
    handwritten digits."""
    rows = []
    tasks = [(f"world-{t}-{s}", t, s) for t in world.LABEL_TASKS for s in world.STYLES]
    tasks.append(("digits", *HANDWRITTEN))
    for name, task, style in tasks:
        options = {"per_class": (1, 1, n_per_class)} if name != "digits" else {}
        data = load_dataset(name, **options)
        feats = encode_images(bundle, data.test)
        weights = class_embeddings(bundle, data.class_names, SINGLE_TEMPLATE)
        acc = accuracy(zero_shot_logits(feats, weights), data.test.labels)
        rows.append(
            {
                "dataset": name,
                "task": task,
                "style": style,
                "classes": data.test.n_classes,
                "test images": len(data.test),
                "zero-shot %": acc,
                "chance %": 100 / data.test.n_classes,
            }
        )
    return pd.DataFrame(rows)


def cam_examples(bundle: ClipBundle, result: SaliencyValidation, n_images: int = 6) -> CamExamples:
    """Maps of every method at the chosen layer on ``n_images`` of the protocol's validation
    images, and of the chosen method on the fully randomised tower."""
    from clipnb.methods.gradcam import clip_cams

    images = saliency.masked_images(bundle, result.protocol)
    rows = np.linspace(0, len(images.classes) - 1, n_images).round().astype(np.int64)
    x, y, m = images.pixels[rows], images.classes[rows], images.masks[rows]
    feats = class_embeddings(bundle, images.class_names)
    layer = result.setting.layer
    maps = {
        method: clip_cams(bundle.model, feats, CamSetting(method, layer), x, y)
        for method in result.protocol.methods
    }
    *_, (_, randomised) = saliency.randomised_cascade(bundle.model, result.protocol.seeds[0])
    chosen = result.setting.method
    maps[f"{chosen}, randomised tower"] = clip_cams(randomised, feats, result.setting, x, y)
    return CamExamples(
        images=report.display_images(bundle, x),
        masks=m,
        titles=[images.class_names[c] for c in y],
        maps=maps,
    )


def run(
    *, profile: str, n_per_class: int, n_retrieval: int, seed: int, progress: bool = True
) -> EmbeddedClipResults:
    """The chapter's computation, with the notebook's parameters.

    ``make book`` trains and caches both checkpoints (CLIP and its label-supervised twin) before
    any notebook runs; this only loads them, and trains them only when the chapter runs on its
    own with an empty cache. Every profile but ``smoke`` reads the ``embedded`` model.
    """
    seed_everything(seed)
    model_profile = "smoke" if profile == "smoke" else "embedded"
    config = pretrain.PRETRAIN_CONFIGS[model_profile]
    examples = world_examples()
    checkpoint, _ = pretrain.prepare(model_profile)
    record = pretrain.load_record(config)
    bundle = create_model(config.model, pretrained=checkpoint)
    twin = pretrain.load_supervised_record(config)
    n_pairs, recall = heldout_recall(bundle, config, n_retrieval)
    zero_shot = zero_shot_rows(bundle, n_per_class)
    validation = saliency.validated_setting(bundle, model_profile, progress=progress)
    return EmbeddedClipResults(
        config=config,
        record=record,
        twin=twin,
        model=ModelFacts.of(bundle),
        world_examples=examples,
        n_pairs=n_pairs,
        recall=recall,
        zero_shot=zero_shot,
        validation=validation,
        cam_examples=cam_examples(bundle, validation),
    )


# --- tables --------------------------------------------------------------------------------------


def time_table(results: EmbeddedClipResults) -> pd.DataFrame:
    """Where a pretraining step's time went."""
    return results.record.time_split_table().round(1)


def recall_table(results: EmbeddedClipResults) -> pd.DataFrame:
    """Recall@1 and @5 (%) on held-out pairs, in both directions."""
    recall = results.recall
    return pd.DataFrame(
        {
            "R@1": [recall["image_to_text_R@1"], recall["text_to_image_R@1"]],
            "R@5": [recall["image_to_text_R@5"], recall["text_to_image_R@5"]],
        },
        index=["image → text", "text → image"],
    ).round(1)


def zero_shot_table(results: EmbeddedClipResults) -> pd.DataFrame:
    """Zero-shot accuracy (%) per task (rows) and style (columns)."""
    return results.zero_shot.pivot_table(
        index="task", columns="style", values="zero-shot %", sort=False
    ).round(1)


def validation_table(result: SaliencyValidation) -> pd.DataFrame:
    """Mean ± std over seeds per (method, layer), with the no-model baselines as last rows."""
    scores = list(SCORE_LABELS)
    rows = pd.concat([result.table, result.baselines.assign(rho_random=np.nan)])
    long = rows.melt(id_vars=["method", "layer", "seed"], value_vars=scores, var_name="score")
    long = long.dropna(subset=["value"]).assign(score=lambda df: df.score.map(SCORE_LABELS))
    table = report.mean_std_table(
        long, index=["method", "layer"], columns="score", value="value", digits=2
    )
    return table[[SCORE_LABELS[s] for s in scores]].fillna("—")


def example_mass_table(results: EmbeddedClipResults) -> pd.DataFrame:
    """The mass in mask (%) of each row of :func:`example_figure`, on the images shown."""
    examples = results.cam_examples
    mass = pd.DataFrame(
        {
            "maps": list(examples.maps),
            "mass in mask, %": [
                100 * mass_in_mask(c, examples.masks).mean() for c in examples.maps.values()
            ],
        }
    )
    return mass.round(1)


def scale_table(results: EmbeddedClipResults) -> pd.DataFrame:
    """The embedded CLIP beside OpenAI's ViT-B/32: parameters, images seen, input, training time."""
    record = results.record
    return pd.DataFrame(
        {
            "embedded CLIP (this build)": [
                f"{results.model.n_params / 1e6:.1f} M",
                f"{record.images_seen:,}",
                f"{results.model.image_size} px",
                f"{record.seconds / 60:.1f} min on 2 CPU cores"
                f" ({record.cpu_seconds / 60:.1f} CPU-min)",
            ],
            "CLIP ViT-B/32 (OpenAI)": [
                "151 M",
                "≈ 12.8 billion (400 M pairs × 32 epochs)",
                "224 px",
                "days on hundreds of GPUs",
            ],
        },
        index=["parameters", "images seen", "input size", "training time"],
    )


# --- figures ---------------------------------------------------------------------------------------


def world_figure(results: EmbeddedClipResults) -> Figure:
    """Samples of the generated world, one row per style, with one of their captions."""
    examples = results.world_examples
    return report.image_grid([e[0] for e in examples], [e[1] for e in examples], ncols=6, size=1.6)


def loss_figure(results: EmbeddedClipResults) -> Figure:
    """Contrastive loss during pretraining, on the training batches and on held-out pairs."""
    import matplotlib.pyplot as plt

    record = results.record
    losses = pd.Series(record.losses)
    fig, ax = plt.subplots()
    ax.plot(losses.index + 1, losses, alpha=0.25, color="C0", label="training batch")
    ax.plot(
        losses.index + 1,
        losses.rolling(25, min_periods=1).mean(),
        color="C0",
        label="training (mean of 25)",
    )
    held_steps, held_values = zip(*record.heldout_losses, strict=True)
    ax.plot(held_steps, held_values, "o-", color="C3", label="held-out pairs")
    ax.axhline(np.log(results.config.batch_size), ls=":", color="grey", label="chance, log(batch)")
    ax.set(xlabel="step", ylabel="contrastive loss", title="Pretraining the embedded CLIP")
    ax.legend()
    return fig


def zero_shot_figure(results: EmbeddedClipResults) -> Figure:
    """Zero-shot accuracy per task and style: seen styles green, unseen data red, chance ticked."""
    import matplotlib.pyplot as plt

    zs = results.zero_shot
    fig, ax = plt.subplots(figsize=(7.5, 3.6))
    plot_df = zs.assign(group=zs["task"] + " · " + zs["style"])
    colours = ["C2" if s in world.PRETRAIN_STYLES else "C3" for s in plot_df["style"]]
    ax.barh(plot_df["group"], plot_df["zero-shot %"], color=colours)
    ax.scatter(plot_df["chance %"], plot_df["group"], marker="|", color="black", s=200)
    ax.invert_yaxis()
    ax.set(
        xlabel="zero-shot accuracy (%)",
        xlim=(0, 100),
        title="Zero-shot accuracy: seen styles (green) vs unseen data (red)",
    )
    fig.tight_layout()
    return fig


def cascade_frame(result: SaliencyValidation, layer: str | None = None) -> pd.DataFrame:
    """Long table of the rank correlation at each cascade stage, methods at ``layer``."""
    layer = result.setting.layer if layer is None else layer
    stages = [c for c in result.table.columns if c.startswith("rho_") and c != "rho_random"]
    rows = result.table[result.table.layer == layer]
    long = rows.melt(
        id_vars=["method", "seed"], value_vars=stages, var_name="stage", value_name="rho"
    )
    return long.assign(stage=lambda df: df.stage.str.removeprefix("rho_"))


def cascade_figure(result: SaliencyValidation) -> Figure:
    """Rank correlation with the trained model's maps as the tower is randomised from the top."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    frame = cascade_frame(result)
    fig, ax = plt.subplots(figsize=(7.5, 3.6))
    sns.lineplot(
        frame, x="stage", y="rho", hue="method", marker="o", errorbar="sd", sort=False, ax=ax
    )
    ax.axhline(MAX_RANDOM_CORRELATION, ls=":", color="grey", label="sanity threshold")
    ax.set(
        xlabel="randomised down to (cumulative, from the top)",
        ylabel="Spearman ρ with trained maps",
        title=f"Model randomisation at {result.setting.layer}",
        ylim=(-0.3, 1.05),
    )
    ax.legend(fontsize=8, ncols=2)
    fig.tight_layout()
    return fig


def example_figure(examples: CamExamples) -> Figure:
    """The images (mask outlined in white), then one row of overlaid maps per entry of
    ``examples.maps``."""
    import matplotlib.pyplot as plt

    from clipnb.methods.gradcam import overlay

    shown, m, maps = examples.images, examples.masks, examples.maps
    n_images = len(shown)
    fig, axes = plt.subplots(
        len(maps) + 1,
        n_images,
        figsize=(1.35 * n_images + 1.6, 1.3 * (len(maps) + 1)),
        squeeze=False,
    )
    for j in range(n_images):
        axes[0, j].imshow(shown[j], interpolation="nearest")
        axes[0, j].contour(m[j], levels=[0.5], colors="white", linewidths=0.8)
        axes[0, j].set_title(examples.titles[j], fontsize=8)
    axes[0, 0].set_ylabel("image", fontsize=8)
    for i, (name, cams) in enumerate(maps.items(), start=1):
        for j in range(n_images):
            axes[i, j].imshow(overlay(shown[j], cams[j]), interpolation="nearest")
            axes[i, j].contour(m[j], levels=[0.5], colors="white", linewidths=0.6)
        axes[i, 0].set_ylabel(name.replace(", ", ",\n"), fontsize=8)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    return fig


# --- numbers -------------------------------------------------------------------------------------


def with_kappa(zero_shot: pd.DataFrame) -> pd.DataFrame:
    """The zero-shot rows with their chance-corrected accuracy ``kappa``."""
    chance = zero_shot["chance %"]
    return zero_shot.assign(kappa=(zero_shot["zero-shot %"] - chance) / (100 - chance))


def zs_acc(zero_shot: pd.DataFrame, task: str, style: str) -> float:
    """Zero-shot accuracy (%) of one task in one style."""
    rows = zero_shot.loc[(zero_shot.task == task) & (zero_shot["style"] == style)]
    return float(rows["zero-shot %"].iloc[0])


def _photo_accuracy(zero_shot: pd.DataFrame) -> pd.Series:
    return zero_shot[zero_shot["style"] == "photo"].set_index("task")["zero-shot %"]


def numbers(results: EmbeddedClipResults) -> dict[str, float]:
    """Every number the chapter's prose cites."""
    config, record, model, zs = results.config, results.record, results.model, results.zero_shot
    out: dict[str, float] = {
        "image_width": model.image_width,
        "text_width": model.text_width,
        "patch_size": model.patch_size,
        "image_size": model.image_size,
        "grid_size": model.grid[0],
        "n_tokens": model.grid[0] * model.grid[1],
        "pool_size_k": config.pool_size / 1e3,
        "pretrain_minutes": record.seconds / 60,
        "pretrain_steps": config.steps,
        "pretrain_batch": config.batch_size,
        "pretrain_images_per_s": record.images_per_second,
        "final_heldout_loss": record.heldout_losses[-1][1],
        "pretrain_cpu_minutes": record.cpu_seconds / 60,
        "pool_passes": record.images_seen / config.pool_size,
        "chance_loss": np.log(config.batch_size),
        "mflops_per_image": record.flops_per_image / 1e6,
        "achieved_gflops": record.achieved_flops / 1e9,
        "peak_gflops": record.peak_flops / 1e9,
        "peak_percent": 100 * record.peak_fraction,
        "threads": record.threads,
        "peak_matrix": pretrain.PEAK_MATRIX_SIZE,
        "twin_minutes": results.twin.seconds / 60,
        "twin_steps": len(results.twin.losses),
        "twin_lr": config.supervised_lr,
        "clip_lr": config.lr,
    }
    for key, value in results.recall.items():
        out[key.replace("@", "").replace("_to_", "2")] = value
    out |= {
        "n_pairs": results.n_pairs,
        "chance_r1": 100 / results.n_pairs,
        "chance_r5": 500 / results.n_pairs,
        "zs_shape_photo": zs_acc(zs, "shape", "photo"),
        "zs_colour_photo": zs_acc(zs, "colour", "photo"),
        "zs_digit_photo": zs_acc(zs, "digit", "photo"),
        "zs_shape_heldout": zs_acc(zs, "shape", world.HELD_OUT_STYLE),
        "zs_digit_heldout": zs_acc(zs, "digit", world.HELD_OUT_STYLE),
        "zs_digits": zs_acc(zs, *HANDWRITTEN),
        "chance_shape": 100 / len(world.SHAPES),
        "chance_digits": 100 / zs.loc[zs.task == HANDWRITTEN[0], "classes"].iloc[0],
        "kappa_near_perfect": KAPPA_BOUNDS[0],
        "kappa_strong": KAPPA_BOUNDS[1],
        "kappa_partial": KAPPA_BOUNDS[2],
        "kappa_weak": KAPPA_BOUNDS[3],
    }
    photo = _photo_accuracy(zs)
    out["best_photo_acc"] = photo.max()
    out["photo_vs_handwritten_gap"] = photo.max() - zs_acc(zs, *HANDWRITTEN)
    validation = results.validation
    out |= {
        "saliency_n_layers": model.n_cam_layers,
        "grid_side": model.grid[0],
        "saliency_n_images": validation.protocol.n_images,
        "saliency_minutes": validation.seconds / 60,
    }
    chosen, uniform = validation.row(), validation.baseline()
    centre = validation.baseline("centre prior")
    for name, row in (("chosen", chosen), ("uniform", uniform), ("centre", centre)):
        out[f"saliency_{name}_pointing"] = row.pointing
        out[f"saliency_{name}_mass"] = row.mass
    out |= {
        "saliency_chosen_rho": chosen.rho_random,
        "n_params_m": model.n_params / 1e6,
        "n_token_params_m": model.n_token_params / 1e6,
        "images_seen_k": record.images_seen / 1e3,
    }
    return {name: float(value) for name, value in out.items()}


# --- verdicts --------------------------------------------------------------------------------------


def level(kappa: float, short: bool = False) -> str:
    """How well a task is learned, from its chance-corrected accuracy (see :data:`LEVELS`)."""
    return next(lv[2 if short else 1] for lv in LEVELS if kappa >= lv[0])


def steal_sentence(record: PretrainRecord) -> str:
    """How much CPU time the host took from this virtual machine during pretraining."""
    if np.isnan(record.steal_percent):
        return "This machine did not report how much CPU time its host took from it."
    return (
        f"While it ran, the hypervisor gave {record.steal_percent:.0f} % of this virtual"
        " machine's CPU time to other guests (steal time): on a shared cloud machine the same run"
        " takes longer in wall time when the neighbours are busy, and CPU time is the steadier"
        " measure."
    )


def _budget_reason(short_of_well: Sequence[str], image_size: int, steps: int) -> str:
    """Why some tasks are learned less than well: the budget (a colour is the easy case)."""
    if not short_of_well:
        return f"Every task is learned well within {steps} steps."
    return (
        f"For {join_words(short_of_well)}, the likely reason is the budget: a ViT learning"
        f" shapes or small glyphs in a {image_size}-pixel image from scratch needs many more"
        f" than {steps} steps"
        + ("" if "colours" in short_of_well else ", while a colour is decided by a few pixels")
        + ", and this profile's budget is minutes on two CPU cores."
    )


def _clean_contrast(seen_ok: Sequence[str], ood: Sequence[str]) -> str:
    """Is there a clean contrast between tasks learned in seen styles and OOD sets at chance?"""
    if seen_ok and ood:
        return (
            f"The clean contrast is between {join_words(seen_ok)} in seen styles and"
            f" {join_words(ood)}, where zero-shot is near chance"
        )
    if seen_ok:
        return (
            f"{join_words(seen_ok).capitalize()} are learned at least partly in seen styles, but"
            " no out-of-distribution set is near chance, so the in/out contrast is one of degree"
        )
    return "No task is learned even partly in seen styles, so there is no clean in/out contrast"


def _shape_heldout_verb(change: float) -> str:
    """How shapes move from photos to the held-out style (within a point: they stay)."""
    if abs(change) < 1:
        return "stay at"
    return "drop to" if change < 0 else "rise to"


def _gap_verdict(gap: float) -> str:
    """The photo/handwritten gap against the source's MNIST/Food101 gap of 48 points."""
    if gap > GAP_POINTS:
        return "so this build shows the same kind of gap (more than 10 points) as"
    if gap > 0:
        return "so this build shows a much smaller gap (10 points or less) than"
    return "so this build shows no such gap, unlike"


def zero_shot_verdicts(zero_shot: pd.DataFrame, image_size: int, steps: int) -> dict[str, str]:
    """The phrases about how well pretraining taught each task, in and out of distribution."""
    zs = with_kappa(zero_shot)
    seen = zs[zs["style"].isin(world.PRETRAIN_STYLES)].groupby("task", sort=False)["kappa"].mean()
    heldout = zs[zs["style"] == world.HELD_OUT_STYLE].set_index("task")["kappa"]
    hw_kappa = float(zs.loc[zs.task == HANDWRITTEN[0], "kappa"].iloc[0])
    seen_ok = [PLURAL[t] for t, k in seen.items() if k >= KAPPA_BOUNDS[2]]
    ood = [
        *(
            f"{PLURAL[t]} in the {world.HELD_OUT_STYLE} style"
            for t, k in heldout.items()
            if k < KAPPA_BOUNDS[-1]
        ),
        *(["handwritten digits"] if hw_kappa < KAPPA_BOUNDS[-1] else []),
    ]
    photo = _photo_accuracy(zs)
    shape_change = zs_acc(zs, "shape", world.HELD_OUT_STYLE) - zs_acc(zs, "shape", "photo")
    return {
        "seen_levels": "; ".join(
            f"{PLURAL[t]} are {level(k)}" for t, k in seen.items()
        ).capitalize(),
        "seen_levels_short": join_words(
            [f"{level(k, short=True)} for {PLURAL[t]}" for t, k in seen.items()]
        ),
        "budget_reason": _budget_reason(
            [PLURAL[t] for t, k in seen.items() if k < KAPPA_BOUNDS[1]], image_size, steps
        ),
        "heldout_levels": join_words(
            [f"{level(k, short=True)} for {PLURAL[t]}" for t, k in heldout.items()]
        ),
        "handwritten_level": level(hw_kappa, short=True),
        "shape_heldout_verb": _shape_heldout_verb(shape_change),
        "clean_contrast": _clean_contrast(seen_ok, ood),
        "best_photo_task": PLURAL[photo.idxmax()],
        "gap_verdict": _gap_verdict(photo.max() - zs_acc(zs, *HANDWRITTEN)),
    }


def saliency_verdicts(result: SaliencyValidation) -> dict[str, str]:
    """The sentences the chapters cite: the choice, who fails the check, and against what."""
    means = result.table.groupby(["method", "layer"], sort=False).mean(numeric_only=True)
    per_method = means.groupby(level="method", sort=False).rho_random.min()
    failing = [m for m, rho in per_method.items() if rho >= MAX_RANDOM_CORRELATION]
    chosen = result.row()
    centre = result.baseline("centre prior")
    passed = bool(chosen.rho_random < MAX_RANDOM_CORRELATION)
    above_uniform = bool(chosen.mass > result.baseline().mass)
    if not passed:
        interpretable = (
            "no method passes the randomisation check on this model, so the CAM rows of the "
            "chapters are not interpretable at this scale"
        )
    elif not above_uniform:
        interpretable = (
            "the chosen maps put no more mass on the object than a uniform map, so the CAM rows "
            "of the chapters are not interpretable at this scale"
        )
    else:
        interpretable = "the chapters' CAM figures use it and quote its mass in mask"
    above_or_below = ("above", "below", "below")  # a tie is not above
    return {
        "saliency_choice": result.setting.label(),
        "saliency_failing": join_words(failing, empty="no method"),
        "saliency_failing_verb": "fails" if len(failing) == 1 else "fail",
        "saliency_vs_centre": compare(chosen.mass, centre.mass, words=above_or_below)
        + " the centre prior's",
        "saliency_pointing_vs_centre": compare(
            chosen.pointing, centre.pointing, words=above_or_below
        )
        + " the centre prior's",
        "saliency_interpretable": interpretable,
    }


def verdicts(results: EmbeddedClipResults) -> dict[str, str]:
    """Every phrase the chapter's prose pulls in with ``{glue:md}``, computed from the numbers."""
    return {
        "steal_sentence": steal_sentence(results.record),
        "budget_verdict": pretrain.budget_verdict(results.record),
        **zero_shot_verdicts(results.zero_shot, results.model.image_size, results.config.steps),
        **saliency_verdicts(results.validation),
    }
