"""The sentence machinery the chapters' verdicts share (each verdict itself lives in its study).

A verdict turns numbers into a phrase the prose pulls in with ``{glue:md}``; these helpers keep
the grammar right whatever the numbers say, and are tested on every branch.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from clipnb.core.report import join_words

__all__ = ["compare", "count_noun", "is_are", "join_words", "within_noise"]


def count_noun(n: int, singular: str, plural: str | None = None) -> str:
    """``"1 seed"``, ``"3 seeds"`` (``plural`` for irregular nouns)."""
    return f"{n} {singular if n == 1 else (plural or singular + 's')}"


def is_are(items: Sequence[object] | int) -> str:
    """The verb that agrees with a list (or a count): ``"is"`` for one, ``"are"`` otherwise."""
    n = items if isinstance(items, int) else len(items)
    return "is" if n == 1 else "are"


def within_noise(a: float, b: float, noise: float) -> bool:
    """Whether ``a`` and ``b`` differ by no more than ``noise`` (e.g. one std over seeds)."""
    return abs(a - b) <= noise


def compare(
    a: float,
    b: float,
    noise: float = 0.0,
    words: tuple[str, str, str] = ("above", "below", "level with"),
) -> str:
    """``words[0]`` if ``a`` exceeds ``b`` by more than ``noise``, ``words[1]`` if it falls short
    by more, ``words[2]`` otherwise; ``"not measured"`` if either is missing."""
    if any(isinstance(v, float) and math.isnan(v) for v in (a, b, noise)):
        return "not measured"
    if within_noise(a, b, noise):
        return words[2]
    return words[0] if a > b else words[1]
