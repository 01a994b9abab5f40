"""`uda-adapt compare A B INPUT [OUTPUT]`: what adaptation changed, on your own camera.

    frame -> model A -> overlay A ┐
          -> model B -> overlay B ├-> [ A | B | A != B ] -> video or image sequence
                                  ┘
    sampled frames -> label-free measures of A and of B -> compare.json, compare.md, compare.png

A and B are anything `uda-adapt run` runs (a checkpoint, an ONNX model, an engine, an export
bundle). Exported models give class ids only, so the measures that need probabilities
(max-probability, entropy) are n/a for them. Torch-free unless A or B is a checkpoint.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
from pathlib import Path

import cv2
import numpy as np

from uda_adapt.common import label_free
from uda_adapt.common.atomic import atomic_path, atomic_write_text, ensure_writable_dir
from uda_adapt.common.errors import UserError
from uda_adapt.common.preprocess import prepare_input
from uda_adapt.runtime.backends import backend_for, open_backend
from uda_adapt.runtime.backends.base import Backend
from uda_adapt.runtime.bundle import resolve_model
from uda_adapt.runtime.capture import Log, log_to_stderr
from uda_adapt.runtime.render import Renderer, RenderOptions
from uda_adapt.runtime.sinks import open_sink
from uda_adapt.runtime.sources import open_source
from uda_adapt.runtime.uri import parse_input, parse_output

# The measures are computed on the first frames (consecutive, for the flicker of a video);
# ClassMix and augmentation cost two more inferences per frame and model.
MEASURE_FRAMES = 48
DISAGREE_BGR = (255, 0, 255)         # magenta where A and B disagree
SOURCE_SHARE_IMAGES = 100


@dataclasses.dataclass(frozen=True)
class CompareConfig:
    model_a: str
    model_b: str
    input: str
    output: str | None = None         # None: OUT_DIR/compare.mp4 (video input) or OUT_DIR/compare_%05d.png (images)
    report_dir: str | None = None     # None: beside the output
    backend: str = "auto"
    size: tuple[int, int] | None = None   # network input (H, W) of a checkpoint; None: the exported model's
    threads: int | None = None
    max_frames: int | None = None
    like: str | None = None           # labelled source root, for the class-share distance
    alpha: float = 0.5


def mask_predictor(backend: Backend):
    """RGB uint8 (N, H, W, 3) -> int (N, h, w) class ids, through the backend's own input contract."""
    def predict(images: np.ndarray) -> np.ndarray:
        return np.concatenate([backend.infer(prepare_input(image, backend.manifest.input, backend.input_size, frame_order="RGB"))
                               for image in images])
    return predict


def source_label_share(root: str | Path, num_classes: int) -> np.ndarray:
    """(C,) share of labelled pixels per class in ROOT/train/labels (torch-free reader)."""
    if not Path(root).is_dir():
        raise UserError(f"--like {root} is not a directory; give the labelled source dataset root (with train/labels)")
    labels = sorted((Path(root) / "train" / "labels").glob("*.png"))[:SOURCE_SHARE_IMAGES]
    if not labels:
        raise UserError(f"--like {root}: no labels in {Path(root) / 'train' / 'labels'}; give the labelled source dataset root")
    counts = np.zeros(num_classes, np.float64)
    for path in labels:
        label = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        if label is not None and label.ndim == 2:
            counts += np.bincount(label.ravel(), minlength=256)[:num_classes]
    return counts / max(counts.sum(), 1.0)


def disagreement_panel(frame: np.ndarray, mask_a: np.ndarray, mask_b: np.ndarray) -> tuple[np.ndarray, float]:
    """The frame in grey with magenta where the class maps disagree, and the share of such pixels."""
    h, w = frame.shape[:2]
    a = cv2.resize(mask_a.astype(np.uint8), (w, h), interpolation=cv2.INTER_NEAREST)
    b = cv2.resize(mask_b.astype(np.uint8), (w, h), interpolation=cv2.INTER_NEAREST)
    differ = a != b
    panel = cv2.cvtColor(cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY) // 2, cv2.COLOR_GRAY2BGR)
    panel[differ] = DISAGREE_BGR
    return panel, float(differ.mean())


def short_name(model: str) -> str:
    """The last three parts of a model's path: run/self_train/last.pt tells two last.pt apart."""
    return "/".join(Path(model).parts[-3:])


def title(image: np.ndarray, text: str) -> None:
    origin = (8, image.shape[0] - 10)
    cv2.putText(image, text, origin, cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 3, cv2.LINE_AA)
    cv2.putText(image, text, origin, cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 255), 1, cv2.LINE_AA)


def default_output(config: CompareConfig) -> str:
    if config.output:
        return config.output
    return "compare/compare_%05d.png" if parse_input(config.input).kind == "images" else "compare/compare.mp4"


def compare(config: CompareConfig, log: Log = log_to_stderr) -> dict:
    """Write the side-by-side output and the report; returns the report (also compare.json)."""
    source_uri = parse_input(config.input)
    if source_uri.live:
        raise UserError(f"compare reads a file or an image folder, not a live input ({config.input}); "
                        "record one first, e.g. `uda-adapt data capture` or `uda-adapt run ... clip.mp4`")
    output = parse_output(default_output(config))
    if output.kind not in ("video", "images"):
        raise UserError(f"compare writes a video file or an image sequence, not {output.original}")
    report_dir = Path(config.report_dir) if config.report_dir else Path(output.location).parent
    with contextlib.ExitStack() as stack:
        paths = [resolve_model(model, config.backend, 0, log) for model in (config.model_a, config.model_b)]
        # A checkpoint has no input size of its own: it runs at --size, else at the exported model's.
        exported = [p for p in paths if backend_for(p, config.backend) != "torch"]
        size = config.size
        backends = []
        for path in sorted(paths, key=lambda p: p not in exported):
            # Each export runs at its own size (or --size); a checkpoint at --size, else at an export's.
            backend = open_backend(path, config.backend, threads=config.threads,
                                   input_size=config.size if path in exported else size)
            stack.callback(backend.close)
            size = size or (backend.input_size if path in exported else None)
            backends.append((paths.index(path), backend))
        a, b = (backend for _, backend in sorted(backends, key=lambda item: item[0]))
        backends = [a, b]
        if tuple(a.manifest.classes) != tuple(b.manifest.classes):
            raise UserError(f"{config.model_a} and {config.model_b} predict different classes; compare models of the same class set")
        # Every argument is checked before the first frame: a bad --like or --report must not
        # cost a whole video that is then left without its report.
        source_share = source_label_share(config.like, len(a.manifest.classes)) if config.like else None
        ensure_writable_dir(report_dir)
        options = RenderOptions(alpha=config.alpha, fps=False)
        renderers = [Renderer(m.manifest.classes, m.manifest.palette, options, m.manifest.ignore_index) for m in backends]
        source = open_source(source_uri)
        stack.callback(source.close)
        sink = stack.enter_context(open_sink(output, source.fps or 10.0, headless=True))
        frames, disagreements, samples = 0, [], []
        while config.max_frames is None or frames < config.max_frames:
            ok, frame = source.read()
            if not ok:
                break
            if frame is None:
                continue
            masks = [m.infer(prepare_input(frame, m.manifest.input, m.input_size))[0] for m in backends]
            panels = [r.render(frame, mask) for r, mask in zip(renderers, masks)]
            third, share = disagreement_panel(frame, *masks)
            title(panels[0], f"A: {short_name(config.model_a)}")
            title(panels[1], f"B: {short_name(config.model_b)}")
            title(third, f"A != B: {100 * share:.1f} %")
            sink.write(np.hstack([*panels, third]))
            disagreements.append(share)
            if len(samples) < MEASURE_FRAMES:
                samples.append(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
            frames += 1
        if frames < 2:
            raise UserError(f"input {config.input} gave {frames} frame(s); compare needs at least 2")
        size = samples[0].shape[:2]
        images = np.stack([cv2.resize(s, (size[1], size[0])) for s in samples])
        video = source_uri.kind == "file"         # consecutive frames: temporal flicker is measured
        measures = {}
        for key, backend in (("A", a), ("B", b)):
            measures[key] = label_free.measure_images(mask_predictor(backend), images, num_classes=len(a.manifest.classes),
                                                      source_share=source_share, video=video)
    report = {"A": config.model_a, "B": config.model_b, "input": config.input, "output": output.location, "frames": frames,
              "input_size": {"A": list(a.input_size), "B": list(b.input_size)},
              "disagreement": float(np.mean(disagreements)), "validated": label_free.VALIDATED, "measures": measures}
    write_report(report_dir, report)
    return report


def write_report(folder: Path, report: dict) -> None:
    atomic_write_text(folder / "compare.json", json.dumps(report, indent=2) + "\n")
    lines = [f"# {short_name(report['A'])} (A) vs {short_name(report['B'])} (B)", "",
             f"{report['frames']} frames of {report['input']}; they disagree on {100 * report['disagreement']:.1f} % of pixels.", "",
             "| measure | A | B | better |", "|---|---|---|---|"]
    for name, info in label_free.MEASURES.items():
        va, vb = report["measures"]["A"].get(name), report["measures"]["B"].get(name)
        if va is None or vb is None:
            lines.append(f"| {name} | n/a | n/a | |")
            continue
        better = "A" if label_free.oriented(name, va) > label_free.oriented(name, vb) else "B" if va != vb else "="
        mark = " (validated)" if name == label_free.VALIDATED else ""
        lines.append(f"| {name}{mark} | {va:.4f} | {vb:.4f} | {better} |")
    lines += ["", "![measures](compare.png)", ""]
    atomic_write_text(folder / "compare.md", "\n".join(lines))
    with atomic_path(folder / "compare.png") as tmp:
        if not cv2.imwrite(str(tmp), bar_chart(report["measures"])):
            raise UserError(f"cannot write {folder / 'compare.png'}")


def bar_chart(measures: dict[str, dict]) -> np.ndarray:
    """A BGR bar chart of every measure (all lie in 0..1) for A (blue) and B (orange), drawn with OpenCV."""
    names = [n for n in label_free.MEASURES if measures["A"].get(n) is not None and measures["B"].get(n) is not None]
    row, width, left = 34, 640, 250
    image = np.full((20 + row * max(len(names), 1), width, 3), 255, np.uint8)
    for i, name in enumerate(names):
        y = 14 + i * row
        label = name if label_free.MEASURES[name].higher_is_better else f"{name} (lower=better)"
        cv2.putText(image, label, (8, y + 14), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 1, cv2.LINE_AA)
        for j, (key, colour) in enumerate((("A", (180, 119, 31)), ("B", (14, 127, 255)))):
            value = float(np.clip(measures[key][name], 0.0, 1.0))
            top = y + j * 13
            cv2.rectangle(image, (left, top), (left + int(value * (width - left - 70)), top + 11), colour, -1)
            cv2.putText(image, f"{key} {measures[key][name]:.3f}", (width - 66, top + 10), cv2.FONT_HERSHEY_SIMPLEX, 0.38,
                        (0, 0, 0), 1, cv2.LINE_AA)
    return image
