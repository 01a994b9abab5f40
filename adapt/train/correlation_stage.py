"""Stage 2: fit the correlation module on the source domain only, the network frozen.

What the module learns here (which pixels' predictions should agree) comes from source
labels alone, so it carries no target-domain bias into self-training.
"""

from __future__ import annotations

import torch

from uda_adapt.adapt.checkpoint import Checkpoint
from uda_adapt.adapt.losses import correlation_fit_loss
from uda_adapt.adapt.models import build_segmenter
from uda_adapt.adapt.models.correlation import CorrelationModule
from uda_adapt.adapt.train.batches import StreamState
from uda_adapt.adapt.train.datasets import labelled_train_set, train_transform
from uda_adapt.adapt.mixing import StrongAugmentation
from uda_adapt.adapt.train.environment import autocast, restore_rng, rng_state, seed_everything, training_network
from uda_adapt.adapt.train.logbook import Logbook
from uda_adapt.adapt.train.loop import WHOLE_STEP, MicroStep, accumulated, backward_micro_step, run_iterations
from uda_adapt.adapt.train.optim import make_optimizer, poly_lr, set_lr
from uda_adapt.adapt.train.reporting import evaluate_stage, network_fn
from uda_adapt.adapt.train.stage_io import RunContext, begin_stage, write_stage_checkpoint

STAGE = "correlation"


def build_correlation_module(ctx: RunContext) -> CorrelationModule:
    c = ctx.cfg.correlation
    return CorrelationModule(len(ctx.classes), dim=c.dim, value=c.value, spatial=c.spatial)


def correlation_payload(ctx: RunContext, module: CorrelationModule) -> dict:
    c = ctx.cfg.correlation
    return {
        "state_dict": {k: v.detach().cpu() for k, v in module.state_dict().items()},
        "dim": c.dim, "value": c.value, "spatial": c.spatial,
    }


def load_correlation_module(payload: dict, num_classes: int) -> CorrelationModule:
    module = CorrelationModule(num_classes, dim=payload["dim"], value=payload["value"], spatial=payload["spatial"])
    module.load_state_dict(payload["state_dict"])
    return module


def fit_correlation(ctx: RunContext, init: Checkpoint) -> None:
    """Train the module on source batches; `init` holds the source-trained network."""
    cfg, stage_cfg = ctx.cfg, ctx.cfg.correlation
    start_info = begin_stage(ctx, STAGE)
    if start_info is None:
        return
    stage_dir, last_path, resume = start_info.stage_dir, start_info.last_path, start_info.resume

    seed_everything(cfg.seed + 1)
    network = build_segmenter(init.model_name, len(ctx.classes), None)
    network.load_state_dict(init.state_dict)
    network.to(ctx.device).eval().requires_grad_(False)
    module = build_correlation_module(ctx)
    if resume:
        module = load_correlation_module(resume.extra["correlation"], len(ctx.classes))
    module.to(ctx.device).train()

    dataset = labelled_train_set(cfg.data.source, train_transform(cfg, cfg.data.source, ctx.mean, ctx.std))
    stream = ctx.batch_stream(dataset, cfg.seed + 1)
    trained_module = training_network(module, cfg, ctx.device, ctx.dist)
    optimizer = make_optimizer(module.parameters(), stage_cfg.optim)
    perturb = None
    if stage_cfg.fit_perturbation > 0:
        perturb = StrongAugmentation(ctx.mean, ctx.std, jitter_strength=stage_cfg.fit_perturbation, jitter_p=1.0, blur_p=0.5)
    generator = torch.Generator().manual_seed(cfg.seed + 6)
    start = 0
    if resume:
        optimizer.load_state_dict(resume.extra["optimizer"])
        stream.state = StreamState(**resume.extra["stream"])
        generator.set_state(resume.extra["generator"])
        restore_rng(resume.extra.get("rng"))
        start = resume.step
        if ctx.dist.is_main:
            print(f"{STAGE}: resuming at iteration {start} from {last_path}")

    def step(i: int, micro: MicroStep = WHOLE_STEP) -> dict[str, float]:
        set_lr(optimizer, poly_lr(stage_cfg.optim.lr, i, stage_cfg.iterations, stage_cfg.optim.poly_power, stage_cfg.optim.warmup))
        images, labels = stream.next()
        images, labels = images.to(ctx.device, non_blocking=True), labels.to(ctx.device, non_blocking=True)
        if perturb is not None:
            # Drawn for the micro-step's images over all ranks, applied to this rank's part (adapt/mixing.py).
            images = perturb.apply(images, perturb.draw(stream.micro_batch_size, generator)[ctx.dist.local_slice(stream.micro_batch_size)])
        with torch.no_grad(), autocast(ctx.device, cfg.amp):
            logits = network(images)
        loss = correlation_fit_loss(trained_module, logits.float(), labels)
        backward_micro_step(loss, micro, optimizer)
        return {"loss": loss.item()}

    def save(done: int, complete: bool = False) -> None:
        write_stage_checkpoint(ctx, last_path, STAGE, network, done, {
            "optimizer": optimizer.state_dict(),
            "stream": vars(stream.state).copy(),
            "generator": generator.get_state(),
            "rng": rng_state(),
            "correlation": correlation_payload(ctx, module),
            "complete": complete,
        })

    log = Logbook(stage_dir, ctx.tensorboard_dir, tag=STAGE, enabled=ctx.dist.is_main)
    try:
        run_iterations(start=start, total=stage_cfg.iterations, step_fn=accumulated(step, trained_module, stream.accumulate),
                       save_fn=save, log=log, log_every=cfg.logging.log_every, checkpoint_every=cfg.logging.checkpoint_every,
                       description=STAGE, last_good=last_path, images_per_step=stream.batch_size,
                       dist=ctx.dist, device=ctx.device, data_clock=ctx.data_clock)
        module.eval()
        # Diagnostic only: the network followed by the module at test time. The deployed
        # model is the network alone; this shows what the module would teach on the target.
        evaluate_stage(ctx, module_fn(network, module), stage_dir, "network+module", stage_cfg.iterations, log)
        save(stage_cfg.iterations, complete=True)
    finally:
        log.close()


def module_fn(network, module):
    def run(images: torch.Tensor) -> torch.Tensor:
        return torch.log(module(torch.softmax(network(images).float(), dim=1)).clamp_min(1e-8))
    return run
