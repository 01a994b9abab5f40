"""benchmarks/ablation.py: which rows are paired, the gap closed, and the report over finished runs.

Logic only: the runs here are score files written by the test, not trained networks.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks import ablation
from benchmarks.ablation import ADABN, MT, ORACLE, SOURCE, TEACHER_SUFFIX, TRAINING_BN_SUFFIX, base_of, gap_closed, paired_deltas


def entry(seed: int, miou: float) -> dict:
    return {"seed": seed, "miou": miou, "per_class_iou": {"road": miou}, "run": f"runs/seed{seed}/x"}


def test_each_derived_row_is_paired_with_its_own_base():
    names = {SOURCE, ADABN, MT, f"{MT} + CT", f"{MT} + CT{TEACHER_SUFFIX}", f"{MT} + CT{TRAINING_BN_SUFFIX}", f"{MT} + MIC + CT"}
    assert base_of(f"{MT} + CT", names) == MT
    assert base_of(f"{MT} + CT{TEACHER_SUFFIX}", names) == f"{MT} + CT"
    assert base_of(f"{MT} + CT{TRAINING_BN_SUFFIX}", names) == f"{MT} + CT"
    assert base_of(f"{MT} + MIC + CT", names) is None   # its base "mean teacher + MIC" is not a row
    assert base_of(SOURCE, names) is None


def test_deltas_pair_seeds_and_skip_seeds_one_row_lacks():
    rows = {MT: [entry(0, 0.30), entry(1, 0.20)], f"{MT} + CT": [entry(1, 0.25), entry(2, 0.40)]}
    assert paired_deltas(rows, f"{MT} + CT", MT) == [(1, pytest.approx(5.0))]


def test_gap_closed_is_the_mean_of_per_seed_fractions():
    rows = {SOURCE: [entry(0, 0.10), entry(1, 0.20)], ORACLE: [entry(0, 0.50), entry(1, 0.40)],
            MT: [entry(0, 0.30), entry(1, 0.20)]}
    assert gap_closed(rows, MT) == pytest.approx((0.5 + 0.0) / 2)


def write_eval(path: Path, miou: float) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"miou": miou, "per_class_iou": {"road": miou, "sky": None}}))
    (path.parent / "last.pt").write_bytes(b"")


def fake_benchmark(tmp_path: Path) -> Path:
    """A --data folder that ensure_benchmark accepts without generating anything."""
    data = tmp_path / "data"
    for domain in ("source", "target"):
        (data / domain).mkdir(parents=True)
        (data / domain / "meta.json").write_text("{}")
    return data


def test_report_only_lists_finished_runs_with_paired_deltas(tmp_path):
    data = fake_benchmark(tmp_path)
    out = tmp_path / "out"
    for seed, (source, adapted, with_ct) in enumerate([(0.20, 0.30, 0.32), (0.22, 0.31, 0.30)]):
        write_eval(out / f"seed{seed}" / "base" / "source" / "eval_source.json", source)
        write_eval(out / f"seed{seed}" / "mean_teacher" / "self_train" / "eval_mean_teacher.json", adapted)
        write_eval(out / f"seed{seed}" / "mean_teacher_ct" / "self_train" / "eval_mean_teacher.json", with_ct)
    # seed 1 of the oracle has not finished: its row lists seed 0 only
    write_eval(out / "seed0" / "oracle" / "source" / "eval_source.json", 0.60)
    assert ablation.main(["--data", str(data), "--out", str(out), "--seeds", "0", "1", "--ct-lambda", "0.1", "--report-only"]) == 0
    report = (out / "ablation.md").read_text()
    assert "| mean teacher | 30.5 +- 0.7 | 25 % | s0: 30.0, s1: 31.0 |" in report
    assert "| mean teacher + CT (lambda_ct=0.1) - mean teacher | +0.50 +- 2.12 | s0: +2.00, s1: -1.00 |" in report
    assert "| oracle (target labels) | 60.0 +- 0.0 | - | s0: 60.0 |" in report
    rows = json.loads((out / "ablation.json").read_text())
    assert [e["seed"] for e in rows[MT]] == [0, 1]


def test_default_checks_name_the_worst_seed_and_count_the_positive_ones():
    ct = f"{MT} + CT"
    rows = {SOURCE: [entry(0, 0.20), entry(1, 0.20)], ADABN: [entry(0, 0.25), entry(1, 0.24)],
            MT: [entry(0, 0.30), entry(1, 0.30)], ct: [entry(0, 0.32), entry(1, 0.29)],
            ORACLE: [entry(0, 0.40), entry(1, 0.30)]}
    table = "\n".join(ablation.default_checks(rows, ct))
    assert "| gap closed | 75 % | 60 % | s0: 60 %, s1: 90 % |" in table
    assert "| minus source + AdaBN | +6.00 (positive in 2 of 2) | +5.00 | s0: +7.00, s1: +5.00 |" in table
    assert "| minus mean teacher | +0.50 (positive in 1 of 2) | -1.00 | s0: +2.00, s1: -1.00 |" in table


def test_tune_deltas_skip_seeds_without_a_tune_score():
    rows = {MT: [{**entry(0, 0.3), "tune_miou": 0.28}, entry(1, 0.3)],
            f"{MT} + CT": [{**entry(0, 0.31), "tune_miou": 0.30}, {**entry(1, 0.31), "tune_miou": 0.2}]}
    assert paired_deltas(rows, f"{MT} + CT", MT, key="tune_miou") == [(0, pytest.approx(2.0))]


def test_a_refit_row_reports_its_live_module_diagnostic(tmp_path):
    data = fake_benchmark(tmp_path)
    out = tmp_path / "out"
    name = "mean teacher + CT (lambda_ct=0.1) + refit"
    run = out / "seed0" / ablation.slug(name) / "self_train"
    write_eval(out / "seed0" / "base" / "source" / "eval_source.json", 0.20)
    write_eval(run / "eval_mean_teacher.json", 0.31)
    write_eval(run / "eval_network+live_module.json", 0.29)
    refit = f"{name}:self_train.method=mean_teacher,self_train.lambda_ct=0.1,self_train.correlation_refit.every=1"
    frozen = "mean teacher + frozen:self_train.method=mean_teacher,self_train.lambda_ct=0.1"
    assert ablation.main(["--data", str(data), "--out", str(out), "--seeds", "0", "--report-only",
                          "--extra", refit, "--extra", frozen]) == 0
    report = (out / "ablation.md").read_text()
    assert f"| {name} | 31.0 +- 0.0 |" in report                                      # the row itself
    assert f"| diagnostic: {name}, network + live module | 29.0 +- 0.0 |" in report   # and its module's worth
    assert "frozen, network + live module" not in report                               # only refitted rows have one


def test_source_val_scores_the_source_network_on_its_own_domain(tmp_path):
    data = fake_benchmark(tmp_path)
    out = tmp_path / "out"
    source = out / "seed0" / "base" / "source"
    write_eval(source / "eval_source.json", 0.20)
    # Scored once already (newer than last.pt): the report reads it rather than evaluating again.
    (source / "val_source_domain.json").write_text(json.dumps({"miou": 0.70, "per_class_iou": {"road": 0.9, "sky": 0.5}}))
    args = ["--data", str(data), "--out", str(out), "--seeds", "0", "--report-only", "--no-oracle"]
    assert ablation.main(args) == 0
    assert "on source val" not in (out / "ablation.md").read_text()
    assert ablation.main([*args, "--source-val"]) == 0
    report = (out / "ablation.md").read_text()
    assert f"| {ablation.SOURCE_ON_SOURCE} | 70.0 +- 0.0 | - | s0: 70.0 |" in report
    assert "| sky | n/a | 50.0 |" in report     # per class, beside the target-val row


def test_extra_settings_keep_list_values_whole():
    assert ablation.split_settings("a.b=1,c.d=[0.0, 0.12, 0.0, 0.0],e=x") == ["a.b=1", "c.d=[0.0, 0.12, 0.0, 0.0]", "e=x"]
    assert ablation.split_settings("a=1,") == ["a=1"]
