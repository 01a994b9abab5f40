"""Data-parallel training on torch.distributed: who this process is, and the few collectives stages use.

`uda-adapt train` started by torchrun or srun (adapt/train/launch.py reads which) joins a process
group: NCCL on CUDA, one GPU per process (`cuda:LOCAL_RANK`); gloo on CPU. Started any other way
it is a single process, and every helper here is a no-op.

The division of labour:
- `data.batch_size` is the *global* batch of one optimizer step; with `data.accumulate` = k it
  is taken in k micro-steps, and each of N processes takes its N-th of every micro-batch the
  single-process run would take (same images, same augmentation), so a config means the same
  training on 1 GPU or 8, and a run can resume on a different number of processes;
- the student is wrapped in DistributedDataParallel (gradients averaged across processes);
  the EMA teacher and the frozen correlation module are plain modules, identical everywhere;
- rank 0 alone writes checkpoints, logs and overlays; every rank reads them on resume, so the
  run directory must be on a file system all nodes share (`check_shared_directory`).
"""

from __future__ import annotations

import contextlib
import datetime
import inspect
import os
import secrets
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn

from uda_adapt.common.errors import UserError
from uda_adapt.adapt.train.launch import Launch, detect_launch
from uda_adapt.adapt.train.preemption import Preempted, handle_signals


@dataclass(frozen=True)
class Distributed:
    """This process's place in the job; the default is a single process."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def local_slice(self, global_batch: int) -> slice:
        """This rank's part of a global batch of `global_batch` items (contiguous, rank order)."""
        per_rank = global_batch // self.world_size
        return slice(self.rank * per_rank, (self.rank + 1) * per_rank)

    def local_batch_size(self, global_batch: int, accumulate: int = 1) -> int:
        """Images this rank takes per forward: the global batch over processes x micro-steps."""
        if accumulate < 1:
            raise UserError(f"data.accumulate={accumulate} must be 1 or more (the micro-steps of one optimizer step)")
        parts = self.world_size * accumulate
        if global_batch % parts:
            per_step = f"{self.world_size} training processes" + (f" x data.accumulate={accumulate}" if accumulate > 1 else "")
            fix = (f"e.g. --set data.batch_size={max(1, global_batch // parts) * parts}" if global_batch >= parts else
                   f"fewer processes, or --set data.batch_size={parts}: each process needs at least one image per micro-step")
            raise UserError(f"data.batch_size={global_batch} is the global batch and must be divisible by the {per_step}; "
                            f"use {fix}")
        return global_batch // parts


SINGLE_PROCESS = Distributed()


def gpu_index(launch: Launch, visible: int) -> int:
    """The GPU of a process with `visible` GPUs in view: cuda:LOCAL_RANK, or cuda:0 where srun bound
    one GPU to each task (`--gpus-per-task=1` / `--gpu-bind`: each task sees one)."""
    if launch.launcher == "slurm" and visible == 1:
        return 0
    if launch.local_rank >= visible:
        raise UserError(f"local rank {launch.local_rank} has no GPU: this node has {visible}; "
                        "start at most that many processes per node (--nproc_per_node, or srun --ntasks-per-node)")
    return launch.local_rank


def start(device_name: str, timeout_minutes: float, launch: Launch | None = None) -> tuple[Distributed, torch.device | None]:
    """Join the process group torchrun or srun describes; (SINGLE_PROCESS, None) for a single process.

    Returns the process's device for a CUDA job (`cuda:LOCAL_RANK`), None for a CPU job (the
    caller resolves `device` as usual, which must then be the CPU).
    """
    launch = launch or detect_launch(os.environ)
    if launch.world_size <= 1:
        return SINGLE_PROCESS, None
    info = Distributed(rank=launch.rank, world_size=launch.world_size, local_rank=launch.local_rank)
    use_cuda = device_name in ("auto", "cuda") and torch.cuda.is_available()
    if device_name.startswith("cuda:"):
        raise UserError(f"device={device_name} names one GPU, but under {launch.launcher} each process uses cuda:LOCAL_RANK; "
                        "use --set device=cuda (or auto)")
    if device_name == "cuda" and not use_cuda:
        raise UserError("device=cuda was requested but no CUDA GPU is available; use --set device=cpu")
    device = None
    if use_cuda:
        device = torch.device("cuda", gpu_index(launch, torch.cuda.device_count()))
        torch.cuda.set_device(device)
    timeout = datetime.timedelta(minutes=timeout_minutes)
    where = {} if launch.init_method is None else {"init_method": launch.init_method, "rank": launch.rank,
                                                     "world_size": launch.world_size}
    if use_cuda:
        dist.init_process_group("nccl", timeout=timeout, device_id=device, **where)
    else:
        dist.init_process_group("gloo", timeout=timeout, **where)
    return info, device


def stop() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


# What gloo and NCCL say when the process at the other end of a collective is gone or hung.
# Specific phrases only: "timeout" or "socket" alone also appear in DataLoader and file errors.
_LOST_PEER = ("connection closed by peer", "connection reset by peer", "broken pipe",
              "nccl communicator was aborted", "remote process exited", "watchdog caught collective operation timeout",
              "timed out waiting", "gloo/transport")


def is_lost_peer(error: BaseException) -> bool:
    """Whether `error` is a collective failing because another rank died or hung (not a bug here)."""
    if isinstance(error, (dist.DistNetworkError, dist.DistStoreError)):
        return True
    text = str(error).lower()
    return isinstance(error, RuntimeError) and any(s in text for s in _LOST_PEER)


@contextlib.contextmanager
def session(device_name: str, timeout_minutes: float, run_dir: Path | str = "RUN_DIR") -> Iterator[tuple[Distributed, torch.device | None]]:
    """`start` ... `stop`, also when training raises, with SIGTERM/SIGUSR1 handled (adapt/train/preemption.py).

    When another rank dies, this one ends with one line saying so, whether its collective fails
    first or torchrun stops it first; a preempted run ends with one line saying to rerun it.
    """
    info, device = start(device_name, timeout_minutes)
    resume = f"checkpoints are written whole, so rerun the same command to resume from the last one in {run_dir}"
    who = f"rank {info.rank} of {info.world_size} " if info.enabled else ""
    try:
        with handle_signals():
            yield info, device
    except Preempted as exc:
        raise Preempted(f"{who}{exc}; {resume}") from None
    except RuntimeError as exc:
        if not (info.enabled and is_lost_peer(exc)):
            raise
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]
        raise UserError(f"{who}lost contact with another training process ({first}); "
                        f"that process's own error is above; {resume}") from exc
    finally:
        stop()


def decided_by_main(info: Distributed, decide: Callable[[], object]):
    """`decide()` run on rank 0 and its result given to every rank.

    What to run next (a stage done or not, the round, the step to resume from) must be one
    decision: on NFS a rank can still see a stale file after a barrier, skip a stage the others
    run, and leave them waiting until the timeout. The result is pickled (a checkpoint is
    sent whole, once per stage). A UserError on rank 0 is raised on every rank.
    """
    if not info.enabled:
        return decide()
    box: list = [None]
    if info.is_main:
        try:
            box[0] = (decide(), None)
        except UserError as exc:
            box[0] = (None, str(exc))
    dist.broadcast_object_list(box, src=0)
    result, error = box[0]
    if error is not None:
        raise UserError(error)
    return result


def barrier(info: Distributed) -> None:
    if info.enabled:
        dist.barrier()


def check_shared_directory(info: Distributed, run_dir: Path, device: torch.device) -> None:
    """Every rank must see rank 0's files: resume, pseudo labels and stage hand-over read them.

    `device`: where this rank's collectives run (NCCL reduces CUDA tensors only)."""
    if not info.enabled:
        return
    token = [secrets.token_hex(8) if info.is_main else None]
    dist.broadcast_object_list(token, src=0)
    marker = run_dir / f".rank0-{token[0]}"
    if info.is_main:
        marker.write_text(token[0])
    dist.barrier()
    seen = marker.is_file() and marker.read_text() == token[0]
    everyone = torch.tensor([int(seen)], device=device)
    dist.all_reduce(everyone, op=dist.ReduceOp.MIN)
    dist.barrier()
    if info.is_main:
        marker.unlink(missing_ok=True)
    if not everyone.item():
        raise UserError(f"run directory {run_dir} is not shared by every training process (rank {info.rank} "
                        f"{'sees' if seen else 'does not see'} rank 0's files); put --out on a file system all nodes mount")


def all_reduce_sum(tensor: torch.Tensor, info: Distributed) -> torch.Tensor:
    """Sum over ranks, in place (the CPU or the process's GPU, as the backend needs)."""
    if info.enabled:
        dist.all_reduce(tensor)
    return tensor


def mean_over_ranks(values: dict[str, float], info: Distributed, device: torch.device,
                    flag: bool = False) -> tuple[dict[str, float], bool]:
    """The mean of each logged value over ranks (what the single-process run would log), and
    whether `flag` is set on any rank, in one all-reduce."""
    if not info.enabled:
        return values, flag
    keys = sorted(values)
    tensor = torch.tensor([values[k] for k in keys] + [float(flag)], dtype=torch.float64, device=device)
    dist.all_reduce(tensor)
    *means, flags = tensor.tolist()
    return {k: v / info.world_size for k, v in zip(keys, means)}, flags > 0


def gather_batch(tensor: torch.Tensor, info: Distributed) -> torch.Tensor:
    """Concatenate every rank's (b, ...) tensor along dim 0, in rank order: the global batch's view."""
    if not info.enabled:
        return tensor
    parts = [torch.empty_like(tensor) for _ in range(info.world_size)]
    dist.all_gather(parts, tensor.contiguous())
    return torch.cat(parts)


def broadcast_tensor(tensor: torch.Tensor, info: Distributed, src: int) -> torch.Tensor:
    if info.enabled:
        dist.broadcast(tensor, src=src)
    return tensor


def _coalesced(tensors: Sequence[torch.Tensor], collective) -> None:
    """Run `collective` in place on all `tensors` at once: one call per dtype, not one per
    tensor (a ResNet-101 has over 300 BatchNorm buffers)."""
    by_dtype: dict[torch.dtype, list[torch.Tensor]] = {}
    for tensor in tensors:
        by_dtype.setdefault(tensor.dtype, []).append(tensor)
    for group in by_dtype.values():
        flat = torch.cat([t.reshape(-1) for t in group])
        collective(flat)
        offset = 0
        for t in group:
            t.copy_(flat[offset: offset + t.numel()].view_as(t))
            offset += t.numel()


def broadcast_buffers(module: nn.Module, info: Distributed) -> None:
    """Give every rank rank 0's buffers (BatchNorm running statistics under per-rank BatchNorm)."""
    if info.enabled:
        _coalesced(list(module.buffers()), lambda flat: dist.broadcast(flat, src=0))


def average_batchnorm_statistics(layers: Sequence[nn.modules.batchnorm._BatchNorm], batches: int, info: Distributed) -> None:
    """Running mean/var averaged over ranks, weighted by the batches each rank saw.

    Each layer holds the mean over its rank's batches (a cumulative average); the weighted mean
    of those is the mean over every batch, as one process going through all of them gets.
    """
    if not info.enabled or not layers:
        return
    statistics = [buffer for layer in layers for buffer in (layer.running_mean, layer.running_var)]
    for buffer in statistics:
        buffer.mul_(batches)
    total = all_reduce_sum(torch.tensor([float(batches)], device=statistics[0].device), info).item()
    _coalesced(statistics, dist.all_reduce)
    for buffer in statistics:
        buffer.div_(max(total, 1.0))
    for layer in layers:
        if layer.num_batches_tracked is not None:
            layer.num_batches_tracked.fill_(int(total))


def no_buffer_sync_in_forward(ddp_class: type) -> dict[str, bool]:
    """DDP's keyword for "do not broadcast buffers at each forward", in the installed torch's spelling:
    `forward_sync_buffers=False` (torch 2.13+, where `broadcast_buffers` is deprecated), else
    `broadcast_buffers=False` (which also skips the initial buffer broadcast: `wrap_for_training`
    broadcasts them itself)."""
    if "forward_sync_buffers" in inspect.signature(ddp_class).parameters:
        return {"forward_sync_buffers": False}
    return {"broadcast_buffers": False}


def wrap_for_training(model: nn.Module, info: Distributed, device: torch.device, sync_batchnorm: bool) -> nn.Module:
    """The module the training step calls: DDP around `model` when distributed, `model` itself otherwise.

    Checkpoints save `model` (no `module.` prefixes). SyncBatchNorm needs CUDA in PyTorch; on CPU
    each rank normalises by its own part of the batch.
    """
    if not info.enabled:
        return model
    if sync_batchnorm and device.type == "cuda":
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    broadcast_buffers(model, info)
    # No buffer broadcast at each forward: a step may call the student twice (source, then mixed)
    # before one backward; buffers are synchronised where they matter (`broadcast_buffers` above).
    ddp = nn.parallel.DistributedDataParallel
    return ddp(model, device_ids=[device.index] if device.type == "cuda" else None, **no_buffer_sync_in_forward(ddp))


def gradient_sync(network: nn.Module, sync: bool) -> contextlib.AbstractContextManager:
    """DDP's `no_sync()` when `sync` is False (a micro-step whose gradients are only accumulated):
    the all-reduce then happens once, in the last micro-step's backward. Covers forward and
    backward, as DDP requires; a no-op for a plain or compiled-plain module."""
    if sync:
        return contextlib.nullcontext()
    no_sync = getattr(network, "no_sync", None)     # a compiled DDP module forwards the attribute
    return no_sync() if no_sync is not None else contextlib.nullcontext()


def revert_sync_batchnorm(model: nn.Module) -> nn.Module:
    """Undo `convert_sync_batchnorm` in place: plain BatchNorm2d layers sharing the same weights and buffers.

    After the training loop the network is evaluated, re-normalised on each rank's shard (AdaBN)
    and saved; SyncBatchNorm in train mode would make every one of those forwards a collective.
    """
    for name, child in model.named_children():
        if isinstance(child, nn.SyncBatchNorm):
            plain = nn.BatchNorm2d(child.num_features, child.eps, child.momentum, child.affine, child.track_running_stats)
            if child.affine:
                plain.weight, plain.bias = child.weight, child.bias
            plain.running_mean, plain.running_var = child.running_mean, child.running_var
            plain.num_batches_tracked = child.num_batches_tracked
            plain.train(child.training)
            setattr(model, name, plain)
        else:
            revert_sync_batchnorm(child)
    return model
