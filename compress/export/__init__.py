"""ONNX export, graph rewrites, onnxruntime quantization."""
