"""Datasets in every layout: what they load, and how they refuse bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from uda_adapt.adapt.classes import CITYSCAPES_CLASSES, CITYSCAPES_PALETTE, IGNORE_INDEX
from uda_adapt.adapt.data import DATASET_KINDS, PseudoLabelDataset, open_dataset
from uda_adapt.adapt.data.transforms import TrainTransform
from uda_adapt.common.errors import UserError
from tests.adapt.fixtures import make_cityscapes_tree, make_folder_dataset, make_gta5_tree, make_synthia_tree

# SYNTHIA-RAND-CITYSCAPES README: class id -> name. Mapped to Cityscapes by *name* here, so the
# numeric table in adapt/data/synthia.py is checked against the dataset's own definitions.
SYNTHIA_NAMES = {
    0: "void", 1: "sky", 2: "building", 3: "road", 4: "sidewalk", 5: "fence", 6: "vegetation", 7: "pole",
    8: "car", 9: "traffic sign", 10: "pedestrian", 11: "bicycle", 12: "motorcycle", 13: "parking-slot",
    14: "road-work", 15: "traffic light", 16: "terrain", 17: "rider", 18: "truck", 19: "bus", 20: "train",
    21: "wall", 22: "lanemarking",
}
SYNTHIA_TO_CITYSCAPES_NAME = {"pedestrian": "person"}


def cityscapes_train_ids(label_ids: np.ndarray) -> np.ndarray:
    from cityscapesscripts.helpers.labels import id2label

    table = np.full(256, IGNORE_INDEX, np.uint8)
    for label_id, label in id2label.items():
        if 0 <= label_id < 256 and label.trainId not in (255, -1):
            table[label_id] = label.trainId
    return table[label_ids]


# ---------------------------------------------------------------- folder format

def test_folder_dataset_loads_sorted_samples_with_cityscapes_defaults(tmp_path):
    root = make_folder_dataset(tmp_path, num=3, size=(16, 24))
    ds = open_dataset("folder", root, "train", require_labels=True)
    assert len(ds) == 3 and ds.stems == sorted(ds.stems)
    assert ds.classes == CITYSCAPES_CLASSES and ds.palette == CITYSCAPES_PALETTE and ds.has_labels
    image, label = ds.load(0)
    assert image.shape == (16, 24, 3) and image.dtype == np.uint8
    assert label.shape == (16, 24) and label.dtype == np.uint8
    expected = cv2.imread(str(root / "train" / "labels" / f"{ds.stems[0]}.png"), cv2.IMREAD_UNCHANGED)
    np.testing.assert_array_equal(label, expected)
    tensor_image, tensor_label = ds[0]
    assert tensor_image.dtype == torch.float32 and tensor_image.shape == (3, 16, 24)
    assert tensor_label.dtype == torch.int64 and tensor_label.shape == (16, 24)


def test_unlabelled_split_gives_ignore_labels(tmp_path):
    root = make_folder_dataset(tmp_path, num=2, labelled_splits=("val",))
    ds = open_dataset("folder", root, "train", require_labels=False)
    assert not ds.has_labels and ds.load(0)[1] is None
    assert bool((ds[0][1] == IGNORE_INDEX).all())
    with pytest.raises(UserError, match=r"train/labels"):
        open_dataset("folder", root, "train", require_labels=True)


def test_meta_json_custom_classes_and_palette_are_honoured(tmp_path):
    root = make_folder_dataset(tmp_path, classes=3)
    meta = json.loads((root / "meta.json").read_text())
    ds = open_dataset("folder", root, "val", require_labels=True)
    assert ds.classes == tuple(meta["classes"]) and ds.palette == tuple(map(tuple, meta["palette"]))
    assert set(np.unique(ds.load(0)[1])) <= {0, 1, 2, IGNORE_INDEX}


@pytest.mark.parametrize("meta, message", [
    ({"classes": ["a", "b", "c"], "palette": [[0, 0, 0], [1, 1, 1]]}, "palette"),
    ({"classes": ["a", "b"], "palette": [[0, 0, 0], [1, 1, 300]]}, "palette entry 1"),
    ({"classes": ["a", "a"]}, "appears twice"),
    ({"classes": ["a"], "colours": []}, "unknown key 'colours'"),
    ({"palette": [[0, 0, 0]]}, "'classes'"),
])
def test_malformed_meta_json_is_an_error_naming_the_file(tmp_path, meta, message):
    root = make_folder_dataset(tmp_path, num=1)
    (root / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(UserError, match=message) as info:
        open_dataset("folder", root, "train", require_labels=True)
    assert "meta.json" in str(info.value)


def test_meta_json_without_palette_gets_distinct_colours(tmp_path):
    root = make_folder_dataset(tmp_path, num=1)
    (root / "meta.json").write_text('{"classes": ["a", "b", "c", "d"]}')
    ds = open_dataset("folder", root, "train", require_labels=False)
    assert len(set(ds.palette)) == 4


def test_unparsable_meta_json_names_the_file(tmp_path):
    root = make_folder_dataset(tmp_path, num=1)
    (root / "meta.json").write_text("{classes: oops")
    with pytest.raises(UserError, match="meta.json"):
        open_dataset("folder", root, "train", require_labels=True)


# ---------------------------------------------------------------- bad input

def test_unknown_kind_lists_the_valid_kinds(tmp_path):
    with pytest.raises(UserError, match="unknown dataset kind 'voc'.*folder, gta5, synthia, cityscapes"):
        open_dataset("voc", tmp_path, "train", require_labels=True)


@pytest.mark.parametrize("kind", sorted(DATASET_KINDS))
def test_missing_root_names_the_root(tmp_path, kind):
    missing = tmp_path / "nowhere"
    with pytest.raises(UserError, match=str(missing)):
        open_dataset(kind, missing, "train", require_labels=True)


def test_missing_split_names_the_split_folder(tmp_path):
    root = make_folder_dataset(tmp_path, num=1)
    with pytest.raises(UserError, match=r"split 'test'.*test"):
        open_dataset("folder", root, "test", require_labels=False)


def test_image_without_label_names_the_image(tmp_path):
    root = make_folder_dataset(tmp_path, num=2)
    (root / "train" / "labels" / "train_0001.png").unlink()
    with pytest.raises(UserError, match=r"train_0001\.png has no label"):
        open_dataset("folder", root, "train", require_labels=True)


def test_label_id_outside_the_class_set_names_the_label(tmp_path):
    root = make_folder_dataset(tmp_path, num=1)
    label_path = root / "train" / "labels" / "train_0000.png"
    label = cv2.imread(str(label_path), cv2.IMREAD_UNCHANGED)
    label[0, 0] = 40
    cv2.imwrite(str(label_path), label)
    ds = open_dataset("folder", root, "train", require_labels=True)
    with pytest.raises(UserError, match=r"train_0000\.png contains id\(s\) 40 outside 0-18"):
        ds.load(0)


def test_image_label_size_mismatch_names_both_files(tmp_path):
    root = make_folder_dataset(tmp_path, num=1, size=(16, 24))
    cv2.imwrite(str(root / "train" / "labels" / "train_0000.png"), np.zeros((16, 20), np.uint8))
    ds = open_dataset("folder", root, "train", require_labels=True)
    with pytest.raises(UserError, match=r"labels/train_0000\.png is 20x16 but its image .*images/train_0000\.png is 24x16"):
        ds[0]


@pytest.mark.parametrize("which", ["images", "labels"])
def test_corrupt_file_names_the_file(tmp_path, which):
    root = make_folder_dataset(tmp_path, num=1)
    (root / "train" / which / "train_0000.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    ds = open_dataset("folder", root, "train", require_labels=True)
    with pytest.raises(UserError, match=rf"{which}/train_0000\.png"):
        ds.load(0)


def test_colour_label_is_refused_with_a_reason(tmp_path):
    root = make_folder_dataset(tmp_path, num=1, size=(8, 8))
    cv2.imwrite(str(root / "train" / "labels" / "train_0000.png"), np.zeros((8, 8, 3), np.uint8))
    ds = open_dataset("folder", root, "train", require_labels=True)
    with pytest.raises(UserError, match="3-channel"):
        ds.load(0)


def test_duplicate_stems_are_refused(tmp_path):
    root = make_folder_dataset(tmp_path, num=1)
    image = cv2.imread(str(root / "train" / "images" / "train_0000.png"))
    cv2.imwrite(str(root / "train" / "images" / "train_0000.jpg"), image)
    with pytest.raises(UserError, match="share the stem 'train_0000'"):
        open_dataset("folder", root, "train", require_labels=True)


# ---------------------------------------------------------------- GTA5

def test_gta5_maps_indexed_label_ids_to_train_ids(tmp_path):
    tree = make_gta5_tree(tmp_path, num=3)
    ds = open_dataset("gta5", tmp_path, "train", require_labels=True)
    assert ds.stems == ["00001", "00002", "00003"] and ds.classes == CITYSCAPES_CLASSES
    for index, stem in enumerate(ds.stems):
        np.testing.assert_array_equal(ds.load(index)[1], cityscapes_train_ids(tree.raw_labels["all"][stem]))


def test_gta5_split_files(tmp_path):
    make_gta5_tree(tmp_path, num=4, split_files={"train": ["00001.png", "00003"], "val": ["00004.png"]})
    assert open_dataset("gta5", tmp_path, "train", require_labels=True).stems == ["00001", "00003"]
    assert open_dataset("gta5", tmp_path, "val", require_labels=True).stems == ["00004"]


def test_gta5_without_split_file_is_all_train_and_no_val(tmp_path):
    make_gta5_tree(tmp_path, num=2)
    assert len(open_dataset("gta5", tmp_path, "train", require_labels=True)) == 2
    with pytest.raises(UserError, match=r"val\.txt"):
        open_dataset("gta5", tmp_path, "val", require_labels=True)


def test_gta5_split_file_naming_a_missing_image(tmp_path):
    make_gta5_tree(tmp_path, num=2, split_files={"val": ["00009.png"]})
    with pytest.raises(UserError, match=r"val\.txt lists '00009\.png'"):
        open_dataset("gta5", tmp_path, "val", require_labels=True)


def test_gta5_image_without_label(tmp_path):
    make_gta5_tree(tmp_path, num=2)
    (tmp_path / "labels" / "00002.png").unlink()
    with pytest.raises(UserError, match=r"00002\.png has no label"):
        open_dataset("gta5", tmp_path, "train", require_labels=True)


# ---------------------------------------------------------------- SYNTHIA

def test_synthia_table_matches_the_class_names():
    from uda_adapt.adapt.data.synthia import SYNTHIA_ID_TO_TRAIN_ID

    by_name = {}
    for synthia_id, name in SYNTHIA_NAMES.items():
        name = SYNTHIA_TO_CITYSCAPES_NAME.get(name, name)
        if name in CITYSCAPES_CLASSES:
            by_name[synthia_id] = CITYSCAPES_CLASSES.index(name)
    assert SYNTHIA_ID_TO_TRAIN_ID == by_name


def test_synthia_reads_the_class_id_from_the_first_channel_of_16_bit_labels(tmp_path):
    from uda_adapt.adapt.data.synthia import SYNTHIA_ID_TO_TRAIN_ID

    tree = make_synthia_tree(tmp_path, num=2)
    ds = open_dataset("synthia", tmp_path, "train", require_labels=True)
    for index, stem in enumerate(ds.stems):
        raw = tree.raw_labels["all"][stem]
        expected = np.vectorize(lambda i: SYNTHIA_ID_TO_TRAIN_ID.get(int(i), IGNORE_INDEX))(raw).astype(np.uint8)
        image, label = ds.load(index)
        np.testing.assert_array_equal(label, expected)
        assert image.shape[:2] == label.shape


# ---------------------------------------------------------------- Cityscapes

def test_cityscapes_layout_and_label_mapping(tmp_path):
    tree = make_cityscapes_tree(tmp_path, splits=("train", "val"))
    ds = open_dataset("cityscapes", tmp_path, "val", require_labels=True)
    assert ds.stems == sorted(tree.raw_labels["val"])
    assert ds.stems[0] == "aachen_000000_000019"
    for index, stem in enumerate(ds.stems):
        np.testing.assert_array_equal(ds.load(index)[1], cityscapes_train_ids(tree.raw_labels["val"][stem]))


def test_cityscapes_missing_split_lists_the_splits_found(tmp_path):
    make_cityscapes_tree(tmp_path, splits=("train",), per_city=1)
    with pytest.raises(UserError, match=r"leftImg8bit/val does not exist; splits found: train"):
        open_dataset("cityscapes", tmp_path, "val", require_labels=True)


def test_cityscapes_split_without_gtfine_is_unlabelled_target(tmp_path):
    make_cityscapes_tree(tmp_path, splits=("train",), per_city=1)
    import shutil

    shutil.rmtree(tmp_path / "gtFine")
    ds = open_dataset("cityscapes", tmp_path, "train", require_labels=False)
    assert not ds.has_labels and len(ds) == 2
    with pytest.raises(UserError, match="gtFine"):
        open_dataset("cityscapes", tmp_path, "train", require_labels=True)


# ---------------------------------------------------------------- pseudo labels, loaders, dependencies

def test_pseudo_label_dataset_pairs_base_images_with_written_labels(tmp_path):
    root = make_folder_dataset(tmp_path / "data", num=2, size=(16, 24), labelled_splits=())
    base = open_dataset("folder", root, "train", require_labels=False)
    pseudo_dir = tmp_path / "pseudo"
    pseudo_dir.mkdir()
    for stem in base.stems:
        cv2.imwrite(str(pseudo_dir / f"{stem}.png"), np.full((16, 24), 7, np.uint8))
    ds = PseudoLabelDataset(base, pseudo_dir, transform=TrainTransform(crop_size=(8, 8)))
    assert ds.stems == base.stems and ds.classes == base.classes and ds.has_labels
    image, label = ds.load(1)
    np.testing.assert_array_equal(image, base.load(1)[0])
    assert bool((label == 7).all())
    assert ds[0][0].shape == (3, 8, 8)
    (pseudo_dir / f"{base.stems[1]}.png").unlink()
    with pytest.raises(UserError, match="pseudo label .* is missing"):
        ds.load(1)


def test_dataloader_batches_train_crops(tmp_path):
    root = make_folder_dataset(tmp_path, num=4, size=(32, 48))
    ds = open_dataset("folder", root, "train", require_labels=True, transform=TrainTransform(crop_size=(16, 16)))
    images, labels = next(iter(torch.utils.data.DataLoader(ds, batch_size=4)))
    assert images.shape == (4, 3, 16, 16) and labels.shape == (4, 16, 16)


def test_package_does_not_import_cityscapesscripts():
    code = "import sys, uda_adapt.adapt.data, uda_adapt.adapt.evaluation; print('cityscapesscripts' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[2])
    assert out.stdout.strip() == "False"


def test_hidden_temporaries_of_interrupted_writes_are_not_indexed(tmp_path):
    from uda_adapt.adapt.data import open_dataset
    from tests.adapt.fixtures import make_folder_dataset

    root = make_folder_dataset(tmp_path / "d", num=2)
    images = root / "train" / "images"
    leftover = images / f".{sorted(images.iterdir())[0].stem}.abc.tmp.png"
    leftover.write_bytes(b"half-written")
    dataset = open_dataset("folder", root, "train", require_labels=True)
    assert len(dataset) == 2 and not any(s.startswith(".") for s in dataset.stems)
