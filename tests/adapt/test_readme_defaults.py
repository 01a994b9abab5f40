"""The README says what the code does: its defaults table equals the config, its ablation tables the results files."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from uda_adapt.adapt.config import to_dict
from uda_adapt.adapt.train.config import TrainConfig

README = Path(__file__).resolve().parents[2] / "README.md"
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
    """The `key` | `value` rows of the README's defaults tables (the method's, and training's speed switches)."""
    text = README.read_text()
    sections = [text.split("## The method and its defaults", 1)[1].split("\n## ", 1)[0],
                text.split("### Train on several GPUs or nodes", 1)[1].split("\n##", 1)[0]]
    return {m["key"]: yaml.safe_load(m["value"]) for section in sections for line in section.splitlines() if (m := ROW.match(line))}


def test_readme_defaults_table_equals_the_config():
    table = readme_defaults()
    config = flatten(to_dict(TrainConfig()))
    assert table, "no defaults table found in the README"
    for key, value in table.items():
        assert key in config, f"README lists {key}, which is not a config key"
        expected = list(config[key]) if isinstance(config[key], tuple) else config[key]
        assert value == expected, f"README says {key} = {value!r}, the config says {expected!r}"
    method_keys = {k for k in config if k.split(".")[0] in ("correlation", "self_train", "distributed") and not UNLISTED.search(k)}
    method_keys |= {"amp", "channels_last", "compile", "data.pin_memory"}
    missing = sorted(method_keys - set(table))
    assert not missing, f"the README's defaults table lacks {missing}"


def test_readme_ablation_tables_are_the_committed_results():
    import importlib.util

    spec = importlib.util.spec_from_file_location("update_readme", README.parent / "benchmarks" / "update_readme.py")
    update_readme = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(update_readme)
    for name in update_readme.BLOCKS:
        assert update_readme.readme_block(name) == update_readme.ablation_block(name), \
            f"README's {name} tables differ from benchmarks/results/{name}.md; run python benchmarks/update_readme.py"
