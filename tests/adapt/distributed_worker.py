"""What each torchrun process of tests/adapt/test_distributed.py runs: `train`, optionally SIGKILLing
one rank right after rank 0 has written its N-th `last.pt` of a stage.

    python -m torch.distributed.run --standalone --nproc_per_node 2 -m tests.adapt.distributed_worker \
        KILL_STAGE KILL_AFTER KILL_RANK RUN_DIR STAGE INIT [KEY=VALUE ...]

KILL_STAGE, STAGE and INIT may be "" (no kill; the whole schedule; no init checkpoint).

With SIGNAL_AT=STAGE:N:r, rank r is sent SIGUSR1 during the stage's N-th iteration.
With STALE_FILES_ON_RANK=r in the environment, rank r sees the run directory as a stale NFS
client may: no stage checkpoint and no finished pseudo labels. Only decisions rank 0 makes
and sends keep such a rank in step.
"""

from __future__ import annotations

import os
import signal
import sys

import torch

from uda_adapt.adapt.train import distributed, stage_io

real_write, written = stage_io.write_stage_checkpoint, {"n": 0}


def write_then_maybe_die(ctx, path, stage, *args, **kwargs):
    real_write(ctx, path, stage, *args, **kwargs)
    kill_stage, kill_after, kill_rank = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    if stage == kill_stage and path.name == "last.pt":
        written["n"] += 1
        distributed.barrier(ctx.dist)          # rank 0's file is on disk before anyone dies
        if written["n"] == kill_after and ctx.dist.rank == kill_rank:
            os.kill(os.getpid(), signal.SIGKILL)


# Before the stages import it by name.
stage_io.write_stage_checkpoint = write_then_maybe_die
if os.environ.get("SIGNAL_AT"):
    # STAGE:N:RANK: that rank gets SIGUSR1 (SLURM's warning) during the stage's iteration N.
    from uda_adapt.adapt.train import loop

    signal_stage, signal_iteration, signal_rank = os.environ["SIGNAL_AT"].split(":")
    real_run_iterations = loop.run_iterations

    def run_iterations_signalled(*, step_fn, description, **kwargs):
        def step(i):
            if description.startswith(signal_stage) and i + 1 == int(signal_iteration) and os.environ["RANK"] == signal_rank:
                os.kill(os.getpid(), signal.SIGUSR1)
            return step_fn(i)
        return real_run_iterations(step_fn=step, description=description, **kwargs)
    loop.run_iterations = run_iterations_signalled
if os.environ.get("STALE_FILES_ON_RANK") == os.environ.get("RANK"):
    from uda_adapt.adapt.train import pseudo_round

    stage_io.read_stage_checkpoint = lambda path: None
    pseudo_round.pseudo_labels_ready = lambda round_dir: False

from uda_adapt.adapt.config import load_config  # noqa: E402
from uda_adapt.adapt.train.config import TrainConfig  # noqa: E402
from uda_adapt.adapt.train.runner import train  # noqa: E402
from uda_adapt.common.errors import UserError  # noqa: E402


def main() -> int:
    torch.set_num_threads(1)
    run_dir, stage, init, *overrides = sys.argv[4:]
    try:
        train(load_config(TrainConfig, None, overrides), run_dir, stage=stage or None, init=init or None)
    except UserError as exc:
        print(f"uda-adapt: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
