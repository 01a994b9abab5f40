"""benchmarks/export_choice.py: the export decision from paired tune deltas."""

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import export_choice  # noqa: E402


def _report(pairs):
    """An ablation JSON with student/teacher rows: pairs = [(student_tune, teacher_tune), ...] in fractions."""
    rows = {export_choice.STUDENT: [], export_choice.TEACHER: []}
    for seed, (student, teacher) in enumerate(pairs):
        rows[export_choice.STUDENT].append({"seed": seed, "tune_miou": student, "miou": student})
        rows[export_choice.TEACHER].append({"seed": seed, "tune_miou": teacher, "miou": teacher + 0.01})
    return rows


def test_a_clear_lead_decides_and_a_tie_goes_to_the_side_never_far_behind():
    clear = {"day": {0: 1.0, 1: 1.2, 2: 0.9}, "night": {0: 1.1, 1: 0.8}}
    assert export_choice.decide(clear)["choice"] == "teacher"
    assert export_choice.decide({k: {s: -d for s, d in v.items()} for k, v in clear.items()})["choice"] == "student"
    # Mean near 0: the teacher trails by up to 2.0 once, the student by at most 1.0.
    tie = {"day": {0: -2.0, 1: 1.0, 2: 0.5}, "night": {0: 0.3, 1: 0.1}}
    decision = export_choice.decide(tie)
    assert abs(decision["mean"]) <= decision["std"]                   # precondition: it is a tie
    assert decision["choice"] == "student" and decision["teacher_worst_deficit"] == pytest.approx(2.0)
    assert export_choice.decide({k: {s: -d for s, d in v.items()} for k, v in tie.items()})["choice"] == "teacher"


def test_report_pairs_by_seed_in_points_and_writes_both_files(tmp_path):
    (tmp_path / "ablation.json").write_text(json.dumps(_report([(0.30, 0.31), (0.32, 0.32)])))
    (tmp_path / "ablation_night.json").write_text(json.dumps(_report([(0.20, 0.19), (0.21, 0.22)])))
    data, text = export_choice.report(tmp_path)
    assert data["tune"]["day"] == {0: pytest.approx(1.0), 1: pytest.approx(0.0)}
    assert data["tune"]["night"] == {0: pytest.approx(-1.0), 1: pytest.approx(1.0)}
    assert data["val"]["day"][1] == pytest.approx(1.0)
    assert "| day | tune | s0: +1.00, s1: +0.00 |" in text and data["choice"] in text


def test_too_few_seeds_is_refused():
    with pytest.raises(SystemExit, match="two paired seeds"):
        export_choice.decide({"day": {0: 1.0}})
