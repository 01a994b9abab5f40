"""The iteration loop every stage shares: progress (a bar at a terminal, one `Iter [i/N]` line per
log interval in a log file), logging, NaN guard, resume points, a clean stop on SIGTERM/SIGUSR1;
and the optimizer step every stage shares, with gradient accumulation."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from tqdm import tqdm

from uda_adapt.common.errors import UserError
from uda_adapt.common.progress import emit, iteration_line, lines_enabled, tqdm_disable
from uda_adapt.adapt.train.batches import LoadingClock
from uda_adapt.adapt.train.distributed import SINGLE_PROCESS, Distributed, broadcast_buffers, gradient_sync, mean_over_ranks
from uda_adapt.adapt.train.logbook import Logbook
from uda_adapt.adapt.train.preemption import STOP, Preempted

@dataclass(frozen=True)
class MicroStep:
    """Which of an optimizer step's `count` micro-steps (gradient accumulation) this is."""

    index: int = 0
    count: int = 1

    @property
    def last(self) -> bool:
        return self.index == self.count - 1


WHOLE_STEP = MicroStep()


def backward_micro_step(loss: torch.Tensor, micro: MicroStep, optimizer: torch.optim.Optimizer,
                        scaler: torch.amp.GradScaler | None = None) -> None:
    """The optimizer's part of one micro-step: gradients cleared on the first, `loss / count`
    backpropagated (so the gradient is the mean over micro-batches, as DDP's is the mean over
    ranks: k micro-steps on one process equal k processes of one each), the step on the last."""
    if micro.index == 0:
        optimizer.zero_grad(set_to_none=True)
    scaled = loss / micro.count
    (scaler.scale(scaled) if scaler is not None else scaled).backward()
    if micro.last:
        if scaler is not None:
            scaler.step(optimizer)
            scaler.update()
        else:
            optimizer.step()


def accumulated(step_fn: Callable[[int, MicroStep], dict[str, float | torch.Tensor]], network: nn.Module,
                micro_steps: int) -> Callable[[int], dict[str, float]]:
    """An iteration of `micro_steps` calls `step_fn(i, micro)`, the values each returns averaged.

    Every call but the last runs in DDP's `no_sync` (forward and backward, as DDP requires): the
    gradients are averaged across ranks once, in the last micro-step's backward.
    """
    def iteration(i: int) -> dict[str, float]:
        logged: dict[str, float | torch.Tensor] = {}
        for index in range(micro_steps):
            micro = MicroStep(index, micro_steps)
            with gradient_sync(network, sync=micro.last):
                values = step_fn(i, micro)
            for key, value in values.items():
                value = value.detach().float() if isinstance(value, torch.Tensor) else value
                logged[key] = logged.get(key, 0.0) + value / micro_steps
        # Tensors become numbers in one host-device sync per iteration.
        tensors = [k for k, v in logged.items() if isinstance(v, torch.Tensor)]
        numbers = torch.stack([logged[k] for k in tensors]).tolist() if tensors else []
        return {**logged, **dict(zip(tensors, numbers))}
    return iteration


def optimizer_step(micro_loss: Callable[[], tuple[torch.Tensor, dict[str, torch.Tensor]]], *, network: nn.Module,
                   optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler | None = None,
                   micro_steps: int = 1) -> dict[str, float]:
    """One optimizer step over `micro_steps` calls of `micro_loss` -> (loss to backpropagate,
    values to log); returns the values averaged over the micro-steps."""
    def one(i: int, micro: MicroStep) -> dict[str, torch.Tensor]:
        loss, values = micro_loss()
        backward_micro_step(loss, micro, optimizer, scaler)
        return values
    return accumulated(one, network, micro_steps)(0)


def evaluation_every(ctx, model: nn.Module, stage_dir: Path, log: Logbook, tag: str, step_offset: int = 0) -> Callable[[int], None] | None:
    """The loop's periodic evaluation (`logging.eval_interval`): `model` scored on target val as
    `eval_<tag>_iter<N>.json` and in the log, its train/eval modes restored after. Diagnostic:
    the stage's reported model stays the one its `last.pt` holds at the end. None when off."""
    if not ctx.cfg.logging.eval_interval:
        return None
    from uda_adapt.adapt.train.reporting import evaluate_stage, network_fn     # reporting imports the stage plumbing

    def evaluate(done: int) -> None:
        modes = [(module, module.training) for module in model.modules()]
        broadcast_buffers(model, ctx.dist)       # CPU ranks keep their own BatchNorm statistics while training
        model.eval()
        with torch.no_grad():
            evaluate_stage(ctx, network_fn(model), stage_dir, f"{tag}_iter{done}", step_offset + done, log)
        for module, training in modes:
            module.train(training)
    return evaluate


def run_iterations(
    *,
    start: int,
    total: int,
    step_fn: Callable[[int], dict[str, float]],
    save_fn: Callable[[int], None],
    log: Logbook,
    log_every: int,
    checkpoint_every: int,
    description: str,
    last_good: Path,
    step_offset: int = 0,
    images_per_step: int = 0,
    dist: Distributed = SINGLE_PROCESS,
    device: torch.device = torch.device("cpu"),
    data_clock: LoadingClock | None = None,
    evaluate: Callable[[int], None] | None = None,
    evaluate_every: int = 0,
) -> None:
    """Run `step_fn(i)` for i in [start, total); `save_fn(i + 1)` writes a resume point.

    A non-finite loss stops training before anything is saved, so the last checkpoint on
    disk is always a good one. Each log record also carries the time per iteration
    (`step_seconds`), the part of it spent waiting for batches (`data_seconds`, from the streams
    sharing `data_clock`), with `images_per_step` the throughput of the job and of each process
    (`images_per_second`, `images_per_second_per_gpu`), and on CUDA the peak memory allocated
    since the previous record (`peak_memory_mib`); timings are rank 0's.

    Distributed, the losses of each step are averaged over ranks before anything else, so every
    rank logs, checks for non-finite values and stops on the same numbers. A SIGTERM or SIGUSR1
    travels with that average: every rank stops after the same iteration, rank 0 saves it, and
    `Preempted` says to rerun the same command.

    Off a terminal (a SLURM `.out`, a redirected run) rank 0 prints one plain line per log record
    (`common.progress.iteration_line`) instead of the bar; its ETA counts training time only.
    """
    running: dict[str, float] = {}
    print_lines = lines_enabled(dist.is_main)
    trained_seconds, trained_iterations = 0.0, 0
    count = 0
    clock = data_clock or LoadingClock()
    since, waited = time.perf_counter(), clock.seconds
    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.reset_peak_memory_stats(device)
    with tqdm(total=total, initial=start, desc=description, unit="it", dynamic_ncols=True,
              disable=tqdm_disable(dist.is_main)) as bar, STOP.at_iteration_boundaries():
        for i in range(start, total):
            losses, stop = mean_over_ranks(step_fn(i), dist, device, flag=STOP.requested)
            bad = {k: v for k, v in losses.items() if not math.isfinite(v)}
            if bad:
                name, value = next(iter(bad.items()))
                where = f"the last good checkpoint is {last_good}" if last_good.exists() else "no checkpoint was written yet"
                raise UserError(f"{description}: {name} became {value} at iteration {i + 1}; {where}; lower the learning rate (optim.lr) and resume")
            for key, value in losses.items():
                running[key] = running.get(key, 0.0) + value
            count += 1
            bar.update(1)
            done = i + 1
            if done % log_every == 0 or done == total or stop:
                means = {k: v / count for k, v in running.items()}
                now = time.perf_counter()
                means["step_seconds"] = (now - since) / count
                means["data_seconds"] = (clock.seconds - waited) / count
                if images_per_step:
                    means["images_per_second"] = images_per_step * count / max(now - since, 1e-9)
                    means["images_per_second_per_gpu"] = means["images_per_second"] / dist.world_size
                if cuda:
                    means["peak_memory_mib"] = torch.cuda.max_memory_allocated(device) / 2**20
                    torch.cuda.reset_peak_memory_stats(device)
                log.write(step_offset + done, **means)
                trained_seconds, trained_iterations = trained_seconds + (now - since), trained_iterations + count
                if print_lines:
                    per_iteration = trained_seconds / trained_iterations
                    emit(iteration_line(description, done, total, {k: v for k, v in means.items() if k in losses},
                                        images_per_second=means.get("images_per_second"),
                                        seconds_per_iteration=means["step_seconds"],
                                        eta_seconds=per_iteration * (total - done)))
                bar.set_postfix({k: f"{v:.3f}" for k, v in means.items() if k in losses})
                running, count = {}, 0
                since, waited = time.perf_counter(), clock.seconds
            if stop:
                save_fn(done)
                signal_name = STOP.signal_name or "a signal to another training process"
                raise Preempted(f"{description} stopped by {signal_name} after iteration {done}, saved in {last_good}")
            if done % checkpoint_every == 0 and done != total:
                save_fn(done)
            if evaluate is not None and evaluate_every and done % evaluate_every == 0 and done != total:
                evaluate(done)
                since, waited = time.perf_counter(), clock.seconds    # evaluation is not training time
