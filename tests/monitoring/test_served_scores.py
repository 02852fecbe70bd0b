"""Served scores as the monitor reads them: looked up by id for the champion's version only, the
champion loaded only for rows the scoring table lacks, and no table at all read as "none yet"."""

from __future__ import annotations

from datetime import datetime

import numpy as np
import pyarrow as pa
import pytest

from ml_tasks.monitoring.served_scores import ServedScores, WindowScorer, read_served_scores
from ml_tasks.scoring.destination import Stamp, score_writer


def served(ids: list[int], scores: list[float]) -> ServedScores:
    return ServedScores("scores", "3", np.array(ids, dtype=np.int64), np.array(scores))


def test_lookup_finds_served_ids_and_leaves_the_others_missing():
    found, scores = served([2, 5, 9], [0.2, 0.5, 0.9]).lookup(np.array([9, 1, 5, 10, 2], dtype=np.int64))
    assert found.tolist() == [True, False, True, False, True]
    assert scores[found].tolist() == [0.9, 0.5, 0.2] and np.isnan(scores[~found]).all()
    found, _ = served([], []).lookup(np.array([1], dtype=np.int64))
    assert not found.any()


def test_a_window_the_table_covers_never_loads_the_champion():
    def unloadable():
        raise AssertionError("the champion was loaded although every row was served")

    scorer = WindowScorer("id", served([1, 2, 3], [0.1, 0.2, 0.3]), unloadable)
    assert scorer(pa.record_batch({"id": [3, 1]})).tolist() == [0.3, 0.1]
    assert (scorer.served_rows, scorer.scored_rows) == (2, 0)


def test_rows_the_table_lacks_are_scored_by_the_champion_once_loaded():
    loads: list[int] = []

    def load():
        loads.append(1)
        return lambda frame: frame["x"].to_numpy(float) / 10

    scorer = WindowScorer("id", served([1], [0.7]), load)
    batch = pa.record_batch({"id": [1, 4, 5], "x": [0.0, 4.0, 5.0]})
    assert scorer(batch).tolist() == [0.7, 0.4, 0.5]
    assert scorer(batch).tolist() == [0.7, 0.4, 0.5]
    assert (scorer.served_rows, scorer.scored_rows, len(loads)) == (2, 4, 1)
    without_table = WindowScorer("id", None, load)
    assert without_table(batch).tolist() == [0.0, 0.4, 0.5] and without_table.scored_rows == 3


def test_read_served_scores_takes_one_version_and_says_none_when_no_table(tmp_path):
    url = f"sqlite:///{tmp_path / 'warehouse.db'}"
    assert read_served_scores(url, "scores", "3") is None
    for version, ids in (("3", [7, 2]), ("4", [5])):
        with score_writer(url, ["scores"]) as writer:
            writer.stage("scores", np.array(ids, dtype=np.int64), np.array(ids, dtype=float) / 10)
            writer.replace(version, {"scores": Stamp(version, version, datetime(2024, 1, 1))})
    read = read_served_scores(url, "scores", "3")
    assert read is not None and read.ids.tolist() == [2, 7] and read.scores.tolist() == pytest.approx([0.2, 0.7])
