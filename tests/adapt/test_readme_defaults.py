"""The documentation says what the code does: its defaults tables equal the config, its ablation tables the results files."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from uda_adapt.adapt.config import to_dict
from uda_adapt.adapt.train.config import TrainConfig

ROOT = Path(__file__).resolve().parents[2]
METHOD = ROOT / "docs" / "method-and-defaults.md"
DISTRIBUTED = ROOT / "docs" / "distributed.md"
ROW = re.compile(r"^\| `(?P<key>[a-z_.]+)` \| `(?P<value>[^`]*)` \|")
# Optimizer plumbing that the table leaves out (each stage's Adam defaults).
UNLISTED = re.compile(r"\.optim\.(optimizer|weight_decay|momentum|poly_power|warmup)$")


def flatten(tree: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def readme_defaults() -> dict:
    """The `key` | `value` rows of the defaults tables (the method's, and training's speed switches)."""
    sections = [METHOD.read_text(), DISTRIBUTED.read_text()]
    return {m["key"]: yaml.safe_load(m["value"]) for section in sections for line in section.splitlines() if (m := ROW.match(line))}


def test_readme_defaults_table_equals_the_config():
    table = readme_defaults()
    config = flatten(to_dict(TrainConfig()))
    assert table, f"no defaults table found in {METHOD} or {DISTRIBUTED}"
    for key, value in table.items():
        assert key in config, f"the docs list {key}, which is not a config key"
        expected = list(config[key]) if isinstance(config[key], tuple) else config[key]
        assert value == expected, f"the docs say {key} = {value!r}, the config says {expected!r}"
    method_keys = {k for k in config if k.split(".")[0] in ("correlation", "self_train", "distributed") and not UNLISTED.search(k)}
    method_keys |= {"amp", "channels_last", "compile", "data.pin_memory"}
    missing = sorted(method_keys - set(table))
    assert not missing, f"the docs' defaults tables lack {missing}"


def test_readme_ablation_tables_are_the_committed_results():
    import importlib.util

    spec = importlib.util.spec_from_file_location("update_readme", ROOT / "benchmarks" / "update_readme.py")
    update_readme = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(update_readme)
    for name in update_readme.BLOCKS:
        assert update_readme.readme_block(name) == update_readme.ablation_block(name), \
            f"docs/results.md's {name} tables differ from benchmarks/results/{name}.md; run python benchmarks/update_readme.py"
