"""What a model file really holds, from its first bytes, for errors that say so.

A user who passes `model.onnx` to `uda-adapt eval`, or a checkpoint renamed `.onnx` to `run`,
should read "this is an ONNX model, not a checkpoint" and what to pass instead, not the loader's
own message about pickles or protobufs. `sniff` only reads the head of the file (and a zip's
directory); no torch, onnx or tensorrt import is needed.
"""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

from uda_adapt.common.errors import UserError

# The kinds `sniff` tells apart, and how a message names each.
DESCRIPTIONS: dict[str, str] = {
    "checkpoint": "a PyTorch checkpoint",
    "pickle": "a pickle file",
    "zip": "a zip archive",
    "truncated-zip": "truncated (cut short while being saved or copied)",
    "onnx": "an ONNX model",
    "engine": "a TensorRT engine",
    "json": "a JSON file",
    "image": "an image",
    "video": "a video",
    "empty": "an empty file",
    "unknown": "a file of unrecognised content",
}

# ONNX files are protobuf ModelProto: field 1 (ir_version, a small varint) comes first, then
# another ModelProto field: producer_name, producer_version, domain, model_version, doc_string,
# graph, opset_import, metadata_props.
_ONNX_NEXT_TAGS = {0x12, 0x1A, 0x22, 0x28, 0x32, 0x3A, 0x42, 0x72}
_ENGINE_SUFFIXES = (".engine", ".plan", ".trt")


def sniff(path: str | os.PathLike) -> str:
    """The kind of the file at `path`: a key of DESCRIPTIONS."""
    file = Path(path)
    with open(file, "rb") as handle:
        head = handle.read(64)
    if not head:
        return "empty"
    if head.startswith(b"PK\x03\x04"):
        if not zipfile.is_zipfile(file):
            return "truncated-zip"
        try:
            with zipfile.ZipFile(file) as archive:
                names = archive.namelist()
        except (zipfile.BadZipFile, OSError):
            return "truncated-zip"
        return "checkpoint" if any(n.endswith("data.pkl") for n in names) else "zip"
    if head[:1] == b"\x80" and len(head) > 1 and head[1] <= 5:
        return "pickle"           # pickle protocol 2-5: torch.save's legacy format, or any pickle
    if head[0] == 0x08 and len(head) > 2 and 1 <= head[1] < 0x80 and head[2] in _ONNX_NEXT_TAGS:
        return "onnx"
    if b"ftrt" in head[:32] or (file.suffix.lower() in _ENGINE_SUFFIXES and b"\x00" in head):
        return "engine"           # TensorRT plans carry the "ftrt" tag near the start
    if head.lstrip()[:1] in (b"{", b"["):
        return "json"
    if head.startswith((b"\x89PNG", b"\xff\xd8\xff", b"GIF8", b"BM")):
        return "image"
    if head[4:8] == b"ftyp" or head.startswith(b"RIFF") or head.startswith(b"\x1a\x45\xdf\xa3"):
        return "video"
    return "unknown"


def describe(kind: str) -> str:
    return DESCRIPTIONS.get(kind, kind)


# What to do when a command gets the wrong kind of file: (expected, found) -> fix; found "*" = any.
_FIXES: dict[tuple[str, str], str] = {
    ("checkpoint", "onnx"): "pass the .pt checkpoint it was exported from (RUN/<stage>/last.pt); "
                            "`uda-adapt run` and `bench` take ONNX models",
    ("checkpoint", "engine"): "pass the .pt checkpoint it was built from (RUN/<stage>/last.pt); "
                              "`uda-adapt run` and `bench` take engines",
    ("checkpoint", "truncated-zip"): "copy it again, or re-run `uda-adapt train` on the same --out "
                                     "to resume from its last good checkpoint",
    ("checkpoint", "empty"): "copy the checkpoint again",
    ("checkpoint", "*"): "pass a .pt checkpoint written by `uda-adapt train` (RUN/<stage>/last.pt)",
    ("onnx", "checkpoint"): "export it first with `uda-adapt export CKPT --out DIR` and pass DIR/model.onnx, "
                            "or run the checkpoint itself with a .pt name",
    ("onnx", "engine"): "give it an .engine name so the TensorRT backend runs it",
    ("onnx", "*"): "re-export it with `uda-adapt export CKPT --out DIR`",
    ("engine", "checkpoint"): "build an engine with `uda-adapt export CKPT --out DIR --trt`, or run the checkpoint "
                              "itself with a .pt name",
    ("engine", "onnx"): "give it an .onnx name so ONNX Runtime runs it, or build an engine on this device with "
                        "`uda-adapt build BUNDLE` (the export directory)",
    ("engine", "*"): "build it again on this device with `uda-adapt build BUNDLE` (the export directory)",
}


def wrong_kind_message(path: str | os.PathLike, found: str, expected: str) -> str:
    """One line: the file, what it is, what was expected, and the fix."""
    fix = _FIXES.get((expected, found)) or _FIXES[(expected, "*")]
    if found in ("truncated-zip", "empty"):
        return f"{path} is {describe(found)}; {fix}"
    if found == "unknown":
        return f"{path} is not {describe(expected)} (its content is not a format uda-adapt knows); {fix}"
    return f"{path} is {describe(found)}, not {describe(expected)}; {fix}"


def require_kind(path: str | os.PathLike, expected: str, accept: tuple[str, ...] = ()) -> None:
    """Raise UserError unless `path` sniffs as `expected` or one of the kinds in `accept`."""
    found = sniff(path)
    if found != expected and found not in accept:
        raise UserError(wrong_kind_message(path, found, expected))
