from pathlib import Path

import pytest

from uda_adapt.adapt.config import load_config, to_dict
from uda_adapt.common.errors import UserError
from uda_adapt.adapt.train.config import TrainConfig

CONFIGS = Path(__file__).resolve().parents[2] / "samples" / "configs"


def test_defaults_and_overrides_apply_in_order(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("seed: 3\nself_train:\n  lambda_ct: 0.5\n")
    cfg = load_config(TrainConfig, path, ["self_train.lambda_ct=2", "data.crop_size=[64, 96]", "model.pretrained=null"])
    assert cfg.seed == 3
    assert cfg.self_train.lambda_ct == 2.0
    assert cfg.data.crop_size == (64, 96)
    assert cfg.model.pretrained is None
    assert cfg.source.iterations == TrainConfig().source.iterations


def test_unknown_key_names_it_and_lists_valid_keys():
    with pytest.raises(UserError) as info:
        load_config(TrainConfig, None, ["self_train.lamda_ct=1"])
    message = str(info.value)
    assert "self_train.lamda_ct" in message and "lambda_ct" in message and "\n" not in message


def test_wrong_type_is_an_error():
    with pytest.raises(UserError, match="source.iterations"):
        load_config(TrainConfig, None, ["source.iterations=many"])
    with pytest.raises(UserError, match="correlation.value"):
        load_config(TrainConfig, None, ["correlation.value=banana"])
    with pytest.raises(UserError, match="data.crop_size"):
        load_config(TrainConfig, None, ["data.crop_size=[1, 2, 3]"])


def test_bad_yaml_and_missing_file(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        load_config(TrainConfig, tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("seed: [1,\n")
    with pytest.raises(UserError, match="not valid YAML"):
        load_config(TrainConfig, bad)
    with pytest.raises(UserError, match="key.sub=value"):
        load_config(TrainConfig, None, ["no-equals-sign"])


@pytest.mark.parametrize("name", sorted(p.name for p in CONFIGS.glob("*.yaml")))
def test_every_sample_config_loads_and_round_trips(name):
    cfg = load_config(TrainConfig, CONFIGS / name)
    again = load_config(TrainConfig, None, [f"{k}={v}" for k, v in _flatten(to_dict(cfg))])
    assert to_dict(again) == to_dict(cfg)


def _flatten(tree, prefix=""):
    for key, value in tree.items():
        if isinstance(value, dict):
            yield from _flatten(value, f"{prefix}{key}.")
        else:
            import json
            yield f"{prefix}{key}", json.dumps(value)
