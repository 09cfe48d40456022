"""The chapter "Clustering and label noise": the whole computation, its tables, figures and verdicts.

Two questions from the source study, asked of several backbones (CLIP, a label-supervised tower of
the same architecture, a random tower, raw pixels):

1. *Do the features organise data by class without labels?* UMAP + KMeans on each dataset's
   features, scored against the classes (:func:`clustering_records`).
2. *How do few-shot linear probes hold up when labels are wrong?* Probes on ``shots`` labelled
   images per class, a share of them flipped (:func:`label_noise_records`).

:func:`run` does both and returns a :class:`ClusteringResults`; :func:`numbers` and
:func:`verdicts` turn it into what the prose cites, so that every sentence follows the tables.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import matplotlib.figure
import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from clipnb.core import report
from clipnb.core.features import encode_dataset
from clipnb.core.imagesets import few_shot_indices
from clipnb.core.utils import seed_everything
from clipnb.data.registry import load_dataset
from clipnb.methods.backbones import backbone_label, load_backbone
from clipnb.methods.clustering import cluster_and_score, embed_umap_2d, noisy_probe, xy_arrays
from clipnb.studies.verdicts import count_noun

__all__ = [
    "METRIC_LABELS",
    "ClusteringResults",
    "ScatterPanel",
    "cluster_table",
    "clustering_records",
    "data_table",
    "feature_dim_table",
    "figures",
    "heatmap_figure",
    "label_noise_figure",
    "label_noise_records",
    "noise_table",
    "numbers",
    "run",
    "scatter_figure",
    "verdicts",
]

#: How the tables name the clustering scores (the source's appendix table, plus their mean).
METRIC_LABELS: dict[str, str] = {
    "homogeneity": "homogeneity",
    "completeness": "completeness",
    "v_measure": "V-measure",
    "ari": "ARI",
    "ami": "AMI",
    "average": "average",
}


# --- the two experiments, as tables over backbones, datasets and seeds -----------------------------


def clustering_records(
    features: Mapping[tuple[str, str], Any],
    seeds: Sequence[int],
    *,
    n_components: int = 10,
    use_umap: bool = True,
    progress: bool = True,
) -> list[dict[str, Any]]:
    """Run :func:`clipnb.methods.clustering.cluster_and_score` for every (backbone, dataset) and seed.

    ``features`` maps ``(backbone, dataset)`` to the ``(x, y)`` to cluster (or a SplitFeatures).
    Returns long-format records ``{backbone, dataset, seed, metric, score}``, one per metric of
    :data:`clipnb.methods.clustering.CLUSTER_METRICS` plus ``"average"``, ready for
    :func:`clipnb.core.report.mean_std_table`. The same inputs and seeds give the same records.
    """
    jobs = [(key, int(seed)) for key in features for seed in seeds]
    records: list[dict[str, Any]] = []
    for (backbone, dataset), seed in tqdm(jobs, desc="clustering", disable=not progress):
        x, y = xy_arrays(features[(backbone, dataset)])
        scores = cluster_and_score(x, y, seed=seed, n_components=n_components, use_umap=use_umap)
        records += [
            {"backbone": backbone, "dataset": dataset, "seed": seed, "metric": m, "score": v}
            for m, v in scores.items()
        ]
    return records


def label_noise_records(
    features: Mapping[tuple[str, str], Mapping[str, Any]],
    shots: Sequence[int],
    noises: Sequence[float],
    seeds: Sequence[int],
    *,
    Cs: Sequence[float] = (0.1, 1.0, 10.0, 100.0),
    progress: bool = True,
) -> list[dict[str, Any]]:
    """Few-shot probes under label noise for every (backbone, dataset), shots, noise and seed.

    ``features`` maps ``(backbone, dataset)`` to ``{"train", "val", "test"}`` splits (``(x, y)`` or
    SplitFeatures, e.g. :func:`clipnb.core.features.encode_dataset`). For each seed, ``shots``
    examples per class are drawn from train with :func:`clipnb.core.imagesets.few_shot_indices`
    (the same draw for every backbone and noise level), then scored by
    :func:`clipnb.methods.clustering.noisy_probe`. Returns records
    ``{backbone, dataset, shots, noise, seed, C, accuracy}`` (accuracy in %).
    """
    jobs = [
        (key, int(k), float(p), int(s))
        for key in features
        for k in shots
        for p in noises
        for s in seeds
    ]
    records: list[dict[str, Any]] = []
    for (backbone, dataset), k, p, s in tqdm(jobs, desc="label noise", disable=not progress):
        splits = features[(backbone, dataset)]
        xtr, ytr = xy_arrays(splits["train"])
        idx = few_shot_indices(ytr, k, s)
        acc, C = noisy_probe((xtr[idx], ytr[idx]), splits["val"], splits["test"], p, s, Cs=Cs)
        records.append(
            {
                "backbone": backbone,
                "dataset": dataset,
                "shots": k,
                "noise": p,
                "seed": s,
                "C": C,
                "accuracy": acc,
            }
        )
    return records


# --- the chapter's computation -------------------------------------------------------------------


@dataclass
class ScatterPanel:
    """One panel of the scatter figure: a 2-D embedding of a test split and its true classes."""

    xy: np.ndarray
    y: Any
    n_classes: int


@dataclass
class ClusteringResults:
    """What the chapter shows: the settings it ran with, the score tables and the figures' data.

    ``clusters`` holds the clustering records with display names (``model``, ``metric``);
    ``noise`` the label-noise records with ``model``. ``datasets`` are clustered and probed,
    ``control_datasets`` only clustered.
    """

    backbones: list[str]
    datasets: list[str]
    control_datasets: list[str]
    focus_dataset: str
    shots: list[int]
    noise_levels: list[float]
    seeds: list[int]
    umap_components: int
    n_cs: int
    labels: dict[str, str]
    n_classes: dict[str, int]
    clusters: pd.DataFrame
    noise: pd.DataFrame
    split_sizes: dict[str, tuple[int, int, int]] = field(default_factory=dict)
    feature_dims: dict[str, int] = field(default_factory=dict)
    scatter: dict[tuple[str, str], ScatterPanel] = field(default_factory=dict)

    @property
    def cluster_sets(self) -> list[str]:
        """Every clustered dataset: the probed ones, then the controls."""
        return [*self.datasets, *self.control_datasets]

    @property
    def clip_label(self) -> str:
        return self.labels["clip"]


def run(
    *,
    profile: str,
    backbones: Sequence[str],
    datasets: Sequence[str],
    control_datasets: Sequence[str],
    dataset_options: Mapping[str, Mapping[str, Any]],
    focus_dataset: str,
    cluster_split: str,
    umap_components: int,
    use_umap: bool,
    pixel_size: int,
    shots: Sequence[int],
    noise_levels: Sequence[float],
    probe_cs: Sequence[float],
    seeds: Sequence[int],
) -> ClusteringResults:
    """Encode every dataset with every backbone, cluster, embed in 2-D, then probe under noise.

    The arguments are the notebook's parameters. The features come from the cache when possible;
    UMAP, KMeans, the few-shot draws and the flips all take the seed, so a rerun gives the same
    tables.
    """
    seed_everything(seeds[0])
    if focus_dataset not in datasets:
        raise ValueError(f"focus_dataset {focus_dataset!r} must be one of datasets {datasets}")
    labels = {b: backbone_label(b) for b in backbones}
    cluster_sets = [*datasets, *control_datasets]
    data = {name: load_dataset(name, **dataset_options.get(name, {})) for name in cluster_sets}
    features = {}
    for b in backbones:
        bundle = load_backbone(b, profile, pixel_size=pixel_size)
        for name, d in data.items():
            features[(b, name)] = encode_dataset(bundle, d)
        del bundle

    cluster_records = clustering_records(
        {key: f[cluster_split] for key, f in features.items()},
        seeds,
        n_components=umap_components,
        use_umap=use_umap,
    )
    clusters = pd.DataFrame(cluster_records).assign(
        model=lambda df: df["backbone"].map(labels),
        metric=lambda df: df["metric"].map(METRIC_LABELS),
    )
    scatter = {}
    for name in cluster_sets:
        for b in backbones:
            split = features[(b, name)][cluster_split]
            x = split.x.numpy()
            xy = embed_umap_2d(x, seed=seeds[0]) if use_umap else _pca_2d(x)
            scatter[(name, b)] = ScatterPanel(xy, split.y, len(split.class_names))

    probe_features = {key: f for key, f in features.items() if key[1] in datasets}
    noise_records = label_noise_records(probe_features, shots, noise_levels, seeds, Cs=probe_cs)
    noise = pd.DataFrame(noise_records).assign(model=lambda df: df["backbone"].map(labels))
    return ClusteringResults(
        backbones=list(backbones),
        datasets=list(datasets),
        control_datasets=list(control_datasets),
        focus_dataset=focus_dataset,
        shots=list(shots),
        noise_levels=list(noise_levels),
        seeds=list(seeds),
        umap_components=umap_components,
        n_cs=len(probe_cs),
        labels=labels,
        n_classes={name: d.test.n_classes for name, d in data.items()},
        clusters=clusters,
        noise=noise,
        split_sizes={name: (len(d.train), len(d.val), len(d.test)) for name, d in data.items()},
        feature_dims={b: features[(b, cluster_sets[0])]["test"].x.shape[1] for b in backbones},
        scatter=scatter,
    )


def _pca_2d(x: np.ndarray) -> np.ndarray:
    """The scatter's fallback when UMAP is off: the first two principal components."""
    from sklearn.decomposition import PCA

    return PCA(2).fit_transform(x)


# --- tables --------------------------------------------------------------------------------------


def data_table(results: ClusteringResults) -> pd.DataFrame:
    """Classes, split sizes and role of every dataset."""
    names = list(results.split_sizes)  # every dataset once, in the order they were loaded
    sizes = results.split_sizes
    return pd.DataFrame(
        {
            "classes": [results.n_classes[n] for n in names],
            "train / val / test images": [
                f"{sizes[n][0]} / {sizes[n][1]} / {sizes[n][2]}" for n in names
            ],
            "used for": [
                "clustering, probes" if n in results.datasets else "clustering (control)"
                for n in names
            ],
        },
        index=pd.Index(names, name="dataset"),
    )


def feature_dim_table(results: ClusteringResults) -> pd.DataFrame:
    """The feature dimension of every backbone."""
    return pd.DataFrame(
        {"feature dimension": [results.feature_dims[b] for b in results.backbones]},
        index=pd.Index([results.labels[b] for b in results.backbones], name="backbone"),
    )


def cluster_table(results: ClusteringResults) -> pd.DataFrame:
    """The five clustering scores and their average, mean ± std over seeds."""
    return report.mean_std_table(
        results.clusters, ["dataset", "model"], "metric", value="score", digits=3
    )


def noise_table(results: ClusteringResults) -> pd.DataFrame:
    """Probe accuracy per dataset, backbone and shots (rows) and share of flipped labels."""
    return report.mean_std_table(
        results.noise, ["dataset", "model", "shots"], "noise", value="accuracy"
    ).rename(columns=lambda p: f"{p:.0%} flipped")


def average_scores(results: ClusteringResults) -> pd.DataFrame:
    """The source's "average score", mean over seeds: rows = models, columns = datasets."""
    clusters = results.clusters
    return report.mean_table(
        clusters[clusters["metric"] == "average"], "model", "dataset", value="score"
    )


# --- what the prose cites ------------------------------------------------------------------------


@dataclass
class _Summary:
    """The means the numbers and the verdicts are read from (one place, so they agree)."""

    average: pd.DataFrame  # average clustering score, models x datasets
    by_backbone: pd.Series  # ... averaged over the probed datasets
    control: pd.Series  # ... on the first control dataset (NaN without one)
    shape_sets: list[str]
    shape_scores: pd.DataFrame
    acc: pd.DataFrame  # probe accuracy at the most shots, models x noise levels
    drop: pd.Series  # clean minus noisiest accuracy, per model
    per_dataset: pd.DataFrame  # clean probe accuracy at the most shots, models x datasets
    noisy: pd.DataFrame  # probe accuracy at the highest noise, models x shots


def _summary(results: ClusteringResults) -> _Summary:
    average = average_scores(results)
    clip = results.clip_label
    shape_sets = [d for d in results.datasets if d.startswith("world-shape")]
    noise = results.noise
    n_max, p_min, p_max = max(results.shots), min(results.noise_levels), max(results.noise_levels)
    acc = report.mean_table(noise[noise["shots"] == n_max], "model", "noise")
    clean = noise[(noise["shots"] == n_max) & (noise["noise"] == p_min)]
    return _Summary(
        average=average,
        by_backbone=average[results.datasets].mean(axis=1),
        control=(
            average[results.control_datasets[0]]
            if results.control_datasets
            else pd.Series({clip: np.nan})
        ),
        shape_sets=shape_sets,
        shape_scores=average[shape_sets] if shape_sets else pd.DataFrame({"none": [np.nan]}),
        acc=acc,
        drop=acc[p_min] - acc[p_max],
        per_dataset=report.mean_table(clean, "model", "dataset"),
        noisy=report.mean_table(noise[noise["noise"] == p_max], "model", "shots"),
    )


def numbers(results: ClusteringResults) -> dict[str, float]:
    """Every number the prose glues, by its glue key."""
    s = _summary(results)
    clip, pixels = results.clip_label, results.labels.get("pixels", "")
    others = s.by_backbone.drop(clip)
    focus = s.average[results.focus_dataset]
    clusters = results.clusters
    shape_ari = clusters[(clusters["metric"] == "ARI") & clusters["dataset"].isin(s.shape_sets)]
    p_min, p_max = min(results.noise_levels), max(results.noise_levels)
    shapes = s.shape_sets
    return {
        "umap_components": results.umap_components,
        "n_seeds": len(results.seeds),
        "clip_avg": s.by_backbone[clip],
        "best_other_avg": others.max(),
        "pixels_avg": s.by_backbone.get(pixels, np.nan),
        "clip_rank": int((s.by_backbone > s.by_backbone[clip]).sum()) + 1,
        "n_backbones": len(results.backbones),
        "focus_clip_avg": focus[clip],
        "focus_best_other_avg": focus.drop(clip).max(),
        "focus_pixels_avg": focus.get(pixels, np.nan),
        "top_avg": s.average[results.datasets].max().max(),
        "control_clip_avg": s.control[clip],
        "control_best_other_avg": s.control.drop(clip).max(),
        "shape_best_avg": s.shape_scores.max().max(),
        "shape_best_ari": shape_ari.groupby(["model", "dataset"])["score"].mean().max(),
        "n_cs": results.n_cs,
        "max_shots": max(results.shots),
        "max_noise_pct": 100 * p_max,
        "clip_acc_clean": s.acc.loc[clip, p_min],
        "clip_acc_noisy": s.acc.loc[clip, p_max],
        "clip_noise_drop": s.drop[clip],
        "others_noise_drop": s.drop.drop(clip).mean(),
        "best_other_acc_noisy": s.acc[p_max].drop(clip).max(),
        "clip_shape_probe": s.per_dataset.loc[clip, shapes].mean() if shapes else np.nan,
        "shape_chance": np.mean([100 / results.n_classes[d] for d in shapes]) if shapes else np.nan,
    }


def verdicts(results: ClusteringResults) -> dict[str, str]:
    """Every computed phrase the prose glues with ``{glue:md}``, by its glue key."""
    s = _summary(results)
    return {**_cluster_verdicts(results, s), **_probe_verdicts(results, s)}


def _cluster_verdicts(results: ClusteringResults, s: _Summary) -> dict[str, str]:
    """Does CLIP cluster best, which cell tops the heatmap, and does colour beat shape."""
    clip = results.clip_label
    best = s.by_backbone.idxmax()
    cluster_verdict = (
        "The source's finding reproduces here: CLIP's clusters score highest averaged over the"
        " datasets"
        if best == clip
        else "The source's finding does not reproduce here: averaged over the datasets, "
        f"the best average score comes from {best}, not CLIP"
    )
    top_dataset = s.average[results.datasets].max().idxmax()
    top_model = s.average[top_dataset].idxmax()
    top_cell = f"{top_model} on {top_dataset}"
    if top_dataset == "digits" and top_model == results.labels.get("pixels"):
        top_cell += (
            ": small centred digits differ mainly in where the ink is, which is exactly what a"
            " pixel distance measures, and the embedded CLIP never saw handwriting"
        )
    if s.shape_sets:
        best_shape_set = s.shape_scores.max().idxmax()
        shape_best_cell = f"{s.shape_scores[best_shape_set].idxmax()} on {best_shape_set}"
    else:
        shape_best_cell = "no backbone"
    clip_shape_avg = s.shape_scores.loc[clip].max() if s.shape_sets else np.nan
    colour_dominates = s.control[clip] > clip_shape_avg
    return {
        "cluster_verdict": cluster_verdict,
        "top_cell": top_cell,
        "shape_best_cell": shape_best_cell,
        "control_verdict": (
            "in this world that is colour rather than shape: CLIP's clusters match the colour"
            " labels more closely than the shape labels"
            if colour_dominates
            else "in this world colour does not organise CLIP's features more than shape does"
        ),
        "shape_dominance": (
            "is not true of shape in this small world, where colour organises CLIP's features"
            " instead"
            if colour_dominates
            else "is not contradicted by the colour control for shape in this small world"
        ),
    }


def _probe_verdicts(results: ClusteringResults, s: _Summary) -> dict[str, str]:
    """Which probe is best, and what flipped labels and more shots do to the probes."""
    clip, datasets = results.clip_label, results.datasets
    n_min, n_max = min(results.shots), max(results.shots)
    p_max = max(results.noise_levels)
    best_phrases, n_clip_best = [], 0
    for name in datasets:
        ranked = s.per_dataset[name].sort_values(ascending=False)
        n_clip_best += ranked.index[0] == clip
        runner_up = (
            f", ahead of {ranked.index[1]} at {ranked.iloc[1]:.1f} %)" if len(ranked) > 1 else ")"
        )
        best_phrases.append(f"{ranked.index[0]} on {name} ({ranked.iloc[0]:.1f} %" + runner_up)
    if n_clip_best == 0:
        which = (
            f"any of the {count_noun(len(datasets), 'dataset')}"
            if len(datasets) > 1
            else "the one dataset probed"
        )
        clip_best = (
            f"CLIP's probe is not the best on {which}, so language supervision does not give the"
            " best probes in this build"
        )
    elif n_clip_best == len(datasets):
        clip_best = "CLIP's probe is the best on every dataset"
    else:
        clip_best = f"CLIP's probe is the best on {n_clip_best} of the {count_noun(len(datasets), 'dataset')}"
    n_b = len(results.backbones)
    backbones = count_noun(n_b, "backbone")
    n_drop = int((s.drop > 0).sum())
    n_gain = int((s.noisy[n_max] > s.noisy[n_min]).sum())
    return {
        "probe_best": "; ".join(best_phrases),
        "probe_clip_best": clip_best,
        "noise_cost": (
            "Flipped labels cost every backbone accuracy; no backbone is immune"
            if n_drop == n_b
            else f"Flipped labels cost accuracy to {n_drop} of the {backbones}"
        ),
        "noise_shots": (
            f"at {p_max:.0%} flipped, going from {n_min} to {n_max} labelled images per class"
            " raises "
            + (
                "every backbone's accuracy"
                if n_gain == n_b
                else f"the accuracy of {n_gain} of the {backbones}"
            )
        ),
        "noise_clip_drop": _drop_words(results, s),
    }


def _drop_words(results: ClusteringResults, s: _Summary) -> str:
    """Whether CLIP's probe loses less to flipped labels than the others, and why it might."""
    clip, p_min = results.clip_label, min(results.noise_levels)
    if not s.drop[clip] < s.drop.drop(clip).mean():
        return "CLIP's drop is not smaller than the others' average"
    words = "CLIP's drop is smaller than the others' average"
    if s.acc.loc[clip, p_min] < s.acc[p_min].drop(clip).mean():
        return words + (
            ", but so is its clean accuracy: part of the difference is a smaller distance to"
            " chance, since a probe that starts lower has less to lose"
        )
    return words + ", from a clean accuracy no lower than theirs"


# --- figures -------------------------------------------------------------------------------------


def heatmap_figure(results: ClusteringResults) -> matplotlib.figure.Figure:
    """The average clustering score per backbone (rows) and dataset (columns)."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    fig, ax = plt.subplots(
        figsize=(1.9 * len(results.cluster_sets) + 2.5, 0.55 * len(results.backbones) + 1.6)
    )
    sns.heatmap(
        average_scores(results), annot=True, fmt=".2f", vmin=0, vmax=1, cmap="viridis", ax=ax
    )
    ax.set(xlabel="", ylabel="", title="Clustering average score (mean over seeds)")
    fig.tight_layout()
    return fig


def scatter_figure(results: ClusteringResults) -> matplotlib.figure.Figure:
    """The 2-D embeddings: one row per dataset, one column per backbone, coloured by class."""
    import matplotlib.pyplot as plt

    names, ncols = results.cluster_sets, len(results.backbones)
    fig, axes = plt.subplots(
        len(names), ncols, figsize=(2.6 * ncols, 2.6 * len(names)), squeeze=False
    )
    for row, name in enumerate(names):
        for col, b in enumerate(results.backbones):
            panel = results.scatter[(name, b)]
            cmap = "tab10" if panel.n_classes <= 10 else "turbo"
            ax = axes[row, col]
            ax.scatter(*panel.xy.T, c=panel.y, cmap=cmap, s=4, lw=0)
            ax.set(xticks=[], yticks=[], title=results.labels[b] if row == 0 else "")
            ax.set_ylabel(name if col == 0 else "")
    fig.tight_layout()
    return fig


def label_noise_figure(results: ClusteringResults) -> matplotlib.figure.Figure:
    """Probe accuracy against shots, one panel per dataset (rows) and noise level (columns)."""
    import matplotlib.pyplot as plt

    datasets, levels, shots = results.datasets, results.noise_levels, results.shots
    noise = results.noise
    fig, axes = plt.subplots(
        len(datasets),
        len(levels),
        figsize=(3.3 * len(levels), 2.7 * len(datasets)),
        sharex=True,
        sharey="row",
        squeeze=False,
    )
    for row, name in enumerate(datasets):
        for col, p in enumerate(levels):
            ax = axes[row, col]
            sub = noise[(noise["dataset"] == name) & (noise["noise"] == p)]
            for i, b in enumerate(results.backbones):
                g = sub[sub["backbone"] == b].groupby("shots")["accuracy"]
                m, s = g.mean(), g.std(ddof=0)
                ax.plot(m.index, m, "o-", color=f"C{i}", label=results.labels[b], ms=3)
                ax.fill_between(m.index, m - s, m + s, color=f"C{i}", alpha=0.15, lw=0)
            ax.axhline(100 / results.n_classes[name], ls=":", color="grey")
            ax.set(xscale="log", xticks=shots, xticklabels=[str(k) for k in shots])
            ax.minorticks_off()
            ax.set_title(f"{name}, {p:.0%} flipped", fontsize=9)
            ax.set_xlabel("labelled images per class" if row == len(datasets) - 1 else "")
            ax.set_ylabel("test accuracy (%)" if col == 0 else "")
    handles, names = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, names, loc="lower center", ncol=len(results.backbones), frameon=False)
    fig.tight_layout(rect=(0, 0.4 / fig.get_figheight(), 1, 1))
    return fig


def figures(results: ClusteringResults) -> dict[str, matplotlib.figure.Figure]:
    """Every figure of the chapter, by its glue key."""
    return {
        "fig_cluster_heatmap": heatmap_figure(results),
        "fig_cluster_scatter": scatter_figure(results),
        "fig_label_noise": label_noise_figure(results),
    }
