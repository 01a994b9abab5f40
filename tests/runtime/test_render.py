import numpy as np
import pytest

from uda_adapt.adapt.classes import CITYSCAPES_CLASSES, CITYSCAPES_PALETTE
from uda_adapt.common.errors import UserError
from uda_adapt.common.manifest import InputSpec
from uda_adapt.runtime.preprocess import Preprocessor
from uda_adapt.runtime.render import Renderer, RenderOptions, parse_alpha

ROAD, SKY = CITYSCAPES_CLASSES.index("road"), CITYSCAPES_CLASSES.index("sky")


def two_class_mask(h=4, w=8):
    mask = np.full((h, w), ROAD, np.int32)
    mask[: h // 2] = SKY
    return mask


def renderer(**options):
    options.setdefault("legend", False)
    return Renderer(CITYSCAPES_CLASSES, CITYSCAPES_PALETTE, RenderOptions(**options))


def bgr(rgb):
    return np.array(rgb[::-1], np.float64)


def test_overlay_blends_the_class_colour_with_alpha():
    frame = np.full((4, 8, 3), 100, np.uint8)
    out = renderer(alpha=0.25).render(frame, two_class_mask())
    expected_road = 0.75 * 100 + 0.25 * bgr(CITYSCAPES_PALETTE[ROAD])
    assert np.abs(out[3, 0] - expected_road).max() <= 1
    expected_sky = 0.75 * 100 + 0.25 * bgr(CITYSCAPES_PALETTE[SKY])
    assert np.abs(out[0, 0] - expected_sky).max() <= 1


def test_mask_is_scaled_to_the_frame_with_nearest_neighbour():
    frame = np.zeros((40, 80, 3), np.uint8)
    out = renderer(visualize="mask").render(frame, two_class_mask(4, 8))
    assert out.shape == (40, 80, 3)
    colours = {tuple(c) for c in out.reshape(-1, 3)}
    assert colours == {tuple(bgr(CITYSCAPES_PALETTE[ROAD]).astype(int)), tuple(bgr(CITYSCAPES_PALETTE[SKY]).astype(int))}


def test_ignored_class_shows_the_frame():
    frame = np.full((4, 8, 3), 77, np.uint8)
    out = renderer(alpha=1.0, ignore_classes=("sky",)).render(frame, two_class_mask())
    assert (out[:2] == 77).all()
    assert (out[2:] == bgr(CITYSCAPES_PALETTE[ROAD])).all()


def test_side_by_side_puts_frame_and_mask_next_to_each_other():
    frame = np.full((4, 8, 3), 5, np.uint8)
    out = renderer(visualize="side-by-side").render(frame, two_class_mask())
    assert out.shape == (4, 16, 3)
    assert (out[:, :8] == 5).all()
    assert (out[3, 8:] == bgr(CITYSCAPES_PALETTE[ROAD])).all()


def test_legend_and_fps_text_are_drawn():
    frame = np.full((120, 240, 3), 128, np.uint8)
    plain = renderer(alpha=0.0).render(frame, two_class_mask(120, 240))
    decorated = Renderer(CITYSCAPES_CLASSES, CITYSCAPES_PALETTE, RenderOptions(alpha=0.0, legend=True)).render(frame, two_class_mask(120, 240), fps=12.5)
    legend_box = decorated[4:40, 4:80]
    assert (legend_box != plain[4:40, 4:80]).any()
    swatch = decorated[12, 16]           # first legend row: road comes first
    assert tuple(swatch) == tuple(bgr(CITYSCAPES_PALETTE[ROAD]).astype(np.uint8))
    assert (decorated[-25:, :80] != plain[-25:, :80]).any()   # the FPS line


def test_alpha_accepts_jetson_scale_and_rejects_nonsense():
    assert parse_alpha(0.5) == 0.5
    assert parse_alpha(255) == 1.0
    assert parse_alpha(150) == pytest.approx(150 / 255)
    with pytest.raises(UserError):
        parse_alpha(-0.1)
    with pytest.raises(UserError):
        parse_alpha(300)


def test_unknown_ignore_class_lists_the_valid_ones():
    with pytest.raises(UserError, match="classes: road, sidewalk"):
        renderer(ignore_classes=("lamppost",))


def test_preprocess_matches_the_reference_normalisation():
    spec = InputSpec()
    frame = np.random.default_rng(0).integers(0, 256, (16, 32, 3), dtype=np.uint8)
    out = Preprocessor(spec, (16, 32))(frame)
    rgb = frame[:, :, ::-1].astype(np.float64) * spec.scale
    expected = ((rgb - spec.mean) / spec.std).transpose(2, 0, 1)[None]
    assert out.shape == (1, 3, 16, 32) and out.dtype == np.float32
    assert np.abs(out - expected).max() < 1e-5
    bgr_spec = InputSpec(color_order="BGR")
    out_bgr = Preprocessor(bgr_spec, (16, 32))(frame)
    assert np.abs(out_bgr[0, 0] - (frame[:, :, 0] * spec.scale - spec.mean[0]) / spec.std[0]).max() < 1e-5
    assert Preprocessor(spec, (8, 16))(frame).shape == (1, 3, 8, 16)
