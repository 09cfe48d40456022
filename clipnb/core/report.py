"""What the chapters use to show results: plot style, glue, tables and figures.

Fonts are matplotlib's bundled DejaVu so that figures are identical on every machine.
"""

from __future__ import annotations

import html
import math
import re
from collections.abc import Sequence
from typing import Any

import matplotlib
import matplotlib.figure
import numpy as np
import pandas as pd
import torch

from clipnb.core.evaluation import mean_std


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
    _register_table_formatter()


def _register_table_formatter() -> None:
    """Show every DataFrame and Series the chapters display through :func:`table_html`.

    Registered on the kernel's HTML formatter (not by wrapping each displayed table) so that every
    table of every chapter, and every table a reader displays in JupyterLab, reads the same way.
    """
    try:
        from IPython import get_ipython
    except ImportError:
        return
    shell = get_ipython()
    if shell is None or not hasattr(shell, "display_formatter"):
        return
    formatter = shell.display_formatter.formatters["text/html"]
    formatter.for_type(pd.DataFrame, table_html)
    formatter.for_type(pd.Series, table_html)


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


def glue_all(verdicts: dict[str, str]) -> None:
    """Glue every sentence of a study's ``verdicts`` (computed and tested in its module)."""
    for name, text in verdicts.items():
        glue_words(name, text)


def glue_numbers(numbers: dict[str, float]) -> None:
    """Glue every number of a study's ``numbers`` (cast to ``float``) for the prose to cite."""
    for name, value in numbers.items():
        glue(name, float(value))


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


def display_images(bundle: Any, pixels: torch.Tensor) -> np.ndarray:
    """Preprocessed pixels ``[B, 3, H, W]`` back to uint8 RGB ``[B, H, W, 3]`` (undo Normalize).

    What the model saw (after resize and crop), so a CAM of the same size overlays it exactly.
    """
    norm = [t for t in getattr(bundle.preprocess, "transforms", []) if hasattr(t, "mean")]
    mean = torch.tensor(norm[-1].mean if norm else (0.0, 0.0, 0.0)).view(1, 3, 1, 1)
    std = torch.tensor(norm[-1].std if norm else (1.0, 1.0, 1.0)).view(1, 3, 1, 1)
    images = (pixels.detach().cpu().float() * std + mean).clamp(0, 1)
    return (images.permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8)


# --- tables --------------------------------------------------------------------------------------

#: A cell that reads as a number ("12.3", "-4", "12.3 ± 0.4", "56 %"): right-aligned in tables.
_NUMBER = re.compile(r"^[-−+]?\d[\d,.]*(e[-+]?\d+)?( ± \d[\d,.]*)?( ?%)?$")
MISSING = "—"


def _float_decimals(values: Sequence[float], most: int = 3) -> int:
    """The fewest decimals, at least one, that show every value of a column as it was rounded.

    A column the chapter rounded to one decimal (percentages) shows one decimal throughout,
    ``12.0`` as well as ``12.5``; unrounded scores show ``most`` decimals.
    """
    finite = [v for v in values if math.isfinite(v)]
    for digits in range(1, most):
        if all(abs(round(v, digits) - v) <= 1e-9 * max(1.0, abs(v)) for v in finite):
            return digits
    return most


def _is_missing(value: Any) -> bool:
    return value is None or (isinstance(value, float | np.floating) and math.isnan(value))


def _cell_text(value: Any, digits: int) -> str:
    if _is_missing(value):
        return MISSING
    if isinstance(value, bool | np.bool_):
        return str(bool(value))
    if isinstance(value, int | np.integer):
        return str(int(value))
    if isinstance(value, float | np.floating):
        if value and abs(value) < 0.5 * 10.0**-digits:  # a learning rate would read as 0.000
            return f"{float(value):.2g}"
        return f"{float(value):.{digits}f}"
    return str(value)


def _label(value: Any) -> str:
    if isinstance(value, tuple):  # a column of a MultiIndex: one header, its levels joined
        return " · ".join(_label(v) for v in value if str(v) != "")
    return "" if _is_missing(value) else str(value)


def table_html(table: pd.DataFrame | pd.Series) -> str:
    """A table as a report shows it: one header row, row labels, consistent numbers.

    Unlike pandas' HTML there is no row of index names, no columns name (``column``) above the
    header and no ``0 1 2`` row numbers: named row labels become the leading columns, under their
    names, and numeric column labels are named (``shots = 4``). Repeated outer labels of a
    multi-level index are shown once. Floats get the same number of decimals down a column (see
    :func:`_float_decimals`), missing values show ``—``, and cells that read as numbers, and the
    headers of columns of numbers, are right-aligned (class ``num``; CSS in ``book/_static``).
    """
    if isinstance(table, pd.Series):
        table = table.to_frame(name="" if table.name is None else table.name)
    frame = table
    show_index = not (
        isinstance(frame.index, pd.RangeIndex)
        and frame.index.start == 0
        and frame.index.step == 1
        and frame.index.name is None
    )
    columns = []
    for j in range(frame.shape[1]):
        values = list(frame.iloc[:, j])
        digits = _float_decimals([float(v) for v in values if isinstance(v, float | np.floating)])
        columns.append([_cell_text(v, digits) for v in values])

    def cell(tag: str, text: str, num: bool, extra: str = "") -> str:
        cls = ' class="num"' if num else ""
        return f"<{tag}{cls}{extra}>{html.escape(text)}</{tag}>"

    def is_number(text: str) -> bool:
        return bool(_NUMBER.match(text))

    index_names = [_label(n) for n in frame.index.names] if show_index else []
    head = "".join(cell("th", name, False, ' scope="col"') for name in index_names)
    # Numeric column labels (shot counts, noise rates) mean nothing without the columns' name;
    # word labels stand alone, and their name (``column``, ``metric``) would only be an artefact.
    numeric = frame.columns.name is not None and all(
        isinstance(c, int | float | np.integer | np.floating) for c in frame.columns
    )
    labels = [f"{frame.columns.name} = {c}" if numeric else _label(c) for c in frame.columns]
    for label, texts in zip(labels, columns, strict=True):
        of_numbers = all(is_number(t) or t == MISSING for t in texts) and any(map(is_number, texts))
        head += cell("th", label, of_numbers, ' scope="col"')
    rows = []
    previous: tuple[Any, ...] = ()
    for i, key in enumerate(frame.index):
        parts: list[str] = []
        if show_index:
            levels = key if isinstance(key, tuple) else (key,)
            for level, value in enumerate(levels):
                same = previous[: level + 1] == levels[: level + 1] and level < len(levels) - 1
                parts.append(cell("th", "" if same else _label(value), False, ' scope="row"'))
            previous = levels
        parts += [cell("td", texts[i], is_number(texts[i])) for texts in columns]
        rows.append("<tr>" + "".join(parts) + "</tr>")
    return (
        '<table class="dataframe clipnb-table">'
        f"<thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"
    )
