"""The iteration loop every stage shares: progress bar, logging, NaN guard, resume points."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from pathlib import Path

import torch
from tqdm import tqdm

from common.errors import UserError
from adapt.train.distributed import SINGLE_PROCESS, Distributed, mean_over_ranks
from adapt.train.logbook import Logbook


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
) -> None:
    """Run `step_fn(i)` for i in [start, total); `save_fn(i + 1)` writes a resume point.

    A non-finite loss stops training before anything is saved, so the last checkpoint on
    disk is always a good one. With `images_per_step`, each log record also carries the
    training throughput since the previous record (`images_per_second`, wall clock).

    Distributed, the losses of each step are averaged over ranks before anything else, so every
    rank logs, checks for non-finite values and stops on the same numbers.
    """
    running: dict[str, float] = {}
    count = 0
    since = time.perf_counter()
    with tqdm(total=total, initial=start, desc=description, unit="it", dynamic_ncols=True,
              disable=None if dist.is_main else True) as bar:
        for i in range(start, total):
            losses = mean_over_ranks(step_fn(i), dist, device)
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
            if done % log_every == 0 or done == total:
                means = {k: v / count for k, v in running.items()}
                now = time.perf_counter()
                if images_per_step:
                    means["images_per_second"] = images_per_step * count / max(now - since, 1e-9)
                since = now
                log.write(step_offset + done, **means)
                bar.set_postfix({k: f"{v:.3f}" for k, v in means.items()})
                running, count = {}, 0
            if done % checkpoint_every == 0 and done != total:
                save_fn(done)
