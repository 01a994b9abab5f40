"""Pedestrians, riders and two-wheelers as flat silhouettes in (u, v) metres.

A figure stands on v = 0 centred on u = 0; profile views face +u (mirror them for -u).
`phase` (radians) drives the walking or pedalling cycle, so video can animate the same figure.
Riders are labelled `rider` and their vehicle `bicycle` or `motorcycle`, as in Cityscapes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from uda_adapt.adapt.data.synth.palettes import Colour
from uda_adapt.adapt.data.synth.shapes import ShapeBuilder, disc, ellipse, limb, mirrored, rect
from uda_adapt.adapt.data.synth.style import BICYCLE, MOTORCYCLE, PERSON, RIDER, Look


@dataclass(frozen=True)
class Figure:
    """Body size and clothing of one person."""

    height: float
    build: float                        # shoulder width factor
    skin: Colour
    hair: Colour
    shirt: Colour
    trousers: Colour


@dataclass(frozen=True)
class TwoWheeler:
    kind: str                           # "bicycle" or "motorcycle"
    paint: Colour
    tyre: Colour


def sample_figure(rng: np.random.Generator, look: Look) -> Figure:
    return Figure(float(rng.uniform(1.55, 1.92)), float(rng.uniform(0.9, 1.15)), look.colour(rng, "skin"),
                  look.colour(rng, "hair"), look.colour(rng, "shirt"), look.colour(rng, "trousers"))


def sample_two_wheeler(rng: np.random.Generator, look: Look, kind: str) -> TwoWheeler:
    return TwoWheeler(kind, look.colour(rng, kind), look.colour(rng, "tyre"))


def _darker(colour: Colour, factor: float = 0.75) -> Colour:
    return tuple(int(c * factor) for c in colour)  # type: ignore[return-value]


def draw_walker(b: ShapeBuilder, fig: Figure, view: str, phase: float, flip: bool = False,
                label: int = PERSON) -> None:
    """A standing or walking person; `view` is "front", "back" or "profile"."""
    h, s = fig.height, fig.build
    hip, shoulder, head_r = 0.5 * h, 0.81 * h, 0.065 * h
    head_v = 0.905 * h
    if view == "profile":
        swing = 0.42 * math.sin(phase)
        legs = [limb((0.0, hip), (math.sin(a) * hip, hip - math.cos(a) * hip), 0.14 * s) for a in (swing, -swing)]
        arm_len = 0.33 * h
        arms = [limb((0.0, shoulder - 0.03 * h), (math.sin(-a) * arm_len, shoulder - math.cos(a) * arm_len), 0.075 * s)
                for a in (swing, -swing)]
        b.add_flat(label, _darker(fig.trousers), [mirrored(legs[1], flip)])
        b.add_flat(label, _darker(fig.shirt), [mirrored(arms[1], flip)])
        b.add_flat(label, fig.shirt, [mirrored(rect(-0.12 * s, 0.12 * s, hip - 0.04 * h, shoulder), flip)])
        b.add_flat(label, fig.trousers, [mirrored(legs[0], flip)])
        b.add_flat(label, fig.shirt, [mirrored(arms[0], flip)])
        b.add_flat(label, fig.skin, [mirrored(disc(0.02, head_v, head_r, 10), flip)])
        b.add_flat(label, fig.hair, [mirrored(ellipse(-0.015, head_v + 0.3 * head_r, head_r, 0.75 * head_r, 10), flip)])
        return
    lift = 0.05 * h * math.sin(phase)
    b.add_flat(label, fig.trousers, [rect(-0.16 * s, -0.015 * s, max(lift, 0.0), hip),
                                     rect(0.015 * s, 0.16 * s, max(-lift, 0.0), hip)])
    torso = np.array([(-0.15 * s, hip - 0.04 * h), (0.15 * s, hip - 0.04 * h), (0.22 * s, shoulder), (-0.22 * s, shoulder)])
    b.add_flat(label, fig.shirt, [torso, rect(-0.27 * s, -0.19 * s, 0.47 * h, shoulder - 0.01 * h),
                                  rect(0.19 * s, 0.27 * s, 0.47 * h, shoulder - 0.01 * h)])
    b.add_flat(label, fig.skin, [rect(-0.04, 0.04, shoulder - 0.02 * h, head_v), disc(0.0, head_v, head_r, 10)])
    if view == "back":
        b.add_flat(label, fig.hair, [disc(0.0, head_v + 0.05 * head_r, 1.02 * head_r, 10)])
    else:
        b.add_flat(label, fig.hair, [ellipse(0.0, head_v + 0.55 * head_r, 1.02 * head_r, 0.55 * head_r, 10)])


def draw_two_wheeler_profile(b: ShapeBuilder, bike: TwoWheeler, flip: bool = False, sideways: bool = False,
                             at: tuple[float, float] = (0.0, 0.0)) -> None:
    """A bicycle or motorcycle seen from the side, front wheel towards +u."""
    def add(label: int, colour: Colour, outlines: list[np.ndarray]) -> None:
        b.add_flat(label, colour, [mirrored(o, flip) for o in outlines], sideways=sideways, at=at)

    rim = _darker(bike.paint, 0.6)
    if bike.kind == "bicycle":
        r, hub = 0.34, 0.52
        add(BICYCLE, bike.tyre, [disc(-hub, r, r, 14), disc(hub, r, r, 14)])
        add(BICYCLE, rim, [disc(-hub, r, 0.8 * r, 14), disc(hub, r, 0.8 * r, 14)])
        seat, head, crank = (-0.14, 0.88), (0.40, 0.86), (0.0, 0.30)
        tubes = [limb((-hub, r), crank, 0.05), limb((-hub, r), seat, 0.04), limb(seat, crank, 0.05),
                 limb(seat, head, 0.05), limb(crank, head, 0.05), limb(head, (hub, r), 0.045),
                 limb(head, (0.34, 1.0), 0.04), rect(-0.26, -0.04, 0.88, 0.93)]
        add(BICYCLE, bike.paint, tubes)
        return
    r, hub = 0.31, 0.68
    add(MOTORCYCLE, bike.tyre, [disc(-hub, r, r, 14), disc(hub, r, r, 14)])
    add(MOTORCYCLE, rim, [disc(-hub, r, 0.6 * r, 12), disc(hub, r, 0.6 * r, 12)])
    body = np.array([(-0.85, 0.55), (-0.55, 0.78), (-0.1, 0.8), (0.15, 0.92), (0.45, 0.92), (0.62, 0.75),
                     (0.6, 0.45), (0.3, 0.28), (-0.35, 0.3), (-0.7, 0.45)])
    add(MOTORCYCLE, bike.paint, [body, limb((0.5, 0.9), (0.42, 1.08), 0.05), limb((0.55, 0.8), (hub, r), 0.06)])


def draw_rider_profile(b: ShapeBuilder, fig: Figure, bike: TwoWheeler, phase: float, flip: bool = False) -> None:
    """A rider on a two-wheeler crossing the view."""
    k, s = fig.height / 1.75, fig.build
    motor = bike.kind == "motorcycle"
    hip = (-0.2, 0.85) if motor else (-0.12, 0.95)
    lean = math.radians(15 if motor else 25)
    shoulder = (hip[0] + 0.5 * k * math.sin(lean), hip[1] + 0.5 * k * math.cos(lean))
    bar = (0.42, 1.06) if motor else (0.34, 1.0)

    def leg(angle: float) -> list[np.ndarray]:
        if motor:
            foot = (0.15, 0.4)
        else:
            foot = (0.17 * math.cos(angle), 0.30 + 0.17 * math.sin(angle))
        knee = (foot[0] + 0.16, 0.5 * (hip[1] + foot[1]) + 0.08)
        return [mirrored(limb(hip, knee, 0.14 * s), flip), mirrored(limb(knee, foot, 0.11 * s), flip)]

    b.add_flat(RIDER, _darker(fig.trousers), leg(phase + math.pi))
    draw_two_wheeler_profile(b, bike, flip)
    b.add_flat(RIDER, fig.shirt, [mirrored(limb(hip, shoulder, 0.26 * s), flip)])
    b.add_flat(RIDER, fig.trousers, leg(phase))
    b.add_flat(RIDER, fig.shirt, [mirrored(limb(shoulder, bar, 0.075 * s), flip)])
    head = (shoulder[0] + 0.06, shoulder[1] + 0.15 * k)
    b.add_flat(RIDER, fig.skin, [mirrored(disc(head[0], head[1], 0.11 * k, 10), flip)])
    helmet = disc(head[0] - 0.01, head[1] + 0.02, 0.12 * k, 10) if motor else \
        ellipse(head[0] - 0.01, head[1] + 0.05 * k, 0.11 * k, 0.07 * k, 10)
    b.add_flat(RIDER, fig.hair, [mirrored(helmet, flip)])


def draw_rider_rear(b: ShapeBuilder, fig: Figure, bike: TwoWheeler, phase: float) -> None:
    """A rider seen from behind (or the front): riding along the street."""
    k, s = fig.height / 1.75, fig.build
    motor = bike.kind == "motorcycle"
    label = MOTORCYCLE if motor else BICYCLE
    if motor:
        b.add_flat(label, bike.tyre, [rect(-0.07, 0.07, 0.0, 0.62)])
        b.add_flat(label, bike.paint, [rect(-0.22, 0.22, 0.35, 0.85), rect(-0.38, 0.38, 1.0, 1.05)])
        hip = 0.88
    else:
        b.add_flat(label, bike.tyre, [rect(-0.025, 0.025, 0.0, 0.68)])
        b.add_flat(label, bike.paint, [rect(-0.04, 0.04, 0.3, 0.9), rect(-0.3, 0.3, 0.98, 1.02)])
        hip = 0.95
    pedal = 0.0 if motor else 0.12 * math.sin(phase)
    b.add_flat(RIDER, fig.trousers, [limb((-0.1 * s, hip), (-0.15 * s, 0.32 + pedal), 0.13 * s),
                                     limb((0.1 * s, hip), (0.15 * s, 0.32 - pedal), 0.13 * s)])
    top = hip + 0.5 * k
    torso = np.array([(-0.15 * s, hip - 0.03), (0.15 * s, hip - 0.03), (0.21 * s, top), (-0.21 * s, top)])
    b.add_flat(RIDER, fig.shirt, [torso, limb((-0.19 * s, top - 0.05), (-0.28, 1.02), 0.075 * s),
                                  limb((0.19 * s, top - 0.05), (0.28, 1.02), 0.075 * s)])
    b.add_flat(RIDER, fig.skin, [disc(0.0, top + 0.13 * k, 0.11 * k, 10)])
    b.add_flat(RIDER, fig.hair, [disc(0.0, top + 0.15 * k, (0.125 if motor else 0.105) * k, 10)])
