"""A domain's camera and light: exposure, colour cast, gradients, pools of lamp light, textures,
blur, vignetting, sensor noise and JPEG compression, applied to a rendered image (the label map
is untouched).

Parameters are sampled once (`sample_finish`) and applied per frame (`apply_finish`), so a video
keeps its exposure while its sensor noise changes from frame to frame.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from functools import lru_cache

import cv2
import numpy as np

from uda_adapt.adapt.data.synth.style import Finish, uniform


@dataclass(frozen=True)
class FinishParams:
    gain: np.ndarray                  # (3,) per-channel gain
    gradient: tuple[float, float]     # vertical, horizontal illumination slope
    gamma: float
    blur_sigma: float
    noise_sigma: float
    vignette: float
    jpeg_quality: int | None
    coarse: np.ndarray                # (256,) texture amplitude per train id
    fine: np.ndarray                  # (256,) grain amplitude per train id
    # (K, 4) light pools: centre (u, v) as fractions of width and height, radius as a fraction of
    # the width, peak brightening; empty for the daytime domains.
    pools: np.ndarray = field(default_factory=lambda: np.zeros((0, 4), np.float32))


def sample_finish(rng: np.random.Generator, finish: Finish) -> FinishParams:
    cast = uniform(rng, finish.cast)
    coarse, fine = np.zeros(256, np.float32), np.zeros(256, np.float32)
    for table, amplitudes in ((coarse, finish.texture_coarse), (fine, finish.texture_fine)):
        for train_id, amplitude in amplitudes.items():
            table[train_id] = amplitude
    quality = None if finish.jpeg_quality is None else int(round(uniform(rng, finish.jpeg_quality)))
    params = FinishParams(
        gain=uniform(rng, finish.gain) * np.array([1 + cast, 1.0, 1 - cast], np.float32),
        gradient=(uniform(rng, finish.gradient), uniform(rng, finish.gradient)),
        gamma=uniform(rng, finish.gamma), blur_sigma=uniform(rng, finish.blur_sigma),
        noise_sigma=uniform(rng, finish.noise_sigma), vignette=uniform(rng, finish.vignette),
        jpeg_quality=quality, coarse=coarse, fine=fine,
    )
    if finish.light_pools is None:
        return params  # drawn last and only here, so the daytime domains' random streams are unchanged
    count = int(round(uniform(rng, finish.light_pools)))
    pools = np.array([(rng.uniform(0.0, 1.0), rng.uniform(0.35, 0.95), rng.uniform(0.08, 0.2), uniform(rng, finish.pool_gain))
                      for _ in range(count)], np.float32).reshape(count, 4)
    return replace(params, pools=pools)


@lru_cache(maxsize=8)
def _radial(height: int, width: int) -> np.ndarray:
    """(H, W) squared distance from the centre, 1 at the corners."""
    v = (np.arange(height, dtype=np.float32) - height / 2) / (height / 2)
    u = (np.arange(width, dtype=np.float32) - width / 2) / (width / 2)
    return (v[:, None] ** 2 + u[None, :] ** 2) / 2


def value_noise(rng: np.random.Generator, size: tuple[int, int], cell_px: float) -> np.ndarray:
    """(H, W) float32 smooth noise, unit variance at the grid points, features ~`cell_px` wide."""
    height, width = size
    grid = rng.standard_normal((max(2, int(height / cell_px) + 2), max(2, int(width / cell_px) + 2)), dtype=np.float32)
    return cv2.resize(grid, (width, height), interpolation=cv2.INTER_LINEAR)


def apply_finish(image: np.ndarray, label: np.ndarray, params: FinishParams, rng: np.random.Generator,
                 texture: tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray:
    """RGB uint8 (H, W, 3) -> RGB uint8 (H, W, 3). `texture` fixes the (coarse, fine) noise fields."""
    height, width = label.shape
    # One (H, W) factor carries texture, illumination gradients and vignetting (cv2 calls below:
    # these full-frame passes are most of the cost at 256x512, numpy broadcasting is 3-4x slower).
    factor = np.ones((height, width), np.float32)
    if params.coarse.any() or params.fine.any():
        coarse_field, fine_field = texture if texture is not None else make_texture(rng, (height, width))
        if params.coarse.any():
            factor += params.coarse[label] * coarse_field
        if params.fine.any():
            factor += params.fine[label] * fine_field
    slope_v, slope_u = params.gradient
    if slope_v or slope_u:
        factor *= (1.0 + slope_v * np.linspace(-0.5, 0.5, height, dtype=np.float32)[:, None]
                   + slope_u * np.linspace(-0.5, 0.5, width, dtype=np.float32)[None, :])
    if len(params.pools):
        factor *= light_pools(params.pools, height, width)
    if params.vignette:
        factor *= 1.0 - params.vignette * _radial(height, width)
    # Full-frame float buffers are reused in place (dst=): fresh 1.5 MB allocations per step cost
    # page faults that show up in the frame rate.
    light = cv2.merge([factor * gain for gain in params.gain.tolist()])
    out = cv2.multiply(image, light, dtype=cv2.CV_32F)
    if params.blur_sigma > 0:
        size = 2 * int(np.ceil(2.5 * params.blur_sigma)) + 1  # OpenCV's default for float images is 4 sigma
        cv2.GaussianBlur(out, (size, size), params.blur_sigma, dst=out)
    if params.noise_sigma > 0:
        noise = _sensor_noise(rng, height, width) * (255.0 * params.noise_sigma)
        cv2.add(out, cv2.merge([noise, noise, noise], dst=light), dst=out)
    result = cv2.convertScaleAbs(cv2.max(out, 0.0, dst=out))  # rounds and saturates to uint8
    if params.gamma != 1.0:
        result = cv2.LUT(result, _gamma_table(round(params.gamma, 3)))
    if params.jpeg_quality is not None:
        bgr = cv2.cvtColor(result, cv2.COLOR_RGB2BGR)
        _, encoded = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, params.jpeg_quality])
        result = cv2.cvtColor(cv2.imdecode(encoded, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    return result


def light_pools(pools: np.ndarray, height: int, width: int) -> np.ndarray:
    """(H, W) float32 illumination: 1 (ambient) plus a Gaussian spot per (K, 4) pool row.

    Spots are twice as wide as tall: a lamp's light on the road, seen at a grazing angle."""
    v = np.arange(height, dtype=np.float32)[:, None]
    u = np.arange(width, dtype=np.float32)[None, :]
    light = np.ones((height, width), np.float32)
    for cu, cv, radius, peak in pools.tolist():
        r_u = radius * width
        light += peak * np.exp(-0.5 * (((u - cu * width) / r_u) ** 2 + ((v - cv * height) / (0.5 * r_u)) ** 2))
    return light


@lru_cache(maxsize=4)
def _noise_bank(height: int, width: int) -> np.ndarray:
    """(2H, 2W) unit Gaussian noise, drawn once per size from a fixed seed."""
    return np.random.default_rng(12345).standard_normal((2 * height, 2 * width), dtype=np.float32)


def _sensor_noise(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """(H, W) luminance noise: a random window of the bank, cheaper than fresh draws per pixel."""
    top, left = (int(v) for v in rng.integers(0, (height, width)))
    return _noise_bank(height, width)[top:top + height, left:left + width]


@lru_cache(maxsize=64)
def _gamma_table(gamma: float) -> np.ndarray:
    return np.clip(255.0 * (np.arange(256) / 255.0) ** gamma + 0.5, 0, 255).astype(np.uint8)


def make_texture(rng: np.random.Generator, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Blotchy (stains, patches) and grainy (leaves, asphalt) noise fields, scaled to the image.

    The grain is a random window of a fixed noise bank: the same statistics as fresh draws, at a
    fraction of the cost of drawing a value per pixel."""
    height, width = size
    cell = 1.5 * height / 256.0
    grid_h, grid_w = int(height / cell) + 2, int(width / cell) + 2
    top, left = (int(v) for v in rng.integers(0, (grid_h, grid_w)))
    grain = _noise_bank(grid_h, grid_w)[top:top + grid_h, left:left + grid_w]
    return value_noise(rng, size, 14.0 * height / 256.0), cv2.resize(grain, (width, height), interpolation=cv2.INTER_LINEAR)
