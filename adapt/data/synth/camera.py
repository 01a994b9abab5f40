"""A pinhole camera that looks straight down the street.

World coordinates are metres: x to the right, y up from the road surface, z along the street.
The camera sits at (x_m, height_m, z_m) and looks towards +z without roll; its pitch is modelled
as a shift of the horizon row, accurate enough for the small pitch of a car-mounted camera.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

from uda_adapt.adapt.data.synth.style import CameraRanges, uniform

NEAR_M = 0.5    # nothing closer than this is drawn; faces crossing it are clipped
FAR_M = 80.0    # the skyline stands here; things beyond are not drawn


@dataclass(frozen=True)
class Camera:
    height_px: int
    width_px: int
    focal_px: float
    horizon_row: float
    height_m: float
    x_m: float = 0.0
    z_m: float = 0.0

    @classmethod
    def sample(cls, rng: np.random.Generator, ranges: CameraRanges, size: tuple[int, int], x_m: float) -> Camera:
        height, width = size
        focal = 0.5 * width / math.tan(math.radians(uniform(rng, ranges.hfov_deg)) / 2)
        return cls(height, width, focal, uniform(rng, ranges.horizon) * height, uniform(rng, ranges.height_m), x_m)

    def moved_to(self, z_m: float) -> Camera:
        return replace(self, z_m=z_m)

    def could_see(self, x: float, z: float, radius: float, height: float) -> bool:
        """Whether something around world (x, z), `radius` metres across and `height` tall,
        can cover a pixel of this frame; stills use it to skip building what nobody sees."""
        near, far = z - self.z_m - radius, z - self.z_m + radius
        if far < NEAR_M or near > FAR_M:
            return False
        if self.focal_px * height / max(near, NEAR_M) < 1.0:
            return False
        tan_half_fov = 0.5 * self.width_px / self.focal_px
        return abs(x - self.x_m) - radius <= tan_half_fov * far

    def project(self, rel: np.ndarray) -> np.ndarray:
        """(N, 3) points relative to the camera's foot (z > 0) -> (N, 2) pixel (u, v)."""
        inv_z = self.focal_px / rel[:, 2]
        uv = np.empty((len(rel), 2))
        uv[:, 0] = 0.5 * self.width_px + rel[:, 0] * inv_z
        uv[:, 1] = self.horizon_row + (self.height_m - rel[:, 1]) * inv_z
        return uv


def clip_near(contour: np.ndarray, near: float = NEAR_M) -> np.ndarray:
    """Clip a planar (N, 3) contour to z >= near (Sutherland-Hodgman); may return no rows."""
    inside = contour[:, 2] >= near
    if inside.all():
        return contour
    if not inside.any():
        return contour[:0]
    kept = []
    count = len(contour)
    for i in range(count):
        a, b = contour[i], contour[(i + 1) % count]
        if inside[i]:
            kept.append(a)
        if inside[i] != inside[(i + 1) % count]:
            kept.append(a + (near - a[2]) / (b[2] - a[2]) * (b - a))
    return np.array(kept)
