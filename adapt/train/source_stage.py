"""Stage 1: supervised training on the labelled source domain (also the oracle, on target labels)."""

from __future__ import annotations

from uda_adapt.adapt.checkpoint import Checkpoint
from uda_adapt.adapt.class_weights import announced_class_weights
from uda_adapt.adapt.data.rare_class import rare_class_stream
from uda_adapt.adapt.losses import segmentation_ce
from uda_adapt.adapt.models import build_segmenter
from uda_adapt.adapt.train.batches import StreamState, random_permutation
from uda_adapt.adapt.train.datasets import labelled_train_set, train_transform
from uda_adapt.adapt.train.distributed import broadcast_buffers, revert_sync_batchnorm
from uda_adapt.adapt.train.environment import (autocast, make_grad_scaler, restore_grad_scaler, restore_rng, rng_state, seed_everything,
                                     training_network)
from uda_adapt.adapt.train.logbook import Logbook
from uda_adapt.adapt.train.loop import evaluation_every, optimizer_step, run_iterations
from uda_adapt.adapt.train.optim import make_optimizer, poly_lr, set_lr
from uda_adapt.adapt.train.reporting import evaluate_stage, keep_best, network_fn
from uda_adapt.adapt.train.stage_io import RunContext, begin_stage, write_stage_checkpoint

STAGE = "source"


def train_source(ctx: RunContext, init: Checkpoint | None = None) -> None:
    """Train the network on source labels; resumes from `source/last.pt` when it is incomplete."""
    cfg, stage_cfg = ctx.cfg, ctx.cfg.source
    start_info = begin_stage(ctx, STAGE)
    if start_info is None:
        return
    stage_dir, last_path, resume = start_info.stage_dir, start_info.last_path, start_info.resume

    seed_everything(cfg.seed)
    model = build_segmenter(cfg.model.name, len(ctx.classes), None if (resume or init) else cfg.model.pretrained)
    if resume or init:
        model.load_state_dict((resume or init).state_dict)
    model.to(ctx.device).train()

    dataset = labelled_train_set(cfg.data.source, train_transform(cfg, cfg.data.source, ctx.mean, ctx.std))
    order, min_class_pixels = random_permutation, 0.0
    if stage_cfg.rare_class_sampling:
        order, min_class_pixels = rare_class_stream(dataset, len(ctx.classes), stage_cfg.rcs_temperature,
                                                    stage_cfg.rcs_min_pixels, stage_cfg.rcs_min_crop_ratio)
    stream = ctx.batch_stream(dataset, cfg.seed, order=order, min_class_pixels=min_class_pixels)
    class_weight = announced_class_weights(dataset, ctx.classes, stage_cfg.class_weights, stage_cfg.rcs_min_pixels,
                                           f"{STAGE}: " if ctx.dist.is_main else None)
    network = training_network(model, cfg, ctx.device, ctx.dist)
    optimizer = make_optimizer(model.parameters(), stage_cfg.optim)
    scaler = make_grad_scaler(ctx.device, cfg.amp)
    start, best = 0, float("-inf")
    if resume:
        optimizer.load_state_dict(resume.extra["optimizer"])
        stream.state = StreamState(**resume.extra["stream"])
        restore_rng(resume.extra.get("rng"))
        restore_grad_scaler(scaler, resume.extra.get("scaler"))
        start, best = resume.step, resume.extra.get("best_miou", best)
        if ctx.dist.is_main:
            print(f"{STAGE}: resuming at iteration {start} from {last_path}")

    def micro_loss():
        images, labels = stream.next()
        images, labels = images.to(ctx.device, non_blocking=True), labels.to(ctx.device, non_blocking=True)
        with autocast(ctx.device, cfg.amp):
            loss = segmentation_ce(network(images), labels, class_weight=class_weight)
        return loss, {"loss": loss}

    def step(i: int) -> dict[str, float]:
        set_lr(optimizer, poly_lr(stage_cfg.optim.lr, i, stage_cfg.iterations, stage_cfg.optim.poly_power, stage_cfg.optim.warmup))
        return optimizer_step(micro_loss, network=network, optimizer=optimizer, scaler=scaler, micro_steps=stream.accumulate)

    def save(done: int, complete: bool = False) -> None:
        write_stage_checkpoint(ctx, last_path, STAGE, model, done, {
            "optimizer": optimizer.state_dict(),
            "stream": vars(stream.state).copy(),
            "rng": rng_state(),
            "scaler": scaler.state_dict(),
            "best_miou": best,
            "complete": complete,
        })

    log = Logbook(stage_dir, ctx.tensorboard_dir, tag=STAGE, enabled=ctx.dist.is_main)
    try:
        run_iterations(start=start, total=stage_cfg.iterations, step_fn=step, save_fn=save, log=log,
                       log_every=cfg.logging.log_every, checkpoint_every=cfg.logging.checkpoint_every,
                       description=STAGE, last_good=last_path, images_per_step=stream.batch_size,
                       dist=ctx.dist, device=ctx.device, data_clock=ctx.data_clock,
                       evaluate=evaluation_every(ctx, model, stage_dir, log, STAGE), evaluate_every=cfg.logging.eval_interval)
        revert_sync_batchnorm(model).eval()
        broadcast_buffers(model, ctx.dist)   # CPU ranks normalise alone: evaluate what rank 0 saves
        result = evaluate_stage(ctx, network_fn(model), stage_dir, STAGE, stage_cfg.iterations, log)
        best = keep_best(result, best, lambda: write_stage_checkpoint(
            ctx, stage_dir / "best.pt", STAGE, model, stage_cfg.iterations, {"miou": result.miou, "complete": True}))
        save(stage_cfg.iterations, complete=True)
    finally:
        log.close()
