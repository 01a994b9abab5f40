"""Stage 2: fit the correlation module on the source domain only, the network frozen.

What the module learns here (which pixels' predictions should agree) comes from source
labels alone, so it carries no target-domain bias into self-training. The fitting inputs
(`FitInputs`, `network_outputs`) are shared with the live refit and the correlation gate
(benchmarks/correlation_gate.py), so that what the gate measures is what training fits.
"""

from __future__ import annotations

import contextlib
import copy

import torch
from torch import nn

from uda_adapt.adapt.checkpoint import Checkpoint
from uda_adapt.adapt.data import open_dataset
from uda_adapt.adapt.data.transforms import EvalTransform
from uda_adapt.adapt.evaluation import evaluate
from uda_adapt.adapt.losses import correlation_fit_loss
from uda_adapt.adapt.masking import block_masks, block_size_for, mask_images
from uda_adapt.adapt.mixing import StrongAugmentation
from uda_adapt.adapt.models import build_segmenter
from uda_adapt.adapt.models.correlation import CorrelationModule, classifier_features, feature_channels_of
from uda_adapt.adapt.train.batches import StreamState
from uda_adapt.adapt.train.batchnorm import reestimate_batchnorm
from uda_adapt.adapt.train.config import CorrelationConfig, TrainConfig
from uda_adapt.adapt.train.datasets import labelled_train_set, train_transform, unlabelled_train_set
from uda_adapt.adapt.train.environment import autocast, restore_rng, rng_state, seed_everything, training_network
from uda_adapt.adapt.train.logbook import Logbook
from uda_adapt.adapt.train.loop import WHOLE_STEP, MicroStep, accumulated, backward_micro_step, run_iterations
from uda_adapt.adapt.train.optim import make_optimizer, poly_lr, set_lr
from uda_adapt.adapt.train.reporting import evaluate_stage
from uda_adapt.adapt.train.stage_io import RunContext, begin_stage, write_stage_checkpoint
from uda_adapt.common.errors import UserError

STAGE = "correlation"


def build_correlation_module(c: CorrelationConfig, num_classes: int, network: nn.Module | None = None) -> CorrelationModule:
    """The module `c` describes; `network` gives the feature width when q/k read features."""
    if not 0 <= c.fit_mask_ratio < 1:
        raise UserError(f"correlation.fit_mask_ratio must be in [0, 1), got {c.fit_mask_ratio}")
    if not 0 < c.fit_mask_block <= 1:
        raise UserError(f"correlation.fit_mask_block must be in (0, 1], got {c.fit_mask_block}")
    if c.early_stop_every < 0 or c.early_stop_images < 1:
        raise UserError("correlation.early_stop_every must be >= 0 and correlation.early_stop_images >= 1, "
                        f"got {c.early_stop_every} and {c.early_stop_images}")
    channels = feature_channels_of(network) if c.query != "prediction" and network is not None else 0
    return CorrelationModule(num_classes, dim=c.dim, value=c.value, spatial=c.spatial, temperature=c.temperature,
                             value_bias=c.value_bias, query=c.query, feature_channels=channels, window=c.window,
                             position_bias=c.position_bias, upsample=c.upsample)


def correlation_payload(ctx: RunContext | None, module: CorrelationModule) -> dict:
    """What a checkpoint keeps of the module: its weights and the arguments that rebuild it.

    Everything is read from the module itself (`ctx` is not needed), so a refitted or variant
    module is saved as it is, not as the config describes it."""
    return {"state_dict": {k: v.detach().cpu() for k, v in module.state_dict().items()}, **module.config()}


def load_correlation_module(payload: dict, num_classes: int) -> CorrelationModule:
    """Rebuild a module from `correlation_payload`, including those saved before the variant keys."""
    state = payload["state_dict"]
    # Keys missing from older payloads take the constructor's defaults (no position bias, upsample 1).
    options = {key: payload[key] for key in ("temperature", "query", "feature_channels", "window", "position_bias", "upsample")
               if key in payload}
    # Older payloads carry no value_bias key: their learned value projection had a bias.
    options["value_bias"] = payload.get("value_bias", "value_proj.bias" in state)
    module = CorrelationModule(num_classes, dim=payload["dim"], value=payload["value"], spatial=payload["spatial"], **options)
    module.load_state_dict(state)
    return module


class FitInputs:
    """The source images the module is fitted on: colour-jittered and blurred
    (`fit_perturbation`), then block-masked MIC-style (`fit_mask_ratio`), so that the network's
    predictions carry errors that context can fix, as on the target.

    Random draws come from an explicit generator, drawn for the global batch; each rank applies
    its `local` slice.
    """

    def __init__(self, c: CorrelationConfig, mean, std) -> None:
        self.perturb = None
        if c.fit_perturbation > 0:
            self.perturb = StrongAugmentation(mean, std, jitter_strength=c.fit_perturbation, jitter_p=1.0, blur_p=0.5)
        self.mask_ratio, self.mask_block = c.fit_mask_ratio, c.fit_mask_block

    def __call__(self, images: torch.Tensor, generator: torch.Generator, count: int | None = None,
                 local: slice = slice(None)) -> torch.Tensor:
        count = images.shape[0] if count is None else count
        if self.perturb is not None:
            images = self.perturb.apply(images, self.perturb.draw(count, generator)[local])
        if self.mask_ratio > 0:
            size = tuple(images.shape[-2:])
            masks = block_masks(count, size, self.mask_ratio, block_size_for(size, self.mask_block), generator)[local]
            images = mask_images(images, masks)
        return images


def image_pixels(images: torch.Tensor) -> torch.Tensor:
    """(B, H, W) bool: pixels with image content, False on crop padding.

    Training crops are padded with exactly 0 after normalisation, which no pixel value
    (x / 255 - mean) / std can be (no ImageNet mean is a multiple of 1/255). Take it before any
    perturbation, which moves the padding's values too.
    """
    return images.abs().sum(dim=1) > 0


def network_outputs(network: nn.Module, images: torch.Tensor, with_features: bool, amp: str = "fp32"
                    ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The frozen network's float logits (B, C, h, w) and, when asked, its penultimate features."""
    recorder = classifier_features(network) if with_features else contextlib.nullcontext()
    with torch.no_grad(), autocast(images.device, amp), recorder as seen:
        logits = network(images).float()
    return logits, (seen[0].float() if with_features else None)


def module_fn(network, module):
    """network followed by module, as log-probabilities: the diagnostic "network + module"."""
    def run(images: torch.Tensor) -> torch.Tensor:
        logits, features = network_outputs(network, images, module.needs_features)
        return module.log_probs(torch.softmax(logits, dim=1), features=features)
    return run


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
    clean_network = network   # source BatchNorm statistics: what early stopping scores on source val
    if stage_cfg.fit_bn == "target":
        # Fitted through target statistics, as the adapted teacher it will teach predicts.
        network = copy.deepcopy(network)
        target_plain = unlabelled_train_set(cfg.data.target, EvalTransform(size=cfg.data.target.base_size, mean=ctx.mean, std=ctx.std))
        reestimate_batchnorm(network, target_plain, ctx.device, cfg.data.batch_size, dist=ctx.dist)
    module = build_correlation_module(stage_cfg, len(ctx.classes), network)
    if resume:
        module = load_correlation_module(resume.extra["correlation"], len(ctx.classes))
    module.to(ctx.device).train()

    dataset = labelled_train_set(cfg.data.source, train_transform(cfg, cfg.data.source, ctx.mean, ctx.std))
    stream = ctx.batch_stream(dataset, cfg.seed + 1)
    trained_module = training_network(module, cfg, ctx.device, ctx.dist)
    optimizer = make_optimizer(module.parameters(), stage_cfg.optim)
    fit_inputs = FitInputs(stage_cfg, ctx.mean, ctx.std)
    generator = torch.Generator().manual_seed(cfg.seed + 6)
    early = EarlyStop(stage_cfg, cfg, ctx) if stage_cfg.early_stop_every > 0 else None
    start = 0
    if resume:
        optimizer.load_state_dict(resume.extra["optimizer"])
        stream.state = StreamState(**resume.extra["stream"])
        generator.set_state(resume.extra["generator"])
        restore_rng(resume.extra.get("rng"))
        if early is not None and resume.extra.get("early_stop"):
            early.load_state_dict(resume.extra["early_stop"])
        start = resume.step
        if ctx.dist.is_main:
            print(f"{STAGE}: resuming at iteration {start} from {last_path}")

    def step(i: int, micro: MicroStep = WHOLE_STEP) -> dict[str, float]:
        set_lr(optimizer, poly_lr(stage_cfg.optim.lr, i, stage_cfg.iterations, stage_cfg.optim.poly_power, stage_cfg.optim.warmup))
        images, labels = stream.next()
        images, labels = images.to(ctx.device, non_blocking=True), labels.to(ctx.device, non_blocking=True)
        valid = image_pixels(images)
        images = fit_inputs(images, generator, stream.micro_batch_size, ctx.dist.local_slice(stream.micro_batch_size))
        logits, features = network_outputs(network, images, module.needs_features, cfg.amp)
        loss = correlation_fit_loss(trained_module, logits, labels, valid=valid, class_balanced=stage_cfg.fit_class_balanced, features=features)
        backward_micro_step(loss, micro, optimizer)
        record = {"loss": loss.item()}
        if micro.last and early is not None and (i + 1) % stage_cfg.early_stop_every == 0:
            record["source_val_miou"] = early.observe(i + 1, clean_network, module)
        return record

    def save(done: int, complete: bool = False) -> None:
        write_stage_checkpoint(ctx, last_path, STAGE, clean_network, done, {
            "optimizer": optimizer.state_dict(),
            "stream": vars(stream.state).copy(),
            "generator": generator.get_state(),
            "rng": rng_state(),
            "correlation": correlation_payload(ctx, module),
            "early_stop": early.state_dict() if early is not None else None,
            "complete": complete,
        })

    log = Logbook(stage_dir, ctx.tensorboard_dir, tag=STAGE, enabled=ctx.dist.is_main)
    try:
        run_iterations(start=start, total=stage_cfg.iterations, step_fn=accumulated(step, trained_module, stream.accumulate),
                       save_fn=save, log=log, log_every=cfg.logging.log_every, checkpoint_every=cfg.logging.checkpoint_every,
                       description=STAGE, last_good=last_path, images_per_step=stream.batch_size,
                       dist=ctx.dist, device=ctx.device, data_clock=ctx.data_clock)
        if early is not None and early.best_state is not None:
            module.load_state_dict(early.best_state)
            if ctx.dist.is_main:
                print(f"{STAGE}: keeping the module of iteration {early.best_step} "
                      f"(source val mIoU {100 * early.best_score:.2f} as network + module)")
        module.eval()
        # Diagnostic only: the network followed by the module at test time. The deployed
        # model is the network alone; this shows what the module would teach on the target.
        evaluate_stage(ctx, module_fn(clean_network, module), stage_dir, "network+module", stage_cfg.iterations, log)
        save(stage_cfg.iterations, complete=True)
    finally:
        log.close()


class EarlyStop:
    """Keeps the module that scored best as network + module on clean source val (labelled in any UDA setting)."""

    def __init__(self, c: CorrelationConfig, cfg: TrainConfig, ctx: RunContext) -> None:
        spec = cfg.data.source
        dataset = open_dataset(spec.kind, spec.root, spec.val_split, require_labels=True,
                               transform=EvalTransform(size=cfg.data.eval_size, mean=ctx.mean, std=ctx.std))
        self.dataset = torch.utils.data.Subset(dataset, range(min(c.early_stop_images, len(dataset))))
        self.dataset.classes, self.dataset.has_labels = dataset.classes, True
        self.device = ctx.device
        self.best_state: dict | None = None
        self.best_score, self.best_step = float("-inf"), 0

    def observe(self, step: int, network: nn.Module, module: CorrelationModule) -> float:
        """Score the module now; remember it when it is the best so far. Returns the mIoU (fraction)."""
        module.eval()
        score = evaluate(module_fn(network, module), self.dataset, device=self.device, progress=False).miou
        module.train()
        if score > self.best_score:
            self.best_score, self.best_step = score, step
            self.best_state = {k: v.detach().cpu().clone() for k, v in module.state_dict().items()}
        return score

    def state_dict(self) -> dict:
        return {"best_state": self.best_state, "best_score": self.best_score, "best_step": self.best_step}

    def load_state_dict(self, state: dict) -> None:
        self.best_state, self.best_score, self.best_step = state["best_state"], state["best_score"], state["best_step"]
