"""A forward drive down a generated street, written as an mp4 for the runtime demos.

The street is built once in world coordinates; the camera advances along it at a steady speed
while cars drive in their lanes and pedestrians walk, so objects grow, pass and leave the frame.
Exposure, texture and hood stay fixed for the clip; sensor noise changes every frame.
"""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from uda_adapt.common.atomic import atomic_path, ensure_writable_dir
from uda_adapt.adapt.data.synth.camera import FAR_M
from uda_adapt.adapt.data.synth.finish import apply_finish, make_texture, sample_finish
from uda_adapt.adapt.data.synth.render import draw_hood, render
from uda_adapt.adapt.data.synth.scene import HOOD_RISE, build_world, check_size, sky
from uda_adapt.adapt.data.synth.style import STYLES, style_for, uniform
from uda_adapt.common.errors import UserError
from uda_adapt.adapt.images import write_label

CAMERA_SPEED_MPS = (6.0, 10.0)
_VIDEO_STREAM = 2  # keeps video seeds apart from dataset image seeds


def generate_video(out: str | os.PathLike, domain: str = "real", frames: int = 120, size: tuple[int, int] = (256, 512),
                   fps: float = 15.0, seed: int = 0, labels_dir: str | os.PathLike | None = None,
                   progress: bool = True) -> Path:
    """Write an mp4 of `frames` frames (H, W = `size`) in the `domain` style; returns its path.

    With `labels_dir`, each frame's train-id label map is written there as `<frame>.png`.
    """
    style = style_for(domain)
    height, width = check_size(size)
    out = Path(out)
    if out.suffix.lower() != ".mp4":
        raise UserError(f"video output {out} must end in .mp4; pass e.g. --out clip.mp4")
    if frames < 1:
        raise UserError(f"--frames is {frames}; a video needs at least 1 frame")
    if fps <= 0:
        raise UserError(f"--fps is {fps}; use a positive frame rate such as 15")
    if seed < 0:
        raise UserError(f"--seed is {seed}; use a non-negative integer")
    label_root = ensure_writable_dir(labels_dir) if labels_dir is not None else None
    rng = np.random.default_rng(np.random.SeedSequence([seed, _VIDEO_STREAM, tuple(STYLES).index(domain)]))
    duration = frames / fps
    speed = uniform(rng, CAMERA_SPEED_MPS)
    world = build_world(rng, style, (height, width), (0.0, speed * duration + FAR_M + 10.0), speed, duration)
    background = sky(rng, world.look, (height, width), world.camera)
    finish = sample_finish(rng, style.finish)
    texture = make_texture(rng, (height, width))
    hood = (float(rng.uniform(*HOOD_RISE)), world.look.colour(rng, "hood")) if style.finish.hood else None
    with atomic_path(out) as tmp:
        writer = cv2.VideoWriter(str(tmp), cv2.VideoWriter_fourcc(*"mp4v"), float(fps), (width, height))
        if not writer.isOpened():
            raise UserError(f"OpenCV cannot write mp4 video to {out}; install an OpenCV build with video support "
                            "(opencv-python-headless has it)")
        try:
            for index in tqdm(range(frames), desc=out.name, unit="frame", disable=None if progress else True):
                t = index / fps
                camera = world.camera.moved_to(speed * t)
                image, label = render(world.things_seen_from(camera.z_m), camera, t, background)
                if hood is not None:
                    draw_hood(image, label, *hood)
                frame = apply_finish(image, label, finish, rng, texture)
                writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
                if label_root is not None:
                    write_label(label_root / f"{index:05d}.png", label)
        finally:
            writer.release()
    return out
