import os
import stat

import pytest
import torch

from clipnb import utils


def test_atomic_write_keeps_the_old_file_when_writing_fails(tmp_path):
    target = tmp_path / "result.json"
    utils.atomic_write_json(target, {"acc": 1.0})

    class Unserialisable:
        def __str__(self):
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        utils.atomic_write_json(target, {"acc": Unserialisable()})
    assert target.read_text() == '{\n  "acc": 1.0\n}\n'
    assert [p.name for p in tmp_path.iterdir()] == ["result.json"]  # no temp file left


def test_atomic_files_are_readable_like_ordinary_files(tmp_path):
    text, weights = tmp_path / "a.txt", tmp_path / "w.pt"
    utils.atomic_write_text(text, "x")
    utils.atomic_torch_save({"w": torch.ones(2)}, weights)
    ordinary = tmp_path / "ordinary.txt"
    ordinary.write_text("x")
    expected = stat.S_IMODE(os.stat(ordinary).st_mode)
    assert stat.S_IMODE(os.stat(text).st_mode) == expected
    assert stat.S_IMODE(os.stat(weights).st_mode) == expected
    assert torch.equal(torch.load(weights)["w"], torch.ones(2))


def test_join_words_reads_as_a_list_in_a_sentence():
    from clipnb.report import join_words

    assert join_words([]) == "none"
    assert join_words([], empty="no dataset") == "no dataset"
    assert join_words(["digits"]) == "digits"
    assert join_words(["a", "b", "c"]) == "a, b and c"
