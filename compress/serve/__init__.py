"""Serving with numpy + onnxruntime only (never torch): ONNX model reader, predict, padding."""
