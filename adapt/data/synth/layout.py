"""The street: lanes, sidewalks, side streets, what lines them, and the ground they lie on.

The street runs along +z with the road centred on x = 0. Traffic on the right (x > 0) drives away
from the camera, traffic on the left comes towards it; parking strips lie inside the kerbs.
Behind each sidewalk the frontage alternates between buildings, parks, walls and fences.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from uda_adapt.adapt.data.synth.camera import FAR_M
from uda_adapt.adapt.data.synth.furniture import draw_bush, draw_tree
from uda_adapt.adapt.data.synth.palettes import Colour
from uda_adapt.adapt.data.synth.shapes import BACKGROUND, FAR_BACKGROUND, GROUND, ShapeBuilder, Thing
from uda_adapt.adapt.data.synth.structures import barrier_shape, building_shape, skyline_shape
from uda_adapt.adapt.data.synth.style import ROAD, SIDEWALK, TERRAIN, DomainStyle, Look

_WIDE_M = 400.0          # lateral extent of the ground and side streets
_DASH_PERIOD_M, _DASH_M = 9.0, 3.0
_ZEBRA_M = (4.0, 1.0)    # zebra crossing from 4 m to 1 m before a side street


@dataclass(frozen=True)
class Frontage:
    """What stands behind one stretch of sidewalk."""

    side: int
    z0: float
    z1: float
    kind: str            # "building", "park", "wall" or "fence"
    setback: float       # metres from the back of the sidewalk to the facade
    paved: bool          # the setback is paved (sidewalk) rather than grass (terrain)
    corner: bool         # starts at a side street, so its end face is long


@dataclass(frozen=True)
class Street:
    lane_width: float
    lanes: int                               # per direction
    parking: tuple[float, float]             # (left, right) parking strip width; 0 = none
    sidewalk: tuple[float, float]            # (left, right) paved width
    verge: tuple[float, float]               # (left, right) grass strip between kerb and pavement; 0 = none
    crossings: tuple[tuple[float, float], ...]   # (z0, z1) of side streets
    frontage: tuple[Frontage, ...]
    tree_lined: tuple[bool, bool]
    surface: dict[str, Colour]               # colours of road, sidewalk, curb, terrain, lane_mark

    def kerb(self, side: int) -> float:
        """x of the road edge on `side` (+1 right, -1 left)."""
        return side * (self.lanes * self.lane_width + self.parking[side > 0])

    def pavement(self, side: int) -> float:
        """x where the paved sidewalk starts (after the grass verge, if any)."""
        return self.kerb(side) + side * self.verge[side > 0]

    def back_of_sidewalk(self, side: int) -> float:
        return self.pavement(side) + side * self.sidewalk[side > 0]

    def lane_centre(self, side: int, lane: int) -> float:
        return side * (lane + 0.5) * self.lane_width

    def near_crossing(self, z: float, margin: float = 0.0) -> bool:
        return any(z0 - margin - _ZEBRA_M[0] <= z <= z1 + margin for z0, z1 in self.crossings)


def build_street(rng: np.random.Generator, style: DomainStyle, look: Look, z_range: tuple[float, float]) -> Street:
    f = style.frequencies
    z0, z1 = z_range
    crossings = []
    z = z0 + 10.0 + rng.exponential(f.crossing_every_m)
    while z < z1:
        width = float(rng.uniform(10.0, 14.0))
        crossings.append((z, z + width))
        z += width + 15.0 + rng.exponential(f.crossing_every_m)
    kinds, shares = list(f.segments), np.array(list(f.segments.values()))
    frontage = []
    for side in (-1, 1):
        z = z0 - 30.0
        corner = False
        # Frontage runs up to each side street and resumes after it, with a corner building.
        for stop, resume in [*crossings, (z1 + 40.0, z1 + 40.0)]:
            while z < stop - 1.0:
                end = min(stop, z + float(rng.uniform(8.0, 35.0)))
                if stop - end < 6.0:
                    end = stop
                kind = kinds[rng.choice(len(kinds), p=shares / shares.sum())]
                setback = 0.0 if kind != "building" or rng.random() < 0.6 else float(rng.uniform(1.0, 5.0))
                frontage.append(Frontage(side, z, end, kind, setback, bool(rng.random() < 0.5), corner))
                z, corner = end, False
            z, corner = resume, True
    surface = {m: look.colour(rng, m) for m in ("road", "sidewalk", "curb", "terrain", "lane_mark")}
    lanes = 1 if rng.random() < f.lanes_per_direction[0] else 2
    return Street(
        lane_width=float(rng.uniform(*f.lane_width_m)), lanes=lanes,
        parking=tuple(2.2 if rng.random() < f.parking else 0.0 for _ in range(2)),  # type: ignore[arg-type]
        sidewalk=tuple(float(rng.uniform(*f.sidewalk_m)) for _ in range(2)),  # type: ignore[arg-type]
        verge=tuple(float(rng.uniform(1.0, 2.5)) if rng.random() < f.verge else 0.0 for _ in range(2)),  # type: ignore[arg-type]
        crossings=tuple(crossings), frontage=tuple(frontage),
        tree_lined=tuple(bool(rng.random() < f.tree_lined) for _ in range(2)),  # type: ignore[arg-type]
        surface=surface,
    )


def ground_thing(street: Street, z_range: tuple[float, float]) -> Thing:
    """The ground between `z_range` (world z): terrain, sidewalks, kerbs, roads and markings."""
    z0, z1 = z_range
    s = street.surface

    def quad(xa: float, xb: float, za: float, zb: float) -> list[tuple[float, float, float]]:
        return [(xa, 0.0, za), (xb, 0.0, za), (xb, 0.0, zb), (xa, 0.0, zb)]

    b = ShapeBuilder()
    b.add(TERRAIN, s["terrain"], [quad(-_WIDE_M, _WIDE_M, z0, z1)])
    paved = []
    for fr in street.frontage:
        za, zb = max(fr.z0, z0), min(fr.z1, z1)
        if fr.paved and fr.setback > 0 and za < zb:
            back = street.back_of_sidewalk(fr.side)
            paved.append(quad(back, back + fr.side * (fr.setback + 0.5), za, zb))
    b.add(SIDEWALK, s["sidewalk"], paved + [quad(street.kerb(side), street.back_of_sidewalk(side), z0, z1) for side in (-1, 1)])
    b.add(TERRAIN, s["terrain"], [quad(street.kerb(side), street.pavement(side), z0, z1) for side in (-1, 1) if street.verge[side > 0]])
    b.add(SIDEWALK, s["curb"], [quad(street.kerb(side), street.kerb(side) + side * 0.2, z0, z1) for side in (-1, 1)])
    crossings = [(max(c0, z0), min(c1, z1)) for c0, c1 in street.crossings if c1 > z0 and c0 < z1]
    b.add(ROAD, s["road"], [quad(-_WIDE_M, _WIDE_M, c0, c1) for c0, c1 in crossings])
    b.add(ROAD, s["road"], [quad(street.kerb(-1), street.kerb(1), z0, z1)])
    b.add(ROAD, s["lane_mark"], _markings(street, z0, z1))
    return Thing(b.build(), layer=GROUND)


def _markings(street: Street, z0: float, z1: float) -> list[list[tuple[float, float, float]]]:
    lines = [0.0] + [side * street.lane_width for side in (-1, 1) if street.lanes == 2]
    lines += [side * street.lanes * street.lane_width for side in (-1, 1) if street.parking[side > 0] > 0]
    quads = []
    first, last = math.floor(z0 / _DASH_PERIOD_M), math.ceil(z1 / _DASH_PERIOD_M)
    for k in range(first, last + 1):
        za, zb = max(k * _DASH_PERIOD_M, z0), min(k * _DASH_PERIOD_M + _DASH_M, z1)
        if za >= zb or street.near_crossing(za, 1.0) or street.near_crossing(zb, 1.0):
            continue
        for x in lines:
            quads.append([(x - 0.07, 0.0, za), (x + 0.07, 0.0, za), (x + 0.07, 0.0, zb), (x - 0.07, 0.0, zb)])
    for c0, _ in street.crossings:
        za, zb = max(c0 - _ZEBRA_M[0], z0), min(c0 - _ZEBRA_M[1], z1)
        if za >= zb:
            continue
        for x in np.arange(street.kerb(-1) + 0.3, street.kerb(1) - 0.5, 1.0):
            quads.append([(x, 0.0, za), (x + 0.5, 0.0, za), (x + 0.5, 0.0, zb), (x, 0.0, zb)])
    return quads


def background_things(rng: np.random.Generator, street: Street, style: DomainStyle, look: Look,
                      seen: Callable[[float, float, float, float], bool]) -> list[Thing]:
    """Buildings, parks, walls and fences along both sides, and the skyline at the far end;
    `seen(x, z, radius, height)` skips trees no camera will see."""
    things = [Thing(skyline_shape(rng, look), z=FAR_M - 0.5, layer=FAR_BACKGROUND, follows_camera=True)]
    for fr in street.frontage:
        back = street.back_of_sidewalk(fr.side)
        length = fr.z1 - fr.z0
        height = float(rng.uniform(*style.frequencies.building_height_m))
        if not seen(back + fr.side * 20.0, (fr.z0 + fr.z1) / 2, length / 2 + 20.0, height):
            continue
        if fr.kind == "building":
            depth = 40.0 if fr.corner else float(rng.uniform(10.0, 16.0))
            shape = building_shape(rng, look, fr.side, back + fr.side * fr.setback, (fr.z0, fr.z1), height, depth)
            things.append(Thing(shape, layer=BACKGROUND))
            continue
        if fr.kind in ("wall", "fence"):
            barrier_height = float(rng.uniform(1.0, 2.4) if fr.kind == "wall" else rng.uniform(0.9, 2.0))
            things.append(Thing(barrier_shape(rng, look, fr.kind, fr.side, back, (fr.z0, fr.z1), barrier_height), layer=BACKGROUND))
        if fr.kind == "park" or rng.random() < 0.5:
            for _ in range(max(1, int(length / 7.0))):
                x = back + fr.side * float(rng.uniform(1.5, 12.0))
                z = float(rng.uniform(fr.z0 + 1.0, max(fr.z0 + 1.5, fr.z1 - 1.0)))
                if not seen(x, z, 5.0, 5.0):
                    continue
                b = ShapeBuilder()
                if rng.random() < 0.75:
                    draw_tree(b, rng, look, scale=float(rng.uniform(1.0, 1.6)))
                else:
                    draw_bush(b, rng, look, float(rng.uniform(1.5, 4.0)), float(rng.uniform(0.8, 1.8)))
                things.append(Thing(b.build(), x=x, z=z, layer=BACKGROUND))
        if rng.random() < 0.8:
            x_face = back + fr.side * float(rng.uniform(14.0, 30.0) if fr.kind == "park" else rng.uniform(4.0, 12.0))
            shape = building_shape(rng, look, fr.side, x_face, (fr.z0, fr.z1), height, 12.0)
            things.append(Thing(shape, layer=FAR_BACKGROUND))
    return things
