"""bench/record.py: figures are appended, the page shows the newest per metric, retired ones leave
the page but stay in the CSV with their reason."""

from __future__ import annotations

import csv

from bench import record as rec


def test_retire_hides_a_metric_from_the_page_and_keeps_its_history(tmp_path, monkeypatch):
    monkeypatch.setattr(rec, "CSV_PATH", tmp_path / "results.csv")
    monkeypatch.setattr(rec, "DOC_PATH", tmp_path / "benchmarks.md")
    rec.record("b", "speed (old model)", [1.0, 3.0, 2.0], "x", command="python b.py")
    rec.record("b", "speed (new model)", 5.0, "x", command="python b.py")
    page = rec.DOC_PATH.read_text()
    assert "| speed (old model) | 2 | 1..3 |" in page and "| speed (new model) | 5 |" in page

    assert rec.retire("b", "speed (old", "superseded by the new model") == ["speed (old model)"]
    page = rec.DOC_PATH.read_text()
    assert "speed (old model)" not in page and "| speed (new model) | 5 |" in page
    rows = list(csv.DictReader(rec.CSV_PATH.open()))
    assert [(r["metric"], r["unit"]) for r in rows] == [("speed (old model)", "x"), ("speed (new model)", "x"),
                                                        ("speed (old model)", "retired")]
    assert rows[-1]["notes"] == "superseded by the new model"
    assert rec.retire("b", "speed (old", "again") == []      # already retired: nothing appended
    rec.record("b", "speed (old model)", 4.0, "x", command="python b.py")   # measured again: back on the page
    assert "| speed (old model) | 4 |" in rec.DOC_PATH.read_text()
