"""Handlers of the model artifacts a stage writes, one per kind (as Olive's model handlers).

`TorchArtifact` is a model folder (config.json + model.safetensors), `OnnxArtifact` an ONNX folder.
Every place that would branch on the kind (evaluation, paired ranks, the bench) asks the handler:
where it runs, its parameter count, its test metrics, its ranks, a predictor to time, its step model.
"""

from compress.handlers.base import Artifact, Predictor, artifact_of, artifact_of_entry
from compress.handlers.onnx import OnnxArtifact
from compress.handlers.pytorch import TorchArtifact

__all__ = ["Artifact", "OnnxArtifact", "Predictor", "TorchArtifact", "artifact_of", "artifact_of_entry"]
