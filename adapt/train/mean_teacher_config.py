"""The mean-teacher stage's settings: MIC, DAFormer's ImageNet feature distance and the mean
teacher itself (part of `adapt.train.config.TrainConfig`, as `self_train.mean_teacher`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from uda_adapt.adapt.class_weights import ClassWeighting
from uda_adapt.adapt.train.optim_config import OptimConfig


@dataclass
class MicConfig:
    """Masked image consistency (MIC, Hoyer et al. CVPR 2023; lhoyer/MIC `masking_consistency_module.py`).

    The student also predicts a strongly augmented target image with random blocks blanked, and
    learns it from the teacher's pseudo labels of the *full* image, with the same confidence weight.
    """

    enabled: bool = False
    ratio: float = 0.7                     # share of blocks blanked (MIC: mask_ratio 0.7)
    # Block side as a share of the crop's short side: MIC uses 64 px blocks on its 1024x1024 crops
    # and 32 px on 512x512 ("half the patch size when training with half resolution",
    # lhoyer/MIC seg/experiments.py:443-450), i.e. 1/16.
    block_fraction: float = 0.0625
    # Which images are masked (lhoyer/MIC seg/mmseg/models/uda/masking_consistency_module.py:97-119):
    # "separatetrgaug" (its GTA/Synthia -> Cityscapes runs): the target batch, strongly augmented;
    # "separate" (its Cityscapes -> ACDC and Dark Zurich runs, seg/experiments.py:404-405): one
    # source image with its labels and one target image with its pseudo labels, not augmented.
    mode: Literal["separatetrgaug", "separate"] = "separatetrgaug"
    weight: float = 1.0                    # MIC: mask_lambda 1


@dataclass
class ImnetFeatureDistanceConfig:
    """DAFormer's ImageNet feature distance (Hoyer et al., CVPR 2022, section 3.3; lhoyer/DAFormer
    mmseg/models/uda/dacs.py:153-189): the source images' bottleneck features are kept near those of
    a frozen copy of the network's ImageNet-initialised backbone, on pixels of the thing classes.
    Needs a model initialised from ImageNet weights (`model.pretrained`)."""

    # DAFormer's imnet_feature_dist_lambda: 0.005 in configs/_base_/uda/dacs_a999_fdthings.py:10 (0: off).
    weight: float = 0.0
    # Label ids whose feature cells count (line 11 there: Cityscapes' traffic light, traffic sign,
    # person, rider, car, truck, bus, train, motorcycle, bicycle); empty: every cell (DAFormer's None).
    classes: tuple[int, ...] = (6, 7, 11, 12, 13, 14, 15, 16, 17, 18)
    # A feature cell counts only if at least this share of its pixels carries its majority label
    # (line 12 there; DAFormer's `downscale_label_ratio`, mmseg/utils/utils.py:18-39).
    scale_min_ratio: float = 0.75


@dataclass
class MeanTeacherConfig:
    """Mean-teacher self-training with ClassMix (DACS; DAFormer's defaults where they apply)."""

    iterations: int = 600
    # Teacher momentum, warmed up as min(1 - 1/(t+1), alpha) (DAFormer mmseg/models/uda/dacs.py:105,
    # DACS trainUDA.py:113). The warm-up makes the teacher the plain mean of every student so far
    # until t = 1 / (1 - alpha): with 0.999 and 600 iterations it never ends, and the teacher is
    # the running average of all students since the start (see `ema_horizon`).
    ema_alpha: float = 0.999
    # The EMA horizon as a share of the stage's iterations (0: use `ema_alpha` as given). alpha
    # becomes 1 - 1 / (ema_horizon * iterations), reached after a warm-up of as many updates:
    # DAFormer's 0.999 on 40k iterations warms up over 1000 updates (2.5 %) and then averages
    # over about 1000 (configs/daformer/gta2cs_uda_warm_fdthings_rcs_croppl_a999_daformer_mitb5_s0.py:24),
    # i.e. 0.025; at 600 iterations that is a 15-update EMA.
    ema_horizon: float = 0.0
    confidence_threshold: float = 0.968    # pseudo-label weight = fraction of teacher pixels at least this sure (DACS)
    # Over what that fraction is taken: "batch" (DACS/DAFormer: one scalar for the whole batch,
    # `sum(ps_large_p) / np.size(pseudo_label)`) or "image" (one per target image).
    confidence_weight: Literal["batch", "image"] = "batch"
    # Colour jitter on the mixed image, kornia 0.5 ColorJitter(s, s, s, s). DAFormer applies it
    # when `uniform(0, 1) > p` with p = 0.2: `jitter_p` is the probability of applying, 0.8.
    jitter_strength: float = 0.2
    jitter_p: float = 0.8
    blur_p: float = 0.5                    # Gaussian blur, sigma ~ U(0.15, 1.15), when `uniform > 0.5` (DACS)
    rare_class_sampling: bool = False      # draw source images by rare classes (DAFormer RCS)
    rcs_temperature: float = 0.01          # RCS: P(class) = softmax((1 - frequency) / T) (DAFormer)
    # DAFormer's `min_pixels` and `min_crop_ratio` (configs/_base_/datasets/uda_gta_to_cityscapes*,
    # mmseg/datasets/uda_dataset.py): an image is drawn for class c only if its label has more than
    # `rcs_min_pixels` pixels of c (3000 on GTA5's 1914x1052 labels: scale it with your label size),
    # and its random crop is redrawn up to 10 times until it holds more than
    # rcs_min_pixels * rcs_min_crop_ratio of them (0: no redraw).
    rcs_min_pixels: int = 3000
    rcs_min_crop_ratio: float = 0.5
    # BatchNorm statistics the teacher labels a target batch with: "target" (its own running
    # average over the target batches it labels, from the AdaBN start, momentum 0.1), "running"
    # (its EMA of the student's: an average over source and mixed batches) or "batch" (that target
    # batch's own). On the night benchmark the "running" teacher labelled at 4.6 mIoU where its
    # weights with target statistics gave 14.1, and its runs ended at or below their start;
    # "target" gained +5.1 and +5.6 there, and +0.4 / -1.3 on the day tune split (2 seeds, 200
    # steps: docs/results.md, benchmarks/results/teacher_bn_short.md).
    teacher_bn: Literal["batch", "running", "target"] = "target"
    # Whether crop padding (mean colour, up to 44 % of a crop drawn at scale 0.75) counts in the
    # "batch" and "target" statistics above. "excluded" measures target pixels only, as the AdaBN
    # start does on whole images; "counted" is what train-mode BatchNorm (DACS/DAFormer) does.
    teacher_bn_padding: Literal["excluded", "counted"] = "counted"
    # Pseudo-label margins: shares (top, bottom, left, right) of the target image, before it is
    # scaled and cropped, whose pseudo labels weigh 0 (MIC/HRDA `crop_pseudo_margins` [30, 240, 30, 30]
    # of 1024x2048 Cityscapes, lhoyer/MIC seg/experiments.py:262 and seg/mmseg/datasets/cityscapes.py:52-66;
    # DAFormer's 15 top and 120 bottom rows of its 512-row crops, the same shares, configs/daformer/
    # gta2cs_uda_warm_fdthings_rcs_croppl_a999_daformer_mitb5_s0.py:30-31). A crop away from the
    # image border keeps all its labels. The confidence weight is still measured over the whole crop,
    # as MIC's (`filter_valid_pseudo_region` after the weight, seg/mmseg/models/uda/dacs.py:274-286).
    # The built-in targets' ego hood fills the bottom 7-12 % (bottom share 0.12 covers it).
    pseudo_margins: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0)
    mic: MicConfig = field(default_factory=MicConfig)
    imnet_feature_distance: ImnetFeatureDistanceConfig = field(default_factory=ImnetFeatureDistanceConfig)
    # Whether the source crops of this stage get the pipeline's colour jitter (`data.jitter`):
    # "pipeline" jitters them (and the mix jitters the pasted pixels again), "none" leaves them clean
    # for the source loss and the mix, as DAFormer, whose source pipeline has no photometric step
    # ("applied later in dacs.py", configs/_base_/datasets/uda_gta_to_cityscapes_512x512.py:18) and
    # whose source loss takes the clean crop (mmseg/models/uda/dacs.py:234-235).
    source_jitter: Literal["pipeline", "none"] = "pipeline"
    # Per-class weights of the source pixels' loss, on the source crops and where they are pasted
    # into the mix: as `source.class_weights` (the weights come from the source labels).
    source_class_weights: ClassWeighting = "none"
    # Whether the pasted source pixels carry those weights too (False: only the source crops' loss is
    # weighted, and the mix keeps 1 per pasted pixel).
    pasted_class_weights: bool = True
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(lr=3e-4))
