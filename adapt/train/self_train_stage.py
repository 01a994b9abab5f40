"""Stage 3: self-training on the target with correlation transfer.

`self_train.method` picks the self-training base: "mean_teacher" (online, EMA teacher and
ClassMix: adapt/train/mean_teacher_stage.py) or "iast" (this module). With IAST, each round
re-estimates the target BatchNorm statistics (`target_bn`), regenerates pseudo labels with
class-balanced thresholds that restart at `init_threshold`, as IAST does, then trains on
    CE(logits_t, pseudo) + lambda_ct * KL(SA(p_round) || p_t)   (every image pixel, or only unlabelled ones)
    [+ source CE] [+ IAST entropy on ignored pixels] [+ IAST KL-to-uniform on labelled pixels]
with the correlation module SA frozen and p_round the prediction of the network as the round's
pseudo labels saw it (`ct_teacher=round`/`teacher`; `online`: the network's own current one).
lambda_ct = 0 is plain self-training.
"""

from __future__ import annotations

import copy

import torch

from uda_adapt.adapt.checkpoint import Checkpoint
from uda_adapt.adapt.data import PseudoLabelDataset
from uda_adapt.adapt.data.transforms import EvalTransform
from uda_adapt.common.errors import UserError
from uda_adapt.adapt.classes import IGNORE_INDEX
from uda_adapt.adapt.losses import correlation_transfer_loss, entropy_on_ignored, kl_to_uniform_on_labelled, segmentation_ce, valid_mask_at
from uda_adapt.adapt.models import build_segmenter, freeze_batchnorm
from uda_adapt.adapt.pseudo_labels import ThresholdState
from uda_adapt.adapt.train.batches import StreamState
from uda_adapt.adapt.train.config import per_round
from uda_adapt.adapt.train.correlation_stage import load_correlation_module
from uda_adapt.adapt.train.datasets import labelled_train_set, train_transform, unlabelled_train_set
from uda_adapt.adapt.train.batchnorm import reestimate_batchnorm
from uda_adapt.adapt.train.distributed import broadcast_buffers, decided_by_main, revert_sync_batchnorm
from uda_adapt.adapt.train.environment import (autocast, make_grad_scaler, restore_grad_scaler, restore_rng, rng_state, seed_everything,
                                     training_layout, training_network)
from uda_adapt.adapt.train.mean_teacher_stage import ct_weight, mean_teacher
from uda_adapt.adapt.train.logbook import Logbook
from uda_adapt.adapt.train.loop import evaluation_every, optimizer_step, run_iterations
from uda_adapt.adapt.train.optim import make_optimizer, set_lr, poly_lr
from uda_adapt.adapt.train.pseudo_round import pseudo_labels_ready, write_pseudo_labels
from uda_adapt.adapt.train.reporting import evaluate_stage, keep_best, network_fn
from uda_adapt.adapt.train.stage_io import RunContext, begin_stage, write_stage_checkpoint

STAGE = "self_train"


def final_tag(cfg) -> str:
    """The tag of the stage's last evaluation (eval_<tag>.json): the last IAST round, or the mean teacher's end."""
    return "mean_teacher" if cfg.self_train.method == "mean_teacher" else f"round{cfg.self_train.rounds}"


def self_train(ctx: RunContext, init: Checkpoint) -> None:
    """Run all rounds; `init` is the correlation-stage checkpoint (network + module)."""
    cfg, st = ctx.cfg, ctx.cfg.self_train
    start_info = begin_stage(ctx, STAGE)
    if start_info is None:
        return
    stage_dir, last_path, resume = start_info.stage_dir, start_info.last_path, start_info.resume

    module = None
    if st.lambda_ct > 0 or st.ct_pseudo_threshold > 0:
        payload = init.extra.get("correlation")
        if payload is None:
            raise UserError(f"self-training with lambda_ct={st.lambda_ct} needs a correlation checkpoint, but {init.stage!r} checkpoint has no correlation module; run the correlation stage first or set self_train.lambda_ct=0")
        module = load_correlation_module(payload, len(ctx.classes)).to(ctx.device).eval().requires_grad_(False)
        if st.method == "iast" and (module.needs_features or st.ct_pseudo_threshold > 0):
            raise UserError("correlation.query=features/both and self_train.ct_pseudo_threshold need the mean teacher; "
                            "set self_train.method=mean_teacher, or correlation.query=prediction and ct_pseudo_threshold=0")
    if resume is not None and resume.extra.get("method", "iast") != st.method:
        raise UserError(f"{last_path} was written by self_train.method={resume.extra.get('method', 'iast')!r} but the config says "
                        f"{st.method!r}; use another --out, or delete {last_path.parent} to start this stage over")
    if st.method == "mean_teacher":
        mean_teacher(ctx, init, start_info, module)
        return

    seed_everything(cfg.seed + 2)
    model = build_segmenter(init.model_name, len(ctx.classes), None)
    model.load_state_dict((resume or init).state_dict)
    model.to(ctx.device)

    target_plain = unlabelled_train_set(cfg.data.target, EvalTransform(size=cfg.data.target.base_size, mean=ctx.mean, std=ctx.std))
    source_stream = None
    if st.source_ce_weight > 0:
        source = labelled_train_set(cfg.data.source, train_transform(cfg, cfg.data.source, ctx.mean, ctx.std))
        source_stream = ctx.batch_stream(source, cfg.seed + 3)

    first_round, start, best = 0, 0, float("-inf")
    saved_optimizer, saved_stream, saved_teacher, saved_scaler = None, None, None, None
    if resume:
        first_round, start = resume.extra["round"], resume.extra["round_step"]
        best = resume.extra.get("best_miou", best)
        saved_optimizer, saved_stream = resume.extra.get("optimizer"), resume.extra.get("stream")
        saved_scaler = resume.extra.get("scaler")
        saved_teacher = resume.extra.get("round_teacher")
        restore_rng(resume.extra.get("rng"))
        if ctx.dist.is_main:
            print(f"{STAGE}: resuming round {first_round + 1} at iteration {start} from {last_path}")

    log = Logbook(stage_dir, ctx.tensorboard_dir, tag=STAGE, enabled=ctx.dist.is_main)
    try:
        for round_index in range(first_round, st.rounds):
            round_dir = stage_dir / f"round{round_index + 1}"
            mid_round = start > 0
            if st.target_bn and not mid_round:
                # Before the round's pseudo labels: target statistics (a resumed round has them in its weights).
                reestimate_batchnorm(model, target_plain, ctx.device, cfg.data.batch_size, dist=ctx.dist)
            if not decided_by_main(ctx.dist, lambda: pseudo_labels_ready(round_dir)):
                thresholds = ThresholdState.initial(len(ctx.classes), st.pseudo.init_threshold)
                stats, _ = write_pseudo_labels(model, target_plain, round_dir, thresholds, st.pseudo,
                                               per_round(st.pseudo.alpha, round_index), ctx.device, ctx.dist)
                log.write(round_index * st.iterations_per_round, pseudo_labelled_fraction=stats["labelled_fraction"],
                          **({"pseudo_label_accuracy": stats["accuracy_of_selected"]} if stats["accuracy_of_selected"] is not None else {}))
            lr = per_round(st.lrs, round_index)
            dataset = PseudoLabelDataset(unlabelled_train_set(cfg.data.target), round_dir / "pseudo",
                                         transform=train_transform(cfg, cfg.data.target, ctx.mean, ctx.std, jitter=0.0))
            stream = ctx.batch_stream(dataset, cfg.seed * 1000 + round_index)
            teacher = None
            if module is not None and st.ct_teacher in ("round", "teacher"):
                # The network as the round's pseudo labels saw it; a mid-round resume restores that copy.
                teacher = training_layout(copy.deepcopy(model), cfg, ctx.device).eval().requires_grad_(False)
                if mid_round and saved_teacher is not None:
                    teacher.load_state_dict(saved_teacher)
            model.train()
            if cfg.model.freeze_bn_in_adaptation:
                freeze_batchnorm(model)
            # After freezing: the optimizer (and DDP) hold exactly the parameters that train (a resumed one must match).
            network = training_network(model, cfg, ctx.device, ctx.dist)
            optimizer = make_optimizer(model.parameters(), st.optim, lr=lr)
            scaler = make_grad_scaler(ctx.device, cfg.amp)
            if saved_optimizer is not None and mid_round:
                optimizer.load_state_dict(saved_optimizer)
                restore_grad_scaler(scaler, saved_scaler)
                stream.state = StreamState(**saved_stream)

            def micro_loss(i: int):
                images, pseudo = stream.next()
                images, pseudo = images.to(ctx.device, non_blocking=True), pseudo.to(ctx.device, non_blocking=True)
                losses: dict[str, torch.Tensor] = {}
                with autocast(ctx.device, cfg.amp):
                    logits = network(images)
                    losses["pseudo_ce"] = segmentation_ce(logits, pseudo)
                    teacher_logits = None
                    if module is not None and teacher is not None:
                        with torch.no_grad():
                            teacher_logits = teacher(images)
                    if st.entropy_weight > 0:
                        losses["entropy"] = st.entropy_weight * entropy_on_ignored(logits, pseudo)
                    if st.kl_uniform_weight > 0:
                        losses["kl_uniform"] = st.kl_uniform_weight * kl_to_uniform_on_labelled(logits, pseudo)
                    if source_stream is not None:
                        src_images, src_labels = source_stream.next()
                        src_logits = network(src_images.to(ctx.device))
                        losses["source_ce"] = st.source_ce_weight * segmentation_ce(src_logits, src_labels.to(ctx.device))
                if module is not None:
                    # Outside autocast, as in the mean teacher: the module and the KL in fp32.
                    size = tuple(logits.shape[-2:])
                    # Pseudo labels mark padding and unlabelled pixels alike; the image tells them
                    # apart: padding is exactly 0 after normalisation, which no pixel value
                    # (x / 255 - mean) / std can be, since no ImageNet mean is a multiple of 1/255.
                    valid = images.abs().sum(dim=1) > 0
                    region = valid_mask_at(pseudo == IGNORE_INDEX, size) if st.ct_region == "unlabelled" else None
                    losses["ct_kl"] = ct_weight(cfg, round_index * st.iterations_per_round + i) * correlation_transfer_loss(
                        module, logits.float(), None if teacher_logits is None else teacher_logits.float(),
                        valid=valid_mask_at(valid, size), mask=region, target_temperature=st.ct_target_temperature)
                loss = sum(losses.values())
                return loss, {"loss": loss, **losses}

            def step(i: int) -> dict[str, float]:
                set_lr(optimizer, poly_lr(lr, i, st.iterations_per_round, st.optim.poly_power, st.optim.warmup))
                return optimizer_step(lambda: micro_loss(i), network=network, optimizer=optimizer, scaler=scaler,
                                      micro_steps=stream.accumulate)

            def save(done: int, round_index: int = round_index, complete: bool = False) -> None:
                write_stage_checkpoint(ctx, last_path, STAGE, model, round_index * st.iterations_per_round + done, {
                    "optimizer": optimizer.state_dict(),
                    "stream": vars(stream.state).copy(),
                    "round": round_index,
                    "round_step": done,
                    "method": "iast",
                    "rng": rng_state(),
                    "scaler": scaler.state_dict(),
                    "round_teacher": None if teacher is None else {k: v.detach().cpu() for k, v in teacher.state_dict().items()},
                    "best_miou": best,
                    "complete": complete,
                    "correlation": init.extra.get("correlation"),
                })

            tag = f"round{round_index + 1}"
            run_iterations(start=start, total=st.iterations_per_round, step_fn=step, save_fn=save, log=log,
                           log_every=cfg.logging.log_every, checkpoint_every=cfg.logging.checkpoint_every,
                           description=f"{STAGE} {tag}/{st.rounds}", last_good=last_path,
                           step_offset=round_index * st.iterations_per_round,
                           images_per_step=stream.batch_size + (source_stream.batch_size if source_stream else 0),
                           dist=ctx.dist, device=ctx.device, data_clock=ctx.data_clock,
                           evaluate=evaluation_every(ctx, model, stage_dir, log, tag, round_index * st.iterations_per_round),
                           evaluate_every=cfg.logging.eval_interval)
            revert_sync_batchnorm(model).eval()
            broadcast_buffers(model, ctx.dist)   # CPU ranks normalise alone: evaluate what rank 0 saves
            done_steps = (round_index + 1) * st.iterations_per_round
            result = evaluate_stage(ctx, network_fn(model), stage_dir, tag, done_steps, log)
            best = keep_best(result, best, lambda: write_stage_checkpoint(
                ctx, stage_dir / "best.pt", STAGE, model, done_steps, {"miou": result.miou, "round": round_index + 1, "complete": True}))
            start, saved_optimizer, saved_scaler = 0, None, None
            final = round_index + 1 == st.rounds
            # The round is over: the next resume starts the following round from scratch.
            write_stage_checkpoint(ctx, last_path, STAGE, model, done_steps, {
                "round": round_index + 1, "round_step": 0, "method": "iast", "rng": rng_state(),
                "best_miou": best, "complete": final, "correlation": init.extra.get("correlation"),
            })
    finally:
        log.close()
