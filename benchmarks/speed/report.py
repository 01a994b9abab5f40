"""The markdown report: a table per section, and the page around them (machine, versions, how to rerun)."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

from benchmarks.speed.figures import Section
from benchmarks.speed.plan import LOG_EVERY, TRAIN_BATCH


def fmt(value: Any, digits: int = 1) -> str:
    """A number with `digits` decimals and thousands separators; "n/a" for a missing or non-finite one."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    return f"{value:,.{digits}f}" if isinstance(value, (int, float)) else str(value)


def table(columns: list[str], rows: list[list[Any]]) -> list[str]:
    """A markdown table's lines."""
    return ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns),
            *("| " + " | ".join(str(c) for c in row) + " |" for row in rows)]


def render_synth(data: dict) -> list[str]:
    rows = [[r["domain"], f"{r['size'][0]}x{r['size'][1]}", fmt(r["median"]), fmt(r["best"]), f"{len(r['rates'])} x {r['images']}",
             fmt(r["build_ms"]), fmt(r["render_ms"]), fmt(r["finish_ms"])] for r in data["rows"]]
    return ["Generation only (no disk writes), one OpenCV thread: the rate one data-loader worker gets.", "",
            *table(["domain", "size", "median img/s", "best img/s", "repeats x images", "build ms/img", "render ms/img",
                    "finish ms/img"], rows)]


def render_train(data: dict) -> list[str]:
    rows = [[name, fmt(s["median"]), s["n"], fmt(s["warmup_dropped"]), s["images_per_step"],
             fmt(1000 * s["images_per_step"] / s["median"], 0)] for name, s in data["stages"].items()]
    return [f"The small model on the CPU ({data['torch_threads']} torch threads), batch {TRAIN_BATCH} of 128x256 crops, "
            f"{data['iterations']} iterations per stage, `images_per_second` from each stage's metrics.jsonl "
            f"(one record per {LOG_EVERY} iterations; the first is warm-up and left out). The mean teacher's step "
            f"takes a source and a target batch ({2 * TRAIN_BATCH} images); IAST's pseudo-label rounds and evaluations fall "
            "outside the records.", "",
            *table(["stage", "median img/s", "records", "warm-up record img/s", "images/step", "ms/step"], rows)]


def render_correlation(data: dict) -> list[str]:
    rows = []
    for r in data["rows"]:
        sdpa, naive = r["sdpa"], r["naive"]
        label = f"{r['size'][0] * r['size'][1]:,} ({r['size'][0]}x{r['size'][1]})"
        if naive is None:
            rows.append([label, r["pass"], fmt(sdpa["peak_mb"]), f"skipped (would need {r['naive_needs_gb']:.1f} GB)", "-",
                         fmt(sdpa["median_s"], 3), "-", "-"])
        else:
            # Under 1 MB the SDPA path's growth is within RSS noise, and a ratio to it means nothing.
            memory = f"{r['memory_ratio']:.0f}x" if sdpa["peak_mb"] >= 1 else "n/a (SDPA under 1 MB)"
            rows.append([label, r["pass"], fmt(sdpa["peak_mb"]), fmt(naive["peak_mb"]), memory,
                         fmt(sdpa["median_s"], 3), fmt(naive["median_s"], 3), f"{r['time_ratio']:.2f}x"])
    first = data["rows"][0] if data["rows"] else {"repeats": 0, "processes": 0}
    return [f"Batch 1, 19 classes, d = 64. Each case runs in {first['processes']} fresh processes per implementation "
            f"(SDPA and naive alternating); peak MB is the median of their peak RSS growth, time the median of their "
            f"medians of {first['repeats']} runs.", "",
            *table(["tokens (h x w)", "pass", "SDPA peak MB", "naive peak MB", "naive / SDPA memory", "SDPA s", "naive s",
                    "naive / SDPA time"], rows)]


def render_export(data: dict) -> list[str]:
    rows = [[r["model"], f"{r['size'][0]}x{r['size'][1]}", fmt(r["pytorch_cpu_median_ms"]), fmt(r["ort_cpu_median_ms"]),
             f"{r['ort_speedup']:.2f}x", r["iters"],
             ", ".join(f"{c['precision']} {100 * c['pixel_agreement']:.3f} %" for c in r["parity"])] for r in data["rows"]]
    return [f"Argmax fused; PyTorch ({data['torch_threads']} threads) and ONNX Runtime (its default threads) alternate "
            "call by call on one input; medians after 3 warm-up calls.", "",
            *table(["model", "input", "PyTorch ms", "ORT ms", "ORT speed-up", "calls", "parity (pixel agreement)"], rows)]


def render_int8(data: dict) -> list[str]:
    lat = data["latency_ms"]
    rows = []
    for check in data["parity"]:
        delta = "n/a" if check.get("miou_delta") is None else f"{check['miou_delta']:+.2f}"
        figure = lat.get(check["precision"])
        rows.append([check["file"], fmt(figure["median"], 2) if figure else "-", figure["n"] if figure else "-",
                     f"{100 * check['pixel_agreement']:.3f} %", f">= {100 * check['min_agreement']:.1f} %", delta,
                     "pass" if check["passed"] else "FAIL"])
    size = f"{data['size'][0]}x{data['size'][1]}"
    lines = [f"The small model after a short source stage, exported at {size}; int8 is static Q/DQ calibrated on target "
             f"train images. ONNX Runtime CPU, the two files alternating call by call on one input. Parity is the export's "
             f"own gate against PyTorch on {data['parity_data'].get('n_images', '?')} target val images.", "",
             *table(["file", "median ms", "calls", "pixel agreement", "gate", "mIoU delta (pt)", "gate result"], rows), "",
             f"int8 / fp32 latency: {data['int8_over_fp32']:.2f}"]
    if data.get("gate_failure"):
        lines.append(f"The export refused the int8 model ({data['gate_failure']}): the latency is not at equal parity.")
    return lines


def render_pipeline(data: dict) -> list[str]:
    rows = [[i + 1, fmt(r["model_only_qps"], 2), fmt(r["pipeline_qps"], 2), f"{r['ratio']:.3f}"] for i, r in enumerate(data["rounds"])]
    return [f"{data['backend']}; in-memory frames -> capture -> preprocess -> infer -> overlay -> null sink, "
            "rounds alternating model-only and pipeline on one session.", "",
            *table(["round", "model-only qps", "pipeline qps", "pipeline / model-only"], rows), "",
            f"Median over {data['ratio']['n']} rounds: model-only {fmt(data['model_only_qps']['median'], 2)} qps, "
            f"pipeline {fmt(data['pipeline_qps']['median'], 2)} qps, ratio {data['ratio']['median']:.3f}."]


def render_latest(data: dict) -> list[str]:
    rows = [[i + 1, fmt(r["model_median_ms"]), fmt(r["latency_ms"]["p50"]), fmt(r["latency_ms"]["p90"]), f"{r['ratio']:.2f}",
             fmt(r["fps"]), f"{r['shown']} / {r['captured']} / {r['dropped']}"] for i, r in enumerate(data["rounds"])]
    return [f"The small model (ONNX Runtime) at {data['size'][0]}x{data['size'][1]}; a source paced at {data['camera_fps']:g} fps "
            "into the `--latest` pipeline (newest-frame slot, result queue of 1, overlay, null sink). End-to-end latency runs "
            "from capture to the sink; the model's own latency is `bench_model` on the same session, in alternating rounds.", "",
            *table(["round", "model median ms", "end-to-end p50 ms", "end-to-end p90 ms", "p50 / model", "fps at sink",
                    "shown / captured / dropped"], rows), "",
            f"Median over {data['ratio']['n']} rounds: model {fmt(data['model_ms']['median'])} ms, end-to-end "
            f"{fmt(data['latest_p50_ms']['median'])} ms, ratio {data['ratio']['median']:.2f}."]


def render_gpu(data: dict) -> list[str]:
    lines = [f"GPUs: {', '.join(data['gpus'])}; bf16 supported: {data['bf16_supported']}.", ""]
    amp = data["amp"]
    if "failed" in amp:
        lines.append(f"AMP comparison failed: {amp['failed']}")
    else:
        rows = [[m, fmt(amp["rates"][m]["median"]), amp["rates"][m]["n"], fmt(amp["rates"][m]["step_ms"]),
                 json.dumps(amp["config"].get(m, {}))] for m in amp["modes"]]
        lines += [f"DeepLab-V2 source stage, batch {data['per_gpu_batch']}, runs alternating between the two settings.", "",
                  *table(["amp", "median img/s", "records", "ms/step", "resolved config"], rows), "",
                  f"auto / {amp['modes'][0]} throughput: {amp['speedup']:.2f}x"]
    lines.append("")
    ddp = data["ddp"]
    if "failed" in ddp:
        lines.append(f"DDP scaling failed: {ddp['failed']}")
    else:
        rows = [[r["processes"], fmt(r["median"]), r["n"], f"{r['speedup']:.2f}x", f"{100 * r['efficiency']:.0f} %"] for r in ddp["rows"]]
        lines += [f"DDP under torchrun, {data['per_gpu_batch']} images per GPU (data.batch_size is the global batch), amp auto; "
                  "`images_per_second` as rank 0 records it.", "",
                  *table(["processes", "median img/s", "records", "speed-up", "efficiency"], rows)]
    return lines


def render_markdown(results: dict[str, Any], sections: Mapping[str, Section]) -> str:
    """The whole report: every section of `sections` in order, "not run" for those missing from `results`."""
    machine, ver = results["machine"], results["versions"]
    lines = ["# Speed figures", "",
             f"Generated by benchmarks/run_all.py with `{results['command']}` ({results['mode']} mode) on "
             f"{results['started']}, {results['seconds']:.0f} s in all. Do not edit: rerun the command. Raw figures: "
             f"{results['json']}.", "",
             "## Machine", "",
             *table(["CPU", "cores", "RAM", "GPU", "OS", "load average at start"],
                    [[machine["cpu"], machine["cores"], f"{fmt(machine['ram_gib'])} GiB", machine["gpu"], machine["os"],
                      " ".join(f"{v:.2f}" for v in machine["load_average_at_start"] or [])]]), "",
             "## Versions", "",
             *table(list(ver), [list(ver.values())]), ""]
    for number, (name, section) in enumerate(sections.items(), 1):
        lines += [f"## {number}. {section.title}", ""]
        result = results["sections"].get(name)
        if result is None:
            lines += ["not run: not selected with --only in this invocation.", ""]
            continue
        if result["status"] != "ok":
            lines += [f"{result['status']}: {result['reason']}", ""]
        else:
            lines += [*section.render(result), ""]
        commands = result.get("commands", [])
        load = result.get("load_average_at_start")
        at_start = f" (1-minute load average {load:.2f} at its start)" if load is not None else ""
        lines += [f"Section time {result['seconds']:.0f} s{at_start}. This section alone: `{result['rerun']}`."]
        if commands:
            lines += ["Measured with (`$WORK`: the run's scratch directory):", "", "```", *commands, "```"]
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"
