"""benchmarks/device_check.sh: runs here with its GPU steps skipped; failure isolation and the report.

Logic only: nothing here depends on how fast anything ran.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from benchmarks import device_check
from benchmarks.device_check import Step, render_markdown, run_steps

ROOT = Path(__file__).resolve().parents[2]
PY = sys.executable


def test_the_script_runs_with_gpu_steps_skipped_and_writes_both_reports(tmp_path):
    out, work = tmp_path / "out", tmp_path / "work"
    done = subprocess.run(["bash", str(ROOT / "benchmarks" / "device_check.sh"), str(out), "--skip-gpu", "--work", str(work)],
                          capture_output=True, text=True, timeout=300, env={"PYTHON": PY, "PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr
    result = json.loads((out / "device_check.json").read_text())
    names = [s["name"] for s in result["steps"]]
    assert names == ["data", "pytest_gpu", "train_amp", "train_compile", "export_fp16", "export_int8", "build_fp32", "build_fp16",
                     "build_int8", "check", "run_bundle", "first_run_build", "second_run_reuses", "latency", "pipeline_ratio"]
    status = {s["name"]: s["status"] for s in result["steps"]}
    assert status.pop("data") == "passed" and set(status.values()) == {"skipped"}
    assert all(s["reason"] == "skipped: --skip-gpu" for s in result["steps"] if s["status"] == "skipped")
    assert (work / "clip.mp4").stat().st_size > 0 and (work / "data" / "target" / "val").is_dir()
    markdown = (out / "device_check.md").read_text()
    assert "1 passed, 0 failed, 14 skipped" in markdown and "| build_int8 | skipped |" in markdown
    # Each step's command lines are in the JSON: what to type to run one by hand.
    build = next(s for s in result["steps"] if s["name"] == "build_fp16")
    assert build["commands"][0].endswith("-m uda_adapt build " + str(work / "fp16") + " --precision fp16")
    pytest_step = next(s for s in result["steps"] if s["name"] == "pytest_gpu")
    assert "-m gpu or tensorrt" in pytest_step["commands"][0]


def test_a_failed_step_is_recorded_and_the_rest_still_run():
    steps = [
        Step("exits_3", "fails", [[PY, "-c", "import sys; print('partial output'); sys.exit(3)"]], gpu=False),
        Step("passes", "passes", [[PY, "-c", "print('ok')"]], gpu=False, metrics=lambda: {"value": 1}),
        Step("too_slow", "runs past its limit", [[PY, "-c", "import time; time.sleep(30)"]], gpu=False, timeout_s=1),
        Step("silent", "misses its expected line", [[PY, "-c", "print('something else')"]], gpu=False, expect="building"),
        Step("built_again", "says what it must not", [[PY, "-c", "print('building one now')"]], gpu=False,
             forbid="building one now"),
        Step("broken_metrics", "passes, its metrics do not", [[PY, "-c", "pass"]], gpu=False,
             metrics=lambda: json.loads("not json")),
        Step("needs_gpu", "skipped", [[PY, "-c", "pass"]], gpu=True),
    ]
    results = run_steps(steps, budget_s=60, gpu=False, gpu_reason="no NVIDIA GPU here", log=lambda m: None)
    by_name = {r["name"]: r for r in results}
    assert [r["status"] for r in results] == ["failed", "passed", "failed", "failed", "failed", "passed", "skipped"]
    assert by_name["built_again"]["reason"] == "the output says 'building one now'"
    assert by_name["exits_3"]["reason"].startswith("exit status 3") and "partial output" in by_name["exits_3"]["output_tail"]
    assert by_name["passes"]["metrics"] == {"value": 1}
    assert "limit" in by_name["too_slow"]["reason"]
    assert by_name["silent"]["reason"] == "the output never says 'building'"
    assert by_name["broken_metrics"]["metrics_error"].startswith("JSONDecodeError")
    assert by_name["needs_gpu"]["reason"] == "no NVIDIA GPU here"


def test_steps_past_the_budget_are_skipped_not_started():
    steps = [Step("uses_the_budget", "sleeps", [[PY, "-c", "import time; time.sleep(2)"]], gpu=False, timeout_s=2.9),
             Step("late", "would start too late", [[PY, "-c", "pass"]], gpu=False, timeout_s=5)]
    results = run_steps(steps, budget_s=3.0, gpu=True, gpu_reason="", log=lambda m: None)
    assert results[0]["status"] == "passed" and results[1]["status"] == "skipped"
    assert results[1]["reason"].startswith("time budget")


def test_the_markdown_shows_failures_and_measurements():
    result = {"started": "2026-01-01T00:00:00+00:00", "gpu": "GPU 0: NVIDIA H100", "budget_s": 480, "seconds": 300.0,
              "steps": [
                  {"name": "latency", "what": "latency", "status": "passed", "seconds": 20.0,
                   "metrics": {"median_ms": {"tensorrt_fp32": 1.0, "torch_fp32": 3.0}}},
                  {"name": "build_int8", "what": "build | int8", "status": "failed", "seconds": 5.0,
                   "reason": "exit status 1", "output_tail": "uda-adapt: error: cannot parse"},
              ]}
    markdown = render_markdown(result)
    assert "1 passed, 1 failed, 0 skipped" in markdown
    assert "| build_int8 | failed | 5.0 | build / int8: exit status 1 |" in markdown
    assert '"tensorrt_fp32": 1.0' in markdown and "uda-adapt: error: cannot parse" in markdown


def test_the_plan_fits_the_eight_minute_promise(tmp_path):
    steps = device_check.plan(tmp_path / "work", tmp_path / "out")
    assert device_check.BUDGET_S <= 480
    assert all(step.timeout_s <= device_check.BUDGET_S for step in steps)
