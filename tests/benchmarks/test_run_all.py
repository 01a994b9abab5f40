"""benchmarks/run_all.py and benchmarks/speed/: section selection, failure isolation, and the report it renders.

Logic only: no test here depends on how fast anything ran.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks import run_all
from benchmarks.speed.figures import Section
from benchmarks.speed.plan import QUICK
from benchmarks.speed.report import render_markdown, render_synth
from benchmarks.speed.training import process_counts, stage_rate

ROOT = Path(__file__).resolve().parents[2]


def write_metrics(path: Path, rates: list[float]) -> Path:
    records = [{"stage": "source", "step": 10 * (i + 1), "loss": 1.0, "images_per_second": r} for i, r in enumerate(rates)]
    records.append({"stage": "source", "step": 10 * len(rates), "miou": 0.2})  # an evaluation record: no throughput
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def test_stage_rate_leaves_out_the_warm_up_record_and_evaluations(tmp_path):
    rate = stage_rate(write_metrics(tmp_path / "metrics.jsonl", [100.0, 10.0, 30.0, 20.0]))
    assert rate["median"] == 20.0
    assert rate["n"] == 3
    assert rate["values"] == [10.0, 30.0, 20.0]
    assert rate["warmup_dropped"] == 100.0


def test_stage_rate_needs_a_record_after_the_warm_up(tmp_path):
    with pytest.raises(RuntimeError, match="1 throughput records"):
        stage_rate(write_metrics(tmp_path / "metrics.jsonl", [100.0]))


def test_only_keeps_report_order_and_names_the_valid_sections():
    assert run_all.parse_only("export, train") == ["train", "export"]
    with pytest.raises(argparse.ArgumentTypeError, match="valid: synth, train, correlation"):
        run_all.parse_only("train,bogus")


def test_process_counts_double_up_to_the_gpu_count():
    assert process_counts(1) == [1]
    assert process_counts(6) == [1, 2, 4, 6]
    assert process_counts(8) == [1, 2, 4, 8]


def fake_section(**data):
    def measure(plan, work):
        assert work.is_dir()
        return {"commands": [f"echo {work}"], **data}

    return measure


def failing_section(plan, work):
    raise RuntimeError("boom\nsecond line")


def test_a_failing_section_does_not_stop_the_others(monkeypatch):
    monkeypatch.setitem(run_all.SECTIONS, "synth", Section("Synth", failing_section, render_synth))
    monkeypatch.setitem(run_all.SECTIONS, "export", Section("Export", fake_section(rows=[]), lambda d: ["rendered"]))
    results = run_all.run_sections(["synth", "export"], QUICK, "quick")
    assert results["synth"]["status"] == "failed"
    assert results["synth"]["reason"] == "RuntimeError: boom"
    assert results["export"]["status"] == "ok"
    # The scratch folder is named as $WORK, never as the temporary path it had.
    assert results["export"]["commands"] == [f"echo {run_all.WORK}/export"]
    assert results["export"]["rerun"] == "python benchmarks/run_all.py --only export --quick"


def test_main_writes_both_files_with_the_failure_and_the_other_figures(monkeypatch, tmp_path):
    monkeypatch.setitem(run_all.SECTIONS, "synth", Section("Synth", failing_section, render_synth))
    monkeypatch.setitem(run_all.SECTIONS, "export", Section("Export", fake_section(value=41.5), lambda d: [f"value {d['value']}"]))
    out, raw = tmp_path / "R.md", tmp_path / "results" / "r.json"
    assert run_all.main(["--quick", "--only", "synth,export", "--out", str(out), "--json", str(raw)]) == 0
    text = out.read_text()
    assert "failed: RuntimeError: boom" in text
    assert "value 41.5" in text
    assert "not run: not selected with --only" in text  # train, correlation, ...
    figures = json.loads(raw.read_text())
    assert figures["mode"] == "quick"
    assert figures["sections"]["export"]["value"] == 41.5
    assert set(figures["sections"]) == {"synth", "export"}


def test_gpu_section_says_plainly_that_it_was_not_measured(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    results = run_all.run_sections(["gpu"], QUICK, "full")
    assert results["gpu"]["status"] == "not measured"
    report = render_markdown(report_around(results), run_all.SECTIONS)
    assert "not measured: no CUDA device on this machine" in report


def report_around(sections: dict) -> dict:
    return {"command": "python benchmarks/run_all.py --quick", "mode": "quick", "started": "2026-01-01 00:00 UTC",
            "seconds": 12.0, "json": "benchmarks/results/run_all.json",
            "machine": {"cpu": "Test CPU", "cores": 2, "ram_gib": 8.0, "gpu": "none", "os": "Linux",
                        "load_average_at_start": [0.5, 0.4, 0.3]},
            "versions": {"python": "3.11", "torch": "2.x", "onnxruntime": "1.x", "opencv": "4.x", "numpy": "2.x",
                         "uda-adapt": "0.1.0", "tensorrt": "not installed"},
            "sections": sections}


def test_markdown_has_every_section_the_machine_and_the_medians(tmp_path):
    rates = {name: stage_rate(write_metrics(tmp_path / f"{name}.jsonl", values))
             for name, values in (("source", [9.0, 10.0, 30.0, 20.0]), ("correlation", [1.0, 50.0, 70.0]))}
    train = {"status": "ok", "seconds": 3.0, "rerun": "python benchmarks/run_all.py --only train --quick",
             "commands": ["uda-adapt train --out $WORK/train/run"], "torch_threads": 2, "iterations": 30,
             "stages": {name: {**rate, "images_per_step": 8} for name, rate in rates.items()}}
    failed = {"status": "failed", "reason": "ValueError: bad", "seconds": 0.1, "rerun": "x", "commands": []}
    text = render_markdown(report_around({"train": train, "int8": failed}), run_all.SECTIONS)
    assert text.startswith("# Speed figures\n\nGenerated by benchmarks/run_all.py with `python benchmarks/run_all.py --quick`")
    for number, section in enumerate(run_all.SECTIONS.values(), 1):
        assert f"## {number}. {section.title}" in text
    assert "| Test CPU | 2 | 8.0 GiB | none |" in text
    assert "tensorrt" in text and "not installed" in text
    assert "| source | 20.0 | 3 | 9.0 | 8 | 400 |" in text      # median of 10, 30, 20; 8 images at 20 img/s
    assert "| correlation | 60.0 | 2 | 1.0 | 8 | 133 |" in text
    assert "failed: ValueError: bad" in text
    assert "```\nuda-adapt train --out $WORK/train/run\n```" in text
    assert text.count("not run: not selected") == len(run_all.SECTIONS) - 2


def test_quick_synth_run_writes_the_given_paths(tmp_path):
    out, raw = tmp_path / "R.md", tmp_path / "r.json"
    subprocess.run([sys.executable, "benchmarks/run_all.py", "--quick", "--only", "synth", "--out", str(out), "--json", str(raw)],
                   cwd=ROOT, check=True, capture_output=True, text=True, timeout=120)
    figures = json.loads(raw.read_text())
    section = figures["sections"]["synth"]
    assert section["status"] == "ok", section
    assert len(section["rows"]) == 4
    for row in section["rows"]:
        assert len(row["rates"]) == QUICK.synth_repeats
        assert row["median"] == statistics.median(row["rates"])
    text = out.read_text()
    assert "## 1. Synthetic generator throughput" in text
    assert f"python benchmarks/synth_throughput.py --repeats {QUICK.synth_repeats}" in text
    assert "--only synth --out" in text.splitlines()[2]
