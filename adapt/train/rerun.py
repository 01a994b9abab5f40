"""Re-running `train --out RUN`: the same config resumes; a different one must be asked for.

RUN/config.yaml holds the config the run was started (or last resumed) with. Re-running with
the same values resumes exactly where the run stopped (the SIGKILL/preemption path). With other
values the run would silently continue under a config it was not started with, so the command
shows the difference and stops, unless told what to do:

    --resume   continue RUN under the new values (finished stages stay as they are)
    --force    start over in RUN; the earlier run's files move to RUN/replaced-<UTC time>/ (nothing is deleted)

Keys that cannot change the result (where it runs, how often it logs) may differ freely.
"""

from __future__ import annotations

import datetime
import json
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import yaml

from uda_adapt.common.errors import UserError

CONFIG_FILE = "config.yaml"
# Dotted keys (or prefixes ending in ".") that change neither the weights nor the scores.
NO_EFFECT_ON_RESULTS = ("device", "data.num_workers", "data.pin_memory", "logging.", "distributed.")
SHOWN = 12      # differences listed in the error; the rest are counted


def _flatten(values: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in values.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(_flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def config_differences(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[tuple[str, Any, Any]]:
    """(dotted key, old value, new value) for every key whose value differs (absent: None), sorted."""
    # Through JSON, so tuples and lists (and YAML's and the dataclasses' spellings) compare equal.
    old_flat, new_flat = (_flatten(json.loads(json.dumps(v))) for v in (old, new))
    return [(key, old_flat.get(key), new_flat.get(key)) for key in sorted(old_flat.keys() | new_flat.keys())
            if old_flat.get(key) != new_flat.get(key)]


def _no_effect(key: str) -> bool:
    return any(key == name or (name.endswith(".") and key.startswith(name)) for name in NO_EFFECT_ON_RESULTS)


def _show(value: Any) -> str:
    return "(absent)" if value is None else json.dumps(value)


def check_rerun(config: Mapping[str, Any], run_dir: str | os.PathLike, *, resume: bool = False, force: bool = False,
                log: Callable[[str], None] = print) -> Path | None:
    """Decide what a re-run of `train --out run_dir` with `config` (a plain dict) may do.

    Returns the folder the earlier run was moved to (with `force` and a different config), else
    None. Raises UserError when the config differs and neither `resume` nor `force` says what to do.
    """
    if resume and force:
        raise UserError("--resume continues the run and --force starts it over; give one of them")
    run = Path(run_dir)
    previous = run / CONFIG_FILE
    if not previous.is_file():
        return None
    try:
        old = yaml.safe_load(previous.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise UserError(f"{previous} cannot be read ({exc}); restore it, or choose another --out") from None
    differences = config_differences(old, config)
    harmless = [d for d in differences if _no_effect(d[0])]
    changed = [d for d in differences if not _no_effect(d[0])]
    for key, before, after in harmless:
        log(f"note: {key} {_show(before)} -> {_show(after)} (does not change the result)")
    if not changed:
        return None
    listing = "; ".join(f"{key} {_show(before)} -> {_show(after)}" for key, before, after in changed[:SHOWN])
    more = f" and {len(changed) - SHOWN} more" if len(changed) > SHOWN else ""
    if resume:
        log(f"resuming {run} under a changed config: {listing}{more}")
        return None
    if force:
        return set_aside(run, log)
    raise UserError(f"{run} was started with another config ({listing}{more}); pass --resume to continue it under the new "
                    f"values, --force to start over (the earlier files move to {run}/replaced-<time>/), or choose another --out")


def set_aside(run: Path, log: Callable[[str], None] = print) -> Path:
    """Move everything in `run` (but earlier set-aside folders) into run/replaced-<UTC time>/."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise UserError(f"--force cannot start {run} over inside a distributed job (every process would move it); "
                        "run once without torchrun/srun with --force, or choose another --out")
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    folder = run / f"replaced-{stamp}"
    folder.mkdir()
    for entry in sorted(run.iterdir()):
        if entry != folder and not entry.name.startswith("replaced-"):
            os.replace(entry, folder / entry.name)     # one file system: renames, nothing copied or deleted
    log(f"starting {run} over; the earlier run is in {folder}")
    return folder
