"""The Tip-Adapter chapter's figures: accuracy against shots, the (alpha, beta) grid, CAM grids.

The sweep itself (:func:`clipnb.methods.few_shot.run_few_shot`) is shared with the few-shot
initialisation chapter.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

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
