"""Shapes made of flat faces, and the things that place them in the street.

A `Shape` keeps every vertex of every face in one (M, 3) array, so the renderer projects a whole
object with one numpy call; each `Face` names its contours as row slices of that array.
Coordinates are metres: x right, y up from the road, z along the street away from the camera.
Flat 2D drawings (people, bikes, signs) are given as (u, v) outlines and embedded either facing
the camera (u along x) or sideways along the street (u along z).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import NamedTuple

import numpy as np

from uda_adapt.adapt.data.synth.palettes import Colour

# Drawing layers, back to front. Within a layer (except the ground) things are sorted far to near.
GROUND, FAR_BACKGROUND, BACKGROUND, THINGS = range(4)

Normal = tuple[float, float, float]


class Face(NamedTuple):
    # A NamedTuple rather than a dataclass: a scene creates about a thousand of these.
    label: int                          # train id, or IGNORE_INDEX
    colour: Colour                      # RGB before the domain's finishing
    contours: tuple[slice, ...]         # rows of Shape.points, filled even-odd (nested ones are holes)
    normal: Normal | None = None        # outward normal for back-face culling; None: always drawn


@dataclass(frozen=True)
class Shape:
    points: np.ndarray                  # (M, 3) float64, metres
    faces: tuple[Face, ...]
    z_min: float
    z_max: float
    normals: np.ndarray                 # (F, 3) each face's normal, zeros where it has none
    anchors: np.ndarray                 # (F,) a row of `points` on each face
    culled: bool                        # some faces have normals (back-face culling applies)

    def facing(self, rel: np.ndarray, eye_height: float) -> list[bool]:
        """Per face: whether its normal points towards the camera (`rel`: points relative to the
        camera's foot). Faces without a normal come out False; callers draw those regardless."""
        view = rel[self.anchors]
        view[:, 1] -= eye_height
        return ((self.normals * view).sum(axis=1) < 0).tolist()


@dataclass(frozen=True)
class Thing:
    """A shape placed at (x, 0, z), moving at (vx, vz) m/s; `animate(t)` redraws it (walking legs)."""

    shape: Shape
    x: float = 0.0
    z: float = 0.0
    layer: int = THINGS
    vx: float = 0.0
    vz: float = 0.0
    follows_camera: bool = False        # z is measured from the camera (the skyline)
    animate: Callable[[float], Shape] | None = None

    def shape_at(self, t: float) -> Shape:
        return self.animate(t) if self.animate is not None else self.shape

    def position(self, t: float) -> tuple[float, float]:
        return self.x + self.vx * t, self.z + self.vz * t


# Box faces as quads of corner indices (bit 0: x, bit 1: y, bit 2: z), with outward normals.
_BOX_FACES: tuple[Normal, ...] = ((0.0, 0.0, -1.0), (0.0, 0.0, 1.0), (-1.0, 0.0, 0.0), (1.0, 0.0, 0.0), (0.0, 1.0, 0.0))
_BOX_CORNERS = np.array([0, 1, 3, 2, 4, 5, 7, 6, 0, 2, 6, 4, 1, 3, 7, 5, 2, 3, 7, 6])

_NO_NORMALS = np.zeros((0, 3))
_NO_ANCHORS = np.zeros(0, dtype=np.intp)


class ShapeBuilder:
    """Collects faces in drawing order (later faces cover earlier ones) into one `Shape`."""

    def __init__(self) -> None:
        self._chunks: list[np.ndarray] = []
        self._faces: list[Face] = []
        self._rows = 0

    def add(self, label: int, colour: Colour, contours: Sequence[Sequence[Sequence[float]]] | np.ndarray,
            normal: Normal | None = None) -> None:
        """One face of (n, 3) contours filled in a single call; contours must not overlap, since
        the fill is even-odd (an overlap becomes a hole). Use several faces for overlapping parts.
        A (K, n, 3) array adds K contours of n points at once (windows, slats)."""
        if isinstance(contours, np.ndarray) and contours.ndim == 3:
            count, n = contours.shape[:2]
            if count == 0 or n < 3:
                return
            start = self._rows
            self._chunks.append(contours.reshape(-1, 3))
            self._rows += count * n
            stops = range(start + n, start + (count + 1) * n, n)
            self._faces.append(Face(label, colour, tuple(map(slice, range(start, self._rows, n), stops)), normal))
            return
        slices_list = []
        for contour in contours:
            points = contour if isinstance(contour, np.ndarray) else np.array(contour, dtype=np.float64)
            if len(points) < 3:
                continue
            slices_list.append(slice(self._rows, self._rows + len(points)))
            self._chunks.append(points)
            self._rows += len(points)
        if slices_list:
            self._faces.append(Face(label, colour, tuple(slices_list), normal))

    def add_flat(self, label: int, colour: Colour, outlines: Sequence[np.ndarray], *, sideways: bool = False,
                 at: tuple[float, float] = (0.0, 0.0)) -> None:
        """Add 2D (u, v) outlines, each its own face (so they may overlap), facing the camera
        (u along x) or `sideways` along the street (u along z)."""
        uv = outlines[0] if len(outlines) == 1 else np.concatenate(outlines)
        points = np.empty((len(uv), 3))
        points[:, 1] = uv[:, 1]
        x, z = at
        if sideways:
            points[:, 0], points[:, 2] = x, z + uv[:, 0]
        else:
            points[:, 0], points[:, 2] = x + uv[:, 0], z
        start = self._rows
        self._chunks.append(points)
        self._rows += len(points)
        for outline in outlines:
            self._faces.append(Face(label, colour, (slice(start, start + len(outline)),)))
            start += len(outline)

    def box(self, label: int, colour: Colour, shade: Callable[[Colour, Normal], Colour],
            x: tuple[float, float], y: tuple[float, float], z: tuple[float, float], top: bool = True) -> None:
        """An axis-aligned box without its bottom; `shade` lights each face by its normal."""
        corners = np.array([(x[i & 1], y[(i >> 1) & 1], z[i >> 2]) for i in range(8)])
        faces = _BOX_FACES if top else _BOX_FACES[:4]
        start = self._rows
        self._chunks.append(corners[_BOX_CORNERS[: 4 * len(faces)]])
        self._rows += 4 * len(faces)
        for i, normal in enumerate(faces):
            self._faces.append(Face(label, shade(colour, normal), (slice(start + 4 * i, start + 4 * i + 4),), normal))

    def build(self) -> Shape:
        points = np.concatenate(self._chunks) if self._chunks else np.zeros((0, 3))
        z_min, z_max = (float(points[:, 2].min()), float(points[:, 2].max())) if len(points) else (0.0, 0.0)
        faces = tuple(self._faces)
        culled = any(f.normal is not None for f in faces)
        normals = np.array([f.normal or (0.0, 0.0, 0.0) for f in faces]).reshape(-1, 3) if culled else _NO_NORMALS
        anchors = np.array([f.contours[0].start for f in faces], dtype=np.intp) if culled else _NO_ANCHORS
        return Shape(points, faces, z_min, z_max, normals, anchors, culled)


# --- 2D outlines in (u, v) metres -------------------------------------------------------------

def rect(u0: float, u1: float, v0: float, v1: float) -> np.ndarray:
    return np.array([(u0, v0), (u1, v0), (u1, v1), (u0, v1)], dtype=np.float64)


def ellipse(cu: float, cv: float, ru: float, rv: float, sides: int = 12) -> np.ndarray:
    return _unit_circle(sides) * (ru, rv) + (cu, cv)


@lru_cache(maxsize=32)
def _unit_circle(sides: int) -> np.ndarray:
    angles = np.linspace(0.0, 2 * math.pi, sides, endpoint=False)
    return np.stack([np.cos(angles), np.sin(angles)], axis=1)


def disc(cu: float, cv: float, r: float, sides: int = 12) -> np.ndarray:
    return ellipse(cu, cv, r, r, sides)


def blob(rng: np.random.Generator, cu: float, cv: float, ru: float, rv: float, sides: int = 14,
         rough: float = 0.22) -> np.ndarray:
    """An irregular round outline (tree crowns, bushes)."""
    scale = (1.0 + rough * rng.uniform(-1.0, 1.0, sides))[:, None]
    return _unit_circle(sides) * scale * (ru, rv) + (cu, cv)


def limb(a: tuple[float, float], b: tuple[float, float], width: float) -> np.ndarray:
    """A bar of `width` from point a to point b (legs, arms, bicycle tubes)."""
    (ua, va), (ub, vb) = a, b
    length = math.hypot(ub - ua, vb - va) or 1e-6
    nu, nv = -(vb - va) / length * width / 2, (ub - ua) / length * width / 2
    return np.array([(ua + nu, va + nv), (ub + nu, vb + nv), (ub - nu, vb - nv), (ua - nu, va - nv)])


def mirrored(outline: np.ndarray, flip: bool) -> np.ndarray:
    return outline * np.array([-1.0, 1.0]) if flip else outline
