"""`uda-adapt run`: a model on a video source, rendered to a sink, as one plain function."""

from __future__ import annotations

import contextlib
import dataclasses
import os
from pathlib import Path

import cv2
import numpy as np

from uda_adapt.common.atomic import atomic_path, ensure_writable_dir
from uda_adapt.common.class_files import read_colors, read_labels
from uda_adapt.common.mask_png import check_mask_format
from uda_adapt.common.errors import UserError
from uda_adapt.runtime.backends import backend_for, open_backend
from uda_adapt.runtime.bundle import resolve_model
from uda_adapt.runtime.capture import Backoff, CaptureThread, Log, log_to_stderr
from uda_adapt.runtime.mask_writer import MaskWriter
from uda_adapt.runtime.pipeline import PipelineReport, run_pipeline
from uda_adapt.runtime.thread_priority import SIDE_NICE
from uda_adapt.runtime.preprocess import Preprocessor
from uda_adapt.runtime.render import Renderer, RenderOptions
from uda_adapt.runtime.run_progress import RunProgress, expected_frames
from uda_adapt.runtime.frame_pacer import FramePacer
from uda_adapt.runtime.sinks import check_output, open_sink
from uda_adapt.runtime.sources import open_source
from uda_adapt.runtime.uri import CaptureOptions, parse_input, parse_output
from uda_adapt.runtime.watch import attach_watch



@dataclasses.dataclass(frozen=True)
class RunConfig:
    model: str
    input: str
    output: str | None = None                 # None: a window, or nothing with --headless
    backend: str = "auto"                     # auto | trt | ort | torch
    device: int = 0
    threads: int | None = None                # CPU threads for inference; None: the backend's default
    size: tuple[int, int] | None = None       # --size (H, W) for dynamic models; None: the manifest's input.size
    render: RenderOptions = RenderOptions()
    capture: CaptureOptions = CaptureOptions()
    loop: int = 0                             # --input-loop: 0 once, N extra times, -1 forever
    stride: int = 1                           # --vid-stride: use every Nth frame
    latest: bool | None = None                # None: latest for live sources, buffered for files
    headless: bool = False
    max_frames: int | None = None
    save_frame: tuple[int, str] | None = None  # (index, PNG path) of one rendered frame to keep
    bitrate: int = 4_000_000                  # video and RTSP outputs
    codec: str | None = None                  # --codec h264 | h265 | mp4v; None: h264 where OpenCV has GStreamer, else mp4v
    backoff: Backoff = Backoff()
    watch: bool = False                       # --watch: running label-free measure in the report and on the overlay
    collect: str | None = None                # --collect DIR: keep the least-sure frames there
    collect_max: int = 200                    # --collect-max N
    save_masks: str | None = None             # --save-masks DIR: each frame's class-id mask as a PNG
    mask_format: str = "id"                   # --mask-format id (8-bit grey ids) | palette (ids + class colours)
    progress: bool = True                     # a progress line every few seconds over a file (off with --quiet)
    labels: str | None = None                 # --labels FILE: class names, one per line (segNet's labels.txt)
    colors: str | None = None                 # --colors FILE: class colours, `R G B` per line (segNet's colors.txt)
    # Preprocess on a thread of its own, ahead of inference (runtime.pipeline). Off: on an idle 2-core
    # machine, `run` over a 768x576 file at 512x1024 reached 0.909 of a bare ONNX Runtime loop inline
    # and 0.879 with it, inline ahead in 9 of 10 alternating rounds (benchmarks/pipeline_throughput.py
    # --video; the extra thread and buffer copy compete with inference for the same cores).
    prefetch: bool = False
    # How far below inference capture, rendering and writing run (a nice increment, Linux):
    # they then fill the gaps inference leaves instead of stalling its parallel sections.
    # 0 turns it off. Measured: benchmarks/results/pipeline_run_vs_bare.md.
    side_nice: int = SIDE_NICE


def run_stream(config: RunConfig, log: Log = log_to_stderr) -> PipelineReport:
    """Open everything, check it all before the first frame, run, and close in reverse order."""
    source_uri = parse_input(config.input)
    output_uri = parse_output(config.output if config.output or not config.headless else "null://")
    model = resolve_model(config.model, config.backend, config.device, log)
    backend_for(model, config.backend)                 # missing or unknown model: fail first
    check_output(output_uri, headless=config.headless, codec=config.codec)
    if config.save_frame is not None:
        index, path = config.save_frame
        if index < 0:
            raise UserError(f"--save-frame index must be 0 or more, got {index}")
        if Path(path).suffix.lower() not in (".png", ".jpg", ".jpeg"):
            raise UserError(f"--save-frame {path}: use a .png or .jpg file name")
    if config.save_masks is not None:
        check_mask_format(config.mask_format)
        ensure_writable_dir(config.save_masks)
    latest = source_uri.live if config.latest is None else config.latest

    with contextlib.ExitStack() as stack:
        backend = open_backend(model, config.backend, threads=config.threads, device=config.device, input_size=config.size, log=log)
        stack.callback(backend.close)
        log(f"backend: {backend.describe()}")
        manifest = backend.manifest
        classes = read_labels(config.labels, len(manifest.classes)) if config.labels else manifest.classes
        palette = read_colors(config.colors, len(manifest.classes)) if config.colors else manifest.palette
        renderer = Renderer(classes, palette, config.render, manifest.ignore_index)
        preprocess = Preprocessor(manifest.input, backend.input_size)
        watcher = None
        if config.watch or config.collect:
            backend, preprocess, renderer = attach_watch(backend, preprocess, renderer, watch=config.watch,
                                                         collect=config.collect, collect_max=config.collect_max)
            watcher = renderer

        source = open_source(source_uri, config.capture)
        stack.callback(source.close)
        fps = config.capture.rate or source.fps or 30.0
        sink = stack.enter_context(open_sink(output_uri, fps, headless=config.headless, bitrate=config.bitrate,
                                             codec=config.codec, log=log))
        # Dropped frames (--latest) would make a constant-rate video play too fast: pace it. (The
        # RTSP server stamps each frame with its arrival time instead.)
        pacer = FramePacer(fps) if latest and output_uri.kind in ("video", "rtsp") else None
        capture = CaptureThread(
            source, latest=latest, loop=config.loop, stride=config.stride,
            rate=config.capture.rate, backoff=config.backoff, log=log,
        )
        masks = None
        if config.save_masks is not None:
            masks = stack.enter_context(MaskWriter(config.save_masks, mask_format=config.mask_format,
                                                   palette=palette, log=log))
        hooks = [_frame_saver(*config.save_frame)] if config.save_frame else []
        if config.progress and not source.live:
            total = expected_frames(getattr(source, "frame_count", None), stride=config.stride, loop=config.loop,
                                    max_frames=config.max_frames)
            hooks.append(RunProgress(total, log=log))
        log(f"running {source_uri.original} -> {sink.name} ({'latest frame' if latest else 'every frame'})")
        report = run_pipeline(
            capture, backend, preprocess, renderer, sink,
            max_frames=config.max_frames,
            queue_size=1 if latest else 2,     # live: the least queueing latency
            on_frame=_all_of(hooks) if hooks else None,
            show_fps=config.render.fps,
            log=log,
            pacer=pacer,
            on_mask=masks,
            # Files: preprocessing ahead of inference, off its thread. Not live sources (the
            # newest frame, not one prepared earlier) nor --watch (it scores on the infer thread).
            prefetch=config.prefetch and not latest and watcher is None,
            # Files only: a live camera's reader at low priority would fall behind the camera.
            side_nice=0 if latest else config.side_nice,
        )
        if masks is not None:
            masks.close()          # every queued mask written (and a write error raised) before the report
            log(f"wrote {masks.written} masks to {masks.folder}")
        if watcher is not None:
            report.label_free = watcher.report()
        return report


def _all_of(hooks):
    def each(frame_index: int, image: np.ndarray) -> None:
        for hook in hooks:
            hook(frame_index, image)

    return each


def _frame_saver(index: int, path: str | os.PathLike):
    def save(frame_index: int, image: np.ndarray) -> None:
        if frame_index == index:
            with atomic_path(path) as tmp:
                if not cv2.imwrite(str(tmp), image):
                    raise UserError(f"cannot write --save-frame image {path}")

    return save
