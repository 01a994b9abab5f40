"""The exponential-moving-average (mean) teacher of mean-teacher self-training.

The teacher starts as a copy of the student and follows it slowly:
    alpha_t = min(1 - 1 / (t + 1), alpha)          (t = update count from 0)
    teacher = alpha_t * teacher + (1 - alpha_t) * student
for every parameter and every floating-point buffer (BatchNorm running statistics, so the
teacher normalises with statistics of the data the student now sees); integer buffers
(BatchNorm's batch counter) are copied. The warm-up term 1 - 1/(t + 1) makes the teacher an
exact running mean of the students while t < 1 / (1 - alpha): early students are not
overweighted by a long average of the initial weights.

The cap `alpha` is a fixed momentum (`ema_alpha`) or, with `ema_horizon`, a share of the stage's
schedule (`scheduled_alpha`): a fixed 0.999 on a 600-step stage never leaves the warm-up, and the
teacher is then the running average of every student since the start.

The teacher runs in eval mode, without gradients, and never enters the optimizer.
"""

from __future__ import annotations

import copy

import torch
from torch import nn


def ema_alpha(step: int, alpha: float) -> float:
    """The EMA momentum for update number `step` (0-based), as DACS/DAFormer.

    DAFormer mmseg/models/uda/dacs.py:105 and DACS trainUDA.py:113: `min(1 - 1 / (iter + 1), alpha)`.
    """
    return min(1.0 - 1.0 / (step + 1), alpha)


def scheduled_alpha(alpha: float, horizon: float, iterations: int) -> float:
    """The momentum cap of a stage: `alpha` itself, or with `horizon` > 0 (a share of the stage's
    `iterations`) 1 - 1 / (horizon x iterations), so that warm-up and averaging window both last
    that many updates whatever the schedule's length (DAFormer: 0.999 over 40k iterations, 0.025).

    A horizon under one update gives 0: the teacher is the latest student.
    """
    if horizon <= 0:
        return alpha
    updates = horizon * iterations
    return 0.0 if updates <= 1 else 1.0 - 1.0 / updates


def make_teacher(student: nn.Module) -> nn.Module:
    teacher = copy.deepcopy(student)
    teacher.eval().requires_grad_(False)
    return teacher


@torch.no_grad()
def update_teacher(teacher: nn.Module, student: nn.Module, alpha: float, buffers: bool = True) -> None:
    """teacher <- alpha * teacher + (1 - alpha) * student, in place (parameters and float buffers).

    `buffers=False` leaves the teacher's buffers (BatchNorm running statistics) as they are: the
    teacher then keeps statistics of its own (`teacher_bn: target`).
    """
    for t, s in zip(teacher.parameters(), student.parameters()):
        t.mul_(alpha).add_(s.detach(), alpha=1.0 - alpha)
    if not buffers:
        return
    for t, s in zip(teacher.buffers(), student.buffers()):
        if t.is_floating_point():
            t.mul_(alpha).add_(s.detach(), alpha=1.0 - alpha)
        else:
            t.copy_(s)
