"""The runtime's fixtures (a tiny exported ONNX, a short clip), reused for the install tests."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "runtime"))

from conftest import clip_mp4, small_onnx  # noqa: E402,F401
