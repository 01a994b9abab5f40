"""Export of trained segmenters to ONNX and TensorRT, with a sidecar manifest."""
