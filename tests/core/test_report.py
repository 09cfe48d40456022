"""Tables as the book shows them: no pandas artefacts, consistent numbers."""

from __future__ import annotations

import re
from html.parser import HTMLParser

import numpy as np
import pandas as pd

from clipnb.core import report


class _Cells(HTMLParser):
    """Header cells, and body rows as lists of (tag, class, text)."""

    def __init__(self) -> None:
        super().__init__()
        self.head: list[str] = []
        self.rows: list[list[tuple[str, str, str]]] = []
        self._section = ""
        self._cell: tuple[str, str] | None = None
        self._text = ""

    def handle_starttag(self, tag, attrs):
        if tag in ("thead", "tbody"):
            self._section = tag
        elif tag == "tr" and self._section == "tbody":
            self.rows.append([])
        elif tag in ("th", "td"):
            self._cell, self._text = (tag, dict(attrs).get("class") or ""), ""

    def handle_data(self, data):
        self._text += data

    def handle_endtag(self, tag):
        if tag in ("th", "td") and self._cell:
            if self._section == "thead":
                self.head.append(self._text)
            else:
                self.rows[-1].append((*self._cell, self._text))
            self._cell = None


def parse(table) -> _Cells:
    cells = _Cells()
    cells.feed(report.table_html(table))
    return cells


def records() -> list[dict]:
    return [
        {"dataset": d, "column": c, "seed": s, "accuracy": 10.0 * s + (2 if c == "probe" else 0)}
        for d in ("world-shape-photo", "digits")
        for c in ("zero-shot", "probe")
        for s in (1, 2)
    ]


def test_mean_std_table_has_one_header_row_and_no_index_artefacts():
    table = report.mean_std_table(records(), "dataset", "column")
    cells = parse(table)
    assert cells.head == ["dataset", "zero-shot", "probe"]  # no `column` cell, no `dataset` row
    assert [r[0][2] for r in cells.rows] == ["world-shape-photo", "digits"]
    assert cells.rows[0][1] == ("td", "num", "15.0 ± 5.0")
    assert all(r[0][0] == "th" for r in cells.rows)  # row labels are headers, left-aligned


def test_default_index_is_dropped_and_missing_values_show_a_dash():
    frame = pd.DataFrame({"model": ["clip", "pixels"], "score": [0.5, np.nan], "n": [3, 4]})
    cells = parse(frame)
    assert cells.head == ["model", "score", "n"]
    assert cells.rows == [
        [("td", "", "clip"), ("td", "num", "0.5"), ("td", "num", "3")],
        [("td", "", "pixels"), ("td", "", "—"), ("td", "num", "4")],
    ]


def test_floats_keep_one_decimal_count_down_a_column():
    frame = pd.DataFrame({"accuracy": [12.0, 12.5, 100.0], "ari": [0.1234, 0.5, 0.25]})
    cells = parse(frame.round({"accuracy": 1, "ari": 3}))
    assert [r[0][2] for r in cells.rows] == ["12.0", "12.5", "100.0"]
    assert [r[1][2] for r in cells.rows] == ["0.123", "0.500", "0.250"]
    small = parse(pd.Series({"image": 1e-4, "text": 3e-5, "none": 0.0}, name="learning rate"))
    assert [r[1][2] for r in small.rows] == ["0.0001", "3e-05", "0.000"]


def test_multi_level_rows_show_repeated_outer_labels_once_and_numeric_columns_are_named():
    recs = [
        {"dataset": d, "method": m, "shots": k, "accuracy": 50.0}
        for d in ("a", "b")
        for m in ("x", "y")
        for k in (1, 4)
    ]
    cells = parse(report.mean_std_table(recs, ["dataset", "method"], "shots"))
    assert cells.head == ["dataset", "method", "shots = 1", "shots = 4"]
    assert [[c[2] for c in r[:2]] for r in cells.rows] == [
        ["a", "x"],
        ["", "y"],
        ["b", "x"],
        ["", "y"],
    ]


def test_series_and_html_escaping():
    cells = parse(pd.Series({"<b>": 0.01}, name="learning rate"))
    assert cells.head == ["", "learning rate"]
    assert cells.rows == [[("th", "", "<b>"), ("td", "num", "0.01")]]
    assert "<b>" not in re.sub(
        r"<(/?)(table|thead|tbody|tr|th|td)\b[^>]*>", "", report.table_html(pd.Series({"<b>": 1}))
    )
