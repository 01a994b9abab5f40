"""`uda-adapt train`: the whole schedule, or one stage, in one call.

    source -> correlation -> self_train      (correlation only when self_train.lambda_ct > 0)

Re-running the same command on the same RUN_DIR skips finished stages and resumes an
interrupted one from its last checkpoint. Started by torchrun or srun, every stage trains
data-parallel (adapt/train/distributed.py); a run can resume on another number of processes.
Which stage runs next, and from what, is decided by rank 0 from its files and sent to the others.
"""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from uda_adapt.common.atomic import atomic_write_text, ensure_writable_dir
from uda_adapt.adapt.checkpoint import Checkpoint, load_checkpoint
from uda_adapt.adapt.config import to_dict
from uda_adapt.common.errors import UserError
from uda_adapt.adapt.train.config import STAGES, TrainConfig
from uda_adapt.adapt.train.correlation_stage import fit_correlation
from uda_adapt.adapt.train.datasets import check_same_classes, labelled_train_set, unlabelled_train_set
from uda_adapt.adapt.train import distributed
from uda_adapt.adapt.train.environment import resolve_device
from uda_adapt.adapt.train.self_train_stage import self_train
from uda_adapt.adapt.train.source_stage import train_source
from uda_adapt.adapt.train.stage_io import RunContext, is_complete, last_checkpoint, read_stage_checkpoint
from uda_adapt.adapt.data.transforms import IMAGENET_MEAN, IMAGENET_STD


def train(cfg: TrainConfig, run_dir: str | Path, stage: str | None = None, init: str | Path | None = None) -> Path:
    """Run the schedule (or the single `stage`) into `run_dir`; returns the final checkpoint path.

    `init` is the checkpoint a single stage starts from; by default each stage starts from the
    previous stage's `last.pt` in the same run directory.
    """
    if stage is not None and stage not in STAGES:
        raise UserError(f"unknown stage {stage!r}; valid stages: {', '.join(STAGES)}")
    with distributed.session(cfg.device, cfg.distributed.timeout_minutes, run_dir) as (dist, device):
        return _train(cfg, run_dir, stage, init, dist, device or resolve_device(cfg.device))


def _train(cfg: TrainConfig, run_dir: str | Path, stage: str | None, init: str | Path | None,
           dist: distributed.Distributed, device) -> Path:
    dist.local_batch_size(cfg.data.batch_size, cfg.data.accumulate)   # a global batch the processes cannot split stops here
    run = ensure_writable_dir(run_dir)
    distributed.check_shared_directory(dist, run, device)
    source = labelled_train_set(cfg.data.source, None)
    target = unlabelled_train_set(cfg.data.target)
    check_same_classes(source, target)
    ctx = RunContext(cfg=cfg, run_dir=run, device=device, classes=tuple(source.classes),
                     palette=tuple(tuple(c) for c in source.palette), mean=IMAGENET_MEAN, std=IMAGENET_STD, dist=dist)
    if dist.is_main:
        atomic_write_text(run / "config.yaml", yaml.safe_dump(to_dict(cfg), sort_keys=False))
        processes = f" x {dist.world_size} processes" if dist.enabled else ""
        print(f"run directory {run} on {ctx.device}{processes}; {len(source)} source / {len(target)} target train images, "
              f"{len(ctx.classes)} classes")

    stages = STAGES if stage is None else (stage,)
    if stage is None and not module_needed(cfg):
        stages = tuple(name for name in stages if name != "correlation")
        if dist.is_main:
            print("correlation: skipped, self_train.lambda_ct is 0 so nothing would use the module "
                  "(set self_train.lambda_ct > 0 for correlation transfer, or --stage correlation to fit it anyway)")
    init_ckpt = distributed.decided_by_main(dist, lambda: load_checkpoint(init)) if init else None
    for name in stages:
        distributed.barrier(dist)   # the previous stage's checkpoints are on disk for rank 0
        if name == "source":
            train_source(ctx, init_ckpt if stage == "source" else None)
        elif name == "correlation":
            start = init_ckpt if stage == "correlation" and init_ckpt else None
            fit_correlation(ctx, start or distributed.decided_by_main(dist, lambda: _previous(run, "source", "correlation")))
        else:
            start = init_ckpt if stage == "self_train" and init_ckpt else None
            self_train(ctx, start or distributed.decided_by_main(dist, lambda: _self_train_start(run, cfg)))
    final = last_checkpoint(run, stages[-1])
    distributed.barrier(dist)
    if dist.is_main:
        _write_summary(run)
    return final


def module_needed(cfg: TrainConfig) -> bool:
    """Whether self-training uses the correlation module: only correlation transfer does (a live
    module, `correlation_refit`, is refitted for it). Without it the stage is skipped, not run for
    nothing: 150 CPU steps on the embedded benchmark, 4000 GPU steps in the full-scale configs."""
    return cfg.self_train.lambda_ct > 0


def _previous(run: Path, needed: str, stage: str) -> Checkpoint:
    ckpt = read_stage_checkpoint(last_checkpoint(run, needed))
    if not is_complete(ckpt):
        raise UserError(f"stage {stage!r} needs a finished {needed!r} stage in {run} (or --init CKPT); run `uda-adapt train` without --stage first")
    return ckpt


def _self_train_start(run: Path, cfg: TrainConfig) -> Checkpoint:
    if cfg.self_train.lambda_ct > 0:
        return _previous(run, "correlation", "self_train")
    # Plain self-training needs no correlation module: start from whichever is available.
    ckpt = read_stage_checkpoint(last_checkpoint(run, "correlation"))
    return ckpt if is_complete(ckpt) else _previous(run, "source", "self_train")


def _write_summary(run: Path) -> None:
    """RUN_DIR/summary.json: the last evaluation of each stage, for scripts and the ablation."""
    summary = {}
    for stage_dir in sorted(p for p in run.iterdir() if p.is_dir()):
        evals = sorted(stage_dir.glob("eval_*.json"), key=lambda p: p.stat().st_mtime)
        if evals:
            summary[stage_dir.name] = {p.stem[5:]: json.loads(p.read_text())["miou"] for p in evals}
    atomic_write_text(run / "summary.json", json.dumps(summary, indent=2) + "\n")
