"""The `uda-adapt` command line: a thin click layer over plain functions.

Exit status (also in docs/exit-codes.md):
  0  success
  1  a problem with the input or environment (`UserError`: one line on stderr)
  2  a mistyped command line (click's usage error)
  3  `export`: the parity gate failed; the bundle is kept for inspection (`ParityGateFailed`)
  130  interrupted (Ctrl-C, or SIGTERM during `run`)
`--debug` shows the full traceback instead of the one-line error.
"""

from __future__ import annotations

import sys

import click

from uda_adapt.common import __version__
from uda_adapt.common.atomic import WRITE_ERRNOS
from uda_adapt.common.errors import UserError


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, "--version", prog_name="uda-adapt")
@click.option("--debug", is_flag=True, help="Show full tracebacks instead of one-line errors.")
@click.pass_context
def cli(ctx: click.Context, debug: bool) -> None:
    """Adapt a semantic segmenter to your camera, export it, and run it on video.

    \b
    adapt:  uda-adapt data synth / train / eval
    export: uda-adapt export CKPT --out DIR [--trt]
    device: uda-adapt build BUNDLE / check BUNDLE   (TensorRT, no torch needed)
    run:    uda-adapt run MODEL|BUNDLE INPUT [OUTPUT] / bench MODEL
    loop:   uda-adapt data capture INPUT --out ROOT / compare A B INPUT [OUTPUT]
    """
    ctx.obj = {"debug": debug}


def _register_commands() -> None:
    # Command modules import only click at the top (heavy imports sit inside the command
    # bodies), so `uda-adapt run` on a torch-free install never imports torch.
    from uda_adapt.cli.checks import checks
    from uda_adapt.cli.compare import compare
    from uda_adapt.cli.data import data
    from uda_adapt.cli.demo import demo
    from uda_adapt.cli.export import build, export
    from uda_adapt.cli.run import bench, check, run
    from uda_adapt.cli.train import evaluate, train

    for command in (data, train, evaluate, export, build, run, check, bench, compare, demo, checks):
        cli.add_command(command)


def main(argv: list[str] | None = None) -> int:
    """Console-script entry point; returns the process exit status."""
    args = sys.argv[1:] if argv is None else argv
    debug = "--debug" in args
    _register_commands()
    try:
        cli.main(args=args, prog_name="uda-adapt", standalone_mode=False)
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except click.exceptions.Abort:
        click.echo("uda-adapt: interrupted", err=True)
        return 130
    except UserError as exc:
        if debug:
            raise
        click.echo(f"uda-adapt: error: {exc}", err=True)
        return getattr(exc, "exit_code", 1)     # a subclass may have its own documented status
    except KeyboardInterrupt:
        click.echo("uda-adapt: interrupted", err=True)
        return 130
    except OSError as exc:
        # A full disk or read-only mount met outside the atomic writers (logs, TensorBoard, a video).
        if debug or exc.errno not in WRITE_ERRNOS:
            raise
        click.echo(f"uda-adapt: error: cannot write {exc.filename or 'the output'}: {exc.strerror}; "
                   "free some disk space or choose another output", err=True)
        return 1
    return 0


def run() -> None:
    sys.exit(main())


if __name__ == "__main__":
    run()
