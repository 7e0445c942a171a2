"""Smoke tests of the scripts in benchmarks/: each on tiny inputs, in a few seconds, never on real data."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Callable

import pytest

ROOT = Path(__file__).resolve().parents[2]
BENCHMARKS = ROOT / "benchmarks"


@pytest.fixture
def script(monkeypatch: pytest.MonkeyPatch) -> Callable[[str], ModuleType]:
    """Import a benchmark script by its path under benchmarks/ (its folder on sys.path, for sibling imports)."""

    def load(relative: str) -> ModuleType:
        path = BENCHMARKS / relative
        monkeypatch.syspath_prepend(str(path.parent))
        name = "benchmark_" + relative.removesuffix(".py").replace("/", "_")
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        monkeypatch.setitem(sys.modules, name, module)
        spec.loader.exec_module(module)
        return module

    return load


@pytest.fixture
def argv(monkeypatch: pytest.MonkeyPatch) -> Callable[..., None]:
    """Set sys.argv for a script's main()."""

    def set_argv(name: str, *args: object) -> None:
        monkeypatch.setattr(sys, "argv", [name, *map(str, args)])

    return set_argv


@pytest.fixture
def model_folder(tiny_model, tmp_path: Path) -> Path:
    """The tiny random model saved as a model folder (config.json + model.safetensors)."""
    from compress.models import save_model

    folder = tmp_path / "model"
    save_model(tiny_model, folder)
    return folder
