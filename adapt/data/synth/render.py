"""Rasterise things into a colour image and a label map with the same polygons.

Painter's algorithm: layers back to front, and within a layer far to near by each thing's
nearest point; boxes drop the faces that look away from the camera. Each face is filled once,
at 1/16 pixel precision, into a 4-channel canvas holding (R, G, B, train id), so colour and
label agree on every edge and the fill costs one call.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from uda_adapt.adapt.classes import IGNORE_INDEX
from uda_adapt.adapt.data.synth.camera import FAR_M, NEAR_M, Camera, clip_near
from uda_adapt.adapt.data.synth.palettes import Colour
from uda_adapt.adapt.data.synth.shapes import GROUND, Shape, Thing
from uda_adapt.adapt.data.synth.style import SKY

_SHIFT = 4                      # cv2 fixed-point bits: vertices at 1/16 pixel
_SCALE = float(1 << _SHIFT)


def sky_gradient(size: tuple[int, int], top: Colour, horizon: Colour, horizon_row: float) -> np.ndarray:
    """(H, W, 3) uint8: `top` at row 0 blending into `horizon` at the horizon row."""
    height, width = size
    t = np.clip(np.arange(height, dtype=np.float32) / max(horizon_row, 1.0), 0.0, 1.0)[:, None]
    rows = (1 - t) * np.asarray(top, np.float32) + t * np.asarray(horizon, np.float32)
    return np.broadcast_to(rows.astype(np.uint8)[:, None, :], (height, width, 3))


def render(things: Sequence[Thing], camera: Camera, t: float, sky: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Draw `things` at time `t`: RGB uint8 (H, W, 3) and train ids uint8 (H, W), sky behind."""
    canvas = cv2.cvtColor(np.ascontiguousarray(sky), cv2.COLOR_RGB2RGBA)
    cv2.insertChannel(np.full((camera.height_px, camera.width_px), SKY, np.uint8), canvas, 3)
    queue = []
    for order, thing in enumerate(things):
        x, z = thing.position(t)
        dz = z if thing.follows_camera else z - camera.z_m
        # Cull on the shape at t = 0 (animation barely moves its extent) before redrawing it.
        if dz + thing.shape.z_max < NEAR_M or dz + thing.shape.z_min > FAR_M:
            continue
        shape = thing.shape_at(t)
        nearest = dz + shape.z_min
        key = (thing.layer, 0.0 if thing.layer == GROUND else -nearest, order)
        queue.append((key, shape, x - camera.x_m, dz))
    queue.sort(key=lambda item: item[0])
    for _, shape, dx, dz in queue:
        _draw(shape, dx, dz, camera, canvas)
    return cv2.cvtColor(canvas, cv2.COLOR_RGBA2RGB), cv2.extractChannel(canvas, 3)


def _draw(shape: Shape, dx: float, dz: float, camera: Camera, canvas: np.ndarray) -> None:
    rel = shape.points + (dx, 0.0, dz)
    clipped = dz + shape.z_min < NEAR_M
    if not clipped:
        uv = camera.project(rel)
        (u_min, v_min), (u_max, v_max) = uv.min(axis=0), uv.max(axis=0)
        if u_max < 0 or v_max < 0 or u_min >= camera.width_px or v_min >= camera.height_px:
            return
        fixed = np.rint(uv * _SCALE).astype(np.int32)
    facing = shape.facing(rel, camera.height_m) if shape.culled else None
    for index, face in enumerate(shape.faces):
        if facing is not None and face.normal is not None and not facing[index]:
            continue  # the face looks away from the camera
        if clipped:
            polygons = []
            for rows in face.contours:
                kept = clip_near(rel[rows])
                if len(kept) >= 3:
                    polygons.append(np.round(camera.project(kept) * _SCALE).astype(np.int32))
            if not polygons:
                continue
        else:
            polygons = [fixed[rows] for rows in face.contours]
        cv2.fillPoly(canvas, polygons, (*face.colour, face.label), cv2.LINE_8, _SHIFT)


def draw_hood(colour: np.ndarray, label: np.ndarray, rise: float, paint: Colour) -> None:
    """The ego vehicle's bonnet across the bottom of the frame, labelled ignore as in Cityscapes;
    it rises `rise` (a fraction of the image height) at the centre."""
    height, width = label.shape
    rise *= height
    u = np.linspace(-0.05 * width, 1.05 * width, 24)
    v = height - rise * (1.0 - ((u - width / 2) / (0.75 * width)) ** 2)
    outline = np.vstack([np.column_stack([u, v]), [(1.05 * width, height + 2), (-0.05 * width, height + 2)]])
    polygon = [np.round(outline * _SCALE).astype(np.int32)]
    cv2.fillPoly(label, polygon, IGNORE_INDEX, cv2.LINE_8, _SHIFT)
    cv2.fillPoly(colour, polygon, paint, cv2.LINE_8, _SHIFT)
    shine = np.column_stack([u, v + 0.25 * rise])[6:18]
    shine = np.vstack([shine, (shine + [0.0, 0.12 * rise])[::-1]])
    glint = tuple(min(255, int(c * 1.8) + 20) for c in paint)
    cv2.fillPoly(colour, [np.round(shine * _SCALE).astype(np.int32)], glint, cv2.LINE_8, _SHIFT)
