"""Click option types shared by several commands."""

from __future__ import annotations

import click


class SizeType(click.ParamType):
    """`HxW`, e.g. 512x1024."""

    name = "HxW"

    def convert(self, value, param, ctx):
        if isinstance(value, tuple):
            return value
        try:
            height, width = (int(v) for v in str(value).lower().split("x"))
            if height <= 0 or width <= 0:
                raise ValueError
        except ValueError:
            self.fail(f"{value!r} is not a size like 512x1024 (height x width, positive)", param, ctx)
        return height, width


SIZE = SizeType()


def require_training_stack(command: str) -> None:
    """Training, evaluation and export need torch: say how to get it on a runtime-only install."""
    from uda_adapt.common.errors import UserError

    missing = [name for name in ("torch", "torchvision") if not _importable(name)]
    if missing:
        raise UserError(f"`uda-adapt {command}` needs the training install ({' and '.join(missing)} missing here): "
                        "pip install 'uda-adapt[train]'; this install runs exported models only (run, bench, build, check)")


def _importable(name: str) -> bool:
    import importlib.util

    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False
