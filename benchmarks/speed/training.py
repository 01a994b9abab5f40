"""The training sections: throughput per stage on the CPU, and AMP and DDP scaling on GPUs.

Both train as `uda-adapt train` does, on scenes from the synthetic generator, and read the rates
from each stage's metrics.jsonl. int8 (inference.py) reuses the data and training helpers here to
get a briefly trained network.
"""

from __future__ import annotations

import contextlib
import io
import json
import shlex
import shutil
import statistics
import subprocess
import sys
import typing
from pathlib import Path
from typing import Any

from benchmarks.speed.figures import NotMeasured, median_figure, one_line
from benchmarks.speed.plan import GPU_BATCH, LOG_EVERY, STARTING_ENVIRONMENT, TRAIN_BATCH, TRAIN_DATA_SIZE, Plan


def stage_rate(metrics: Path) -> dict[str, Any]:
    """Median `images_per_second` of a stage's metrics.jsonl, without its first (warm-up) record.

    Evaluation records carry no throughput and are skipped.
    """
    records = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]
    rates = [r["images_per_second"] for r in records if "images_per_second" in r]
    if len(rates) < 2:
        raise RuntimeError(f"{metrics} holds {len(rates)} throughput records; need 2 or more (the first is warm-up)")
    return {**median_figure(rates[1:]), "warmup_dropped": rates[0]}


def synthetic_data(root: Path, num_train: int, num_val: int, size: tuple[int, int]) -> tuple[Path, Path, list[str]]:
    """root/source (sim) and root/target (real) from the generator; returns both roots and the commands."""
    from uda_adapt.adapt.data.synth import write_split

    commands = []
    for name, domain in (("source", "sim"), ("target", "real")):
        for split, num in (("train", num_train), ("val", num_val)):
            write_split(root / name, domain, split, num, size, 0, progress=False)
            commands.append(f"uda-adapt data synth --out {root / name} --domain {domain} --split {split} "
                            f"--num {num} --size {size[0]}x{size[1]} --seed 0")
    return root / "source", root / "target", commands


def train_overrides(source: Path, target: Path, iterations: int) -> list[str]:
    """The small model on the CPU, TRAIN_BATCH crops of 128x256, a log record every LOG_EVERY iterations."""
    return [f"data.source.root={source}", f"data.target.root={target}", "data.crop_size=[128, 256]",
            f"data.batch_size={TRAIN_BATCH}", "data.val_limit=2", "device=cpu", "model.name=small",
            f"source.iterations={iterations}", f"correlation.iterations={iterations}",
            f"self_train.mean_teacher.iterations={iterations}",
            f"logging.log_every={LOG_EVERY}", "logging.checkpoint_every=100000", "logging.num_overlays=0"]


def train_command(run: Path, overrides: list[str], *extra: str) -> str:
    """The `uda-adapt train` command line equal to `run_training` with these overrides: the report shows what to type."""
    return shlex.join(["uda-adapt", "train", "--out", str(run), *extra, *(a for o in overrides for a in ("--set", o))])


def run_training(overrides: list[str], run: Path, stage: str | None = None, init: Path | None = None) -> None:
    """`adapt.train.runner.train`, as `uda-adapt train` calls it; its printed tables are not ours to show."""
    from uda_adapt.adapt.config import load_config
    from uda_adapt.adapt.train.config import TrainConfig
    from uda_adapt.adapt.train.runner import train

    with contextlib.redirect_stdout(io.StringIO()):
        train(load_config(TrainConfig, None, overrides), run, stage=stage, init=init)


def train_section(plan: Plan, work: Path) -> dict[str, Any]:
    import torch

    from uda_adapt.adapt.train.config import STAGES

    source, target, commands = synthetic_data(work / "data", plan.train_images, 2, TRAIN_DATA_SIZE)
    overrides = train_overrides(source, target, plan.train_iterations)
    run, iast_run = work / "run", work / "run_iast"
    # Stage by stage: the default schedule (lambda_ct 0) skips the correlation stage, which is timed here.
    for stage in STAGES:
        run_training(overrides, run, stage=stage)
    iast = [*overrides, "self_train.method=iast", "self_train.rounds=3",
            f"self_train.iterations_per_round={max(plan.train_iterations // 3, LOG_EVERY)}"]
    init = run / "correlation" / "last.pt"
    run_training(iast, iast_run, stage="self_train", init=init)
    commands += [*(train_command(run, overrides, "--stage", stage) for stage in STAGES),
                 train_command(iast_run, iast, "--stage", "self_train", "--init", str(init))]
    stages = {
        "source": (stage_rate(run / "source" / "metrics.jsonl"), TRAIN_BATCH),
        "correlation": (stage_rate(run / "correlation" / "metrics.jsonl"), TRAIN_BATCH),
        # A mean-teacher step takes a source and a target batch; the loop counts both.
        "self_train (mean_teacher)": (stage_rate(run / "self_train" / "metrics.jsonl"), 2 * TRAIN_BATCH),
        "self_train (iast)": (stage_rate(iast_run / "self_train" / "metrics.jsonl"), TRAIN_BATCH),
    }
    return {"commands": commands, "torch_threads": torch.get_num_threads(), "iterations": plan.train_iterations,
            "stages": {name: {**rate, "images_per_step": per_step} for name, (rate, per_step) in stages.items()}}


def gpu_section(plan: Plan, work: Path) -> dict[str, Any]:
    """DeepLab-V2 step time with AMP off vs auto (alternating runs), then DDP scaling under torchrun."""
    import torch

    if not torch.cuda.is_available():
        raise NotMeasured("no CUDA device on this machine")
    gpus = torch.cuda.device_count()
    per_gpu_batch = GPU_BATCH
    source, target, commands = synthetic_data(work / "data", max(16, per_gpu_batch * gpus), 2, plan.gpu_crop)
    base = [f"data.source.root={source}", f"data.target.root={target}", f"data.crop_size=[{plan.gpu_crop[0]}, {plan.gpu_crop[1]}]",
            "data.val_limit=2", "data.num_workers=4", "device=cuda", "model.name=deeplabv2_resnet101",
            f"source.iterations={plan.gpu_iterations}", "logging.log_every=5", "logging.checkpoint_every=100000",
            "logging.num_overlays=0"]
    result: dict[str, Any] = {"commands": commands, "gpus": [torch.cuda.get_device_name(i) for i in range(gpus)],
                              "bf16_supported": torch.cuda.is_bf16_supported(), "per_gpu_batch": per_gpu_batch}
    try:
        result["amp"] = amp_comparison(plan, work, base, per_gpu_batch, commands)
    except Exception as exc:  # the DDP half can still be measured
        result["amp"] = {"failed": one_line(exc)}
    try:
        result["ddp"] = ddp_scaling(work, base, per_gpu_batch, gpus, commands)
    except Exception as exc:
        result["ddp"] = {"failed": one_line(exc)}
    return result


def amp_off_value() -> str:
    """The config's name for no mixed precision ("off" or "fp32"), read from TrainConfig's `amp` choices."""
    from uda_adapt.adapt.train.config import TrainConfig

    choices = typing.get_args(typing.get_type_hints(TrainConfig).get("amp"))
    return "off" if "off" in choices or not choices else "fp32" if "fp32" in choices else choices[0]


def amp_comparison(plan: Plan, work: Path, base: list[str], batch: int, commands: list[str]) -> dict[str, Any]:
    """Single-GPU source stage with AMP off, then auto, `plan.gpu_rounds` times; appends what it ran to `commands`."""
    import yaml

    modes = (amp_off_value(), "auto")
    rates: dict[str, list[float]] = {m: [] for m in modes}
    resolved = {}
    for r in range(plan.gpu_rounds):
        for mode in modes:
            run = work / f"amp_{mode}_{r}"
            overrides = [*base, f"data.batch_size={batch}", f'amp="{mode}"']  # quoted: YAML reads a bare `off` as false
            run_training(overrides, run, stage="source")
            commands.append(train_command(run, overrides, "--stage", "source"))
            rates[mode] += stage_rate(run / "source" / "metrics.jsonl")["values"]
            config = yaml.safe_load((run / "config.yaml").read_text())
            resolved[mode] = {k: config.get(k) for k in ("amp", "channels_last", "compile")}
    figures = {m: {**median_figure(v), "step_ms": 1000 * batch / statistics.median(v)} for m, v in rates.items()}
    return {"modes": list(modes), "rates": figures, "config": resolved,
            "speedup": figures["auto"]["median"] / figures[modes[0]]["median"]}


def ddp_scaling(work: Path, base: list[str], per_gpu_batch: int, gpus: int, commands: list[str]) -> dict[str, Any]:
    """Source stage under torchrun for 1, 2, 4, ... processes with the per-GPU batch held (data.batch_size is global)."""
    launcher = executable("torchrun")
    cli = executable("uda-adapt")
    rows = []
    for k in process_counts(gpus):
        run = work / f"ddp_{k}"
        overrides = [*base, f"data.batch_size={per_gpu_batch * k}", 'amp="auto"']
        command = [launcher, "--standalone", "--nproc_per_node", str(k), cli, "train", "--stage", "source",
                   "--out", str(run), *(a for o in overrides for a in ("--set", o))]
        commands.append(shlex.join(command))
        subprocess.run(command, capture_output=True, text=True, check=True, timeout=1800, env=STARTING_ENVIRONMENT)
        rows.append({"processes": k, **stage_rate(run / "source" / "metrics.jsonl")})
    one = rows[0]["median"]
    for row in rows:
        row["speedup"] = row["median"] / one
        row["efficiency"] = row["speedup"] / row["processes"]
    return {"rows": rows}


def process_counts(gpus: int) -> list[int]:
    """1, 2, 4, ... up to `gpus`, and `gpus` itself."""
    return sorted({2 ** i for i in range(gpus.bit_length()) if 2 ** i <= gpus} | {gpus})


def executable(name: str) -> str:
    """`name` from this interpreter's environment, else from PATH."""
    beside = Path(sys.executable).with_name(name)
    found = str(beside) if beside.is_file() else shutil.which(name)
    if found is None:
        raise RuntimeError(f"{name} is not installed in this environment; pip install -e '.[train]'")
    return found
