"""Material colours of the domains (RGB), one or more candidates per material.

`sim` is a game engine on a sunny day: saturated, bright, clean. `real` is a car camera under
an overcast sky: muted, greyish, darker. `night` is the `real` street after dark: every surface
at a fraction of its daylight, a black sky glowing at the horizon, while lamps, head and tail
lights and some windows emit. Materials are finer than classes (a car has paint, windows, tyres
and lights) so that every domain carries the same kinds of detail.
"""

from __future__ import annotations

Colour = tuple[int, int, int]
Palette = dict[str, tuple[Colour, ...]]

SIM_PALETTE: Palette = {
    "sky_top": ((52, 122, 232),),
    "sky_horizon": ((170, 212, 252),),
    "road": ((86, 86, 98),),
    "lane_mark": ((246, 246, 246), (248, 214, 40)),
    "sidewalk": ((204, 186, 156), (186, 184, 178)),
    "curb": ((222, 222, 222),),
    "terrain": ((142, 188, 66), (184, 158, 92)),
    "building": ((226, 188, 126), (200, 108, 76), (226, 214, 180), (160, 168, 150), (188, 88, 70), (232, 204, 150)),
    "window": ((64, 108, 168), (46, 78, 124)),
    "backdrop": ((176, 164, 150), (150, 146, 150)),
    "wall": ((210, 192, 150), (176, 128, 100)),
    "fence": ((118, 124, 146), (86, 112, 88)),
    "pole": ((104, 104, 114),),
    "light_box": ((40, 42, 34),),
    "lamp_red": ((255, 28, 18),),
    "lamp_amber": ((255, 192, 0),),
    "lamp_green": ((36, 255, 90),),
    "sign": ((228, 28, 28), (24, 78, 228), (248, 202, 0)),
    "sign_inner": ((252, 252, 252),),
    "vegetation": ((44, 152, 38), (78, 174, 48), (34, 122, 56)),
    "trunk": ((112, 80, 48),),
    "skin": ((238, 186, 144), (172, 120, 88), (112, 74, 52)),
    "hair": ((52, 34, 22), (20, 20, 20), (204, 162, 78)),
    "shirt": ((232, 38, 38), (38, 90, 232), (250, 222, 38), (242, 242, 242), (38, 172, 80)),
    "trousers": ((38, 60, 142), (48, 48, 54), (162, 140, 108)),
    "car": ((208, 24, 24), (24, 64, 208), (242, 242, 242), (30, 30, 34), (246, 206, 24), (38, 162, 70), (162, 162, 172)),
    "truck": ((236, 236, 236), (212, 70, 24), (44, 96, 182)),
    "bus": ((242, 162, 20), (28, 126, 212), (212, 34, 44)),
    "vehicle_window": ((38, 54, 82),),
    "tyre": ((24, 24, 24),),
    "tail_light": ((255, 36, 28),),
    "head_light": ((255, 250, 212),),
    "bicycle": ((28, 28, 28), (24, 90, 212), (212, 212, 212)),
    "motorcycle": ((20, 20, 20), (192, 24, 24), (28, 60, 192)),
    "hood": ((30, 30, 34),),
}

REAL_PALETTE: Palette = {
    "sky_top": ((124, 156, 204), (150, 170, 198)),
    "sky_horizon": ((200, 212, 228),),
    "road": ((96, 95, 98),),
    "lane_mark": ((196, 196, 190),),
    "sidewalk": ((140, 134, 128), (124, 122, 126), (150, 138, 126)),
    "curb": ((150, 150, 146),),
    "terrain": ((112, 130, 70), (128, 118, 88)),
    "building": ((132, 126, 116), (154, 144, 128), (106, 102, 102), (170, 162, 148), (122, 98, 86)),
    "window": ((58, 62, 70), (86, 92, 100)),
    "backdrop": ((142, 144, 150),),
    "wall": ((152, 148, 138), (118, 112, 104)),
    "fence": ((100, 104, 100), (130, 120, 100)),
    "pole": ((88, 92, 96),),
    "light_box": ((32, 34, 34),),
    "lamp_red": ((204, 64, 44),),
    "lamp_amber": ((212, 152, 44),),
    "lamp_green": ((64, 192, 142),),
    "sign": ((178, 42, 42), (40, 80, 160), (208, 178, 52)),
    "sign_inner": ((212, 212, 206),),
    "vegetation": ((64, 100, 44), (82, 112, 56), (52, 84, 46)),
    "trunk": ((70, 60, 50),),
    "skin": ((202, 162, 136), (150, 110, 90), (100, 76, 60)),
    "hair": ((40, 32, 26), (24, 24, 24), (120, 100, 70)),
    "shirt": ((40, 40, 48), (72, 72, 80), (120, 42, 42), (150, 150, 156), (60, 70, 100)),
    "trousers": ((30, 32, 40), (60, 60, 66), (90, 80, 70)),
    "car": ((62, 64, 68), (150, 152, 156), (204, 204, 204), (28, 28, 32), (82, 38, 38), (40, 52, 84)),
    "truck": ((196, 196, 192), (120, 60, 40), (60, 80, 110)),
    "bus": ((200, 196, 184), (176, 60, 52), (64, 96, 130)),
    "vehicle_window": ((34, 38, 44),),
    "tyre": ((22, 22, 22),),
    "tail_light": ((170, 40, 36),),
    "head_light": ((210, 208, 196),),
    "bicycle": ((30, 30, 32), (60, 66, 80), (120, 120, 124)),
    "motorcycle": ((24, 24, 26), (110, 40, 36), (60, 64, 80)),
    "hood": ((40, 42, 46),),
}

# Surfaces at night reflect this share of their overcast-day colour (street lamps and the finish's
# light pools brighten parts of the frame again); what emits light keeps or gains brightness.
NIGHT_REFLECTANCE = 0.3
_NIGHT_EMITTERS: Palette = {
    "sky_top": ((6, 8, 18), (10, 12, 24)),
    "sky_horizon": ((52, 42, 40),),          # sodium light pollution above the skyline
    "window": ((18, 20, 26), (22, 24, 30), (196, 164, 96)),   # one candidate in three is lit
    "lamp_red": ((255, 60, 40),),
    "lamp_amber": ((255, 176, 40),),
    "lamp_green": ((70, 255, 170),),
    "tail_light": ((255, 40, 30),),
    "head_light": ((255, 250, 226),),
}
NIGHT_PALETTE: Palette = {
    **{material: tuple(tuple(int(NIGHT_REFLECTANCE * c) for c in colour) for colour in colours)
       for material, colours in REAL_PALETTE.items()},
    **_NIGHT_EMITTERS,
}
