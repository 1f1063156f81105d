"""The class tables a run writes: per-class accuracy and the confusion matrix, as CSV that any
reader parses back to the same class names."""

import csv

import numpy as np
import pytest

from embedding_net.viz.reports import write_class_tables


def test_write_class_tables(tmp_path):
    labels, predicted = np.array([0, 0, 2, 2, 2]), np.array([0, 1, 2, 2, 0])
    write_class_tables(str(tmp_path), labels, predicted, ["a", "b,c", "d"])
    with open(tmp_path / "per_class_accuracy.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [(r["class"], float(r["top1_accuracy"]), int(r["queries"])) for r in rows] == [
        ("a", 0.5, 2), ("d", pytest.approx(2 / 3), 3)]
    with open(tmp_path / "confusion_matrix.csv", newline="") as handle:
        table = list(csv.reader(handle))
    assert table[0] == ["true\\predicted", "a", "b,c", "d"]
    assert table[1:] == [["a", "1", "1", "0"], ["b,c", "0", "0", "0"], ["d", "1", "0", "2"]]
    write_class_tables(str(tmp_path / "many"), labels, predicted, ["a", "b", "c"], max_confusion_classes=2)
    assert not (tmp_path / "many" / "confusion_matrix.csv").exists()


@pytest.mark.parametrize("names", [['say "hi"', "Ökologie, ß", "line\nbreak"], ["plain", "x;y", "'quoted'"]])
def test_class_names_round_trip_through_both_tables(tmp_path, names):
    labels, predicted = np.array([0, 1, 1, 2]), np.array([0, 1, 2, 2])
    write_class_tables(str(tmp_path), labels, predicted, names)
    with open(tmp_path / "per_class_accuracy.csv", newline="", encoding="utf-8") as handle:
        assert [row["class"] for row in csv.DictReader(handle)] == names
    with open(tmp_path / "confusion_matrix.csv", newline="", encoding="utf-8") as handle:
        table = list(csv.reader(handle))
    assert table[0][1:] == names and [row[0] for row in table[1:]] == names
    assert [[int(v) for v in row[1:]] for row in table[1:]] == [[1, 0, 0], [0, 1, 1], [0, 0, 1]]
