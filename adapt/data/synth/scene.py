"""One street scene: build a street, populate it, photograph it in a domain's style.

Everything random is drawn from one generator seeded by the caller, so an image is a pure
function of (seed, domain, size).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from uda_adapt.adapt.data.synth.camera import FAR_M, NEAR_M, Camera
from uda_adapt.adapt.data.synth.finish import apply_finish, sample_finish
from uda_adapt.adapt.data.synth.layout import Street, background_things, build_street, ground_thing
from uda_adapt.adapt.data.synth.render import draw_hood, render, sky_gradient
from uda_adapt.adapt.data.synth.shapes import Thing
from uda_adapt.adapt.data.synth.style import DomainStyle, Look, style_for
from uda_adapt.adapt.data.synth.traffic import populate, seen_always
from uda_adapt.common.errors import UserError

MIN_SIZE_PX = 16
HOOD_RISE = (0.07, 0.12)    # bonnet height at the image centre, fraction of the image height


@dataclass(frozen=True)
class World:
    """A generated street with everything on it, and the camera that films it."""

    street: Street
    things: tuple[Thing, ...]
    camera: Camera
    look: Look

    def things_seen_from(self, camera_z: float) -> list[Thing]:
        """The ground under the camera's view plus every thing (the renderer culls by distance)."""
        return [ground_thing(self.street, (camera_z + NEAR_M + 0.01, camera_z + FAR_M)), *self.things]


def build_world(rng: np.random.Generator, style: DomainStyle, size: tuple[int, int], z_range: tuple[float, float],
                camera_speed: float = 0.0, duration: float = 0.0) -> World:
    """A street over world `z_range` and a camera in one of its right-hand lanes at z = 0.

    For a still (`duration` 0) only what that camera sees is built; a clip builds everything."""
    look = style.look.with_random_sun(rng)
    street = build_street(rng, style, look, z_range)
    camera = Camera.sample(rng, style.camera, size, street.lane_centre(1, int(rng.integers(street.lanes))))
    seen = camera.could_see if duration == 0 else seen_always
    things = background_things(rng, street, style, look, seen)
    things += populate(rng, street, style, look, z_range, camera, camera_speed, duration)
    return World(street, tuple(things), camera, look)


def check_size(size: tuple[int, int]) -> tuple[int, int]:
    height, width = (int(v) for v in size)
    if height < MIN_SIZE_PX or width < MIN_SIZE_PX:
        raise UserError(f"image size {height}x{width} is too small; use at least {MIN_SIZE_PX}x{MIN_SIZE_PX} (HxW)")
    return height, width


def generate_scene(seed: int, domain: str, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """A street scene: RGB uint8 (H, W, 3) and Cityscapes train ids uint8 (H, W), 255 = ignore.

    `domain` is "sim" (source style) or "real" (target style); `size` is (H, W).
    """
    style = style_for(domain)
    size = check_size(size)
    rng = np.random.default_rng(seed)
    world = build_world(rng, style, size, (0.0, FAR_M))
    camera = world.camera
    image, label = render(world.things_seen_from(0.0), camera, 0.0, sky(rng, world.look, size, camera))
    if style.finish.hood:
        draw_hood(image, label, float(rng.uniform(*HOOD_RISE)), world.look.colour(rng, "hood"))
    return apply_finish(image, label, sample_finish(rng, style.finish), rng), label


def sky(rng: np.random.Generator, look: Look, size: tuple[int, int], camera: Camera) -> np.ndarray:
    return sky_gradient(size, look.colour(rng, "sky_top"), look.colour(rng, "sky_horizon"), camera.horizon_row)
