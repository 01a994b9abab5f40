"""benchmarks/device_check.sh: what it cannot check is NOT COVERED, never passed; skips are failures unless allowed.

Logic only: nothing here depends on how fast anything ran.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks import device_check
from benchmarks.device_check import Step, judge, render_markdown, run_steps, skipped_tests

ROOT = Path(__file__).resolve().parents[2]
PY = sys.executable
GPU_STEPS = {"train", "export", "build_fp16", "build_fp32", "build_int8", "build_int8_legacy", "check", "latency",
             "real_frames", "run_bundle", "first_run_build", "second_run_reuses", "amp_vs_fp32", "train_compile",
             "torchrun_1gpu", "ddp_nccl", "resume_sigkill_cuda", "run_vs_bare_onnxruntime", "pytest_gpu"}
JETSON_STEPS = {"jetson_dla", "jetson_csi_nvargus", "jetson_nvv4l2", "gstreamer_writer", "jetson_rtsp_server"}


def _script(out, work, *extra):
    return subprocess.run(["bash", str(ROOT / "benchmarks" / "device_check.sh"), str(out), "--work", str(work),
                           "--without", "gpu", "--without", "cuda", "--without", "tensorrt", "--without", "idle", *extra],
                          capture_output=True, text=True, timeout=300, env={"PYTHON": PY, "PATH": "/usr/bin:/bin"})


def test_without_a_gpu_every_gpu_step_is_not_covered_and_the_check_fails(tmp_path):
    out, work = tmp_path / "out", tmp_path / "work"
    done = _script(out, work)
    assert done.returncode == 1, done.stderr
    result = json.loads((out / "device_check.json").read_text())
    status = {s["name"]: s["status"] for s in result["steps"]}
    assert status.pop("data") == "passed"
    assert set(status) == GPU_STEPS | JETSON_STEPS and set(status.values()) == {"not covered"}
    assert not result["preflight"]["gpu"]["present"] and not result["preflight"]["jetson"]["present"]
    build = next(s for s in result["steps"] if s["name"] == "build_fp16")
    assert "TensorRT (import tensorrt)" in build["reason"]
    assert build["commands"][0].endswith("-m uda_adapt build " + str(work / "fp16") + " --precision fp16")
    assert "-rs" in next(s for s in result["steps"] if s["name"] == "pytest_gpu")["commands"][0]
    assert (work / "clip.mp4").stat().st_size > 0 and (work / "data" / "target" / "val").is_dir()
    markdown = (out / "device_check.md").read_text()
    assert markdown.startswith("# Device check\n\n**FAILED**: 1 passed, 0 failed, 24 not covered")
    assert "| build_int8 | NOT COVERED |" in markdown and "| jetson_dla | NOT COVERED |" in markdown
    assert "## NOT COVERED (nothing here was checked)" in markdown and "| data | passed |" in markdown
    assert "| gpu | NO | treated as absent (--without) |" in markdown
    # The same run, everything not covered named by --allow-skip: exit 0, and still listed as NOT COVERED.
    done = _script(out, work, "--allow-skip", "*")
    assert done.returncode == 0, done.stderr
    markdown = (out / "device_check.md").read_text()
    assert "**PASSED**: 1 passed, 0 failed, 24 not covered" in markdown and "| check | NOT COVERED (allowed) |" in markdown
    # Allowing some is not allowing all.
    assert _script(out, work, "--allow-skip", "jetson_*").returncode == 1


def test_the_order_puts_engines_before_training_and_pytest_last(tmp_path):
    names = [s.name for s in device_check.plan(tmp_path / "work", tmp_path / "out")]
    assert names.index("build_fp16") < names.index("amp_vs_fp32") < names.index("resume_sigkill_cuda")
    assert names[-1] == "pytest_gpu" and names[:3] == ["data", "train", "export"]


PYTEST_OUTPUT = """\
..s.s                                                                    [100%]
=========================== short test summary info ============================
SKIPPED [1] tests/export/test_tensorrt_real.py:23: needs TensorRT and an NVIDIA GPU
SKIPPED [2] tests/adapt/test_gpu_training.py:130: needs 2 GPUs
3 passed, 3 skipped in 4.21s
"""


def test_skipped_tests_fail_the_check_unless_allowed_and_never_where_their_need_is_present():
    skips = skipped_tests(PYTEST_OUTPUT)
    assert skips == [{"where": "tests/export/test_tensorrt_real.py:23", "reason": "needs TensorRT and an NVIDIA GPU"},
                     {"where": "tests/adapt/test_gpu_training.py:130", "reason": "needs 2 GPUs"}]

    def verdict(allow, present):
        steps = [{"name": "pytest_gpu", "status": "passed", "skipped_tests": [dict(s) for s in skips]}]
        return judge(steps, allow, present)

    assert verdict([], {"cuda": True})["exit_status"] == 1
    assert verdict(["tests/export/*", "tests/adapt/test_gpu_training.py:130"], {"cuda": True})["exit_status"] == 0
    # TensorRT is here, yet its test skipped: a broken install, whatever --allow-skip says.
    judged = verdict(["*"], {"cuda": True, "tensorrt": True})
    assert judged["exit_status"] == 1 and "test_tensorrt_real.py:23" in judged["not_allowed"][0]
    assert "present here" in judged["not_allowed"][0] and len(judged["not_allowed"]) == 1
    # A skip for a TensorRT version without the feature is not a broken install: --allow-skip decides.
    version_skip = [{"name": "pytest_gpu", "status": "passed", "skipped_tests": [
        {"where": "tests/export/test_tensorrt_real.py:70", "reason": "TensorRT 11 has no legacy int8 flag"}]}]
    assert judge(version_skip, ["tests/export/test_tensorrt_real.py:70"], {"tensorrt": True})["exit_status"] == 0
    assert judge(version_skip, [], {"tensorrt": True})["exit_status"] == 1


def test_a_failed_step_is_recorded_and_the_rest_still_run():
    steps = [
        Step("exits_3", "fails", [[PY, "-c", "import sys; print('partial output'); sys.exit(3)"]], needs=()),
        Step("passes", "passes", [[PY, "-c", "print('ok')"]], needs=(), metrics=lambda: {"value": 1}),
        Step("too_slow", "runs past its limit", [[PY, "-c", "import time; time.sleep(30)"]], needs=(), timeout_s=1),
        Step("silent", "misses its expected line", [[PY, "-c", "print('something else')"]], needs=(), expect="building"),
        Step("built_again", "says what it must not", [[PY, "-c", "print('building one now')"]], needs=(),
             forbid="building one now"),
        Step("broken_metrics", "passes, its numbers do not", [[PY, "-c", "pass"]], needs=(),
             metrics=lambda: json.loads("not json")),
        Step("needs_gpu", "not covered", [[PY, "-c", "pass"]], needs=("gpu",)),
    ]
    results = run_steps(steps, budget_s=60, present={"gpu": False}, log=lambda m: None)
    by_name = {r["name"]: r for r in results}
    assert [r["status"] for r in results] == ["failed", "passed", "failed", "failed", "failed", "failed", "not covered"]
    assert by_name["built_again"]["reason"] == "the output says 'building one now'"
    assert by_name["exits_3"]["reason"].startswith("exit status 3") and "partial output" in by_name["exits_3"]["output_tail"]
    assert by_name["passes"]["metrics"] == {"value": 1}
    assert "limit" in by_name["too_slow"]["reason"]
    assert by_name["silent"]["reason"] == "the output never says 'building'"
    assert by_name["broken_metrics"]["reason"].startswith("its numbers could not be read: JSONDecodeError")
    assert by_name["needs_gpu"]["reason"] == "needs " + device_check.NEEDS["gpu"]


@pytest.mark.parametrize(("median_ms", "missed"), [
    ({"tensorrt_fp32": 2.0, "tensorrt_fp16": 1.0, "tensorrt_int8": 0.7, "torch_fp32": 6.0}, []),
    ({"tensorrt_fp32": 2.0, "tensorrt_fp16": 1.0, "tensorrt_int8": 1.1, "torch_fp32": 6.0}, ["tensorrt_int8_over_fp16"]),
    ({"tensorrt_fp32": 2.0, "tensorrt_fp16": 2.5, "tensorrt_int8": 0.7, "torch_fp32": 1.5},
     ["tensorrt_fp16_over_fp32", "tensorrt_fp32_over_torch"]),
    ({"tensorrt_fp32": 2.0, "tensorrt_fp16": 1.0, "torch_fp32": 6.0}, ["tensorrt_int8_over_fp16"]),   # not measured
])
def test_latency_numbers_carry_thresholds(median_ms, missed):
    problems = device_check.latency_checks({"median_ms": median_ms})
    assert [p.split()[0].rstrip(":") for p in problems] == missed


def test_a_number_below_its_threshold_fails_the_step():
    step = Step("amp", "AMP vs fp32", [[PY, "-c", "pass"]], needs=(), metrics=lambda: {"amp_speedup": 1.2},
                checks=device_check.amp_checks)
    [record] = run_steps([step], budget_s=60, present={}, log=lambda m: None)
    assert record["status"] == "failed" and record["reason"] == "threshold missed: amp_speedup = 1.200, below 1.5"
    assert record["metrics"] == {"amp_speedup": 1.2}


def test_real_frame_agreement_is_held_to_the_engine_precision_gate():
    ok = {"engines": {"a.fp16.engine": {"precision": "fp16", "pixel_agreement": 0.999}}}
    bad = {"engines": {"a.int8.engine": {"precision": "int8", "pixel_agreement": 0.90}}}
    assert device_check.agreement_checks(ok) == []
    assert "below the int8 gate of 98.0 %" in device_check.agreement_checks(bad)[0]
    assert device_check.agreement_checks({"engines": {}}) == ["no engine was compared"]


def test_steps_past_the_budget_are_not_covered_not_started():
    steps = [Step("uses_the_budget", "sleeps", [[PY, "-c", "import time; time.sleep(2)"]], needs=(), timeout_s=2.9),
             Step("late", "would start too late", [[PY, "-c", "pass"]], needs=(), timeout_s=5)]
    results = run_steps(steps, budget_s=3.0, present={}, log=lambda m: None)
    assert results[0]["status"] == "passed" and results[1]["status"] == "not covered"
    assert results[1]["reason"].startswith("time budget")


def test_the_markdown_shows_failures_measurements_and_what_blocks_exit_0():
    steps = [
        {"name": "latency", "what": "latency", "status": "passed", "seconds": 20.0,
         "metrics": {"median_ms": {"tensorrt_fp32": 1.0, "torch_fp32": 3.0}}},
        {"name": "build_int8", "what": "build | int8", "status": "failed", "seconds": 5.0,
         "reason": "exit status 1", "output_tail": "uda-adapt: error: cannot parse"},
        {"name": "jetson_dla", "what": "DLA", "status": "not covered", "reason": "needs a Jetson"},
    ]
    result = {"started": "2026-01-01T00:00:00+00:00", "budget_s": 480, "seconds": 300.0, "python": "3.12.3",
              "preflight": {"gpu": {"present": True, "detail": "NVIDIA H100"}, "tensorrt": {"present": False, "detail": "x"}},
              "steps": steps, "judgement": judge(steps, [], {})}
    markdown = render_markdown(result)
    assert "**FAILED**: 1 passed, 1 failed, 1 not covered" in markdown
    assert "| build_int8 | FAILED | 5.0 | build / int8: exit status 1 |" in markdown
    assert "| tensorrt | NO | x |" in markdown and "- jetson_dla: needs a Jetson" in markdown
    assert '"tensorrt_fp32": 1.0' in markdown and "uda-adapt: error: cannot parse" in markdown
    assert "- not covered and not allowed: jetson_dla" in markdown


def test_the_plan_fits_the_eight_minute_promise(tmp_path):
    steps = device_check.plan(tmp_path / "work", tmp_path / "out")
    assert device_check.BUDGET_S <= 480
    assert all(step.timeout_s <= device_check.BUDGET_S for step in steps)
    assert all(need in device_check.NEEDS for step in steps for need in step.needs)


def test_the_smoke_export_opens_the_gates_and_real_frames_hold_engines_to_them(tmp_path, monkeypatch):
    """The tasks the GPU steps run, on the CPU: an export a random network passes only with the gates open,
    and the real-frame comparison of an 'engine' (here ONNX Runtime on the fp16 file) with the fp32 ONNX."""
    import benchmarks.device_check_tasks as tasks
    import uda_adapt.runtime.backends as backends
    from uda_adapt.common.gates import GATES
    from uda_adapt.common.manifest import EngineSpec, read_manifest, write_manifest
    from tests.adapt.fixtures import make_folder_dataset
    from tests.export.conftest import small_checkpoint

    monkeypatch.setattr(tasks, "SIZE", (64, 128))
    for name in list(GATES):
        monkeypatch.setitem(GATES, name, GATES[name])            # export_smoke opens them; restored after
    data = make_folder_dataset(tmp_path / "target", num=2, size=(48, 96))
    bundle = tmp_path / "fp16"
    record = tasks.export_smoke(small_checkpoint(tmp_path / "small.pt"), bundle, "fp16", data, None)
    assert record["gates"] == "open (smoke run)" and {c["file"] for c in record["parity"]} >= {"model.fp16.onnx"}
    monkeypatch.undo()

    manifest = read_manifest(bundle / "model.json")
    manifest.engines = [EngineSpec("model.fake.fp16.engine", "fp16", "10.3.0", "gpu", "8.9")]
    write_manifest(bundle / "model.json", manifest)
    opened = []
    real_open = backends.open_backend

    def open_backend(path, backend="auto", **options):
        opened.append((path.name, backend, options.get("providers")))
        return real_open(bundle / "model.fp16.onnx", "ort") if backend == "trt" else real_open(path, backend, **options)

    monkeypatch.setattr(backends, "open_backend", open_backend)
    clip = tmp_path / "clip.mp4"
    tasks.write_clip(clip, frames=6)
    result = tasks.real_frame_agreement(bundle, clip, frames=4)
    assert result["frames"] == 4 and result["reference"] == "CPUExecutionProvider"
    assert opened[0] == ("model.onnx", "ort", ["CPUExecutionProvider"]) and opened[1][:2] == ("model.fake.fp16.engine", "trt")
    assert result["engines"]["model.fake.fp16.engine"]["pixel_agreement"] > 0.9
    assert result["engines"]["model.fake.fp16.engine"]["precision"] == "fp16"


def test_the_numbers_each_step_reads(tmp_path):
    """Each metrics reader against the file its command writes (the GPU steps cannot run here)."""
    work, out = tmp_path / "work", tmp_path / "out"
    (work / "train" / "source").mkdir(parents=True)
    (work / "train" / "source" / "metrics.jsonl").write_text(
        "\n".join(json.dumps({"step": i, "images_per_second": v}) for i, v in enumerate([5.0, 40.0, 44.0, 42.0])) + "\n")
    out.mkdir()
    (out / "run.json").write_text(json.dumps({"backend": "tensorrt x", "frames": 40, "fps": 120.0, "dropped": 0}))
    (out / "throughput.json").write_text(json.dumps({"median_bare_onnxruntime_qps": 20.0, "median_run_fps": 18.0,
                                                     "median_ratio": 0.9, "median_prefetch_ratio": 0.88}))
    steps = {step.name: step for step in device_check.plan(work, out)}
    assert steps["train"].metrics() == {"images_per_second_median": 42.0, "records": 4}
    assert steps["run_bundle"].metrics()["fps"] == 120.0
    throughput = steps["run_vs_bare_onnxruntime"]
    assert throughput.checks(throughput.metrics()) == ["run_over_bare_onnxruntime = 0.900, below 0.95"]


def test_a_resumed_run_must_match_the_unbroken_one_within_cudas_own_noise():
    assert device_check.resume_checks({"tensors": 10, "within_noise": 10, "max_abs_difference": 0.0}) == []
    missed = device_check.resume_checks({"tensors": 10, "within_noise": 7, "max_abs_difference": 0.25})
    assert missed == ["resume_identical_fraction = 0.700, below 1.0", "largest difference 0.25"]
    assert device_check.resume_checks({}) == ["resume_identical_fraction: not measured (threshold 1.0)"]
