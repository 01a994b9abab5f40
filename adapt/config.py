"""Typed configuration: dataclasses loaded from YAML with `--set key.sub=value` overrides.

Validation happens once, here, at the edge: an unknown key or a value of the wrong type is a
`UserError` that names the key and lists the valid ones, and a number out of its range (rules
in adapt/train/config_checks.py) one that names the key and the range. Everything past this
point can trust the dataclass it is given.
"""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from typing import Any, TypeVar

import yaml

from uda_adapt.adapt.config_files import resolve_config_file
from uda_adapt.common.errors import UserError

T = TypeVar("T")


def load_config(cls: type[T], path: str | os.PathLike | None = None, overrides: typing.Sequence[str] = ()) -> T:
    """Build `cls` from an optional YAML file, then apply `key.sub=value` overrides in order."""
    raw: dict[str, Any] = {}
    if path is not None:
        raw = read_yaml_mapping(path)
    overridden = set()
    for item in overrides:
        key, value = parse_override(item)
        set_dotted(raw, key, value)
        overridden.add(key)
    config = from_dict(cls, raw)
    check = _value_checks().get(cls)
    if check is not None:
        check(config, frozenset(overridden))
    return config


def _value_checks() -> dict[type, typing.Callable[[Any, frozenset[str]], None]]:
    """Range rules per config class, applied after keys and types (imported here: adapt.train imports this module)."""
    from uda_adapt.adapt.train.config import TrainConfig
    from uda_adapt.adapt.train.config_checks import check_train_config

    return {TrainConfig: check_train_config}


def read_yaml_mapping(path: str | os.PathLike) -> dict[str, Any]:
    """The mapping in a YAML file, or in a built-in config named by `path` (adapt/config_files.py)."""
    file = resolve_config_file(path)
    try:
        data = yaml.safe_load(file.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise UserError(f"config file {file} is not valid YAML: {str(exc).splitlines()[0]}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UserError(f"config file {file} must hold a mapping of keys to values, not a {type(data).__name__}")
    return data


def parse_override(item: str) -> tuple[str, Any]:
    """Parse `a.b=value`; the value is read as YAML so `1e-4`, `true`, `[1, 2]` get their types."""
    key, sep, text = item.partition("=")
    if not sep or not key.strip():
        raise UserError(f"override {item!r} must look like key.sub=value")
    try:
        value = yaml.safe_load(text) if text.strip() else ""
    except yaml.YAMLError:
        value = text
    return key.strip(), value


def set_dotted(raw: dict[str, Any], key: str, value: Any) -> None:
    node = raw
    parts = key.split(".")
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise UserError(f"cannot set {key}: {part} is a value, not a section")
        node = child
    node[parts[-1]] = value


def from_dict(cls: type[T], raw: dict[str, Any], prefix: str = "") -> T:
    """Recursively build dataclass `cls` from a mapping, checking keys and types."""
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    hints = typing.get_type_hints(cls)
    unknown = sorted(set(raw) - set(fields))
    if unknown:
        name = prefix + unknown[0]
        raise UserError(f"unknown config key {name!r}; valid keys{' under ' + prefix.rstrip('.') if prefix else ''}: {', '.join(sorted(fields))}")
    values = {}
    for name, value in raw.items():
        values[name] = _coerce(hints[name], value, prefix + name)
    return cls(**values)


def to_dict(config: Any) -> dict[str, Any]:
    """Plain, YAML/JSON-serialisable dict of a config dataclass (tuples become lists)."""
    return _plain(dataclasses.asdict(config))


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _coerce(hint: Any, value: Any, key: str) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if dataclasses.is_dataclass(hint):
        if not isinstance(value, dict):
            raise UserError(f"config key {key!r} is a section; give it a mapping, e.g. {key}.<name>=value")
        return from_dict(hint, value, key + ".")
    if hint is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for option in args:
            if option is type(None):
                continue
            try:
                return _coerce(option, value, key)
            except UserError as exc:
                errors.append(str(exc))
        raise UserError(errors[0] if errors else f"config key {key!r} cannot be empty")
    if origin is typing.Literal:
        if value not in args:
            raise UserError(f"config key {key!r} must be one of {', '.join(map(str, args))}; got {value!r}")
        return value
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise UserError(f"config key {key!r} must be a list, got {value!r}")
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(value) != len(args):
                raise UserError(f"config key {key!r} must have {len(args)} items, got {len(value)}")
            return tuple(_coerce(a, v, key) for a, v in zip(args, value))
        item_hint = args[0] if args else Any
        items = [_coerce(item_hint, v, key) for v in value]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, dict):
            raise UserError(f"config key {key!r} must be a mapping, got {value!r}")
        return dict(value)
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise UserError(f"config key {key!r} must be true or false, got {value!r}")
    if hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise UserError(f"config key {key!r} must be an integer, got {value!r}")
    if hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            # PyYAML reads `1e-4` (no dot) as a string; users write it that way all the time.
            try:
                return float(value)
            except ValueError:
                pass
        raise UserError(f"config key {key!r} must be a number, got {value!r}")
    if hint is str:
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        raise UserError(f"config key {key!r} must be a string, got {value!r}")
    return value
