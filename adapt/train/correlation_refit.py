"""Fit the correlation module during self-training, on source batches only (`self_train.correlation_refit`).

The module was fitted (stage 2) against the *source-only* network's errors. Adaptation removes
those errors, and the frozen module then pulls the adapted network towards a worse target
(README: on the seed-0 adapted student, network + module scored below the network alone). Here
the module keeps taking steps of its stage-2 loss (`correlation_fit_loss`) on the current
network's predictions of perturbed source images with their labels: still trained on the source
alone, as the paper requires, but on the network it teaches now. Its optimizer and weights
travel in the stage's checkpoint, so a resumed run refits exactly as an uninterrupted one.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from uda_adapt.adapt.losses import correlation_fit_loss
from uda_adapt.adapt.mixing import StrongAugmentation
from uda_adapt.adapt.models.correlation import CorrelationModule
from uda_adapt.adapt.train.config import TrainConfig
from uda_adapt.adapt.train.distributed import Distributed
from uda_adapt.adapt.train.environment import autocast, training_network
from uda_adapt.adapt.train.optim import make_optimizer


@dataclass
class CorrelationRefit:
    """The live module, what its fitting step calls (DDP-wrapped when distributed) and its optimizer."""

    module: CorrelationModule
    fitted: nn.Module
    optimizer: torch.optim.Optimizer
    perturb: StrongAugmentation | None
    every: int
    network: str                   # "teacher" | "student"

    def due(self, step: int) -> bool:
        return self.every > 0 and step % self.every == 0

    def step(self, images: torch.Tensor, labels: torch.Tensor, student_logits: torch.Tensor, teacher: nn.Module,
             cfg: TrainConfig, generator: torch.Generator, dist: Distributed, global_batch: int) -> float:
        """One fitting step on this rank's source batch; returns the module's loss.

        With `network="teacher"` the EMA teacher predicts the perturbed source batch (eval
        mode, no gradients); with "student" the step's source logits are used, detached.
        """
        if self.network == "teacher":
            if self.perturb is not None:
                plans = self.perturb.draw(global_batch, generator)[dist.local_slice(global_batch)]
                images = self.perturb.apply(images, plans)
            with torch.no_grad(), autocast(images.device, cfg.amp):
                logits = teacher(images)
        else:
            logits = student_logits
        self.module.train()
        loss = correlation_fit_loss(self.fitted, logits.detach().float(), labels)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.module.eval()
        return loss.item()

    def state_dict(self) -> dict:
        return {"optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.optimizer.load_state_dict(state["optimizer"])


def make_refit(module: CorrelationModule | None, cfg: TrainConfig, mean, std, device: torch.device,
               dist: Distributed) -> CorrelationRefit | None:
    """None when refitting is off or there is no module (lambda_ct 0)."""
    refit_cfg = cfg.self_train.correlation_refit
    if module is None or refit_cfg.every <= 0:
        return None
    module.requires_grad_(True)
    perturb = None
    if cfg.correlation.fit_perturbation > 0:
        # The same perturbation the module was first fitted under (correlation stage).
        perturb = StrongAugmentation(mean, std, jitter_strength=cfg.correlation.fit_perturbation, jitter_p=1.0, blur_p=0.5)
    return CorrelationRefit(
        module=module,
        fitted=training_network(module, cfg, device, dist),
        optimizer=make_optimizer(module.parameters(), cfg.correlation.optim),
        perturb=perturb,
        every=refit_cfg.every,
        network=refit_cfg.network,
    )
