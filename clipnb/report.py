"""What the chapters use to show results: plot style, glue, tables and figures.

Fonts are matplotlib's bundled DejaVu so that figures are identical on every machine.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import matplotlib
import matplotlib.figure
import numpy as np
import pandas as pd

from .evaluation import mean_std


def set_style() -> None:
    """Seaborn's clean style with DejaVu Sans and a readable size for the HTML report."""
    import seaborn as sns

    sns.set_theme(context="notebook", style="whitegrid", font="DejaVu Sans")
    matplotlib.rcParams.update(
        {
            "figure.dpi": 110,
            "savefig.dpi": 110,
            "figure.figsize": (6.4, 3.8),
            "axes.titleweight": "bold",
            "svg.fonttype": "none",
            "font.family": "DejaVu Sans",
        }
    )


def glue(name: str, value: Any, display: bool = False) -> None:
    """Glue a number (cast to ``float``) or an object into the notebook for the prose to cite."""
    from myst_nb import glue as _glue

    if isinstance(value, np.generic | int | float) and not isinstance(value, bool):
        value = float(value)
    if isinstance(value, matplotlib.figure.Figure):
        _png_figures()
    _glue(name, value, display=display)


def glue_words(name: str, text: str) -> None:
    """Glue a phrase the prose cites with ``{glue:md}`name```: a verdict computed from the numbers.

    Qualitative claims ("X is the best finetuned model") must follow the table, not the author's
    expectation, so the notebook computes the words and the text pulls them in.
    """
    from IPython.display import Markdown
    from myst_nb import glue as _glue

    _glue(name, Markdown(text), display=False)


def join_words(items: Sequence[str], empty: str = "none") -> str:
    """``["a", "b", "c"]`` -> ``"a, b and c"``: a list inside a computed sentence."""
    items = list(items)
    if not items:
        return empty
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def _png_figures() -> None:
    """Have IPython render figures as PNG under any backend (``MPLBACKEND=Agg`` disables inline).

    Without this a glued figure is stored as text only and ``{glue:figure}`` has no image.
    """
    try:
        from IPython import get_ipython
        from IPython.core.pylabtools import select_figure_formats
    except ImportError:
        return
    shell = get_ipython()
    if shell is not None and hasattr(shell, "display_formatter"):
        select_figure_formats(shell, {"png"})


def mean_std_table(
    records: list[dict[str, Any]] | pd.DataFrame,
    index: str | Sequence[str],
    columns: str,
    value: str = "accuracy",
    digits: int = 1,
) -> pd.DataFrame:
    """A table of ``mean ± std`` over seeds: rows ``index``, columns ``columns``.

    Row and column order follow first appearance in ``records``.
    """
    df = pd.DataFrame.from_records(records) if not isinstance(records, pd.DataFrame) else records
    index = [index] if isinstance(index, str) else list(index)

    def cell(v: pd.Series) -> str:
        m, s = mean_std(v.to_numpy())
        return f"{m:.{digits}f} ± {s:.{digits}f}" if len(v) > 1 else f"{m:.{digits}f}"

    table = df.pivot_table(index=index, columns=columns, values=value, aggfunc=cell, sort=False)
    table.columns.name = columns
    return table


def mean_table(
    records: list[dict[str, Any]] | pd.DataFrame,
    index: str | Sequence[str],
    columns: str,
    value: str = "accuracy",
) -> pd.DataFrame:
    """The numeric means behind :func:`mean_std_table` (for glue and plots)."""
    df = pd.DataFrame.from_records(records) if not isinstance(records, pd.DataFrame) else records
    index = [index] if isinstance(index, str) else list(index)
    return df.pivot_table(index=index, columns=columns, values=value, aggfunc="mean", sort=False)


def image_grid(
    images: Sequence[np.ndarray],
    titles: Sequence[str] | None = None,
    ncols: int = 8,
    size: float = 1.3,
    title_size: int = 7,
):
    """A grid of uint8 images with optional (wrapped) titles; returns the figure."""
    import textwrap

    import matplotlib.pyplot as plt

    n = len(images)
    nrows = int(np.ceil(n / ncols))
    fig, axes = plt.subplots(
        nrows, ncols, figsize=(ncols * size, nrows * (size + 0.35)), squeeze=False
    )
    for ax in axes.flat:
        ax.axis("off")
    for i, img in enumerate(images):
        ax = axes.flat[i]
        ax.imshow(img, interpolation="nearest", cmap="gray" if img.ndim == 2 else None)
        if titles is not None:
            ax.set_title("\n".join(textwrap.wrap(titles[i], 22)), fontsize=title_size)
    fig.tight_layout()
    return fig
