"""Where each stage keeps its files, and how its checkpoints are written and found.

RUN_DIR/<stage>/last.pt   latest state (resume point; `extra["complete"]` once the stage ended)
RUN_DIR/<stage>/best.pt   best target-val mIoU, only when the target val split has labels
RUN_DIR/<stage>/metrics.jsonl, eval.json, overlays/
RUN_DIR/tensorboard/
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from uda_adapt.common.atomic import ensure_writable_dir
from uda_adapt.adapt.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from uda_adapt.adapt.config import to_dict
from uda_adapt.adapt.train.batches import BatchStream, EpochOrder, LoadingClock, random_permutation
from uda_adapt.adapt.train.config import TrainConfig
from uda_adapt.adapt.train.distributed import SINGLE_PROCESS, Distributed, barrier, decided_by_main


@dataclass
class RunContext:
    """What every stage needs to know about the run it belongs to."""

    cfg: TrainConfig
    run_dir: Path
    device: torch.device
    classes: tuple[str, ...]
    palette: tuple[tuple[int, int, int], ...]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    dist: Distributed = SINGLE_PROCESS
    data_clock: LoadingClock = field(default_factory=LoadingClock)   # time the stages' streams wait for batches

    def stage_dir(self, stage: str) -> Path:
        return ensure_writable_dir(self.run_dir / stage)

    def batch_stream(self, dataset, seed: int, order: EpochOrder = random_permutation, min_class_pixels: float = 0) -> BatchStream:
        """The training batches of `dataset`: this rank's part of each micro-batch of each global batch of `data.batch_size`."""
        data = self.cfg.data
        return BatchStream(dataset, data.batch_size, seed, data.num_workers, order=order, shard=self.dist,
                           pin_memory=data.pin_memory and self.device.type == "cuda",
                           accumulate=data.accumulate, clock=self.data_clock, min_class_pixels=min_class_pixels)

    @property
    def tensorboard_dir(self) -> Path:
        return self.run_dir / "tensorboard"


def last_checkpoint(run_dir: Path, stage: str) -> Path:
    return run_dir / stage / "last.pt"


def read_stage_checkpoint(path: Path) -> Checkpoint | None:
    return load_checkpoint(path) if path.is_file() else None


def is_complete(ckpt: Checkpoint | None) -> bool:
    return ckpt is not None and bool(ckpt.extra.get("complete"))


@dataclass
class StageStart:
    """Where a stage writes, and the unfinished checkpoint it resumes from (None: a fresh start)."""

    stage_dir: Path
    last_path: Path
    resume: Checkpoint | None


def begin_stage(ctx: RunContext, stage: str) -> StageStart | None:
    """None when the stage already finished in this run directory (it is then skipped).

    Rank 0 reads `last.pt`, after it has finished writing the previous stage, and every rank
    gets its copy: the ranks cannot disagree on whether, or where, the stage resumes.
    """
    barrier(ctx.dist)
    last_path = last_checkpoint(ctx.run_dir, stage)
    resume = decided_by_main(ctx.dist, lambda: read_stage_checkpoint(last_path))
    if is_complete(resume):
        if ctx.dist.is_main:
            print(f"{stage}: already complete ({last_path}), skipping")
        return None
    return StageStart(ctx.stage_dir(stage), last_path, resume)


def write_stage_checkpoint(ctx: RunContext, path: Path, stage: str, model: nn.Module, step: int, extra: dict[str, Any]) -> None:
    """Rank 0 writes (atomically); the other ranks hold the same weights and write nothing."""
    if not ctx.dist.is_main:
        return
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    save_checkpoint(path, Checkpoint(
        model_name=ctx.cfg.model.name,
        classes=ctx.classes,
        palette=ctx.palette,
        state_dict=state,
        mean=ctx.mean,
        std=ctx.std,
        stage=stage,
        step=step,
        config=to_dict(ctx.cfg),
        extra=extra,
    ))
