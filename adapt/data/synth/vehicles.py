"""Cars, trucks and buses as boxes, in local metres.

A vehicle spans x in [-w/2, w/2] and z in [0, length]; `heading` +1 drives away from the camera
(its rear at z = 0), -1 comes towards it (its front at z = 0). Glass, lights and wheels are
painted onto the boxes with the vehicle's own label, as Cityscapes annotates them.
"""

from __future__ import annotations

import numpy as np

from uda_adapt.adapt.data.synth.palettes import Colour
from uda_adapt.adapt.data.synth.shapes import Normal, Shape, ShapeBuilder
from uda_adapt.adapt.data.synth.style import BUS, CAR, TRUCK, Look

VEHICLE_LABELS = {"car": CAR, "truck": TRUCK, "bus": BUS}
_NEAR: Normal = (0.0, 0.0, -1.0)
_FAR: Normal = (0.0, 0.0, 1.0)


def vehicle_shape(kind: str, rng: np.random.Generator, look: Look, heading: int) -> Shape:
    b = ShapeBuilder()
    {"car": _car, "truck": _truck, "bus": _bus}[kind](b, rng, look, heading)
    return b.build()


def _end_quad(x: tuple[float, float], y: tuple[float, float], z: float) -> list[tuple[float, float, float]]:
    return [(x[0], y[0], z), (x[1], y[0], z), (x[1], y[1], z), (x[0], y[1], z)]


def _side_quad(x: float, y: tuple[float, float], z: tuple[float, float]) -> list[tuple[float, float, float]]:
    return [(x, y[0], z[0]), (x, y[1], z[0]), (x, y[1], z[1]), (x, y[0], z[1])]


def _lights(b: ShapeBuilder, label: int, look: Look, rng: np.random.Generator, half: float, y: tuple[float, float],
            length: float, heading: int) -> None:
    """Tail lights on the rear end, head lights on the front end."""
    tail, head = look.colour(rng, "tail_light"), look.colour(rng, "head_light")
    pairs = [_end_quad((-half + 0.08, -half + 0.32), y, 0.0), _end_quad((half - 0.32, half - 0.08), y, 0.0)]
    far = [[(px, py, length) for px, py, _ in quad] for quad in pairs]
    b.add(label, tail if heading > 0 else head, pairs, _NEAR)
    b.add(label, head if heading > 0 else tail, far, _FAR)


def _windows_on_sides(b: ShapeBuilder, label: int, glass: Colour, look: Look, half: float, y: tuple[float, float],
                      z: tuple[float, float], panes: int = 1) -> None:
    edges = np.linspace(z[0], z[1], panes + 1)
    gap = 0.06 if panes > 1 else 0.0
    quads = np.empty((panes, 4, 3))
    quads[:, :, 1] = (y[0], y[1], y[1], y[0])
    quads[:, :, 2] = np.stack([edges[:-1] + gap, edges[:-1] + gap, edges[1:] - gap, edges[1:] - gap], axis=1)
    for side, normal in ((-half, (-1.0, 0.0, 0.0)), (half, (1.0, 0.0, 0.0))):
        quads[:, :, 0] = side
        b.add(label, look.shade(glass, normal), quads.copy(), normal)


def _car(b: ShapeBuilder, rng: np.random.Generator, look: Look, heading: int) -> None:
    length, width = rng.uniform(3.9, 4.8), rng.uniform(1.7, 1.9)
    half, body_top = width / 2, rng.uniform(0.88, 1.02)
    roof = body_top + rng.uniform(0.42, 0.55)
    paint, glass, tyre = look.colour(rng, "car"), look.colour(rng, "vehicle_window"), look.colour(rng, "tyre")
    b.box(CAR, tyre, look.shade, (-half + 0.06, half - 0.06), (0.0, 0.34), (0.2, length - 0.2), top=False)
    b.box(CAR, paint, look.shade, (-half, half), (0.3, body_top), (0.0, length))
    cabin = (0.9, length - 1.3) if heading > 0 else (1.3, length - 0.9)
    b.box(CAR, paint, look.shade, (-half + 0.1, half - 0.1), (body_top, roof), cabin)
    pane_y = (body_top + 0.05, roof - 0.07)
    b.add(CAR, look.shade(glass, _NEAR), [_end_quad((-half + 0.2, half - 0.2), pane_y, cabin[0])], _NEAR)
    b.add(CAR, look.shade(glass, _FAR), [_end_quad((-half + 0.2, half - 0.2), pane_y, cabin[1])], _FAR)
    _windows_on_sides(b, CAR, glass, look, half - 0.1, pane_y, (cabin[0] + 0.12, cabin[1] - 0.12), panes=2)
    _lights(b, CAR, look, rng, half, (body_top - 0.22, body_top - 0.08), length, heading)


def _truck(b: ShapeBuilder, rng: np.random.Generator, look: Look, heading: int) -> None:
    cargo_len, width = rng.uniform(4.5, 8.0), rng.uniform(2.3, 2.5)
    half, cargo_h, cab_h = width / 2, rng.uniform(3.2, 3.8), rng.uniform(2.6, 3.0)
    paint, cargo_paint = look.colour(rng, "truck"), look.colour(rng, "truck")
    glass, tyre = look.colour(rng, "vehicle_window"), look.colour(rng, "tyre")
    length = cargo_len + 2.5
    cab = (cargo_len + 0.2, length) if heading > 0 else (0.0, 2.3)
    cargo = (0.0, cargo_len) if heading > 0 else (2.5, length)
    b.box(TRUCK, tyre, look.shade, (-half + 0.1, half - 0.1), (0.0, 0.55), (0.3, length - 0.3), top=False)
    b.box(TRUCK, paint, look.shade, (-half + 0.05, half - 0.05), (0.5, cab_h), cab)
    pane_y = (cab_h * 0.55, cab_h - 0.15)
    end = cab[1] if heading > 0 else cab[0]
    normal = _FAR if heading > 0 else _NEAR
    b.add(TRUCK, look.shade(glass, normal), [_end_quad((-half + 0.2, half - 0.2), pane_y, end)], normal)
    _windows_on_sides(b, TRUCK, glass, look, half - 0.05, pane_y, (cab[0] + 0.3, cab[1] - 0.6))
    b.box(TRUCK, cargo_paint, look.shade, (-half, half), (0.55, cargo_h), cargo)
    _lights(b, TRUCK, look, rng, half, (0.65, 0.85), length, heading)


def _bus(b: ShapeBuilder, rng: np.random.Generator, look: Look, heading: int) -> None:
    length, width, height = rng.uniform(10.0, 12.5), 2.5, rng.uniform(3.0, 3.3)
    half = width / 2
    paint, glass, tyre = look.colour(rng, "bus"), look.colour(rng, "vehicle_window"), look.colour(rng, "tyre")
    b.box(BUS, tyre, look.shade, (-half + 0.1, half - 0.1), (0.0, 0.5), (0.5, length - 0.5), top=False)
    b.box(BUS, paint, look.shade, (-half, half), (0.35, height), (0.0, length))
    band = (1.25, height - 0.35)
    _windows_on_sides(b, BUS, glass, look, half, band, (0.6, length - 0.6), panes=int(length / 1.6))
    front_y = (0.95, height - 0.25)
    rear_y = (1.7, height - 0.45)
    b.add(BUS, look.shade(glass, _NEAR), [_end_quad((-half + 0.15, half - 0.15), rear_y if heading > 0 else front_y, 0.0)], _NEAR)
    b.add(BUS, look.shade(glass, _FAR), [_end_quad((-half + 0.15, half - 0.15), front_y if heading > 0 else rear_y, length)], _FAR)
    _lights(b, BUS, look, rng, half, (0.55, 0.8), length, heading)
