"""Property tests: random config overrides, label id maps and corrupted image bytes.

Whatever the input, the outcome is a valid result or a UserError; never another exception.
Bounded (few examples, no deadline) so the suite stays fast on two cores.
"""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from uda_adapt.adapt.classes import IGNORE_INDEX
from uda_adapt.adapt.config import load_config
from uda_adapt.adapt.data import open_dataset
from uda_adapt.adapt.data.cityscapes import LABEL_ID_TABLE, LABEL_ID_TO_TRAIN_ID
from uda_adapt.adapt.data.dataset import check_ids, lookup_table
from uda_adapt.adapt.data.synthia import SYNTHIA_ID_TO_TRAIN_ID
from uda_adapt.adapt.train.config import TrainConfig
from uda_adapt.adapt.train.config_checks import walk
from uda_adapt.common.errors import UserError
from tests.adapt.fixtures import make_folder_dataset

FEW = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
KEYS = [key for key, _ in walk(TrainConfig())]
SECTIONS = sorted({key.rsplit(".", 1)[0] for key in KEYS if "." in key})

yaml_scalars = st.one_of(
    st.integers(-10**6, 10**6).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.sampled_from(["true", "false", "null", "~", "", "[]", "{}", "[1, 2]", "[0.5, 2, -1]", "adam", "iast",
                     ".nan", "-.inf", "1e-4", "'quoted'", "{a: 1}", "[[1]]", "0x10", "- a"]),
    st.text(max_size=12),
)
keys = st.one_of(st.sampled_from(KEYS), st.sampled_from(SECTIONS),
                 st.text(alphabet="abcdefghijklmnopqrstuvwxyz_.", min_size=1, max_size=20))


@FEW
@given(st.lists(st.tuples(keys, yaml_scalars), max_size=4))
def test_random_overrides_give_a_config_or_a_user_error(pairs):
    try:
        cfg = load_config(TrainConfig, None, [f"{key}={value}" for key, value in pairs])
    except UserError as exc:
        assert "\n" not in str(exc)
        return
    assert isinstance(cfg, TrainConfig)
    assert cfg.data.batch_size >= 1 and cfg.source.optim.lr > 0 and cfg.self_train.rounds >= 1


@FEW
@given(st.dictionaries(st.integers(0, 255), st.integers(0, 18), max_size=40),
       st.lists(st.integers(0, 255), min_size=1, max_size=64))
def test_id_maps_send_every_byte_to_a_train_id_or_ignore(mapping, ids):
    table = lookup_table(mapping)
    label = table[np.array(ids, np.uint8)]
    for raw, mapped in zip(ids, label):
        assert mapped == mapping.get(raw, IGNORE_INDEX)
    check_ids(label, 19, "label.png", "")   # never raises: the table only makes valid ids


@pytest.mark.parametrize("mapping", [LABEL_ID_TO_TRAIN_ID, SYNTHIA_ID_TO_TRAIN_ID], ids=["cityscapes", "synthia"])
def test_shipped_id_maps_are_valid(mapping):
    assert set(mapping.values()) <= set(range(19)) and all(0 <= raw <= 255 for raw in mapping)
    table = lookup_table(mapping)
    check_ids(table[np.arange(256, dtype=np.uint8)], 19, "every byte", "")
    assert (LABEL_ID_TABLE[np.array(list(LABEL_ID_TO_TRAIN_ID), np.uint8)] == list(LABEL_ID_TO_TRAIN_ID.values())).all()


@FEW
@given(data=st.data())
def test_corrupted_image_bytes_give_a_sample_or_a_user_error(tmp_path_factory, data):
    template = _template(tmp_path_factory)
    root = tmp_path_factory.mktemp("fuzzed")
    shutil.copytree(template, root, dirs_exist_ok=True)
    target = data.draw(st.sampled_from(sorted((root / "train").rglob("*.png"))))
    raw = bytearray(target.read_bytes())
    edit = data.draw(st.sampled_from(["flip", "truncate", "zero", "garbage"]))
    if edit == "flip":
        for position in data.draw(st.lists(st.integers(0, len(raw) - 1), min_size=1, max_size=8)):
            raw[position] ^= data.draw(st.integers(1, 255))
    elif edit == "truncate":
        raw = raw[: data.draw(st.integers(0, len(raw) - 1))]
    elif edit == "zero":
        start = data.draw(st.integers(0, len(raw) - 1))
        raw[start : start + 64] = bytes(len(raw[start : start + 64]))
    else:
        raw = bytearray(data.draw(st.binary(max_size=256)))
    target.write_bytes(bytes(raw))
    try:
        dataset = open_dataset("folder", root, "train", require_labels=True)
        for index in range(len(dataset)):
            image, label = dataset[index]
            assert image.shape[-2:] == label.shape[-2:]
    except UserError as exc:
        assert "\n" not in str(exc)


_TEMPLATE = {}


def _template(tmp_path_factory):
    if "root" not in _TEMPLATE:
        _TEMPLATE["root"] = make_folder_dataset(tmp_path_factory.mktemp("template"), num=2, size=(16, 32))
    return _TEMPLATE["root"]
