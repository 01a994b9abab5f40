"""The domains: what differs between the synthetic source and the camera-like targets.

`sim` stands in for a game engine (GTA5): flat saturated colours, hard sunlit shading, a high
wide-angle camera, streets full of cars and trucks. `real` stands in for a car camera
(Cityscapes): a muted palette under overcast light, textured surfaces, sensor noise, blur,
vignetting, JPEG artefacts, an ego-vehicle hood labelled ignore, a lower camera with a narrower
field of view, and more pedestrians and cyclists. `night` is the same camera and the same streets
as `real` after dark, a shift of another kind (illumination and sensor, not rendering style):
surfaces at 30 % of their daylight, a black sky, pools of street-lamp light, emitting lamps and
windows, sodium-warm colour, and the heavy noise and blur of a camera at high gain. Street geometry
and the label space are shared, so every class stays learnable in each.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace

import numpy as np

from uda_adapt.adapt.data.synth.palettes import NIGHT_PALETTE, REAL_PALETTE, SIM_PALETTE, Colour, Palette
from uda_adapt.common.errors import UserError

Range = tuple[float, float]

# Train ids used in the tables below (see adapt.classes.CITYSCAPES_CLASSES).
ROAD, SIDEWALK, BUILDING, WALL, FENCE, POLE, LIGHT, SIGN, VEGETATION, TERRAIN, SKY = range(11)
PERSON, RIDER, CAR, TRUCK, BUS, TRAIN, MOTORCYCLE, BICYCLE = range(11, 19)


@dataclass(frozen=True)
class CameraRanges:
    """Camera intrinsics and pose, sampled per image (per clip for video)."""

    hfov_deg: Range
    horizon: Range            # horizon row as a fraction of the image height (pitch)
    height_m: Range


@dataclass(frozen=True)
class Frequencies:
    """Street layout and how often things appear; counts are per 100 m of street and side."""

    lanes_per_direction: tuple[float, float]   # probabilities of 1 and 2 lanes each way
    lane_width_m: Range
    sidewalk_m: Range
    parking: float                 # probability that a side has a parking strip
    parked_fill: float             # share of parking spots holding a vehicle
    vehicle_gap_m: float           # mean free gap between moving vehicles in a lane
    vehicle_mix: tuple[float, float, float]   # car, truck, bus shares
    persons: float                 # pedestrians per 100 m of sidewalk
    crossers: float                # mean pedestrians on each zebra crossing
    riders: float                  # cyclists and motorcyclists per 100 m of road
    motorcycle_share: float        # share of motorcycles among riders and parked two-wheelers
    parked_bikes: float            # parked two-wheelers per 100 m of sidewalk
    signs: float                   # sign poles per 100 m of sidewalk
    lamp_spacing_m: Range
    tree_lined: float              # probability that a side has trees along the kerb
    verge: float                   # probability that a side has a grass strip along the kerb
    crossing_every_m: float        # mean distance between side streets
    segments: Mapping[str, float]  # shares of building / park / wall / fence frontage
    building_height_m: Range


@dataclass(frozen=True)
class Look:
    """Colours of a domain and how strongly the sun shades box faces."""

    palette: Palette
    jitter: float                  # per-instance brightness variation (0.1 = +-10 %)
    shade_top: float
    shade_front: float             # faces looking back at the camera (normal -z)
    shade_lit: float               # side faces towards the sun
    shade_dark: float              # side faces away from the sun
    sun_side: int = 1              # +1: faces with normal -x are lit; -1: normal +x

    def colour(self, rng: np.random.Generator, material: str) -> Colour:
        """One of the material's colours with a per-instance brightness and tint variation."""
        choices = self.palette[material]
        pick, gain, tr, tg, tb = rng.random(5).tolist()
        r, g, b = choices[int(pick * len(choices))]
        gain = 1.0 + self.jitter * (2.0 * gain - 1.0) - 0.3 * self.jitter
        tint = 0.6 * self.jitter
        return (min(255, int(r * (gain + tint * tr))), min(255, int(g * (gain + tint * tg))),
                min(255, int(b * (gain + tint * tb))))

    def shade(self, colour: Colour, normal: tuple[float, float, float]) -> Colour:
        nx, ny, _ = normal
        if ny > 0:
            factor = self.shade_top
        elif nx != 0:
            factor = self.shade_lit if nx * self.sun_side < 0 else self.shade_dark
        else:
            factor = self.shade_front
        r, g, b = colour
        return min(255, int(r * factor)), min(255, int(g * factor)), min(255, int(b * factor))

    def with_random_sun(self, rng: np.random.Generator) -> Look:
        return replace(self, sun_side=1 if rng.random() < 0.5 else -1)


@dataclass(frozen=True)
class Finish:
    """Camera and illumination effects applied after rasterising; ranges are sampled per image."""

    gain: Range                    # overall exposure
    cast: Range                    # red-blue balance (negative: cooler)
    gradient: Range                # vertical and horizontal illumination falloff
    gamma: Range
    texture_coarse: Mapping[int, float]   # train id -> amplitude of blotchy texture
    texture_fine: Mapping[int, float]     # train id -> amplitude of grain (leaves, asphalt)
    blur_sigma: Range
    noise_sigma: Range             # sensor noise, in 0..1 intensity units
    vignette: Range
    jpeg_quality: Range | None     # None: no compression
    hood: bool                     # an ego-vehicle hood at the bottom, labelled ignore
    # Pools of street-lamp light (night): how many per image, and each pool's peak brightening
    # (1.5: the lit spot is 2.5x as bright as the ambient). None: no pools, and no random draws,
    # so the daytime domains' images do not change.
    light_pools: Range | None = None
    pool_gain: Range = (0.0, 0.0)


@dataclass(frozen=True)
class DomainStyle:
    name: str
    camera: CameraRanges
    frequencies: Frequencies
    look: Look
    finish: Finish


SIM = DomainStyle(
    name="sim",
    camera=CameraRanges(hfov_deg=(76.0, 86.0), horizon=(0.44, 0.50), height_m=(1.7, 2.0)),
    frequencies=Frequencies(
        lanes_per_direction=(0.35, 0.65), lane_width_m=(3.4, 3.8), sidewalk_m=(2.5, 4.5),
        parking=0.6, parked_fill=0.75, vehicle_gap_m=12.0, vehicle_mix=(0.78, 0.14, 0.08),
        persons=3.0, crossers=0.4, riders=1.5, motorcycle_share=0.6, parked_bikes=1.0,
        signs=3.0, lamp_spacing_m=(22.0, 30.0), tree_lined=0.35, verge=0.3, crossing_every_m=90.0,
        segments={"building": 0.56, "park": 0.16, "wall": 0.14, "fence": 0.14},
        building_height_m=(8.0, 28.0),
    ),
    look=Look(palette=SIM_PALETTE, jitter=0.08, shade_top=1.12, shade_front=0.86, shade_lit=1.0, shade_dark=0.62),
    finish=Finish(
        gain=(0.96, 1.06), cast=(0.0, 0.0), gradient=(0.0, 0.0), gamma=(1.0, 1.0),
        # Baked-in light variation on large surfaces, as a game engine has; no grain, no noise.
        texture_coarse={ROAD: 0.05, SIDEWALK: 0.05, BUILDING: 0.06, VEGETATION: 0.08, TERRAIN: 0.06},
        texture_fine={}, blur_sigma=(0.0, 0.0), noise_sigma=(0.0, 0.0),
        vignette=(0.0, 0.0), jpeg_quality=None, hood=False,
    ),
)

REAL = DomainStyle(
    name="real",
    camera=CameraRanges(hfov_deg=(56.0, 66.0), horizon=(0.36, 0.42), height_m=(1.15, 1.35)),
    frequencies=Frequencies(
        lanes_per_direction=(0.7, 0.3), lane_width_m=(3.0, 3.4), sidewalk_m=(3.0, 5.5),
        parking=0.6, parked_fill=0.5, vehicle_gap_m=16.0, vehicle_mix=(0.92, 0.04, 0.04),
        persons=9.0, crossers=1.5, riders=5.0, motorcycle_share=0.2, parked_bikes=6.0,
        signs=5.0, lamp_spacing_m=(18.0, 26.0), tree_lined=0.65, verge=0.4, crossing_every_m=70.0,
        segments={"building": 0.58, "park": 0.14, "wall": 0.12, "fence": 0.16},
        building_height_m=(10.0, 24.0),
    ),
    look=Look(palette=REAL_PALETTE, jitter=0.12, shade_top=1.05, shade_front=0.95, shade_lit=0.95, shade_dark=0.84),
    finish=Finish(
        gain=(0.85, 1.1), cast=(-0.06, 0.08), gradient=(-0.2, 0.2), gamma=(0.85, 1.1),
        texture_coarse={ROAD: 0.10, SIDEWALK: 0.10, BUILDING: 0.14, WALL: 0.12, FENCE: 0.10, VEGETATION: 0.30,
                        TERRAIN: 0.22, SKY: 0.04},
        texture_fine={ROAD: 0.07, SIDEWALK: 0.06, BUILDING: 0.04, WALL: 0.05, VEGETATION: 0.25, TERRAIN: 0.18},
        blur_sigma=(0.4, 0.9), noise_sigma=(0.006, 0.018), vignette=(0.15, 0.35), jpeg_quality=(45, 80), hood=True,
    ),
)

NIGHT = DomainStyle(
    name="night",
    camera=REAL.camera,
    frequencies=REAL.frequencies,
    # No sun: faces differ only a little in how much lamp light reaches them.
    look=Look(palette=NIGHT_PALETTE, jitter=0.12, shade_top=1.0, shade_front=0.95, shade_lit=0.9, shade_dark=0.82),
    finish=Finish(
        # Auto-exposure hunting in the dark; sodium lamps cast orange (positive cast: warmer).
        gain=(0.8, 1.3), cast=(0.04, 0.16), gradient=(-0.3, 0.3), gamma=(1.0, 1.15),
        texture_coarse=REAL.finish.texture_coarse, texture_fine=REAL.finish.texture_fine,
        # High sensor gain: noise several times the day's on a signal a third as strong, and
        # the long exposure's blur.
        blur_sigma=(0.6, 1.2), noise_sigma=(0.02, 0.045), vignette=(0.2, 0.4), jpeg_quality=(35, 70), hood=True,
        light_pools=(2.0, 5.0), pool_gain=(0.8, 2.0),
    ),
)

STYLES: dict[str, DomainStyle] = {"sim": SIM, "real": REAL, "night": NIGHT}
# Target styles of the built-in benchmark; the first is the default.
TARGET_STYLES = ("real", "night")


def style_for(domain: str) -> DomainStyle:
    if domain not in STYLES:
        raise UserError(f"unknown domain {domain!r}; valid domains: {', '.join(STYLES)}")
    return STYLES[domain]


def uniform(rng: np.random.Generator, bounds: Range) -> float:
    low, high = bounds
    return float(rng.uniform(low, high)) if high > low else float(low)
