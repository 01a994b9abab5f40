"""Every training setting in one place, with its default and why.

Loaded from YAML by `adapt.config.load_config(TrainConfig, path, overrides)`; the resolved
config is saved inside every checkpoint so a run can be reproduced from any of its files.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from uda_adapt.adapt.class_weights import ClassWeighting
# The mean teacher's settings and the optimiser's live in their own modules; named here, so that
# every setting is reachable from this one (and type hints resolve).
from uda_adapt.adapt.train.mean_teacher_config import ImnetFeatureDistanceConfig, MeanTeacherConfig, MicConfig  # noqa: F401
from uda_adapt.adapt.train.optim_config import OptimConfig

STAGES = ("source", "correlation", "self_train")


@dataclass
class DatasetConfig:
    kind: str = "folder"                 # folder | gta5 | synthia | cityscapes
    root: str = ""
    train_split: str = "train"
    val_split: str = "val"
    # Resize (H, W) before random scaling, per domain (GTA5 1052x1914 -> 720x1280, Cityscapes
    # 1024x2048 -> 512x1024); also the network input for this domain's pseudo labels. None: as is.
    base_size: tuple[int, int] | None = None


@dataclass
class DataConfig:
    source: DatasetConfig = field(default_factory=lambda: DatasetConfig(root="data/synthetic/source"))
    target: DatasetConfig = field(default_factory=lambda: DatasetConfig(root="data/synthetic/target"))
    crop_size: tuple[int, int] = (128, 256)               # (H, W) of training crops
    scale_range: tuple[float, float] = (0.75, 1.25)       # random rescale before cropping
    flip: bool = True
    jitter: float = 0.2                                   # colour jitter strength on source images
    eval_size: tuple[int, int] | None = None              # network input size for evaluation; labels stay full resolution
    batch_size: int = 8                                    # images per optimizer step, over all processes (the global batch)
    # Micro-steps per optimizer step (gradient accumulation): each forward takes batch_size / accumulate
    # images over all processes, so a global batch too large for the GPUs' memory still trains as one.
    accumulate: int = 1
    num_workers: int = 0                                   # DataLoader workers; 0 keeps 2-core machines responsive
    pin_memory: bool = True                                # page-locked batches for faster host-to-GPU copies (CUDA only)
    val_limit: int = 0                                     # evaluate on the first N val images only (0 = all)


@dataclass
class ModelConfig:
    name: str = "small"
    pretrained: str | None = None          # None, "imagenet", or a local weight file
    freeze_bn_in_adaptation: bool = True   # IAST freezes BatchNorm statistics on the target


@dataclass
class SourceStageConfig:
    iterations: int = 600
    optim: OptimConfig = field(default_factory=OptimConfig)
    # Rare-class sampling of the source batches, as self_train.mean_teacher's (same keys and
    # meaning). The source network is what self-training starts from: a class it never learns
    # (rider and bicycle score 0 even on source val here) cannot reach the pseudo labels.
    rare_class_sampling: bool = False
    rcs_temperature: float = 0.01
    rcs_min_pixels: int = 3000
    rcs_min_crop_ratio: float = 0.5
    # Per-class weights of the cross-entropy from the labels' class shares ("enet": ENet's
    # 1 / ln(1.02 + p_c), rescaled to a mean of 1 per pixel; "enet_sqrt": their square root; adapt/class_weights.py). "none": 1.
    class_weights: ClassWeighting = "none"


@dataclass
class CorrelationConfig:
    dim: int = 64                                           # q/k projection width d
    # "learned": softmax(log p + gamma * attention(Wv p)), gamma from 0, so the module starts as the
    # identity and only departs from p where source labels say so. "prediction" (v = p, a convex
    # combination of probability vectors) lost 3.6 mIoU on source val when fitted; see docs/results.md.
    value: Literal["prediction", "learned"] = "learned"
    # How q/k see position. "none": affinity from class similarity alone; "conv3x3" (a 3x3 neighbourhood
    # of probabilities) gained the most on the tune split as network + module (+2.1 mIoU on an older
    # source network, docs/results.md); on today's adapted teacher the gate measures this default at
    # -12.4 mIoU on tune (benchmarks/results/correlation_gate.md): why CT stays off by default.
    spatial: Literal["none", "conv3x3", "posenc"] = "conv3x3"
    iterations: int = 150
    # Fit on the network's predictions of source images under colour jitter of this strength
    # (p 1) and blur (p 0.5): predictions with errors to correct, as on the target. 0 fits on
    # clean crops, where the network is almost perfect and the module learns near-identity.
    fit_perturbation: float = 0.5
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(lr=1e-2))
    # Variants, measured by benchmarks/correlation_gate.py (benchmarks/results/correlation_gate.md).
    temperature: float = 1.0               # attention softmax temperature (q . k / (sqrt(d) * T))
    # A per-class bias in the learned value projection lets the module learn a global class-prior
    # shift (the same offset at every pixel) instead of correlations; checkpoints from before this
    # key load with the bias they were fitted with.
    value_bias: bool = False
    query: Literal["prediction", "features", "both"] = "prediction"   # q/k from p, the network's detached features, or both
    window: int = 0                        # 0: global attention; odd w: each cell attends to its w x w neighbours
    # A learned logit per (dy, dx) offset of the window, added to q . k, from 0 (needs a window).
    position_bias: bool = False
    # Attend at a finer stride: p and the features upsampled bilinearly by this factor, SA(p) averaged
    # back to the network's stride, so a thin object under one cell covers u^2 tokens (1: off).
    upsample: int = 1
    # Fit inputs with errors context can fix: a share of MIC-style blocks blanked (0: none) of
    # `fit_mask_block` x the crop's short side, and the network's BatchNorm statistics ("source",
    # or "target": re-estimated on target train images, as the teacher it will teach).
    fit_mask_ratio: float = 0.0
    fit_mask_block: float = 0.125
    fit_bn: Literal["source", "target"] = "source"
    fit_class_balanced: bool = False       # mean over classes of each class's NLL, not over pixels
    # Every N iterations score network + module on clean source val (its first `early_stop_images`
    # images) and keep the best module seen (0: keep the last).
    early_stop_every: int = 0
    early_stop_images: int = 50


@dataclass
class PseudoLabelConfig:
    mode: Literal["iast", "fixed"] = "iast"
    init_threshold: float = 0.9            # starting per-class threshold
    alpha: tuple[float, ...] = (0.2, 0.25, 0.3)   # IAST proportion per round (last value repeats)
    beta: float = 0.9                      # EMA momentum of the thresholds
    gamma: float = 8.0                     # IAST instance-adaptive exponent
    fixed_threshold: float = 0.9           # mode "fixed" only


@dataclass
class CorrelationRefitConfig:
    """Keep fitting the correlation module during self-training, on the source only.

    Every `every` steps the module takes one step of its stage-2 loss on the current network's
    predictions of the (perturbed) source batch, against the source labels: it keeps correcting
    the network it teaches, not the source-only network it was first fitted on. The network's
    gradients stop at the module's input. 0 keeps the module frozen (the paper's procedure).
    """

    every: int = 0
    # Whose predictions it is fitted on: the EMA "teacher" (the predictions CT refines on the
    # target) or the "student" (its source-batch logits of the step, detached; no extra forward).
    network: Literal["teacher", "student"] = "teacher"


@dataclass
class SelfTrainConfig:
    # "iast": rounds of offline pseudo labels with class-balanced thresholds (IAST);
    # "mean_teacher": an EMA teacher labels each target batch online, ClassMix with source (DACS).
    method: Literal["iast", "mean_teacher"] = "mean_teacher"
    # Re-estimate BatchNorm statistics on target train images (AdaBN) before adapting, and for
    # IAST before each round's pseudo labels: +6 mIoU on the synthetic benchmark with no training.
    target_bn: bool = True
    rounds: int = 3
    iterations_per_round: int = 200
    lrs: tuple[float, ...] = (3e-4, 2.5e-4, 2e-4)   # per round (last value repeats), IAST's decreasing schedule scaled to the small model
    # Weight of KL(SA(p_teacher) || p_student); 0 (the default) is plain self-training, 0.1 the
    # weight to try it at. Correlation transfer is opt-in: with the current mean teacher it cost
    # 1.05 (day) and 1.44 (night) mIoU on the tune splits, negative in 9 of 10 paired runs (docs/results.md
    # ablation, 5 seeds); 1.0 collapsed by about 9 points.
    lambda_ct: float = 0.0
    # What the frozen module attends over: "online", the network's current prediction (the target
    # moves with every step); "round", a copy of the network frozen when the round's pseudo
    # labels are made (IAST); "teacher", the EMA teacher's prediction of the un-augmented target
    # image (mean teacher; for IAST the same as "round").
    ct_teacher: Literal["online", "round", "teacher"] = "teacher"
    # Where the KL applies: "all" valid target pixels, or only those the pseudo label leaves out
    # ("unlabelled": IAST's ignored pixels; mean teacher's pixels under the confidence threshold).
    ct_region: Literal["all", "unlabelled"] = "all"
    ct_warmup: int = 0                      # iterations over which lambda_ct rises linearly from 0
    # Sharpen the KL target SA(p) with this temperature (q^(1/T), renormalised; 1: as is): a softer
    # target than p lowers the student's and then the teacher's confidence.
    ct_target_temperature: float = 1.0
    # Mean teacher: the module refines the pseudo labels. Where the teacher is under
    # mean_teacher.confidence_threshold and the module's SA(p) is at least this sure, the pseudo
    # label is SA(p)'s argmax and the pixel counts as confident in the pseudo-label weight (0: off).
    ct_pseudo_threshold: float = 0.0
    # Mean teacher: which student prediction follows SA(p_teacher): the ClassMix "mixed" image's
    # target pixels, or the MIC "masked" image (needs mean_teacher.mic.enabled), where the
    # module's dense target fills in what MIC's sparse pseudo labels leave out.
    ct_input: Literal["mixed", "masked"] = "mixed"
    correlation_refit: CorrelationRefitConfig = field(default_factory=CorrelationRefitConfig)
    # Mean teacher: which network the stage saves, evaluates as the result and exports: the
    # "student" or its EMA "teacher". The default, decided on both tune splits over 5 seeds
    # (benchmarks/results/export_choice.md): a tie (teacher - student +0.10 +- 0.75), and the teacher
    # is never further behind (worst 1.46 points against the student's 1.50: a near coin toss;
    # on val, not chosen on, the teacher leads in 9 of 10 seeds). Either has its BatchNorm statistics re-estimated
    # on the target train images at the end when `target_bn` is on. IAST has one network and
    # exports it whatever this says.
    export: Literal["student", "teacher"] = "teacher"
    source_ce_weight: float = 0.0          # optional source cross-entropy during self-training
    entropy_weight: float = 0.0            # IAST entropy on ignored pixels (IAST full scale: 3.0)
    kl_uniform_weight: float = 0.0         # IAST KL-to-uniform on pseudo-labelled pixels (IAST full scale: 0.1)
    pseudo: PseudoLabelConfig = field(default_factory=PseudoLabelConfig)
    # IAST's optimizer, weight decay and schedule; its rate per round comes from `lrs`, so
    # `optim.lr` is refused when changed (config_checks). The mean teacher has its own `optim`.
    optim: OptimConfig = field(default_factory=OptimConfig)
    mean_teacher: MeanTeacherConfig = field(default_factory=MeanTeacherConfig)


@dataclass
class LoggingConfig:
    log_every: int = 20
    checkpoint_every: int = 100            # iterations between `last` checkpoints (resume points)
    eval_interval: int = 0                 # iterations between target-val evaluations while training (0: at stage ends only)
    num_overlays: int = 4                  # target val overlay images written per evaluation


@dataclass
class DistributedConfig:
    """Multi-process training under torchrun (ignored in a single process)."""

    # Normalise each BatchNorm layer over the global batch, not each GPU's part of it (CUDA only:
    # PyTorch has no CPU SyncBatchNorm, so CPU ranks normalise over their own part).
    sync_batchnorm: bool = True
    timeout_minutes: float = 30.0          # how long a collective waits for a lost rank before failing


@dataclass
class TrainConfig:
    seed: int = 0
    device: str = "auto"                   # auto | cpu | cuda | cuda:N (under torchrun: auto | cpu | cuda)
    # Mixed precision on CUDA: "auto" is bf16 where the GPU supports it, else fp16 with a loss
    # scaler; "fp32" turns it off. The CPU always trains in fp32.
    amp: Literal["auto", "bf16", "fp16", "fp32"] = "auto"
    channels_last: bool = True             # NHWC memory layout on CUDA (faster convolutions with AMP)
    compile: bool = False                  # torch.compile the training network (first steps are slow to compile)
    distributed: DistributedConfig = field(default_factory=DistributedConfig)
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    source: SourceStageConfig = field(default_factory=SourceStageConfig)
    correlation: CorrelationConfig = field(default_factory=CorrelationConfig)
    self_train: SelfTrainConfig = field(default_factory=SelfTrainConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)


def per_round(values: tuple[float, ...], round_index: int) -> float:
    """The value for a round from a per-round list whose last entry repeats."""
    return values[min(round_index, len(values) - 1)]
