"""Street furniture and greenery: lamp posts, sign poles, traffic lights, trees, hedges.

All face the camera as flat drawings standing on the pavement at local (0, 0, 0). `side` is +1
on the right of the road and -1 on the left, so arms reach towards the road (-side).
"""

from __future__ import annotations

import numpy as np

from uda_adapt.adapt.data.synth.shapes import ShapeBuilder, blob, disc, limb, rect
from uda_adapt.adapt.data.synth.style import LIGHT, POLE, SIGN, VEGETATION, Look


def draw_lamp_post(b: ShapeBuilder, rng: np.random.Generator, look: Look, side: int) -> None:
    height, reach = rng.uniform(6.0, 9.0), rng.uniform(1.2, 2.2)
    grey = look.colour(rng, "pole")
    tip = (-side * reach, height + 0.3)
    b.add_flat(POLE, grey, [rect(-0.08, 0.08, 0.0, height), limb((0.0, height - 0.2), tip, 0.1),
                            rect(tip[0] - 0.3, tip[0] + 0.3, tip[1] - 0.18, tip[1] + 0.02)])


def draw_sign_pole(b: ShapeBuilder, rng: np.random.Generator, look: Look) -> None:
    height = rng.uniform(2.3, 3.2)
    b.add_flat(POLE, look.colour(rng, "pole"), [rect(-0.04, 0.04, 0.0, height)])
    top = height
    for _ in range(1 + int(rng.random() < 0.35)):
        kind = rng.integers(4)
        colour, inner = look.colour(rng, "sign"), look.colour(rng, "sign_inner")
        if kind == 0:      # round
            outlines, details = [disc(0.0, top - 0.32, 0.32, 14)], [disc(0.0, top - 0.32, 0.22, 14)]
            size = 0.64
        elif kind == 1:    # warning triangle
            outlines = [np.array([(-0.38, top - 0.66), (0.38, top - 0.66), (0.0, top)])]
            details = [np.array([(-0.24, top - 0.58), (0.24, top - 0.58), (0.0, top - 0.16)])]
            size = 0.66
        elif kind == 2:    # square
            outlines, details = [rect(-0.3, 0.3, top - 0.6, top)], [rect(-0.12, 0.12, top - 0.5, top - 0.1)]
            size = 0.6
        else:              # wide plate
            outlines, details = [rect(-0.45, 0.45, top - 0.45, top)], [rect(-0.35, 0.35, top - 0.3, top - 0.15)]
            size = 0.45
        b.add_flat(SIGN, colour, outlines)
        b.add_flat(SIGN, inner, details)
        top -= size + 0.08


def draw_traffic_light(b: ShapeBuilder, rng: np.random.Generator, look: Look, side: int, reach: float) -> None:
    """A traffic-light pole; with `reach` > 0 an arm carries a second light over the road."""
    grey, box = look.colour(rng, "pole"), look.colour(rng, "light_box")
    height = rng.uniform(5.4, 6.4) if reach > 0 else rng.uniform(3.0, 3.6)
    b.add_flat(POLE, grey, [rect(-0.07, 0.07, 0.0, height)])
    heads = [(0.0, min(height, 3.6) - 0.05)]
    if reach > 0:
        b.add_flat(POLE, grey, [limb((0.0, height - 0.1), (-side * reach, height - 0.1), 0.12)])
        heads.append((-side * reach * rng.uniform(0.7, 0.95), height - 0.2))
    lit = rng.integers(3)
    for u, top in heads:
        b.add_flat(LIGHT, box, [rect(u - 0.17, u + 0.17, top - 0.9, top)])
        lamps = [disc(u, top - 0.16 - 0.28 * i, 0.09, 10) for i in range(3)]
        for i, material in enumerate(("lamp_red", "lamp_amber", "lamp_green")):
            colour = look.colour(rng, material) if i == lit else tuple(int(c * 0.35) + 20 for c in box)
            b.add_flat(LIGHT, colour, [lamps[i]])  # type: ignore[arg-type]


def draw_tree(b: ShapeBuilder, rng: np.random.Generator, look: Look, scale: float = 1.0) -> None:
    trunk_h, crown = scale * rng.uniform(2.0, 3.5), scale * rng.uniform(1.4, 2.8)
    green = look.colour(rng, "vegetation")
    b.add_flat(VEGETATION, look.colour(rng, "trunk"), [rect(-0.12 * scale, 0.12 * scale, 0.0, trunk_h + crown * 0.5)])
    centre = trunk_h + crown * 0.85
    lobes = [blob(rng, rng.uniform(-0.4, 0.4) * crown, centre + rng.uniform(-0.3, 0.3) * crown,
                  crown * rng.uniform(0.6, 0.9), crown * rng.uniform(0.55, 0.85)) for _ in range(2)]
    b.add_flat(VEGETATION, green, [blob(rng, 0.0, centre, crown, crown * rng.uniform(0.8, 1.1))])
    b.add_flat(VEGETATION, tuple(int(c * 0.8) for c in green), lobes)  # type: ignore[arg-type]


def draw_bush(b: ShapeBuilder, rng: np.random.Generator, look: Look, width: float, height: float) -> None:
    green = look.colour(rng, "vegetation")
    b.add_flat(VEGETATION, green, [blob(rng, 0.0, height * 0.5, width / 2, height / 2, 12, 0.12)])
