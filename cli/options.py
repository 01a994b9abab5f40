"""Click option types shared by several commands."""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Callable, Iterator

import click


@contextlib.contextmanager
def signal_handlers(handler: Callable, *signals: int) -> Iterator[None]:
    """`handler` for `signals` while the block runs, the previous handlers after it.

    Only the main thread may set handlers; elsewhere (a test runner's thread) the block runs
    with the handlers it had.
    """
    try:
        previous = {sig: signal.signal(sig, handler) for sig in signals}
    except ValueError:
        yield
        return
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


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


class DeviceType(click.ParamType):
    """One `--device` for every command: `auto`, `cpu`, a GPU index `N` or `cuda:N` (also `cuda` = `cuda:0`).

    The value is canonical text: "auto", "cpu" or "cuda:N"; `gpu_index` turns it into the index
    the runtime and TensorRT commands take.
    """

    name = "DEVICE"

    def convert(self, value, param, ctx):
        text = str(value).strip().lower()
        if text in ("auto", "cpu"):
            return text
        if text == "cuda":
            return "cuda:0"
        index = text.removeprefix("cuda:")
        if index.isdigit():
            return f"cuda:{int(index)}"
        self.fail(f"{value!r} is not a device; use auto, cpu, a GPU index like 0, or cuda:0", param, ctx)


DEVICE = DeviceType()
DEVICE_HELP = "auto (a GPU if there is one), cpu, or a GPU: 0 or cuda:0 (both spellings, on every command)."


def device_option(help: str = DEVICE_HELP):
    return click.option("--device", type=DEVICE, default="auto", show_default=True, metavar="DEVICE", help=help)


def gpu_index(device: str, command: str, *, needs_gpu: bool = False) -> int:
    """The GPU index of a canonical `--device`, for commands that take one; auto is GPU 0.

    `needs_gpu`: TensorRT commands, where `cpu` cannot apply; elsewhere (run, bench) the backend
    falls back to the CPU by itself when there is no GPU, and `cpu` is refused as a no-op promise.
    """
    from uda_adapt.common.errors import UserError

    if device == "cpu":
        reason = ("TensorRT needs a GPU" if needs_gpu else
                  f"`{command}` has no CPU switch: it runs on the CPU by itself where ONNX Runtime has no CUDA or "
                  "TensorRT provider (or PyTorch no GPU)")
        raise UserError(f"--device cpu: {reason}; --device picks the GPU here: auto, a GPU index like 0, or cuda:0")
    return 0 if device == "auto" else int(device.removeprefix("cuda:"))


def _set_quiet(ctx: click.Context, param: click.Parameter, value: bool) -> None:
    if value:
        from uda_adapt.common.progress import set_quiet

        set_quiet(True)


# No progress bars or progress lines; results, warnings and errors still print (common/progress.py).
quiet_option = click.option("-q", "--quiet", is_flag=True, expose_value=False, is_eager=True, callback=_set_quiet,
                            help="No progress bars or progress lines (results, warnings and errors still print).")


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
