"""Stage 3, method "mean_teacher": online self-training with an EMA teacher and ClassMix (DACS).

Each step:
    source batch  -> CE(student(xs), ys)   (xs colour-jittered by the pipeline unless `source_jitter: none`)
                   + FD (option): w_fd * |f(xs) - f_ImageNet(xs)| on thing-class cells (DAFormer)
    target batch  -> teacher(xt) (un-augmented, eval mode) -> pseudo labels yt, confidence weight
    ClassMix      -> xm = paste half of each source image's classes onto xt; ym likewise
    strong aug    -> colour jitter + blur on xm
    loss          += weighted CE(student(xm), ym)    (pasted pixels weigh 1, pseudo labels w_t)
                   + lambda_ct * KL(SA(p_teacher(xt)) || p_student(xm))  on target pixels of the mix
    MIC (option)  -> xk = blocks of strong_aug(xt) blanked;  loss += w_mic * weighted CE(student(xk), yt)
    teacher       <- EMA(teacher, student)
    module (opt.) <- one step of its source loss on the teacher's predictions of perturbed xs

Correlation transfer here follows the frozen module's view of the *teacher's* prediction: a
target that moves slowly (like the pseudo labels themselves), not the student's own output.
`self_train.export` chooses what the stage saves and exports: the student or the EMA teacher,
either with BatchNorm statistics re-estimated on the target at the end (`target_bn`).

Data-parallel: the student runs under DDP (`network`); each rank labels its own target images
with its own teacher, and the teachers stay identical because the students' parameters are
(DDP) and their BatchNorm buffers are made so (rank 0's) before every EMA update. ClassMix and
the strong augmentation are drawn for the global batch and applied per rank.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
from torch import nn

from uda_adapt.adapt.checkpoint import Checkpoint
from uda_adapt.adapt.class_weights import announced_class_weights
from uda_adapt.adapt.classes import IGNORE_INDEX
from uda_adapt.adapt.data.rare_class import rare_class_stream
from uda_adapt.adapt.data.transforms import EvalTransform
from uda_adapt.adapt.feature_distance import ImagenetFeatureDistance, imagenet_backbone
from uda_adapt.adapt.losses import correlation_transfer_loss, segmentation_ce, valid_mask_at, weighted_segmentation_ce
from uda_adapt.adapt.masking import block_masks, block_size_for, mask_images
from uda_adapt.adapt.mixing import StrongAugmentation, choose_classes, class_presence, mix, paste_masks
from uda_adapt.adapt.models import build_segmenter, upsample_logits
from uda_adapt.adapt.models.correlation import CorrelationModule, classifier_features, refine_pseudo_labels
from uda_adapt.adapt.pseudo_labels import pseudo_label_weight
from uda_adapt.adapt.teacher import ema_alpha, make_teacher, scheduled_alpha, update_teacher
from uda_adapt.adapt.train.batchnorm import batch_statistics, batchnorm_buffers, reestimate_batchnorm, track_batch_statistics
from uda_adapt.adapt.train.batches import BatchStream, StreamState, random_permutation
from uda_adapt.adapt.train.config import TrainConfig
from uda_adapt.adapt.train.correlation_refit import CorrelationRefit, make_refit
from uda_adapt.adapt.train.drift import DriftMonitor, write_drift_report
from uda_adapt.adapt.train.datasets import labelled_train_set, target_crop_set, train_transform, unlabelled_train_set
from uda_adapt.adapt.train.distributed import Distributed, broadcast_buffers, gather_batch, revert_sync_batchnorm
from uda_adapt.adapt.train.environment import (autocast, make_grad_scaler, restore_grad_scaler, restore_rng, rng_state, seed_everything,
                                     training_layout, training_network)
from uda_adapt.adapt.train.logbook import Logbook
from uda_adapt.adapt.train.loop import WHOLE_STEP, MicroStep, accumulated, backward_micro_step, evaluation_every, run_iterations
from uda_adapt.adapt.train.optim import make_optimizer, poly_lr, set_lr
from uda_adapt.adapt.train.reporting import evaluate_stage, keep_best, network_fn
from uda_adapt.adapt.train.correlation_stage import correlation_payload, module_fn
from uda_adapt.adapt.train.stage_io import RunContext, StageStart, write_stage_checkpoint

STAGE = "self_train"
FINAL_TAG = "mean_teacher"


@dataclass
class MeanTeacherState:
    """Everything one training step reads and changes (passed explicitly, saved in `last.pt`)."""

    student: nn.Module
    network: nn.Module                  # what the step calls: the student, under DDP when distributed
    teacher: nn.Module
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    source: BatchStream
    target: BatchStream
    generator: torch.Generator          # ClassMix choices and strong augmentation
    augment: StrongAugmentation
    module: CorrelationModule | None
    num_classes: int
    dist: Distributed
    refit: CorrelationRefit | None = None     # the module keeps fitting on the source (correlation_refit)
    drift: DriftMonitor | None = None
    feature_distance: ImagenetFeatureDistance | None = None   # DAFormer's ImageNet FD on the source batch
    source_class_weight: torch.Tensor | None = None           # (C,) weights of source pixels (source_class_weights)


def separate_mic_batch(src_images: torch.Tensor, src_labels: torch.Tensor, tgt_images: torch.Tensor, pseudo: torch.Tensor,
                       target_weights: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """MIC's "separate" masked batch: the first half (rounded down) of the source images with their
    labels (weight 1), then as many target images as complete the batch with their pseudo labels
    and weights; no strong augmentation. MIC, at 2 images per GPU, takes one of each
    (lhoyer/MIC seg/mmseg/models/uda/masking_consistency_module.py:97-104)."""
    count = src_images.shape[0]
    half = count // 2
    images = torch.cat([src_images[:half], tgt_images[:count - half]])
    labels = torch.cat([src_labels[:half], pseudo[:count - half]])
    weights = torch.cat([torch.ones_like(target_weights[:half]), target_weights[:count - half]])
    return images, labels, weights


def ct_weight(cfg: TrainConfig, step: int) -> float:
    """lambda_ct at `step`, rising linearly over `ct_warmup` iterations."""
    st = cfg.self_train
    if st.ct_warmup <= 0:
        return st.lambda_ct
    return st.lambda_ct * min(1.0, (step + 1) / st.ct_warmup)


def mean_teacher_step(state: MeanTeacherState, cfg: TrainConfig, step: int, device: torch.device,
                      micro: MicroStep = WHOLE_STEP) -> dict[str, float]:
    mt, st = cfg.self_train.mean_teacher, cfg.self_train
    set_lr(state.optimizer, poly_lr(mt.optim.lr, step, mt.iterations, mt.optim.poly_power, mt.optim.warmup))
    src_images, src_labels = (t.to(device, non_blocking=True) for t in state.source.next())
    tgt_images, tgt_valid_labels = (t.to(device, non_blocking=True) for t in state.target.next())
    target_valid = tgt_valid_labels != IGNORE_INDEX    # False on crop padding
    trusted = tgt_valid_labels == 0                    # image pixels outside the pseudo-label margins (MARGIN)

    bn_valid = target_valid if mt.teacher_bn_padding == "excluded" else None
    bn_mode = {"batch": lambda: batch_statistics(state.teacher, valid=bn_valid),
               "target": lambda: track_batch_statistics(state.teacher, dist=state.dist, valid=bn_valid)}.get(
                   mt.teacher_bn, contextlib.nullcontext)()
    wants_features = state.module is not None and state.module.needs_features   # correlation.query reads features
    recorder = classifier_features(state.teacher) if wants_features else contextlib.nullcontext()
    with torch.no_grad(), autocast(device, cfg.amp), bn_mode, recorder as seen:
        teacher_logits = state.teacher(tgt_images).float()
    teacher_features = seen[0].float() if wants_features else None
    teacher_probs = torch.softmax(upsample_logits(teacher_logits, tuple(tgt_images.shape[-2:])), dim=1)
    confidence, pseudo = teacher_probs.max(dim=1)
    if state.module is not None and st.ct_pseudo_threshold > 0:
        # The module makes the sparse pseudo labels dense where it is sure and the teacher is not.
        with torch.no_grad():
            attended = state.module.eval()(torch.softmax(teacher_logits, dim=1),
                                           valid=valid_mask_at(target_valid, tuple(teacher_logits.shape[-2:])), features=teacher_features)
        pseudo, confidence = refine_pseudo_labels(upsample_logits(attended, tuple(tgt_images.shape[-2:])), pseudo, confidence,
                                                  mt.confidence_threshold, st.ct_pseudo_threshold)
    pseudo = pseudo.masked_fill(~target_valid, IGNORE_INDEX)
    weight = pseudo_label_weight(confidence, mt.confidence_threshold, target_valid, mt.confidence_weight)   # (B,)

    # The random choices for the micro-step's images over all ranks, in the single-process order; this rank applies its part.
    global_batch, mine = state.source.micro_batch_size, state.dist.local_slice(state.source.micro_batch_size)
    presence = gather_batch(class_presence(src_labels, state.num_classes).to(torch.uint8), state.dist).bool()
    paste = paste_masks(src_labels, choose_classes(presence, state.generator)[mine])
    plans = state.augment.draw(global_batch, state.generator)[mine]
    mixed_images = state.augment.apply(mix(paste, src_images, tgt_images), plans)
    mixed_labels = mix(paste, src_labels, pseudo)
    # Pseudo labels in the margins weigh 0 (MIC: `pseudo_weight *= valid_pseudo_mask`); pasted source pixels 1 (or their class's weight).
    target_weights = weight.view(-1, 1, 1) * trusted
    weigh_pasted = state.source_class_weight is not None and mt.pasted_class_weights
    source_weights = state.source_class_weight.to(device)[src_labels.long().clamp(0, state.num_classes - 1)] \
        if weigh_pasted else torch.ones_like(confidence)   # clamp: ignore pixels are never pasted
    pixel_weights = torch.where(paste, source_weights, target_weights)

    losses: dict[str, torch.Tensor] = {}
    with autocast(device, cfg.amp):
        src_logits = state.network(src_images)
        losses["source_ce"] = segmentation_ce(src_logits, src_labels, class_weight=state.source_class_weight)
        if state.feature_distance is not None:
            # Part of DAFormer's source loss (dacs.py:249-252), on the features of the forward just run.
            losses["imnet_fd"] = state.feature_distance.loss(src_images, src_labels)
        mixed_logits = state.network(mixed_images)
        losses["mixed_ce"] = weighted_segmentation_ce(mixed_logits, mixed_labels, pixel_weights)
    masked_logits = None
    if mt.mic.enabled:
        # Labels of the masked image are the teacher's of the full, un-augmented target image.
        block = block_size_for(tuple(tgt_images.shape[-2:]), mt.mic.block_fraction)
        masks = block_masks(global_batch, tuple(tgt_images.shape[-2:]), mt.mic.ratio, block, state.generator)[mine]
        if mt.mic.mode == "separate":
            masked_images, masked_labels, masked_weights = separate_mic_batch(src_images, src_labels, tgt_images, pseudo, target_weights)
        else:   # "separatetrgaug": the target batch with its own strong augmentation
            masked_plans = state.augment.draw(global_batch, state.generator)[mine]
            masked_images, masked_labels, masked_weights = state.augment.apply(tgt_images, masked_plans), pseudo, target_weights
        with autocast(device, cfg.amp):
            masked_logits = state.network(mask_images(masked_images, masks))
            losses["masked_ce"] = mt.mic.weight * weighted_segmentation_ce(masked_logits, masked_labels, masked_weights)
    lambda_ct = ct_weight(cfg, step)
    if state.module is not None and lambda_ct > 0:
        if st.ct_input == "masked":
            student_logits, region_full = masked_logits, target_valid   # every target pixel of the masked image
        else:
            student_logits, region_full = mixed_logits, ~paste & target_valid   # target pixels of the mix
        size = tuple(student_logits.shape[-2:])
        valid = valid_mask_at(target_valid, size)
        region = valid_mask_at(region_full, size)
        if st.ct_region == "unlabelled":
            region &= valid_mask_at(confidence < mt.confidence_threshold, size)
        state.module.eval()
        losses["ct_kl"] = lambda_ct * correlation_transfer_loss(
            state.module, student_logits.float(), teacher_logits, valid=valid, mask=region,
            target_temperature=st.ct_target_temperature, features=teacher_features)
    loss = sum(losses.values())
    backward_micro_step(loss, micro, state.optimizer, state.scaler)
    if micro.last:   # after the optimizer step
        broadcast_buffers(state.student, state.dist)
        alpha = ema_alpha(step, scheduled_alpha(mt.ema_alpha, mt.ema_horizon, mt.iterations))
        update_teacher(state.teacher, state.student, alpha, buffers=mt.teacher_bn != "target")
    record = {"loss": loss.item(), "pseudo_weight": weight.mean().item(), **{k: v.item() for k, v in losses.items()}}
    if micro.last and state.refit is not None and state.refit.due(step):
        record["module_fit"] = state.refit.step(src_images, src_labels, src_logits, state.teacher, cfg,
                                                state.generator, state.dist, global_batch)
    if state.drift is not None:
        record.update(state.drift.update(pseudo, src_labels, src_logits.detach()))   # label-free drift signals
    return record


def mean_teacher(ctx: RunContext, init: Checkpoint, start_info: StageStart, module: CorrelationModule | None) -> None:
    """Run the mean-teacher stage from `init` (a source or correlation checkpoint), or resume it."""
    cfg, mt = ctx.cfg, ctx.cfg.self_train.mean_teacher
    stage_dir, last_path, resume = start_info.stage_dir, start_info.last_path, start_info.resume
    seed_everything(cfg.seed + 2)

    student = build_segmenter(init.model_name, len(ctx.classes), None).to(ctx.device)
    target_plain = unlabelled_train_set(cfg.data.target, EvalTransform(size=cfg.data.target.base_size, mean=ctx.mean, std=ctx.std))
    if resume:
        student.load_state_dict(resume.state_dict)
    else:
        student.load_state_dict(init.state_dict)
        if cfg.self_train.target_bn:
            # The teacher's first pseudo labels come from target statistics, not source ones.
            reestimate_batchnorm(student, target_plain, ctx.device, cfg.data.batch_size, dist=ctx.dist)
    teacher = training_layout(make_teacher(student), cfg, ctx.device)   # the student's is set with `network` below
    if resume:
        teacher.load_state_dict(resume.extra["teacher"])
    if module is not None and resume and resume.extra.get("live_correlation"):
        module.load_state_dict(resume.extra["live_correlation"]["state_dict"])

    source_set = labelled_train_set(cfg.data.source, train_transform(cfg, cfg.data.source, ctx.mean, ctx.std,
                                                                     jitter=0.0 if mt.source_jitter == "none" else None))
    order, min_class_pixels = random_permutation, 0.0
    if mt.rare_class_sampling:
        order, min_class_pixels = rare_class_stream(source_set, len(ctx.classes), mt.rcs_temperature, mt.rcs_min_pixels,
                                                    mt.rcs_min_crop_ratio)
    fd = None
    if mt.imnet_feature_distance.weight > 0:
        # Rebuilt from model.pretrained at every start, resumes included: never saved, never exported.
        imagenet = imagenet_backbone(init.model_name, len(ctx.classes), cfg.model.pretrained, ctx.device)
        fd = ImagenetFeatureDistance(student, training_layout(imagenet, cfg, ctx.device), init.model_name,
                                     mt.imnet_feature_distance, len(ctx.classes))   # hooks the student: after the teacher's copy
    state = MeanTeacherState(
        student=student,
        network=training_network(student, cfg, ctx.device, ctx.dist),
        teacher=teacher,
        optimizer=make_optimizer(student.parameters(), mt.optim),
        scaler=make_grad_scaler(ctx.device, cfg.amp),
        source=ctx.batch_stream(source_set, cfg.seed + 3, order=order, min_class_pixels=min_class_pixels),
        target=ctx.batch_stream(target_crop_set(cfg, ctx.mean, ctx.std), cfg.seed + 4),
        generator=torch.Generator().manual_seed(cfg.seed + 5),
        augment=StrongAugmentation(ctx.mean, ctx.std, mt.jitter_strength, mt.jitter_p, mt.blur_p),
        module=module,
        num_classes=len(ctx.classes),
        dist=ctx.dist,
        refit=make_refit(module, cfg, ctx.mean, ctx.std, ctx.device, ctx.dist),
        drift=DriftMonitor(len(ctx.classes)),
        feature_distance=fd,
        source_class_weight=announced_class_weights(source_set, ctx.classes, mt.source_class_weights, mt.rcs_min_pixels,
                                                    f"{STAGE}: source pixels' " if ctx.dist.is_main else None),
    )
    start, best = 0, float("-inf")
    if resume:
        state.optimizer.load_state_dict(resume.extra["optimizer"])
        state.source.state = StreamState(**resume.extra["source_stream"])
        state.target.state = StreamState(**resume.extra["target_stream"])
        state.generator.set_state(resume.extra["generator"])
        restore_grad_scaler(state.scaler, resume.extra.get("scaler"))
        if state.refit is not None:
            state.refit.load_state_dict(resume.extra["correlation_refit"])
        if "drift" in resume.extra:
            state.drift.load_state_dict(resume.extra["drift"])
        restore_rng(resume.extra["rng"])
        start, best = resume.step, resume.extra.get("best_miou", best)
        if ctx.dist.is_main:
            print(f"{STAGE}: resuming mean teacher at iteration {start} from {last_path}")

    def save(done: int, complete: bool = False, exported: nn.Module = student, training_bn: dict | None = None) -> None:
        write_stage_checkpoint(ctx, last_path, STAGE, exported, done, {
            "method": "mean_teacher",
            "exported": cfg.self_train.export if complete else "student",
            "student": {k: v.detach().cpu() for k, v in student.state_dict().items()} if complete else None,
            # The student's BatchNorm statistics before the end-of-stage re-estimation (`eval --network
            # student-training-bn`): the re-estimation is a choice that must stay checkable on tune.
            "student_training_bn": training_bn,
            "teacher": {k: v.detach().cpu() for k, v in teacher.state_dict().items()},
            "live_correlation": correlation_payload(ctx, module) if state.refit is not None else None,
            "correlation_refit": state.refit.state_dict() if state.refit is not None else None,
            "drift": state.drift.state_dict(),
            "optimizer": state.optimizer.state_dict(),
            "scaler": state.scaler.state_dict(),
            "source_stream": vars(state.source.state).copy(),
            "target_stream": vars(state.target.state).copy(),
            "generator": state.generator.get_state(),
            "rng": rng_state(),
            "best_miou": best,
            "complete": complete,
            "correlation": init.extra.get("correlation"),
        })

    log = Logbook(stage_dir, ctx.tensorboard_dir, tag=STAGE, enabled=ctx.dist.is_main)
    try:
        student.train()
        run_iterations(start=start, total=mt.iterations,
                       step_fn=accumulated(lambda i, micro: mean_teacher_step(state, cfg, i, ctx.device, micro), state.network,
                                           state.source.accumulate), save_fn=save, log=log,
                       log_every=cfg.logging.log_every, checkpoint_every=cfg.logging.checkpoint_every,
                       description=f"{STAGE} (mean teacher)", last_good=last_path,
                       images_per_step=state.source.batch_size + state.target.batch_size,
                       dist=ctx.dist, device=ctx.device, data_clock=ctx.data_clock, evaluate_every=cfg.logging.eval_interval,
                       evaluate=evaluation_every(ctx, teacher if cfg.self_train.export == "teacher" else student, stage_dir, log, FINAL_TAG))
        revert_sync_batchnorm(student).eval()
        training_bn = batchnorm_buffers(student)
        if cfg.self_train.target_bn:
            # Training left running statistics averaged over source and mixed batches; the
            # exported network sees the target only (+6 to 7 mIoU on the synthetic benchmark).
            reestimate_batchnorm(student, target_plain, ctx.device, cfg.data.batch_size, dist=ctx.dist)
            reestimate_batchnorm(teacher, target_plain, ctx.device, cfg.data.batch_size, dist=ctx.dist)
        exported, other = (teacher, "student") if cfg.self_train.export == "teacher" else (student, "teacher")
        evaluate_stage(ctx, network_fn(student if other == "student" else teacher), stage_dir, other, mt.iterations, log)   # diagnostic
        if state.refit is not None:
            module.eval()
            evaluate_stage(ctx, module_fn(exported, module), stage_dir, "network+live_module", mt.iterations, log)   # diagnostic
        result = evaluate_stage(ctx, network_fn(exported), stage_dir, FINAL_TAG, mt.iterations, log)
        if ctx.dist.is_main:
            write_drift_report(stage_dir, STAGE, ctx.classes, state.drift)
        best = keep_best(result, best, lambda: write_stage_checkpoint(
            ctx, stage_dir / "best.pt", STAGE, exported, mt.iterations, {"miou": result.miou, "complete": True}))
        save(mt.iterations, complete=True, exported=exported, training_bn=training_bn)
    finally:
        log.close()
        if fd is not None:
            fd.close()

