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
