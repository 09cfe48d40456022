from __future__ import annotations

import math

from clipnb.studies.verdicts import compare, count_noun, is_are, join_words, within_noise


def test_grammar_follows_the_count():
    assert count_noun(1, "seed") == "1 seed" and count_noun(3, "seed") == "3 seeds"
    assert count_noun(2, "query", "queries") == "2 queries"
    assert is_are(["a"]) == "is" and is_are(["a", "b"]) == "are" and is_are(0) == "are"
    assert join_words([]) == "none" and join_words(["a"]) == "a"
    assert join_words(["a", "b", "c"]) == "a, b and c"


def test_compare_every_branch():
    assert compare(2.0, 1.0) == "above" and compare(1.0, 2.0) == "below"
    assert compare(1.05, 1.0, noise=0.1) == "level with" and within_noise(1.05, 1.0, 0.1)
    assert compare(1.0, math.nan) == "not measured"
    assert compare(3.0, 1.0, words=("more", "less", "as much")) == "more"
