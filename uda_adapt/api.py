"""`uda_adapt.train`: the training entry point for Python code, the same plain function `uda-adapt train` calls.

    import uda_adapt
    run = uda_adapt.train("gta5_to_cityscapes_mean_teacher", "runs/gta5-mt",
                          overrides=["data.source.root=/data/gta5", "data.target.root=/data/cityscapes"])
    bundle = uda_adapt.export_model(run, "exports/gta5-mt")
    with uda_adapt.Segmenter(bundle.out_dir) as seg:
        mask = seg(frame)

Training imports torch; the import happens inside the call, so `import uda_adapt` stays light on a
runtime-only install.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from uda_adapt.common.errors import UserError

if TYPE_CHECKING:
    from uda_adapt.adapt.train.config import TrainConfig


def _require_torch(what: str) -> None:
    if importlib.util.find_spec("torch") is None:
        raise UserError(f"{what} needs the training install (torch is missing here): pip install 'uda-adapt[train]'")


def load_train_config(config: str | os.PathLike | None = None, overrides: Sequence[str] = ()) -> TrainConfig:
    """A validated `TrainConfig` from a YAML path or a built-in config name (None: the defaults), then `key=value` overrides."""
    _require_torch("uda_adapt.load_train_config")
    from uda_adapt.adapt.config import load_config
    from uda_adapt.adapt.train.config import TrainConfig

    return load_config(TrainConfig, config, overrides)


def train(config: TrainConfig | str | os.PathLike | None, out: str | os.PathLike, *, overrides: Sequence[str] = (),
          stage: str | None = None, init: str | os.PathLike | None = None) -> Path:
    """Run the adaptation schedule into the run directory `out`; returns the checkpoint to report and export.

    `config`: a `TrainConfig`, a YAML path, a built-in config name (`gta5_to_cityscapes_mean_teacher`)
    or None for the defaults (the built-in synthetic schedule). Calling it again with the same `out`
    resumes, as the command does. `stage` runs one stage (source, correlation, self_train), from
    `init` if given.
    """
    _require_torch("uda_adapt.train")
    from uda_adapt.adapt.train.config import TrainConfig
    from uda_adapt.adapt.train.runner import train as run_training

    if isinstance(config, TrainConfig):
        if overrides:
            raise UserError("overrides apply to a config file or name; change a TrainConfig with dataclasses.replace")
        cfg = config
    else:
        cfg = load_train_config(config, overrides)
    return Path(run_training(cfg, out, stage=stage, init=None if init is None else str(init)))
