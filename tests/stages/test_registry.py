from importlib import import_module

import pytest

from compress.stages.config import QuantizeConfig, TrainConfig
from compress.stages.registry import STAGES, depth_after
from compress.stages.runners import STAGE_MODULES


@pytest.mark.parametrize("name", sorted(STAGES))
def test_each_spec_has_its_config_and_its_module_run(name):
    spec = STAGES[name]
    assert spec.name == name and spec.config.model_fields["stage"].default == name
    assert STAGE_MODULES[name] is import_module(f"compress.stages.{name}") and callable(STAGE_MODULES[name].run)


def test_every_registered_stage_has_a_module_and_no_module_lacks_a_spec():
    assert sorted(STAGE_MODULES) == sorted(STAGES)


def test_kinds_and_depth_come_from_the_config():
    quantize = STAGES["quantize"]
    assert quantize.accepts(QuantizeConfig()) == quantize.produces(QuantizeConfig()) == "onnx"
    assert quantize.accepts(QuantizeConfig(backend="torch")) == "torch"
    assert STAGES["train"].accepts(TrainConfig()) is None and STAGES["export"].produces(None) == "onnx"
    assert depth_after(TrainConfig(model={"num_layers": 5})) == 5 and depth_after(QuantizeConfig()) is None
