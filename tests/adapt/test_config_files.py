"""`--config` takes a YAML path or a built-in config's name; a miss lists the built-in names."""

from __future__ import annotations

from pathlib import Path

import pytest

from uda_adapt.adapt.config import read_yaml_mapping
from uda_adapt.adapt.config_files import builtin_configs, resolve_config_file
from uda_adapt.common.errors import UserError

SAMPLES = Path(__file__).resolve().parents[2] / "samples" / "configs"


def test_every_sample_config_is_a_builtin_name():
    names = builtin_configs()
    assert set(names) == {p.stem for p in SAMPLES.glob("*.yaml")} and "gta5_to_cityscapes_mean_teacher" in names
    assert list(names) == sorted(names)


@pytest.mark.parametrize("value", ["gta5_to_cityscapes_mean_teacher", "gta5_to_cityscapes_mean_teacher.yaml"])
def test_a_builtin_name_loads_the_same_config_as_its_file(value, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)                       # no such file here: the name must resolve
    assert not Path(value).exists()
    assert resolve_config_file(value).samefile(SAMPLES / "gta5_to_cityscapes_mean_teacher.yaml")
    assert read_yaml_mapping(value) == read_yaml_mapping(SAMPLES / "gta5_to_cityscapes_mean_teacher.yaml")   # what load_config reads


def test_an_existing_file_wins_over_a_builtin_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("synthetic").write_text("seed: 7\n")         # a user's own file that happens to share the name
    assert resolve_config_file("synthetic") == Path("synthetic")
    assert read_yaml_mapping("synthetic") == {"seed": 7}


def test_an_unknown_name_lists_the_builtin_names_on_one_line(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UserError) as caught:
        resolve_config_file("gta5_to_cityscape")
    message = str(caught.value)
    assert "\n" not in message and "gta5_to_cityscape:" in message
    assert ", ".join(builtin_configs()) in message


def test_a_missing_path_is_named_and_the_builtins_offered(tmp_path):
    with pytest.raises(UserError, match=r"config file .*nope\.yaml does not exist; give a YAML path or a built-in config name: gta5_to_cityscapes"):
        resolve_config_file(tmp_path / "nope.yaml")
