"""Where each area's click commands are attached to the `uda-adapt` group.

Command modules import their heavy dependencies (torch, onnxruntime) inside the command
body, so `uda-adapt --help` stays fast.
"""

from __future__ import annotations

import click


def register(cli: click.Group) -> None:
    from adapt.commands.data import data

    cli.add_command(data)

    from adapt.commands.train import evaluate, train

    cli.add_command(train)
    cli.add_command(evaluate)

    from export.cli import export

    cli.add_command(export)

    from runtime.cli import bench, run

    cli.add_command(run)
    cli.add_command(bench)

    from adapt.commands.demo import demo

    cli.add_command(demo)
