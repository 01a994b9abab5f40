"""Everything that stands on the street in front of the frontage: vehicles, people, poles, trees.

Counts follow the domain's `Frequencies`. Every thing gets a velocity (zero for parked and
street furniture) so that the same street can be filmed by a moving camera; for a still image
the velocities are simply unused.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from uda_adapt.adapt.data.synth.camera import Camera
from uda_adapt.adapt.data.synth.furniture import draw_lamp_post, draw_sign_pole, draw_traffic_light, draw_tree
from uda_adapt.adapt.data.synth.layout import Street
from uda_adapt.adapt.data.synth.people import (
    Figure, draw_rider_profile, draw_rider_rear, draw_two_wheeler_profile, draw_walker, sample_figure, sample_two_wheeler,
)
from uda_adapt.adapt.data.synth.shapes import Shape, ShapeBuilder, Thing
from uda_adapt.adapt.data.synth.style import DomainStyle, Look
from uda_adapt.adapt.data.synth.vehicles import vehicle_shape

WALK_MPS = 1.3
STRIDE_M = 1.4
VEHICLE_LENGTH_M = {"car": 4.4, "truck": 9.0, "bus": 11.0}

# seen(x, z, radius, height): whether a thing there can show in the frame (stills skip the rest).
Seen = Callable[[float, float, float, float], bool]


def seen_always(x: float, z: float, radius: float, height: float) -> bool:
    return True


def populate(rng: np.random.Generator, street: Street, style: DomainStyle, look: Look, z_range: tuple[float, float],
             camera: Camera, camera_speed: float = 0.0, duration: float = 0.0) -> list[Thing]:
    """Place things along world z in `z_range`; with `duration` > 0 they move and animate.

    A still (`duration` 0) only builds what `camera` can see; a clip builds everything."""
    seen = camera.could_see if duration == 0 else seen_always
    things: list[Thing] = []
    things += _moving_vehicles(rng, street, style, look, z_range, camera.x_m, camera_speed, duration, seen)
    things += _parked(rng, street, style, look, z_range, seen)
    things += _people(rng, street, style, look, z_range, camera_speed, duration, seen)
    things += _furniture(rng, street, style, look, z_range, seen)
    return things


def _poisson(rng: np.random.Generator, per_100m: float, length: float) -> int:
    return int(rng.poisson(per_100m * length / 100.0))


def _moving_vehicles(rng: np.random.Generator, street: Street, style: DomainStyle, look: Look,
                     z_range: tuple[float, float], camera_x: float, camera_speed: float, duration: float,
                     seen: Seen) -> list[Thing]:
    f = style.frequencies
    kinds = ("car", "truck", "bus")
    mix = np.array(f.vehicle_mix) / sum(f.vehicle_mix)
    things = []
    for side in (1, -1):
        for lane in range(street.lanes):
            x = street.lane_centre(side, lane)
            own_lane = side > 0 and abs(x - camera_x) < 0.1
            if own_lane:
                speed = camera_speed
            elif side > 0:
                speed = camera_speed * float(rng.uniform(0.7, 1.3))
            else:
                speed = -float(rng.uniform(7.0, 12.0))
            # Extend the lane so that traffic keeps arriving over the whole clip.
            reach = abs(speed - camera_speed) * duration
            # A clip keeps its own lane clear for longer so the drive is worth watching.
            clear = (6.0 if duration == 0 else 25.0) if own_lane else 0.0
            z = z_range[0] - (reach if speed > camera_speed else 0.0) + clear
            end = z_range[1] + (reach if speed < camera_speed else 0.0)
            while True:
                z += float(rng.exponential(f.vehicle_gap_m)) + 2.0
                if z >= end:
                    break
                kind = kinds[rng.choice(3, p=mix)]
                if not seen(x, z + 5.0, 7.0, 1.4):
                    z += VEHICLE_LENGTH_M[kind]
                    continue
                shape = vehicle_shape(kind, rng, look, heading=side)
                things.append(Thing(shape, x=x + float(rng.uniform(-0.25, 0.25)), z=z, vz=speed))
                z += shape.z_max
    return things


def _parked(rng: np.random.Generator, street: Street, style: DomainStyle, look: Look,
            z_range: tuple[float, float], seen: Seen) -> list[Thing]:
    f = style.frequencies
    things = []
    for side in (1, -1):
        if street.parking[side > 0] <= 0:
            continue
        x = street.kerb(side) - side * 1.1
        z = z_range[0] + float(rng.uniform(-4.0, 2.0))
        while z < z_range[1]:
            slot = float(rng.uniform(5.4, 6.4))
            if (not street.near_crossing(z, 3.0) and not street.near_crossing(z + slot, 3.0)
                    and rng.random() < f.parked_fill and seen(x, z + 3.0, 5.0, 1.4)):
                if rng.random() < 0.1:
                    things.append(_two_wheeler_thing(rng, look, "motorcycle", x, z + slot / 2))
                else:
                    kind = "truck" if rng.random() < 0.08 else "car"
                    # Parked cars face the traffic of their side of the road.
                    shape = vehicle_shape(kind, rng, look, heading=side)
                    things.append(Thing(shape, x=x + float(rng.uniform(-0.15, 0.15)), z=z + 0.3))
                    slot = max(slot, shape.z_max + 0.6)
            z += slot
    return things


def _two_wheeler_thing(rng: np.random.Generator, look: Look, kind: str, x: float, z: float) -> Thing:
    b = ShapeBuilder()
    draw_two_wheeler_profile(b, sample_two_wheeler(rng, look, kind), flip=bool(rng.random() < 0.5), sideways=True)
    return Thing(b.build(), x=x, z=z)


def _animated(draw: Callable[[ShapeBuilder, float], None], phase: float, rate: float,
              duration: float) -> tuple[Shape, Callable[[float], Shape] | None]:
    """The shape at t = 0 and, for video, a function redrawing it at time t."""
    def shape_at(t: float) -> Shape:
        b = ShapeBuilder()
        draw(b, phase + rate * t)
        return b.build()
    return shape_at(0.0), (shape_at if duration > 0 else None)


def _walker_thing(fig: Figure, view: str, flip: bool, x: float, z: float, vx: float, vz: float,
                  phase: float, duration: float) -> Thing:
    rate = 2 * math.pi * math.hypot(vx, vz) / STRIDE_M
    shape, animate = _animated(lambda b, p: draw_walker(b, fig, view, p, flip), phase, rate, duration)
    return Thing(shape, x=x, z=z, vx=vx, vz=vz, animate=animate)


def _rider_thing(rng: np.random.Generator, look: Look, style: DomainStyle, x: float, z: float, vx: float, vz: float,
                 duration: float, profile: bool) -> Thing:
    kind = "motorcycle" if rng.random() < style.frequencies.motorcycle_share else "bicycle"
    fig, bike = sample_figure(rng, look), sample_two_wheeler(rng, look, kind)
    flip = vx < 0
    if profile:
        def draw(b: ShapeBuilder, p: float) -> None:
            draw_rider_profile(b, fig, bike, p, flip)
    else:
        def draw(b: ShapeBuilder, p: float) -> None:
            draw_rider_rear(b, fig, bike, p)
    rate = 0.0 if kind == "motorcycle" else 2 * math.pi * math.hypot(vx, vz) / 4.0
    shape, animate = _animated(draw, float(rng.uniform(0, 2 * math.pi)), rate, duration)
    return Thing(shape, x=x, z=z, vx=vx, vz=vz, animate=animate)


def _people(rng: np.random.Generator, street: Street, style: DomainStyle, look: Look, z_range: tuple[float, float],
            camera_speed: float, duration: float, seen: Seen) -> list[Thing]:
    f = style.frequencies
    z0, z1 = z_range
    things = []
    walk_reach = WALK_MPS * duration
    for side in (1, -1):
        width = street.sidewalk[side > 0]
        for _ in range(_poisson(rng, f.persons, z1 - z0)):
            group = 1 if rng.random() < 0.7 else int(rng.integers(2, 4))
            x, z = street.pavement(side) + side * float(rng.uniform(0.4, width - 0.3)), float(rng.uniform(z0 - walk_reach, z1))
            direction = 1 if rng.random() < 0.5 else -1
            standing = rng.random() < 0.2
            if not seen(x, z, 2.0, 1.7):
                continue
            for member in range(group):
                view = "profile" if standing else ("back" if direction > 0 else "front")
                vz = 0.0 if standing else direction * WALK_MPS * float(rng.uniform(0.85, 1.15))
                dx, dz = (0.0, 0.0) if member == 0 else (float(rng.uniform(-0.6, 0.6)), float(rng.uniform(0.4, 1.6)))
                things.append(_walker_thing(sample_figure(rng, look), view, bool(rng.random() < 0.5),
                                            x + dx, z + dz, 0.0, vz, float(rng.uniform(0, 2 * math.pi)), duration))
    for c0, _ in street.crossings:
        for _ in range(int(rng.poisson(f.crossers))):
            vx = WALK_MPS * (1 if rng.random() < 0.5 else -1)
            x = float(rng.uniform(street.kerb(-1), street.kerb(1)))
            z = float(rng.uniform(c0 - 3.8, c0 - 1.2))
            if not seen(x, z, 1.0, 1.7):
                continue
            things.append(_walker_thing(sample_figure(rng, look), "profile", vx < 0, x, z, vx, 0.0,
                                        float(rng.uniform(0, 2 * math.pi)), duration))
        if rng.random() < 0.25:
            vx = float(rng.uniform(3.0, 6.0)) * (1 if rng.random() < 0.5 else -1)
            things.append(_rider_thing(rng, look, style, float(rng.uniform(-8, 8)), float(rng.uniform(c0 + 2, c0 + 8)),
                                       vx, 0.0, duration, profile=True))
    for _ in range(_poisson(rng, f.riders, z1 - z0)):
        side = 1 if rng.random() < 0.65 else -1
        x = street.lane_centre(side, street.lanes - 1) + side * float(rng.uniform(0.4, 1.0))
        vz = side * float(rng.uniform(4.0, 7.0))
        z = float(rng.uniform(z0 + 5.0 - max(0.0, vz - camera_speed) * duration, z1))
        if not seen(x, z, 1.0, 1.7):
            continue
        things.append(_rider_thing(rng, look, style, x, z, 0.0, vz, duration, profile=False))
    for side in (1, -1):
        for _ in range(_poisson(rng, f.parked_bikes, z1 - z0)):
            kind = "motorcycle" if rng.random() < f.motorcycle_share else "bicycle"
            near_kerb = rng.random() < 0.6
            offset = 0.5 if near_kerb else street.sidewalk[side > 0] - 0.4
            x, z = street.pavement(side) + side * offset, float(rng.uniform(z0, z1))
            if seen(x, z, 1.0, 1.0):
                things.append(_two_wheeler_thing(rng, look, kind, x, z))
    return things


def _furniture(rng: np.random.Generator, street: Street, style: DomainStyle, look: Look,
               z_range: tuple[float, float], seen: Seen) -> list[Thing]:
    f = style.frequencies
    z0, z1 = z_range
    things = []

    def place(draw: Callable[[ShapeBuilder], None], x: float, z: float, radius: float = 2.0) -> None:
        if not seen(x, z, radius, 3.0):
            return
        b = ShapeBuilder()
        draw(b)
        things.append(Thing(b.build(), x=x, z=z))

    for side in (1, -1):
        kerb = street.kerb(side)
        z = z0 + float(rng.uniform(0.0, f.lamp_spacing_m[1]))
        while z < z1:
            if not street.near_crossing(z, 1.0):
                place(lambda b: draw_lamp_post(b, rng, look, side), kerb + side * 0.5, z)
            z += float(rng.uniform(*f.lamp_spacing_m))
        for _ in range(_poisson(rng, f.signs, z1 - z0)):
            z = float(rng.uniform(z0, z1))
            if not street.near_crossing(z):
                place(lambda b: draw_sign_pole(b, rng, look), kerb + side * float(rng.uniform(0.3, 0.8)), z)
        if street.tree_lined[side > 0]:
            z = z0 + float(rng.uniform(0.0, 10.0))
            while z < z1:
                if not street.near_crossing(z, 2.0):
                    place(lambda b: draw_tree(b, rng, look), kerb + side * float(rng.uniform(0.9, 1.3)), z)
                z += float(rng.uniform(7.0, 12.0))
        for c0, _ in street.crossings:
            if z0 - 5.0 < c0 < z1 + 5.0:
                reach = street.lanes * street.lane_width * float(rng.uniform(0.6, 0.9)) if side > 0 and rng.random() < 0.6 else 0.0
                place(lambda b: draw_traffic_light(b, rng, look, side, reach), kerb + side * 0.6, c0 - 0.5)
    return things
