"""What a run ran on: library versions and device, recorded in every manifest."""

from __future__ import annotations

import os
import platform
from importlib.metadata import PackageNotFoundError, version

import torch

from compress.errors import RecipeError

DEVICES = ("auto", "cpu", "cuda")  # what a recipe's `device` and `compress bench --device` accept
_PACKAGES = ("compress", "torch", "transformers", "onnx", "onnxruntime", "onnxruntime-gpu", "torch-pruning")


def resolve_device(name: str) -> torch.device:
    """`auto` is CUDA when present, else CPU; asking for CUDA without one is an error."""
    if name not in DEVICES:
        raise RecipeError(f"device {name!r} is not one of {', '.join(DEVICES)}")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RecipeError("device: cuda was asked for, but no CUDA device is available", "use device: auto or cpu")
    return torch.device(name)


def versions() -> dict[str, str]:
    found = {"python": platform.python_version()}
    for package in _PACKAGES:
        try:
            found[package] = version(package)
        except PackageNotFoundError:
            continue
    return found


def describe_device(device: torch.device) -> dict[str, str | int]:
    info: dict[str, str | int] = {
        "device": str(device),
        "cpu": _cpu_model(),
        "cpu_count": os.cpu_count() or 0,
        "torch_threads": torch.get_num_threads(),
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()
