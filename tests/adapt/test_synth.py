"""The procedural street-scene generator: determinism, labels, domains, files on disk, video."""

from __future__ import annotations

import json
import os

import cv2
import numpy as np
import pytest

from uda_adapt.adapt.classes import CITYSCAPES_CLASSES, IGNORE_INDEX
from uda_adapt.adapt.data.meta import DatasetMeta
from uda_adapt.adapt.data.synth import ABSENT_CLASSES, generate_scene, generate_video, scene_seed, write_benchmark, write_split
from uda_adapt.common.errors import UserError
from uda_adapt.adapt.images import read_label, read_rgb

SIZE = (64, 128)
TRAIN_ID = CITYSCAPES_CLASSES.index("train")
ROAD, SKY = CITYSCAPES_CLASSES.index("road"), CITYSCAPES_CLASSES.index("sky")


@pytest.mark.parametrize("domain", ["sim", "real", "night"])
def test_same_seed_same_scene_and_other_seed_other_scene(domain):
    image, label = generate_scene(7, domain, SIZE)
    again_image, again_label = generate_scene(7, domain, SIZE)
    other_image, other_label = generate_scene(8, domain, SIZE)
    assert image.shape == SIZE + (3,) and image.dtype == np.uint8
    assert label.shape == SIZE and label.dtype == np.uint8
    np.testing.assert_array_equal(image, again_image)
    np.testing.assert_array_equal(label, again_label)
    assert not np.array_equal(label, other_label)
    assert not np.array_equal(image, other_image)


def test_labels_are_train_ids_and_every_class_but_train_appears():
    seen: set[int] = set()
    for domain in ("sim", "real", "night"):
        for seed in range(10):
            _, label = generate_scene(seed, domain, SIZE)
            seen |= set(np.unique(label).tolist())
    assert seen <= set(range(len(CITYSCAPES_CLASSES))) | {IGNORE_INDEX}
    expected = {i for i, name in enumerate(CITYSCAPES_CLASSES) if name not in ABSENT_CLASSES}
    assert expected <= seen, [CITYSCAPES_CLASSES[i] for i in sorted(expected - seen)]
    assert TRAIN_ID not in seen


def test_only_the_real_domain_has_an_ignored_ego_hood():
    _, sim_label = generate_scene(3, "sim", SIZE)
    _, real_label = generate_scene(3, "real", SIZE)
    assert IGNORE_INDEX not in sim_label
    assert real_label[-1, SIZE[1] // 2] == IGNORE_INDEX


def test_sim_is_more_saturated_and_cleaner_than_real():
    def stats(domain):
        saturation, roughness = [], []
        for seed in range(4):
            image, label = generate_scene(seed, domain, (96, 192))
            hsv = cv2.cvtColor(image, cv2.COLOR_RGB2HSV)
            saturation.append(hsv[..., 1].mean())
            # Pixel-to-pixel variation inside the road: zero for flat colours, high for texture + noise.
            grey = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY).astype(np.float32)
            road = (label[:, 1:] == 0) & (label[:, :-1] == 0)
            roughness.append(np.mean(np.abs(np.diff(grey, axis=1))[road] >= 3))
        return np.mean(saturation), np.mean(roughness)

    sim_saturation, sim_roughness = stats("sim")
    real_saturation, real_roughness = stats("real")
    assert sim_saturation > 1.3 * real_saturation
    assert real_roughness > 4 * sim_roughness


def _luma(image):
    return cv2.cvtColor(image, cv2.COLOR_RGB2GRAY).astype(np.float32)


def test_night_is_the_real_street_after_dark():
    """Same seed, same street (labels equal); the picture is dark, the sky darker than the road, lamps lit."""
    brightness, sky_minus_road, hot_pixels = {"real": [], "night": []}, {"real": [], "night": []}, {"real": [], "night": []}
    for seed in range(4):
        for domain in ("real", "night"):
            image, label = generate_scene(seed, domain, (96, 192))
            grey = _luma(image)
            assert (label == SKY).any() and (label == ROAD).any()  # preconditions of the comparison
            brightness[domain].append(grey.mean())
            sky_minus_road[domain].append(grey[label == SKY].mean() - grey[label == ROAD].mean())
            hot_pixels[domain].append(np.mean(grey > 4 * np.median(grey)))
        np.testing.assert_array_equal(generate_scene(seed, "real", (96, 192))[1], generate_scene(seed, "night", (96, 192))[1])
    assert np.mean(brightness["night"]) < 0.5 * np.mean(brightness["real"])
    # By day the sky is the brightest thing in the frame; at night it is darker than the lamp-lit road.
    assert min(sky_minus_road["real"]) > 0 > max(sky_minus_road["night"])
    # Lamps, lights and lit windows: pixels far brighter than the frame's median.
    assert np.mean(hot_pixels["night"]) > 5 * max(np.mean(hot_pixels["real"]), 1e-4)


def test_daytime_finishes_draw_no_light_pools():
    """Night's extra random draws happen only for night, so the day domains' images stay as they were."""
    from uda_adapt.adapt.data.synth.finish import sample_finish
    from uda_adapt.adapt.data.synth.style import STYLES

    for name, style in STYLES.items():
        rng = np.random.default_rng(0)
        pools = sample_finish(rng, style.finish).pools
        assert (len(pools) > 0) == (name == "night"), name


def test_unknown_domain_and_tiny_size_are_user_errors():
    with pytest.raises(UserError, match="unknown domain 'cartoon'.*sim, real, night"):
        generate_scene(0, "cartoon", SIZE)
    with pytest.raises(UserError, match="too small"):
        generate_scene(0, "sim", (8, 8))


def test_image_seeds_depend_on_identity_not_order():
    seeds = {scene_seed(0, d, s, i) for d in ("sim", "real", "night") for s in ("train", "val") for i in range(5)}
    assert len(seeds) == 30
    assert scene_seed(0, "sim", "train", 3) == scene_seed(0, "sim", "train", 3)
    assert scene_seed(1, "sim", "train", 3) != scene_seed(0, "sim", "train", 3)


def test_write_split_writes_the_folder_format(tmp_path):
    root = write_split(tmp_path / "ds", "real", "val", 3, SIZE, seed=5, progress=False)
    images = sorted(p.name for p in (root / "val" / "images").iterdir())
    labels = sorted(p.name for p in (root / "val" / "labels").iterdir())
    assert images == labels == ["00000.png", "00001.png", "00002.png"]
    assert json.loads((root / "meta.json").read_text()) == DatasetMeta().to_dict()
    image, label = generate_scene(scene_seed(5, "real", "val", 1), "real", SIZE)
    np.testing.assert_array_equal(read_label(root / "val" / "labels" / "00001.png"), label)
    np.testing.assert_array_equal(read_rgb(root / "val" / "images" / "00001.png"), image)


def test_a_written_split_opens_as_a_folder_dataset(tmp_path):
    from uda_adapt.adapt.data import open_dataset

    root = write_split(tmp_path, "sim", "train", 2, SIZE, progress=False)
    dataset = open_dataset("folder", root, "train", require_labels=True)
    assert len(dataset) == 2
    image, label = dataset.load(1)
    assert image.shape == SIZE + (3,) and label.shape == SIZE


def test_a_resumed_run_keeps_complete_files_and_fills_the_gaps(tmp_path):
    root = write_split(tmp_path, "sim", "train", 3, SIZE, progress=False)
    images = root / "train" / "images"
    before = {p.name: p.stat().st_mtime_ns for p in images.iterdir()}
    original = read_rgb(images / "00001.png")
    (images / "00001.png").unlink()
    (images / ".00002.x1y2.tmp.png").write_bytes(b"half a file")  # what a killed write leaves
    write_split(root, "sim", "train", 3, SIZE, progress=False)
    assert sorted(p.name for p in images.iterdir()) == ["00000.png", "00001.png", "00002.png"]
    np.testing.assert_array_equal(read_rgb(images / "00001.png"), original)
    for name in ("00000.png", "00002.png"):
        assert (images / name).stat().st_mtime_ns == before[name]


def test_a_rerun_with_other_settings_or_fewer_images_is_refused(tmp_path):
    write_split(tmp_path, "sim", "train", 2, SIZE, seed=0, progress=False)
    with pytest.raises(UserError, match="seed 0.*not.*seed 1"):
        write_split(tmp_path, "sim", "train", 2, SIZE, seed=1, progress=False)
    with pytest.raises(UserError, match="domain sim"):
        write_split(tmp_path, "real", "val", 2, SIZE, progress=False)
    with pytest.raises(UserError, match="beyond --num 1"):
        write_split(tmp_path, "sim", "train", 1, SIZE, progress=False)


def test_write_benchmark_writes_source_and_target(tmp_path):
    roots = write_benchmark(tmp_path, size=(32, 64), num_train=2, num_val=1, progress=False)
    assert roots == {"source": tmp_path / "source", "target": tmp_path / "target"}
    for root, domain in ((roots["source"], "sim"), (roots["target"], "real")):
        assert (root / "meta.json").is_file()
        assert json.loads((root / "synth.json").read_text())["domain"] == domain
        for split, count in (("train", 2), ("val", 1)):
            assert len(list((root / split / "images").glob("*.png"))) == count
            assert len(list((root / split / "labels").glob("*.png"))) == count


def test_write_benchmark_with_the_night_target(tmp_path):
    roots = write_benchmark(tmp_path, size=(32, 64), num_train=1, num_val=1, progress=False, target_style="night")
    assert json.loads((roots["source"] / "synth.json").read_text())["domain"] == "sim"
    assert json.loads((roots["target"] / "synth.json").read_text())["domain"] == "night"
    image = read_rgb(roots["target"] / "val" / "images" / "00000.png")
    np.testing.assert_array_equal(image, generate_scene(scene_seed(0, "night", "val", 0), "night", (32, 64))[0])
    with pytest.raises(UserError, match="unknown target style 'fog'; valid: real, night"):
        write_benchmark(tmp_path / "other", size=(32, 64), num_train=1, num_val=1, progress=False, target_style="fog")
    assert not (tmp_path / "other").exists()


def test_an_output_below_a_regular_file_is_a_user_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(UserError, match="cannot create output directory"):
        write_split(blocker / "ds", "sim", "train", 1, SIZE, progress=False)
    with pytest.raises(UserError, match="cannot create output directory"):
        generate_video(blocker / "clip.mp4", "sim", frames=2, size=SIZE, progress=False)


def test_video_has_the_requested_frames_and_labels(tmp_path):
    out = generate_video(tmp_path / "clip.mp4", "real", frames=6, size=SIZE, fps=10, seed=1,
                         labels_dir=tmp_path / "labels", progress=False)
    capture = cv2.VideoCapture(str(out))
    assert capture.isOpened()
    frames = []
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        frames.append(frame)
    capture.release()
    assert len(frames) == 6 and frames[0].shape == SIZE + (3,)
    assert not np.array_equal(frames[0], frames[-1])  # the camera moves
    labels = sorted(os.listdir(tmp_path / "labels"))
    assert labels == [f"{i:05d}.png" for i in range(6)]
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".")]  # no temporary left behind


def test_video_output_must_be_mp4(tmp_path):
    with pytest.raises(UserError, match=r"must end in \.mp4"):
        generate_video(tmp_path / "clip.avi", "sim", frames=2, size=SIZE, progress=False)
