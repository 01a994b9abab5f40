"""Buildings, walls, fences and the distant skyline, in world coordinates.

Facades stand parallel to the street at x = `x_face` and face the road; `side` is +1 on the
right and -1 on the left. Windows are painted with the building's own label, as Cityscapes
annotates them.
"""

from __future__ import annotations

import numpy as np

from uda_adapt.adapt.data.synth.shapes import Normal, Shape, ShapeBuilder, blob
from uda_adapt.adapt.data.synth.style import BUILDING, FENCE, VEGETATION, WALL, Look

SKYLINE_HALF_WIDTH_M = 100.0   # covers the widest field of view (86 degrees) at the far plane


def _grid(u0: float, u1: float, v0: float, v1: float, cell_u: float, cell_v: float, fill_u: float, fill_v: float,
          v_start: float) -> np.ndarray:
    """(K, 4, 2) window rectangles on a regular grid inside [u0, u1] x [v_start, v1]."""
    cols, rows = int((u1 - u0) / cell_u), int((v1 - v_start) / cell_v)
    if cols < 1 or rows < 1:
        return np.zeros((0, 4, 2))
    cu = u0 + (u1 - u0 - cols * cell_u) / 2 + cell_u * (np.arange(cols) + 0.5)
    cv = v_start + cell_v * (np.arange(rows) + 0.5)
    centres = np.empty((rows, cols, 2))
    centres[..., 0], centres[..., 1] = cu[None, :], cv[:, None]
    hu, hv = cell_u * fill_u / 2, cell_v * fill_v / 2
    corners = np.array([(-hu, -hv), (hu, -hv), (hu, hv), (-hu, hv)])
    return centres.reshape(-1, 1, 2) + corners[None]


def _along_street(grid: np.ndarray, x: float) -> np.ndarray:
    """(K, n, 2) rectangles with u along z, in the plane x = `x` -> (K, n, 3)."""
    points = np.empty(grid.shape[:2] + (3,))
    points[..., 0], points[..., 1], points[..., 2] = x, grid[..., 1], grid[..., 0]
    return points


def _across_street(grid: np.ndarray, z: float) -> np.ndarray:
    """(K, n, 2) rectangles with u along x, in the plane z = `z` -> (K, n, 3)."""
    points = np.empty(grid.shape[:2] + (3,))
    points[..., 0], points[..., 1], points[..., 2] = grid[..., 0], grid[..., 1], z
    return points


def building_shape(rng: np.random.Generator, look: Look, side: int, x_face: float, z: tuple[float, float],
                   height: float, depth: float) -> Shape:
    b = ShapeBuilder()
    z0, z1 = z
    x_back = x_face + side * depth
    paint, glass = look.colour(rng, "building"), look.colour(rng, "window")
    facade_n: Normal = (-float(side), 0.0, 0.0)
    front_n: Normal = (0.0, 0.0, -1.0)
    b.add(BUILDING, look.shade(paint, facade_n), [[(x_face, 0, z0), (x_face, height, z0), (x_face, height, z1), (x_face, 0, z1)]], facade_n)
    b.add(BUILDING, look.shade(paint, front_n), [[(x_face, 0, z0), (x_back, 0, z0), (x_back, height, z0), (x_face, height, z0)]], front_n)
    floor, column = rng.uniform(3.0, 3.6), rng.uniform(2.4, 3.4)
    fill_u, fill_v = rng.uniform(0.35, 0.6), rng.uniform(0.4, 0.6)
    ground_floor = floor * rng.uniform(1.0, 1.3)
    top = height - 0.6
    facade = _grid(z0 + 0.4, z1 - 0.4, 0.0, top, column, floor, fill_u, fill_v, ground_floor)
    front = _grid(min(x_face, x_back) + 0.4, max(x_face, x_back) - 0.4, 0.0, top, column, floor, fill_u, fill_v, ground_floor)
    b.add(BUILDING, look.shade(glass, facade_n), _along_street(facade, x_face), facade_n)
    b.add(BUILDING, look.shade(glass, front_n), _across_street(front, z0), front_n)
    if rng.random() < 0.5:  # shop fronts: a band of large panes on the ground floor
        shops = _grid(z0 + 0.5, z1 - 0.5, 0.0, ground_floor - 0.2, rng.uniform(3.0, 5.0), ground_floor - 0.5, 0.85, 0.8, 0.3)
        shade = look.shade(tuple(int(c * 0.8) for c in glass), facade_n)  # type: ignore[arg-type]
        b.add(BUILDING, shade, _along_street(shops, x_face), facade_n)
    trim = tuple(int(c * rng.choice([0.75, 1.15])) for c in paint)
    trim = tuple(min(255, c) for c in trim)
    b.add(BUILDING, look.shade(trim, facade_n), [[(x_face, top, z0), (x_face, height, z0), (x_face, height, z1), (x_face, top, z1)]], facade_n)  # type: ignore[arg-type]
    return b.build()


def barrier_shape(rng: np.random.Generator, look: Look, kind: str, side: int, x_face: float, z: tuple[float, float],
                  height: float) -> Shape:
    """A wall (solid box) or a fence (slatted panel) along the back of the sidewalk."""
    b = ShapeBuilder()
    z0, z1 = z
    facing: Normal = (-float(side), 0.0, 0.0)
    if kind == "wall":
        paint = look.colour(rng, "wall")
        x_pair = sorted((x_face, x_face + side * 0.3))
        b.box(WALL, paint, look.shade, (x_pair[0], x_pair[1]), (0.0, height), (z0, z1))
        cap = look.shade(tuple(int(c * 0.8) for c in paint), facing)  # type: ignore[arg-type]
        b.add(WALL, cap, [[(x_face, height - 0.15, z0), (x_face, height, z0), (x_face, height, z1), (x_face, height - 0.15, z1)]], facing)
        return b.build()
    paint = look.colour(rng, "fence")
    b.add(FENCE, look.shade(paint, facing), [[(x_face, 0, z0), (x_face, height, z0), (x_face, height, z1), (x_face, 0, z1)]], facing)
    dark = look.shade(tuple(int(c * 0.55) for c in paint), facing)  # type: ignore[arg-type]
    spacing = rng.uniform(0.18, 0.35)
    edges = np.arange(z0 + 0.05, z1 - 0.05, spacing)
    corners = np.array([(0.0, 0.12), (0.0, height - 0.12), (spacing * 0.45, height - 0.12), (spacing * 0.45, 0.12)])
    slats = np.stack([edges[:, None] + corners[None, :, 0], np.broadcast_to(corners[:, 1], (len(edges), 4))], axis=2)
    b.add(FENCE, dark, _along_street(slats, x_face), facing)
    return b.build()


def skyline_shape(rng: np.random.Generator, look: Look) -> Shape:
    """A row of distant buildings and tree lines at local z = 0, facing the camera."""
    b = ShapeBuilder()
    x = -SKYLINE_HALF_WIDTH_M
    while x < SKYLINE_HALF_WIDTH_M:
        width = rng.uniform(6.0, 24.0)
        if rng.random() < 0.3:
            height = rng.uniform(5.0, 12.0)
            green = tuple(int(c * 0.85) for c in look.colour(rng, "vegetation"))
            crown = blob(rng, x + width / 2, height * 0.6, width * 0.6, height * 0.45)
            base = np.array([(x, -0.5), (x + width, -0.5), (x + width, height * 0.55), (x, height * 0.55)])
            b.add_flat(VEGETATION, green, [base, crown])  # type: ignore[arg-type]
        else:
            height = rng.uniform(4.0, 30.0)
            b.add_flat(BUILDING, look.colour(rng, "backdrop"), [np.array([(x, -0.5), (x + width, -0.5), (x + width, height), (x, height)])])
        x += width
    return b.build()
