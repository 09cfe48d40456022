import math
import os
import stat

import pytest
import torch

from clipnb.core import utils


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
    from clipnb.core.report import join_words

    assert join_words([]) == "none"
    assert join_words([], empty="no dataset") == "no dataset"
    assert join_words(["digits"]) == "digits"
    assert join_words(["a", "b", "c"]) == "a, b and c"


def test_stopwatch_reports_cpu_time_and_the_host_steal_share(monkeypatch):
    ticks = iter([(100, 1_000), (130, 1_200)])  # 30 of 200 ticks stolen while it ran
    monkeypatch.setattr(utils, "_host_cpu_ticks", lambda: next(ticks))
    clock = utils.Stopwatch()
    sum(i * i for i in range(200_000))  # some CPU work
    lap = clock.read()
    assert lap["steal_percent"] == pytest.approx(15.0)
    assert 0 < lap["cpu_seconds"] and 0 < lap["seconds"]


def test_stopwatch_steal_is_nan_where_the_host_does_not_report_it(monkeypatch):
    monkeypatch.setattr(utils, "_host_cpu_ticks", lambda: None)
    assert math.isnan(utils.Stopwatch().read()["steal_percent"])
