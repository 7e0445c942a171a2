import copy
import sys

import torch

import onnx
import pytest

from compress.runs.artifacts import read_json
from compress.errors import CompressError, ParityError, RecipeError
from compress.models import load_model
from compress.models import RecommenderConfig, SequentialRecommender
from compress.models.quantized import (
    FOUR_BIT_BLOCK, FOUR_BIT_GROUP, QuantizationSpec, apply_runtime, four_bit_skipped, import_bitsandbytes, linear_names,
)
from compress.pipeline import RunOptions, run_recipe
from compress.recipe import validate_recipe
from tests.conftest import tiny_recipe

QUIET = RunOptions(show_progress=False, log=lambda _: None)
LOOSE = {"min_overlap": 0.5, "max_ndcg_drop": 0.2}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """One output folder for the module: the teacher trains once, later runs reuse it (sibling cache)."""
    return tmp_path_factory.mktemp("runs")


def recipe(folder, *stages, name="tiny"):
    raw = tiny_recipe(folder, epochs=1)
    raw["stages"] += list(stages)
    return {**raw, "name": name, "bench": {"enabled": False}}


def last(manifest):
    return manifest["stages"][-1]


@pytest.mark.parametrize("mode", ["dynamic", "static"])
def test_onnxruntime_int8_gives_a_valid_graph_with_measured_overlap(runs, mode):
    stages = {"stage": "export"}, {"stage": "quantize", "mode": mode, "parity": LOOSE}
    manifest = run_recipe(validate_recipe(recipe(runs, *stages, name=mode)), QUIET)
    stage = last(manifest)
    folder = runs / "artifacts" / mode / stage["output"]
    graph = onnx.load(str(folder / "model.onnx"))
    onnx.checker.check_model(graph)
    ops = {node.op_type for node in graph.graph.node}
    assert ({"DynamicQuantizeLinear", "MatMulInteger"} if mode == "dynamic" else {"QuantizeLinear"}) & ops
    parity = read_json(folder / "parity.json")
    assert parity["passed"] and stage["info"]["parity"]["overlap@10"] == parity["overlap@10"] >= 0.5
    assert read_json(folder / "metadata.json")["quantization"]["mode"] == mode
    assert stage["metrics"]["ndcg@10"] > manifest["baseline"]["metrics"]["ndcg@10"] - 0.2


def test_a_broken_mode_is_caught_by_the_parity_gate(runs):
    strict = {"stage": "quantize", "mode": "static", "op_types": ["MatMul", "Add", "Mul", "Softmax", "Gather"],
              "parity": {"min_overlap": 0.999}}
    with pytest.raises(ParityError, match="quantize \\(onnxruntime static\\) failed the ranking parity gate"):
        run_recipe(validate_recipe(recipe(runs, {"stage": "export"}, strict, name="broken")), QUIET)


@pytest.mark.parametrize(
    "options",
    [{"backend": "torch"}, {"backend": "torch", "item_table": True}, {"backend": "bf16"},
     {"backend": "bitsandbytes"}, {"backend": "bitsandbytes", "mode": "nf4"}],
)
def test_torch_backends_save_smaller_and_load_with_load_model(runs, options):
    name = "-".join(str(v) for v in options.values())
    manifest = run_recipe(validate_recipe(recipe(runs, {"stage": "quantize", **options, "parity": LOOSE}, name=name)), QUIET)
    train, stage = manifest["stages"]
    model = load_model(runs / "artifacts" / name / stage["output"])
    assert model.num_parameters() == stage["params"] == train["params"]
    if options.get("mode") != "nf4":  # 4-bit weights are stored in fp32 and quantized at load
        assert stage["size_bytes"] < 0.7 * train["size_bytes"]
    assert stage["info"]["parity"]["overlap@10"] >= 0.5


@pytest.mark.parametrize("mode", ["nf4", "fp4"])
def test_four_bit_quantizes_widths_in_blocks_of_32_and_keeps_the_others_fp32(mode):
    """bitsandbytes packs 4-bit weights in 32-output x 64-input blocks on AVX512-BF16 CPUs; other widths stay fp32."""
    bnb = import_bitsandbytes()
    config = RecommenderConfig(num_items=40, hidden_size=64, num_layers=1, num_heads=2, num_kv_heads=1,
                               intermediate_size=48, max_len=8)
    model = SequentialRecommender(config).eval()
    spec = QuantizationSpec(backend="bitsandbytes", mode=mode)
    skipped = set(four_bit_skipped(model))
    assert skipped and skipped < set(linear_names(model))  # the MLP (48 wide) stays, attention goes 4-bit
    quantized = apply_runtime(copy.deepcopy(model), spec, {}, torch.device("cpu"))
    for name in linear_names(model):
        layer = quantized.get_submodule(name)
        assert isinstance(layer, bnb.nn.Linear4bit) == (name not in skipped)
        fits = layer.out_features % FOUR_BIT_BLOCK == 0 and layer.in_features % FOUR_BIT_GROUP == 0
        assert fits == (name not in skipped)
    items, mask = torch.randint(1, 41, (3, 8)), torch.ones(3, 8, dtype=torch.long)
    with torch.no_grad():
        assert quantized.last_states(items, mask).shape == model.last_states(items, mask).shape


@pytest.mark.parametrize(
    "stages, message",
    [
        ([{"stage": "quantize", "backend": "bitsandbytes"}, {"stage": "export"}], "cannot export a bitsandbytes"),
        ([{"stage": "quantize", "backend": "torch"}, {"stage": "distill"}], "cannot follow quantize"),
        ([{"stage": "quantize"}], "needs a onnx model, but gets a torch model"),
        ([{"stage": "export"}, {"stage": "quantize", "backend": "torch"}], "needs a torch model, but gets a onnx"),
        ([{"stage": "quantize", "backend": "torch", "mode": "nf4"}], "backend torch has modes int8"),
        ([{"stage": "quantize", "backend": "torch", "op_types": ["MatMul"]}], "apply to backend onnxruntime only"),
        ([{"stage": "quantize", "backend": "fp16", "item_table": True}], "already halves"),
    ],
)
def test_impossible_chains_are_rejected_up_front(tmp_path, stages, message):
    with pytest.raises(RecipeError, match=message):
        validate_recipe(recipe(tmp_path, *stages))


def test_missing_bitsandbytes_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "bitsandbytes", None)
    with pytest.raises(CompressError, match="bitsandbytes package, which is not installed"):
        import_bitsandbytes()
