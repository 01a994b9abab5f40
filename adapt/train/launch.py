"""Who this process is in a training job, read from the launcher's environment.

    torchrun ...  uda-adapt train   RANK, WORLD_SIZE, LOCAL_RANK (+ MASTER_ADDR/PORT or a rendezvous)
    srun -n N     uda-adapt train   SLURM_PROCID, SLURM_STEP_NUM_TASKS, SLURM_LOCALID, SLURM_STEP_NODELIST
    anything else                   a single process

An srun step sets nothing torch reads: without this, `srun -n 8 uda-adapt train` would start 8
independent runs on cuda:0, all writing one run directory. Under srun the master is the step's
first node (`scontrol show hostnames`), unless MASTER_ADDR says otherwise, and the port is
derived from the job id (MASTER_PORT overrides it), so two jobs sharing a node do not collide.
A batch script that runs `uda-adapt train` without srun is one process, whatever --ntasks says.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from uda_adapt.common.errors import UserError

TORCHRUN_HINT = ("srun --ntasks-per-node=1 torchrun --nnodes $SLURM_NNODES --nproc_per_node GPUS_PER_NODE "
                 "--rdzv_backend c10d --rdzv_endpoint $(scontrol show hostnames $SLURM_JOB_NODELIST | head -n1):29500 "
                 "$(which uda-adapt) train ...")


@dataclass(frozen=True)
class Launch:
    """The process's rank and how to reach the others; `init_method` None: torch's env:// (torchrun)."""

    launcher: str = "single"            # single | torchrun | slurm
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    init_method: str | None = None


def scontrol_hostnames(nodelist: str) -> list[str]:
    """SLURM's compressed node list ("gpu[01-02],cpu7") expanded, one host per entry."""
    if not any(c in nodelist for c in "[],"):
        return [nodelist]
    try:
        done = subprocess.run(["scontrol", "show", "hostnames", nodelist], capture_output=True, text=True, timeout=30, check=True)
    except (OSError, subprocess.SubprocessError) as exc:
        raise UserError(f"started by srun, but the node list {nodelist!r} cannot be expanded with `scontrol show hostnames` "
                        f"({type(exc).__name__}); set MASTER_ADDR to the first node, or start one torchrun per node: "
                        f"{TORCHRUN_HINT}") from None
    return done.stdout.split()


def _int(env: Mapping[str, str], name: str) -> int:
    try:
        return int(env[name])
    except (KeyError, ValueError):
        raise UserError(f"the launcher set {name}={env.get(name)!r}, not an integer; start training with torchrun "
                        f"or srun as docs/distributed.md shows") from None


def detect_launch(env: Mapping[str, str], hostnames: Callable[[str], list[str]] = scontrol_hostnames) -> Launch:
    """The launch `env` (os.environ) describes; see the module docstring."""
    if "WORLD_SIZE" in env:
        world_size = _int(env, "WORLD_SIZE")
        if world_size <= 1:
            return Launch()
        if "RANK" not in env:
            raise UserError(f"WORLD_SIZE={world_size} is set but RANK is not; start training with torchrun, which sets both")
        return Launch("torchrun", _int(env, "RANK"), world_size, int(env.get("LOCAL_RANK", "0")))
    if "SLURM_STEP_ID" not in env or "SLURM_PROCID" not in env:
        return Launch()      # no launcher, or a batch script's own shell (not an srun task)
    tasks = _int(env, "SLURM_STEP_NUM_TASKS" if "SLURM_STEP_NUM_TASKS" in env else "SLURM_NTASKS")
    if tasks <= 1:
        return Launch()
    rank, local_rank = _int(env, "SLURM_PROCID"), _int(env, "SLURM_LOCALID")
    address = env.get("MASTER_ADDR")
    if not address:
        nodelist = env.get("SLURM_STEP_NODELIST") or env.get("SLURM_JOB_NODELIST") or env.get("SLURM_NODELIST")
        if not nodelist:
            raise UserError(f"started by srun as task {rank} of {tasks}, but SLURM gave no node list to find the master "
                            f"node; set MASTER_ADDR, or start one torchrun per node: {TORCHRUN_HINT}")
        address = hostnames(nodelist)[0]
    port = _int(env, "MASTER_PORT") if "MASTER_PORT" in env else 20000 + int(env.get("SLURM_JOB_ID", "0") or 0) % 20000
    return Launch("slurm", rank, tasks, local_rank, f"tcp://{address}:{port}")
