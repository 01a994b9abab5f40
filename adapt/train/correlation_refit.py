"""Fit the correlation module during self-training, on source batches only (`self_train.correlation_refit`).

The module was fitted (stage 2) against the *source-only* network's errors. Adaptation removes
those errors, and the frozen module then pulls the adapted network towards a worse target
(docs/results.md: on the seed-0 adapted student, network + module scored below the network alone). Here
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
from uda_adapt.adapt.models.correlation import CorrelationModule
from uda_adapt.adapt.train.config import TrainConfig
from uda_adapt.adapt.train.correlation_stage import FitInputs, image_pixels, network_outputs
from uda_adapt.adapt.train.distributed import Distributed
from uda_adapt.adapt.train.environment import training_network
from uda_adapt.adapt.train.optim import make_optimizer
from uda_adapt.common.errors import UserError


@dataclass
class CorrelationRefit:
    """The live module, what its fitting step calls (DDP-wrapped when distributed) and its optimizer."""

    module: CorrelationModule
    fitted: nn.Module
    optimizer: torch.optim.Optimizer
    fit_inputs: FitInputs
    every: int
    network: str                   # "teacher" | "student"

    def due(self, step: int) -> bool:
        return self.every > 0 and step % self.every == 0

    def step(self, images: torch.Tensor, labels: torch.Tensor, student_logits: torch.Tensor, teacher: nn.Module,
             cfg: TrainConfig, generator: torch.Generator, dist: Distributed, global_batch: int) -> float:
        """One fitting step on this rank's source batch; returns the module's loss.

        With `network="teacher"` the EMA teacher predicts the source batch, perturbed and masked
        as in the correlation stage (eval mode, no gradients); with "student" the step's source
        logits are used, detached.
        """
        features, valid = None, image_pixels(images)
        if self.network == "teacher":
            images = self.fit_inputs(images, generator, global_batch, dist.local_slice(global_batch))
            logits, features = network_outputs(teacher, images, self.module.needs_features, cfg.amp)
        else:
            logits = student_logits
        self.module.train()
        loss = correlation_fit_loss(self.fitted, logits.detach().float(), labels, valid=valid,
                                    class_balanced=cfg.correlation.fit_class_balanced, features=features)
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
    if module.needs_features and refit_cfg.network == "student":
        raise UserError(f"self_train.correlation_refit.network=student gives the module no features, but its "
                        f"correlation.query is {module.query_mode!r}; refit on the teacher or set correlation.query=prediction")
    module.requires_grad_(True)
    return CorrelationRefit(
        module=module,
        fitted=training_network(module, cfg, device, dist),
        optimizer=make_optimizer(module.parameters(), cfg.correlation.optim),
        # The same inputs the module was first fitted on (correlation stage).
        fit_inputs=FitInputs(cfg.correlation, mean, std),
        every=refit_cfg.every,
        network=refit_cfg.network,
    )
