"""What adapt/, export/ and runtime/ share: user-facing errors, atomic writes, the bundle manifest.

Nothing here imports torch, onnx or the training code, so the runtime installs without them.
"""

__version__ = "0.1.0"
