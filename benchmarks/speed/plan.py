"""How much each section measures (QUICK or FULL), and the settings and paths every section shares."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# Child processes get the environment as the user started run_all.py: importing OpenCV later
# prepends its own lib64 to LD_LIBRARY_PATH, which the standalone commands would not see. This
# module is imported before any section runs, so the copy is taken before OpenCV is loaded.
STARTING_ENVIRONMENT = dict(os.environ)

TRAIN_DATA_SIZE = (256, 512)          # generated scenes; crops of 128x256 at scales 0.75-1.25 fit inside
TRAIN_BATCH = 8                       # CPU training batch (the config's default), of 128x256 crops
LOG_EVERY = 10                        # iterations per training log record; the first record is warm-up
GPU_BATCH = 2                         # DeepLab-V2 images per GPU; DDP runs grow the global batch with the GPUs
CORRELATION_LIMIT_GB = 6.0            # as correlation_memory.py: skip naive cases that would need more
CAMERA_FPS = 30.0                     # the latest-mode source delivers frames at a camera's rate


@dataclasses.dataclass(frozen=True)
class Plan:
    """How much each section measures: QUICK checks that everything runs, FULL gives the figures to quote."""

    synth_repeats: int
    synth_images: int                          # per repeat, both sizes of synth_throughput.SIZES
    train_images: int                          # synthetic train images per domain
    train_iterations: int                      # per stage; IAST runs 3 rounds of a third each
    correlation_sizes: tuple[tuple[int, int], ...]
    correlation_repeats: int                   # runs per process; its time is their median
    correlation_processes: int                 # fresh processes per case and implementation
    export_models: tuple[str, ...]
    export_size: tuple[int, int]
    export_iters: int
    int8_source_iterations: int                # a briefly trained network: an untrained one has near-tied logits
    int8_size: tuple[int, int]
    int8_calib: int
    int8_parity: int
    int8_iters: int
    pipeline_size: tuple[int, int]
    pipeline_iters: int
    pipeline_rounds: int
    latest_size: tuple[int, int]
    latest_frames: int
    latest_rounds: int
    gpu_crop: tuple[int, int]
    gpu_iterations: int
    gpu_rounds: int                            # amp off / auto alternations


QUICK = Plan(
    synth_repeats=3, synth_images=10, train_images=16, train_iterations=30,
    correlation_sizes=((64, 128),), correlation_repeats=3, correlation_processes=3,
    export_models=("small",), export_size=(256, 512), export_iters=10,
    int8_source_iterations=30, int8_size=(256, 512), int8_calib=8, int8_parity=4, int8_iters=10,
    pipeline_size=(256, 512), pipeline_iters=15, pipeline_rounds=2,
    latest_size=(256, 512), latest_frames=30, latest_rounds=2,
    gpu_crop=(256, 512), gpu_iterations=20, gpu_rounds=1,
)
FULL = Plan(
    synth_repeats=5, synth_images=40, train_images=32, train_iterations=60,
    correlation_sizes=((32, 64), (64, 128)), correlation_repeats=3, correlation_processes=3,
    export_models=("small", "lraspp_mobilenet_v3_large"), export_size=(512, 1024), export_iters=20,
    int8_source_iterations=100, int8_size=(512, 1024), int8_calib=32, int8_parity=8, int8_iters=20,
    pipeline_size=(512, 1024), pipeline_iters=30, pipeline_rounds=3,
    latest_size=(512, 1024), latest_frames=90, latest_rounds=3,
    gpu_crop=(512, 1024), gpu_iterations=40, gpu_rounds=2,
)
