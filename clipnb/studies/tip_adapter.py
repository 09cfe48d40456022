"""The Tip-Adapter chapter: the sweep, the probes of seed 0, the tables, figures and verdicts.

It runs in the order it reads: :func:`prepare` (model, CAM setting, methods, cached features),
:func:`run_sweep` (every method at every shot count and seed, on
:func:`clipnb.methods.few_shot.run_few_shot`, shared with the few-shot initialisation chapter),
:func:`run_probes` (the (alpha, beta) grid, Tip-Adapter-F's training loss, and the CAMs of
Tip-Adapter), or :func:`run` for all three; then :func:`numbers` and :func:`verdicts` for the prose.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import matplotlib.figure
import numpy as np
import pandas as pd
import torch

from clipnb.core import report
from clipnb.core.features import image_tensors
from clipnb.core.models import ClipBundle
from clipnb.core.utils import seed_everything
from clipnb.data.registry import load_dataset
from clipnb.methods import few_shot, saliency
from clipnb.methods.backbones import load_model
from clipnb.methods.gradcam import cam_mass_in_mask
from clipnb.methods.tip_adapter import TipAdapter, TipAdapterF, search_alpha_beta
from clipnb.studies.finetune_parts import object_masks
from clipnb.studies.verdicts import compare, count_noun

#: Glue prefix of each method (``t5_tip``, ``kmax_probe``, ...).
METHOD_KEYS = {
    "zs": "zero-shot",
    "probe": "linear probe",
    "head": "zero-shot-init head",
    "tip": "Tip-Adapter",
    "tipf": "Tip-Adapter-F",
}
#: The classifiers trained on the features, set against the training-free cache.
TRAINED = ("linear probe", "zero-shot-init head")
#: The paper's alpha (about 1 at CLIP's logit scale of 100) as a fraction of the logit scale.
PAPER_ALPHA_FRACTION = 0.01
#: The paper's learning rate for Tip-Adapter-F's keys.
PAPER_LR = 1e-3
#: The source's numbers at 5 shots on MNIST (real CLIP); it gives no probe or head numbers.
SOURCE_FIVE_SHOTS = {"zero-shot": "32.6 (≈ 32)", "Tip-Adapter": "≈ 70"}


# ----------------------------------------------------------------------------- figures


def cam_grid_figure(
    images: np.ndarray,
    maps: Mapping[str, np.ndarray],
    row_labels: Sequence[str],
    size: float = 1.35,
):
    """One row per image: the image, then its CAM overlay for every entry of ``maps``.

    ``images`` is uint8 ``[B, H, W, 3]`` (e.g. :func:`clipnb.core.report.display_images`), each map ``[B, H, W]``;
    column titles come from the keys of ``maps``, row titles from ``row_labels``.
    """
    from clipnb.core.report import image_grid
    from clipnb.methods.gradcam import overlay

    tiles, titles = [], []
    for b, label in enumerate(row_labels):
        tiles.append(images[b])
        titles.append(f"input: {label}" if b == 0 else label)
        for name, cams in maps.items():
            tiles.append(overlay(images[b], cams[b]))
            titles.append(name if b == 0 else "")
    return image_grid(tiles, titles, ncols=1 + len(maps), size=size)


def plot_accuracy_vs_shots(
    records: Sequence[Mapping[str, Any]],
    methods: Sequence[str] | None = None,
    shots: Sequence[int] | None = None,
    ncols: int = 3,
    titles: Mapping[str, str] | None = None,
):
    """Test accuracy vs shots, one panel per dataset, mean line and ± std band over seeds.

    ``methods`` and ``shots`` restrict and order what is drawn (default: all, in record order).
    """
    import matplotlib.pyplot as plt

    df = pd.DataFrame.from_records(list(records))
    if shots is not None:
        df = df[df["shots"].isin(list(shots))]
    methods = list(methods) if methods is not None else list(dict.fromkeys(df["method"]))
    datasets = list(dict.fromkeys(df["dataset"]))
    ncols = max(1, min(ncols, len(datasets)))
    nrows = int(np.ceil(len(datasets) / ncols))
    fig, axes = plt.subplots(
        nrows, ncols, figsize=(4.2 * ncols, 3.4 * nrows), squeeze=False, sharey=False
    )
    for ax in axes.flat[len(datasets) :]:
        ax.axis("off")
    for ax, dataset in zip(axes.flat, datasets, strict=False):
        for i, method in enumerate(methods):
            rows = df[(df["dataset"] == dataset) & (df["method"] == method)]
            if rows.empty:
                continue
            stats = rows.groupby("shots")["accuracy"].agg(["mean", lambda v: float(np.std(v))])
            x, mean, std = stats.index.to_numpy(), stats.iloc[:, 0], stats.iloc[:, 1]
            ax.plot(x, mean, "o-", ms=3.5, color=f"C{i}", label=method)
            ax.fill_between(x, mean - std, mean + std, color=f"C{i}", alpha=0.18, lw=0)
        ticks = sorted(df.loc[df["dataset"] == dataset, "shots"].unique())
        ax.set_xscale("log", base=2)
        ax.set_xticks(ticks, [str(t) for t in ticks])
        ax.minorticks_off()
        ax.set(
            title=(titles or {}).get(dataset, dataset),
            xlabel="shots per class",
            ylabel="test accuracy (%)",
        )
    axes.flat[0].legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_alpha_beta_grid(
    grid: np.ndarray,
    alpha_fractions: Sequence[float],
    betas: Sequence[float],
    title: str = "",
):
    """Heatmap of validation accuracy over Tip-Adapter's (alpha / logit scale, beta) grid.

    ``grid`` is :func:`clipnb.methods.tip_adapter.search_alpha_beta`'s ``[len(alphas), len(betas)]`` array
    of accuracies in [0, 1]; each cell is labelled with its value in percent.
    """
    import matplotlib.pyplot as plt

    values = 100 * np.asarray(grid, dtype=float)
    fig, ax = plt.subplots(figsize=(1.2 + 0.75 * len(betas), 1.0 + 0.42 * len(alpha_fractions)))
    image = ax.imshow(values, cmap="viridis", aspect="auto")
    middle = (np.nanmax(values) + np.nanmin(values)) / 2
    for (i, j), v in np.ndenumerate(values):
        colour = "black" if v > middle else "white"
        ax.text(j, i, f"{v:.0f}", ha="center", va="center", fontsize=8, color=colour)
    ax.set(
        xticks=range(len(betas)),
        xticklabels=[f"{b:g}" for b in betas],
        yticks=range(len(alpha_fractions)),
        yticklabels=[f"{a:g}" for a in alpha_fractions],
        xlabel="β",
        ylabel="α / logit scale",
        title=title,
    )
    ax.grid(False)
    fig.colorbar(image, ax=ax, label="validation accuracy (%)")
    fig.tight_layout()
    return fig


# ----------------------------------------------------------------------------- the chapter


@dataclass
class Setup:
    """The chapter's inputs: the model, its validated CAM setting, the methods and the cached
    features of each dataset, and the grids the probes reuse."""

    bundle: ClipBundle
    cam_validation: saliency.SaliencyValidation
    methods: dict[str, few_shot.Method]
    tasks: dict[str, few_shot.FeatureTask]
    alpha_fractions: list[float]
    betas: list[float]
    tip_f_epochs: int
    tip_f_lrs: list[float]


def prepare(
    profile: str,
    datasets: Sequence[str],
    seed: int,
    alpha_fractions: Sequence[float],
    betas: Sequence[float],
    tip_f_epochs: int,
    tip_f_lrs: Sequence[float],
    head_epochs: int,
    head_lrs: Sequence[float],
    cam_protocol: dict[str, Any] | None = None,
) -> Setup:
    """Seed, load the profile's model and its CAM setting, the five methods (every choice made
    on validation) and each dataset's features (from the cache)."""
    seed_everything(seed)
    bundle = load_model(profile)
    cam_validation = saliency.validated_setting(bundle, profile, **(cam_protocol or {}))
    methods = {
        "zero-shot": few_shot.zero_shot_method(),
        "linear probe": few_shot.linear_probe_method(),
        "zero-shot-init head": few_shot.head_method("zero_shot", epochs=head_epochs, lr=head_lrs),
        "Tip-Adapter": few_shot.tip_adapter_method(alpha_fractions, betas),
        "Tip-Adapter-F": few_shot.tip_adapter_f_method(
            alpha_fractions, betas, epochs=tip_f_epochs, lr=tip_f_lrs
        ),
    }
    tasks = {name: few_shot.load_feature_task(bundle, name) for name in datasets}
    return Setup(
        bundle=bundle,
        cam_validation=cam_validation,
        methods=methods,
        tasks=tasks,
        alpha_fractions=list(alpha_fractions),
        betas=list(betas),
        tip_f_epochs=tip_f_epochs,
        tip_f_lrs=list(tip_f_lrs),
    )


def dataset_table(setup: Setup) -> pd.DataFrame:
    """Classes and split sizes of each dataset."""
    tasks = setup.tasks
    return pd.DataFrame(
        {
            "classes": [len(t.class_names) for t in tasks.values()],
            "train": [len(t.train) for t in tasks.values()],
            "val": [len(t.val) for t in tasks.values()],
            "test": [len(t.test) for t in tasks.values()],
        },
        index=pd.Index(list(tasks), name="dataset"),
    )


@dataclass
class Sweep:
    """Every method at every (dataset, shots, seed): :func:`few_shot.run_few_shot`'s records
    (test accuracy and what validation chose), ``table_shots`` added on ``table_dataset``."""

    records: list[dict[str, Any]]
    methods: list[str]
    datasets: list[str]
    shots: list[int]
    seeds: list[int]
    table_dataset: str
    table_shots: int
    n_classes: dict[str, int]

    @property
    def frame(self) -> pd.DataFrame:
        return pd.DataFrame(self.records)


def run_sweep(
    setup: Setup, shots: Sequence[int], seeds: Sequence[int], table_dataset: str, table_shots: int
) -> Sweep:
    """Every method of ``setup`` at each shot count and seed, on every dataset."""
    records: list[dict[str, Any]] = []
    for name, task in setup.tasks.items():
        run_shots = sorted(set(shots) | ({table_shots} if name == table_dataset else set()))
        records += few_shot.run_few_shot(task, setup.methods, run_shots, seeds)
    return Sweep(
        records=records,
        methods=list(setup.methods),
        datasets=list(setup.tasks),
        shots=list(shots),
        seeds=list(seeds),
        table_dataset=table_dataset,
        table_shots=table_shots,
        n_classes={name: len(t.class_names) for name, t in setup.tasks.items()},
    )


@dataclass
class Results:
    """Everything the chapter reports after the sweep, as plain data.

    ``val_grid`` is Tip-Adapter's validation accuracy in [0, 1] over (alpha fraction, beta) at
    ``table_shots`` on ``table_dataset`` (seed 0), ``loss_curves`` Tip-Adapter-F's training loss
    per epoch there at the paper's learning rate ("paper") and the smallest ("small"). The CAM
    figure's images, maps and row labels, and their masses on the ink (fractions, one per map
    column); ``mass`` is CAM mass on the object (%) per shot count on the mask task (empty without
    one), ``mask_area`` the objects' share of the pixels.
    """

    sweep: Sweep
    logit_scale: float
    alpha_fractions: list[float]
    betas: list[float]
    tip_f_epochs: int
    val_grid: np.ndarray
    mean_cos: float
    loss_curves: dict[str, list[float]]
    cam_setting: str = ""
    cam_reading: str = ""
    cam_images: np.ndarray | None = None
    cam_maps: dict[str, np.ndarray] = field(default_factory=dict)
    cam_labels: list[str] = field(default_factory=list)
    cam_masses: list[float] = field(default_factory=list)
    cam_area: float = float("nan")
    mass: pd.DataFrame = field(default_factory=pd.DataFrame)
    mask_area: float = float("nan")


def alpha_beta_probe(
    setup: Setup, sweep: Sweep
) -> tuple[np.ndarray, float, dict[str, list[float]]]:
    """On ``table_dataset`` at ``table_shots`` (first seed): Tip-Adapter's validation grid, the
    mean cosine between two cached images, and Tip-Adapter-F's training loss at the paper's
    learning rate and the smallest of the grid, from the training-free (alpha, beta)."""
    task = setup.tasks[sweep.table_dataset]
    problem = few_shot.few_shot_problem(task, sweep.table_shots, sweep.seeds[0])
    _, _, val_grid = search_alpha_beta(
        TipAdapter,
        problem.train.x,
        problem.train.y,
        problem.val.x,
        problem.val.y,
        problem.class_weights,
        problem.logit_scale,
        [a * problem.logit_scale for a in setup.alpha_fractions],
        setup.betas,
    )
    cosines = problem.train.x @ problem.train.x.T
    off_diagonal = ~torch.eye(len(cosines), dtype=torch.bool)
    mean_cos = float(cosines[off_diagonal].mean())
    start = setup.methods["Tip-Adapter"](problem).info
    curves = {}
    for key, rate in (("paper", PAPER_LR), ("small", min(setup.tip_f_lrs))):
        keys_run = TipAdapterF(start["alpha"], start["beta"], lr=rate, epochs=setup.tip_f_epochs)
        keys_run.fit(
            problem.train.x, problem.train.y, problem.class_weights, setup.bundle.logit_scale
        )
        curves[key] = list(keys_run.train_loss_curve_)
    return val_grid, mean_cos, curves


def cams_by_column(
    setup: Setup,
    task: few_shot.FeatureTask,
    pixels: torch.Tensor,
    classes: Sequence[int],
    shots: Sequence[int],
    seed: int,
) -> tuple[np.ndarray, dict[int, np.ndarray]]:
    """Zero-shot CLIP's CAMs, and Tip-Adapter's at each shot count (cache of ``seed``)."""
    args = (seed, pixels, classes, setup.cam_validation.setting)
    zero_shot = few_shot.cams_over_shots(
        setup.bundle, task, setup.methods["zero-shot"], [1], *args
    )[1]
    tip = few_shot.cams_over_shots(setup.bundle, task, setup.methods["Tip-Adapter"], shots, *args)
    return zero_shot, tip


def run_probes(
    setup: Setup,
    sweep: Sweep,
    cam_dataset: str,
    cam_images: int,
    mask_dataset: str,
    mask_images: int,
) -> Results:
    """What the chapter measures on seed 0 after the sweep: the (alpha, beta) grid and
    Tip-Adapter-F's loss (:func:`alpha_beta_probe`), the CAMs of the first test image of the
    first ``cam_images`` classes of ``cam_dataset``, and, on ``mask_dataset`` ("" = none), the
    CAM mass on the object of the first ``mask_images`` test images."""
    bundle, seed = setup.bundle, sweep.seeds[0]
    val_grid, mean_cos, curves = alpha_beta_probe(setup, sweep)

    cam_data = load_dataset(cam_dataset)
    cam_rows = [int(np.flatnonzero(cam_data.test.labels == c)[0]) for c in range(cam_images)]
    pixels = image_tensors(bundle, cam_data.test, np.asarray(cam_rows))
    classes = cam_data.test.labels[cam_rows].tolist()
    zero_shot, tip = cams_by_column(
        setup, setup.tasks[cam_dataset], pixels, classes, sweep.shots, seed
    )
    maps = {"zero-shot": zero_shot}
    maps |= {f"Tip-Adapter, {count_noun(k, 'shot')}": m for k, m in tip.items()}
    ink, _ = object_masks(cam_data.test, cam_rows, bundle.preprocess)
    cam_masses = (
        [float(np.nanmean(cam_mass_in_mask(m, ink))) for m in maps.values()]
        if ink is not None
        else []
    )

    mass, mask_area = pd.DataFrame(), float("nan")
    if mask_dataset:
        mask_task = setup.tasks.get(mask_dataset) or few_shot.load_feature_task(
            bundle, mask_dataset
        )
        mask_data = load_dataset(mask_dataset)
        rows = np.arange(min(mask_images, len(mask_data.test)))
        mask_pixels = image_tensors(bundle, mask_data.test, rows)
        mask_classes = mask_data.test.labels[rows].tolist()
        masks = mask_data.test.masks[rows] > 0
        zero_shot, tip = cams_by_column(
            setup, mask_task, mask_pixels, mask_classes, sweep.shots, seed
        )
        by_shots = {0: zero_shot} | tip
        mass = pd.DataFrame(
            {
                "shots (0 = zero-shot)": list(by_shots),
                "CAM mass on the object (%)": [
                    100 * np.nanmean(cam_mass_in_mask(m, masks)) for m in by_shots.values()
                ],
            }
        ).set_index("shots (0 = zero-shot)")
        mask_area = float(masks.mean())

    return Results(
        sweep=sweep,
        logit_scale=bundle.logit_scale,
        alpha_fractions=setup.alpha_fractions,
        betas=setup.betas,
        tip_f_epochs=setup.tip_f_epochs,
        val_grid=val_grid,
        mean_cos=mean_cos,
        loss_curves=curves,
        cam_setting=setup.cam_validation.setting.label(),
        cam_reading=saliency.reading(setup.cam_validation),
        cam_images=report.display_images(bundle, pixels),
        cam_maps=maps,
        cam_labels=[cam_data.class_names[c] for c in classes],
        cam_masses=cam_masses,
        cam_area=float(ink.mean()) if ink is not None else float("nan"),
        mass=mass,
        mask_area=mask_area,
    )


def run(
    *,
    profile: str,
    datasets: Sequence[str],
    shots: Sequence[int],
    seeds: Sequence[int],
    table_dataset: str,
    table_shots: int,
    alpha_fractions: Sequence[float],
    betas: Sequence[float],
    tip_f_epochs: int,
    tip_f_lrs: Sequence[float],
    head_epochs: int,
    head_lrs: Sequence[float],
    cam_dataset: str,
    cam_images: int,
    mask_dataset: str,
    mask_images: int,
) -> Results:
    """The whole chapter from its parameters: :func:`prepare`, :func:`run_sweep`,
    :func:`run_probes` (the notebook calls them in turn to show the sweep's tables first)."""
    setup = prepare(
        profile,
        datasets,
        seeds[0],
        alpha_fractions,
        betas,
        tip_f_epochs,
        tip_f_lrs,
        head_epochs,
        head_lrs,
    )
    sweep = run_sweep(setup, shots, seeds, table_dataset, table_shots)
    return run_probes(setup, sweep, cam_dataset, cam_images, mask_dataset, mask_images)


# ----------------------------------------------------------------------------- tables


def accuracy_table(sweep: Sweep) -> pd.DataFrame:
    """Test accuracy (%, mean ± std over seeds): rows (dataset, method), columns the shots."""
    frame = sweep.frame
    return report.mean_std_table(
        frame[frame["shots"].isin(sweep.shots)], ["dataset", "method"], "shots"
    )


def five_shot_table(sweep: Sweep) -> pd.DataFrame:
    """Every method at ``table_shots`` on ``table_dataset``, beside the source's numbers."""
    frame = sweep.frame
    five = frame[(frame["dataset"] == sweep.table_dataset) & (frame["shots"] == sweep.table_shots)]
    table = report.mean_std_table(five, "method", "shots").rename(
        columns={sweep.table_shots: f"this build, {sweep.table_shots} shots (%)"}
    )
    table["source: real CLIP on MNIST, 5 shots (%)"] = [
        SOURCE_FIVE_SHOTS.get(m, "—") for m in table.index
    ]
    table.columns.name = None
    return table


def _tip_runs(sweep: Sweep) -> pd.DataFrame:
    frame = sweep.frame
    return frame[frame["method"].isin(["Tip-Adapter", "Tip-Adapter-F"])]


def chosen_table(sweep: Sweep) -> pd.DataFrame:
    """The median chosen alpha / s, beta, epoch and learning rate over seeds, per dataset and
    shot count, for Tip-Adapter and Tip-Adapter-F."""
    tip_runs = _tip_runs(sweep)
    return (
        tip_runs[tip_runs["shots"].isin(sweep.shots)]
        .rename(columns={"alpha_fraction": "α / s", "beta": "β"})
        .groupby(["dataset", "shots", "method"], sort=False)[["α / s", "β", "epoch", "lr"]]
        .median()
        .unstack("method")
        .swaplevel(axis=1)
        .sort_index(axis=1, level=0, sort_remaining=False)
        .dropna(axis=1, how="all")
    )


def mass_table(results: Results) -> pd.DataFrame:
    """CAM mass on the object (%, one decimal) per shot count (0 = zero-shot)."""
    return results.mass.round(1)


# ------------------------------------------------------------------------- the chapter's figures


def accuracy_figure(sweep: Sweep) -> matplotlib.figure.Figure:
    """:func:`plot_accuracy_vs_shots` of the sweep, at the parameters' shot counts."""
    return plot_accuracy_vs_shots(sweep.records, sweep.methods, shots=sweep.shots)


def grid_figure(results: Results) -> matplotlib.figure.Figure:
    """:func:`plot_alpha_beta_grid` of the probe's validation grid."""
    sweep = results.sweep
    return plot_alpha_beta_grid(
        results.val_grid,
        results.alpha_fractions,
        results.betas,
        f"Tip-Adapter on {sweep.table_dataset}, {sweep.table_shots} shots",
    )


def cam_figure(results: Results) -> matplotlib.figure.Figure:
    """:func:`cam_grid_figure` of zero-shot CLIP and Tip-Adapter at each shot count."""
    return cam_grid_figure(results.cam_images, results.cam_maps, results.cam_labels)


def figures(results: Results) -> dict[str, matplotlib.figure.Figure]:
    """Every figure of the chapter by its glue name."""
    return {
        "fig_tip_shots": accuracy_figure(results.sweep),
        "fig_tip_grid": grid_figure(results),
        "fig_tip_cam": cam_figure(results),
    }


# ---------------------------------------------------------------------------- what the prose cites


@dataclass
class _Means:
    """Mean test accuracy per (dataset, method) and shots, and the views the prose reads."""

    table: pd.DataFrame
    by_method: dict[str, pd.DataFrame]
    strongest: str
    k_min: int
    k_max: int

    def at_table(self, sweep: Sweep, method: str, shots: int | None = None) -> float:
        """``method``'s mean on ``table_dataset`` at ``shots`` (default ``table_shots``)."""
        column = sweep.table_shots if shots is None else shots
        return self.table.loc[(sweep.table_dataset, method), column]


def _means(sweep: Sweep) -> _Means:
    table = report.mean_table(sweep.frame, ["dataset", "method"], "shots")
    by_method = {m: table.xs(m, level="method")[sweep.shots] for m in sweep.methods}
    k_max = max(sweep.shots)
    return _Means(
        table=table,
        by_method=by_method,
        strongest=by_method["zero-shot"][k_max].idxmax(),  # the dataset the prompts handle best
        k_min=min(sweep.shots),
        k_max=k_max,
    )


def large_shots(shots: Sequence[int]) -> int:
    """The smallest shot count above the median (the largest if there is none)."""
    return min([k for k in shots if k > np.median(shots)] or [max(shots)])


def _paper_row(results: Results) -> int | None:
    fractions = results.alpha_fractions
    return fractions.index(PAPER_ALPHA_FRACTION) if PAPER_ALPHA_FRACTION in fractions else None


def numbers(results: Results) -> dict[str, float]:
    """Every number the prose glues, by its glue name."""
    sweep = results.sweep
    means = _means(sweep)
    by_method, strongest, k_min, k_max = means.by_method, means.strongest, means.k_min, means.k_max
    fractions = results.alpha_fractions
    out: dict[str, float] = {
        "logit_scale": results.logit_scale,
        "n_seeds": len(sweep.seeds),
        "table_shots": sweep.table_shots,
        "max_shots": k_max,
        "tip_f_epochs": results.tip_f_epochs,
        "alpha_min": min(a for a in fractions if a > 0),
        "alpha_max": max(fractions),
        "beta_min": min(results.betas),
        "beta_max": max(results.betas),
    }
    for key, method in METHOD_KEYS.items():
        out[f"t5_{key}"] = means.at_table(sweep, method)
        out[f"kmax_{key}"] = means.at_table(sweep, method, k_max)
    gains = by_method["Tip-Adapter"] - by_method["zero-shot"]
    out["strong_zs"] = by_method["zero-shot"].loc[strongest, k_max]
    out["strong_tip_gain"] = gains.loc[strongest, k_max]
    out["strong_probe"] = by_method["linear probe"].loc[strongest, k_max]
    out["t5_ratio"] = means.at_table(sweep, "Tip-Adapter") / means.at_table(sweep, "zero-shot")
    out["tipf_minus_tip"] = np.nanmean(by_method["Tip-Adapter-F"] - by_method["Tip-Adapter"])
    out["min_shots"] = k_min
    out["strong_tip_kmin"] = by_method["Tip-Adapter"].loc[strongest, k_min]
    out["strong_probe_kmin"] = by_method["linear probe"].loc[strongest, k_min]
    out["strong_chance"] = 100 / sweep.n_classes[strongest]
    tip_ahead = by_method["Tip-Adapter"] > by_method["linear probe"]
    out["n_cells"] = int(tip_ahead.size)
    out["n_tip_ahead"] = int(tip_ahead.to_numpy().sum())

    tip_runs = _tip_runs(sweep)
    out["alpha_zero_share"] = 100 * float((tip_runs["alpha_fraction"] == 0).mean())
    out["alpha_fraction_median"] = float(tip_runs["alpha_fraction"].median())
    out["beta_median"] = float(tip_runs["beta"].median())
    tipf_runs = tip_runs[tip_runs["method"] == "Tip-Adapter-F"]
    large_k = large_shots(sweep.shots)
    out["large_k"] = large_k
    out["small_lr_share"] = 100 * float(
        (tipf_runs.loc[tipf_runs["shots"] >= large_k, "lr"] <= 1e-4).mean()
    )

    grid, paper_row = results.val_grid, _paper_row(results)
    out["mean_cos"] = results.mean_cos
    out["grid_paper"] = 100 * grid[paper_row].max() if paper_row is not None else np.nan
    out["grid_zero_shot"] = 100 * grid[0].max()
    for key, curve in results.loss_curves.items():
        out[f"tipf_loss_first_{key}"] = curve[0]
        out[f"tipf_loss_peak_{key}"] = max(curve)
    out["grid_best"] = 100 * grid.max()

    masses = results.cam_masses
    out["fig_tip_cam_mass"] = 100 * np.mean(masses) if masses else np.nan
    out["fig_tip_cam_area"] = 100 * results.cam_area
    out["mask_area"] = 100 * results.mask_area
    out["mass_zs"] = results.mass.iloc[0, 0] if not results.mass.empty else float("nan")
    out["mass_kmax"] = results.mass.iloc[-1, 0] if not results.mass.empty else float("nan")
    return out


def cache_verdict(lifts: bool) -> str:
    """Whether the cache lifts the table dataset above zero-shot, against the source."""
    if lifts:
        return (
            "As the source says, the cache lifts the accuracy with no gradient step: a few "
            "labelled images carry what the prompts lack for an out-of-distribution dataset."
        )
    return "Unlike in the source, the cache does not lift the accuracy above zero-shot here."


def claim_verdict(lifts: bool) -> str:
    """The source's claim, held against this model."""
    if lifts:
        return (
            "holds in direction on this model: on the out-of-distribution digits a cache of a "
            "few labelled images per class, with no gradient step, lifts CLIP above its "
            "zero-shot accuracy"
        )
    return (
        "does not hold on this model: on the out-of-distribution digits a cache of a few "
        "labelled images per class does not lift CLIP above its zero-shot accuracy"
    )


def trained_vs_cache(accuracy: Mapping[str, float]) -> str:
    """Where the linear probe and the zero-shot-init head stand against the cache (``accuracy``
    per method), against the Tip-Adapter paper."""
    level_or_ahead = [m for m in TRAINED if accuracy[m] >= accuracy["Tip-Adapter"]]
    paper = "the Tip-Adapter paper, where the cache is ahead of a linear probe at few shots"
    if len(level_or_ahead) == len(TRAINED):
        return f"are both at or above the cache here, unlike in {paper}"
    if not level_or_ahead:
        return f"are both below the cache here, as in {paper}"
    behind = next(m for m in TRAINED if m not in level_or_ahead)
    return (
        f"fall on both sides of the cache here: the {level_or_ahead[0]} at or above it, "
        f"the {behind} below it"
    )


def blend_verdict(tip: float, probe: float) -> str:
    """Tip-Adapter against a probe at the fewest shots, where the prompts work best."""
    if tip > probe:
        return (
            "there the blend with zero-shot is what counts, as the probe has no prior to fall "
            "back on"
        )
    return "the blend with zero-shot gives the cache no edge over the probe there"


def cache_gain_verdict(gain: float) -> str:
    """What the cache adds to zero-shot (points), a point either way counting as little."""
    return compare(
        gain,
        0.0,
        1.0,
        (
            "The cache adds to zero-shot there",
            "The cache itself takes accuracy away there",
            "The cache itself changes little there",
        ),
    )


def probe_reach_verdict(reaches: Sequence[int], k_max: int) -> str:
    """The first shot count (of ``reaches``) where the probe reaches zero-shot, if any."""
    if reaches:
        return f"the linear probe first reaches it at {count_noun(reaches[0], 'shot')}"
    return f"the linear probe does not reach it within {k_max} shots"


def probe_ahead_verdict(others: Sequence[str], probe_ahead: Sequence[str], strongest: str) -> str:
    """On which datasets other than ``strongest`` the probe is ahead of the cache."""
    if not others:
        where = "no dataset"
    elif len(probe_ahead) == len(others):
        where = {1: "the one dataset", 2: "both datasets"}.get(len(others), "every dataset")
    elif not probe_ahead:
        where = "neither dataset" if len(others) == 2 else "no dataset"
    else:
        where = f"{len(probe_ahead)} of the {len(others)} datasets"
    return f"{where} other than {strongest}"


def paper_order_verdict(n_tip_ahead: int, n_cells: int) -> str:
    """Whether the cache is ahead of the probe everywhere, as in the paper."""
    if n_tip_ahead == n_cells:
        return "this model reproduces that ordering"
    if n_tip_ahead == 0:
        return "this model does not reproduce that ordering"
    return "this model reproduces it only in part"


def tipf_verdict(gap: float) -> str:
    """Tip-Adapter-F against the training-free cache (mean points), half a point either way
    counting as level and more than 3 as clearly."""
    if gap > 3:
        return "adds clearly over"
    return compare(gap, 0.0, 0.5, ("adds a little over", "falls below", "is level with"))


def alpha_regime(alpha_median: float) -> str:
    """The median chosen alpha / s against the paper's 0.01."""
    if alpha_median >= 0.1:
        return "far above the paper's regime"
    if alpha_median > PAPER_ALPHA_FRACTION:
        return "above the paper's regime"
    if alpha_median == PAPER_ALPHA_FRACTION:
        return "at the paper's regime"
    return "below the paper's regime"


def alpha_reading(alpha_median: float, beta_median: float) -> str:
    """What the chosen (alpha, beta) make of Tip-Adapter: alpha at least the logit scale lets the
    cache outvote the prompts; a beta of 10 or more makes the affinity of anything but a
    near-identical image small (exp(-10 (1 - cos)))."""
    if alpha_median >= 1 and beta_median >= 10:
        return (
            "on this model Tip-Adapter works as a sharp, soft nearest-neighbour classifier with "
            "the prompts as a tie-breaker"
        )
    if alpha_median <= PAPER_ALPHA_FRACTION:
        return (
            "on this model the prompts dominate and the cache is a correction, as in the paper's "
            "regime"
        )
    return "on this model the cache and the prompts share the vote"


def tipf_jump(curve: Sequence[float]) -> str:
    """Whether the keys jump: the training loss climbs above 1.5 times its first epoch's."""
    if max(curve) > 1.5 * curve[0]:
        return "the keys jump: the training loss climbs well above its first-epoch value"
    return "the training loss stays within half again of its first-epoch value"


def grid_paper_verdict(best_gain: float, paper_gain: float | None) -> str:
    """How much of the best cell's gain over zero-shot the paper's alpha row keeps (``None``:
    the grid has no such row)."""
    if paper_gain is None:
        return "an undefined share of the gain (the grid has no $a = 0.01$ row)"
    if best_gain <= 0:
        return (
            "nothing over zero-shot, as no cell of the grid beats zero-shot on this validation "
            "split"
        )
    if paper_gain < 0.25 * best_gain:
        return (
            "little of the best cell's gain over zero-shot: the cache is outvoted by the prompts, "
            "and a grid copied from the paper would all but turn Tip-Adapter into zero-shot CLIP "
            "on this model"
        )
    if paper_gain < 0.75 * best_gain:
        return "part of the best cell's gain over zero-shot: the prompts still hold the cache back"
    return "most of the best cell's gain over zero-shot: the paper's regime already works here"


def mass_verdict(mass: pd.DataFrame, mask_area: float) -> str:
    """Tip-Adapter's CAM mass on the object at the most shots, against zero-shot CLIP's and a
    uniform map's (``mass`` in %, ``mask_area`` a fraction); not measured without masks."""
    if mass.empty:
        return "without object masks this is not measured here"
    more_than_zs = "more" if mass.iloc[-1, 0] > mass.iloc[0, 0] else "no more"
    more_than_uniform = "more" if mass.iloc[-1, 0] > 100 * mask_area else "no more"
    return (
        f"on this task Tip-Adapter's map at the most shots puts {more_than_zs} of its mass on the "
        f"object than zero-shot CLIP's, and {more_than_uniform} than a uniform map would"
    )


def verdicts(results: Results) -> dict[str, str]:
    """Every computed phrase the prose glues with ``{glue:md}``, by its glue name."""
    sweep = results.sweep
    means = _means(sweep)
    by_method, strongest, k_min, k_max = means.by_method, means.strongest, means.k_min, means.k_max
    at_table = {m: means.at_table(sweep, m) for m in sweep.methods}
    lifts = at_table["Tip-Adapter"] > at_table["zero-shot"]
    probe, tip, zero_shot = (by_method[m] for m in ("linear probe", "Tip-Adapter", "zero-shot"))
    others = [d for d in sweep.datasets if d != strongest]
    tip_ahead = tip > probe
    num = numbers(results)
    grid, paper_row = results.val_grid, _paper_row(results)
    zero_shot_val = grid[0].max()
    return {
        "cam_setting": results.cam_setting,
        "cam_reading": results.cam_reading,
        "t5_cache_verdict": cache_verdict(lifts),
        "claim_verdict": claim_verdict(lifts),
        "t5_trained_vs_cache": trained_vs_cache(at_table),
        "strong_name": strongest,
        "strong_blend": blend_verdict(tip.loc[strongest, k_min], probe.loc[strongest, k_min]),
        "strong_cache_gain": cache_gain_verdict((tip - zero_shot).loc[strongest, k_max]),
        "strong_probe_reach": probe_reach_verdict(
            [k for k in sweep.shots if probe.loc[strongest, k] >= zero_shot.loc[strongest, k]],
            k_max,
        ),
        "probe_ahead_others": probe_ahead_verdict(
            others, [d for d in others if probe.loc[d, k_max] > tip.loc[d, k_max]], strongest
        ),
        "paper_order_verdict": paper_order_verdict(
            int(tip_ahead.to_numpy().sum()), int(tip_ahead.size)
        ),
        "tipf_verdict": tipf_verdict(float(np.nanmean(by_method["Tip-Adapter-F"] - tip))),
        "alpha_regime": alpha_regime(num["alpha_fraction_median"]),
        "alpha_reading": alpha_reading(num["alpha_fraction_median"], num["beta_median"]),
        "tipf_jump": tipf_jump(results.loss_curves["paper"]),
        "grid_paper_verdict": grid_paper_verdict(
            float(grid.max() - zero_shot_val),
            float(grid[paper_row].max() - zero_shot_val) if paper_row is not None else None,
        ),
        "mass_verdict": mass_verdict(results.mass, results.mask_area),
    }
