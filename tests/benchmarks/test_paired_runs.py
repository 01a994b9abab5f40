"""benchmarks/paired_runs.py: seed-paired deltas between two ablation reports."""

from __future__ import annotations

import json

import pytest

from benchmarks.paired_runs import compare, main


def _entry(seed: int, miou: float, person: float, tune: float | None = 0.2) -> dict:
    return {"seed": seed, "miou": miou, "tune_miou": tune, "per_class_iou": {"road": 0.8, "person": person, "train": None}}


OLD = {"mean teacher": [_entry(0, 0.30, 0.02), _entry(1, 0.32, 0.03), _entry(2, 0.31, 0.01)]}
NEW = {"mean teacher": [_entry(0, 0.33, 0.12), _entry(1, 0.31, 0.10)], "mt + x": [_entry(1, 0.35, 0.2)]}


def test_pairs_only_common_seeds_and_reports_each_metric():
    text, numbers = compare(NEW, OLD, ["mean teacher", "mt + x=mean teacher"])
    mt = numbers["mean teacher"]
    assert set(mt["miou"]["per_seed"]) == {"0", "1"}                          # seed 2 has no new run
    assert mt["miou"]["mean"] == pytest.approx(((33 - 30) + (31 - 32)) / 2)
    assert mt["person"]["mean"] == pytest.approx(((12 - 2) + (10 - 3)) / 2)
    assert "train" not in mt                                                  # absent class: no delta
    assert numbers["mt + x - mean teacher"]["miou"]["mean"] == pytest.approx(3.0)
    assert "| mean teacher | miou | s0: 30.0 -> 33.0 (+3.00), s1: 32.0 -> 31.0 (-1.00) | +1.00 +- 2.83 | 1 of 2 |" in text
    assert "| person | 2.5 | 11.0 | +8.50 | +7.00 | 2 of 2 |" in text


def test_cli_writes_markdown_and_json_and_refuses_unknown_rows(tmp_path):
    new, old = tmp_path / "new.json", tmp_path / "old.json"
    new.write_text(json.dumps(NEW)), old.write_text(json.dumps(OLD))
    out = tmp_path / "out.md"
    assert main(["--new", str(new), "--old", str(old), "--pair", "mean teacher", "--out", str(out)]) == 0
    assert "person" in out.read_text() and json.loads(out.with_suffix(".json").read_text())["mean teacher"]["miou"]
    with pytest.raises(SystemExit, match="not in the report"):
        main(["--new", str(new), "--old", str(old), "--pair", "oracle"])
    with pytest.raises(SystemExit, match="no seed in both"):
        compare({"a": [_entry(5, 0.1, 0.1)]}, {"a": [_entry(0, 0.1, 0.1)]}, ["a"])
