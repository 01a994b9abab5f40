"""The embedded benchmarks: procedural street scenes in three domains.

`sim` (source) looks like a game engine, `real` (the default target) like a car camera by day,
`night` (the second target) like the same camera after dark; all share the street geometry and
the Cityscapes 19 train-id label space, so a model trained on one can be measured on another.
Everything is deterministic per seed.

Classes: 18 of the 19 appear. `train` (id 16) never appears (no trams or trains are generated),
so its IoU is undefined on this benchmark and evaluation must skip classes absent from the
ground truth. The `real` domain's ego-vehicle hood is labelled 255 (ignore), as in Cityscapes.

    generate_scene(seed, domain, size)          -> (image RGB uint8 HxWx3, label uint8 HxW)
    write_split(out, domain, split, num, ...)   -> one split in the folder format (resumable)
    write_benchmark(out, ..., target_style)     -> out/source (sim) and out/target (real or night)
    generate_video(out, domain, frames, ...)    -> an mp4 of a drive down a generated street
"""

from uda_adapt.adapt.data.synth.scene import generate_scene
from uda_adapt.adapt.data.synth.style import TARGET_STYLES
from uda_adapt.adapt.data.synth.video import generate_video
from uda_adapt.adapt.data.synth.writer import (
    DEFAULT_NUM_TRAIN, DEFAULT_NUM_VAL, DEFAULT_SIZE, DOMAINS, SPLITS, scene_seed, write_benchmark, write_split,
)

ABSENT_CLASSES = ("train",)

__all__ = [
    "ABSENT_CLASSES", "DEFAULT_NUM_TRAIN", "DEFAULT_NUM_VAL", "DEFAULT_SIZE", "DOMAINS", "SPLITS", "TARGET_STYLES", "generate_scene",
    "generate_video", "scene_seed", "write_benchmark", "write_split",
]
