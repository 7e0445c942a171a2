import copy
import sys

import torch

import onnx
import pytest

from compress.runs.files import read_json
from compress.errors import CompressError, ParityError, RecipeError
from compress.models import load_model
from compress.models import RecommenderConfig, SequentialRecommender
from compress.models.quantized import (
    FOUR_BIT_BLOCK, FOUR_BIT_GROUP, QuantizationSpec, apply_runtime, four_bit_skipped, import_bitsandbytes, linear_names,
)
from compress.pipeline import RunOptions, run_recipe
from compress.recipe import validate_recipe
from compress.stages.config import QuantizeConfig
from tests.conftest import tiny_recipe

QUIET = RunOptions(show_progress=False, log=lambda _: None)
SHIPPED = QuantizeConfig().parity  # the gate a quantize stage ships with when a recipe sets no `parity:`


def within_shipped_gate(parity: dict) -> None:
    """The stage's parity report passed the shipped gate, with the shipped thresholds recorded."""
    assert parity["overlap@10"] >= SHIPPED.min_overlap, parity
    assert parity["ndcg_drop@10"] <= SHIPPED.max_ndcg_drop, parity


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
    stages = {"stage": "export"}, {"stage": "quantize", "mode": mode}  # the shipped parity gate
    manifest = run_recipe(validate_recipe(recipe(runs, *stages, name=mode)), QUIET)
    stage = last(manifest)
    folder = runs / "artifacts" / mode / stage["output"]
    graph = onnx.load(str(folder / "model.onnx"))
    onnx.checker.check_model(graph)
    ops = {node.op_type for node in graph.graph.node}
    assert ({"DynamicQuantizeLinear", "MatMulInteger"} if mode == "dynamic" else {"QuantizeLinear"}) & ops
    parity = read_json(folder / "parity.json")
    assert parity["passed"] and parity["thresholds"] == SHIPPED.model_dump()
    assert stage["info"]["parity"]["overlap@10"] == parity["overlap@10"]
    within_shipped_gate(parity)
    assert read_json(folder / "metadata.json")["quantization"]["mode"] == mode
    # the int8 model's test NDCG@10 is the one the gate measured, within the gate of its float source
    source = manifest["stages"][-2]
    assert source["name"] == "export" and source["metrics"]["ndcg@10"] == pytest.approx(parity["reference_ndcg@10"])
    assert stage["metrics"]["ndcg@10"] == pytest.approx(parity["candidate_ndcg@10"])
    assert source["metrics"]["ndcg@10"] - stage["metrics"]["ndcg@10"] <= SHIPPED.max_ndcg_drop
    assert stage["metrics"]["ndcg@10"] > manifest["baseline"]["metrics"]["ndcg@10"]  # still beats popularity


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
    manifest = run_recipe(validate_recipe(recipe(runs, {"stage": "quantize", **options}, name=name)), QUIET)
    train, stage = manifest["stages"]
    model = load_model(runs / "artifacts" / name / stage["output"])
    assert model.num_parameters() == stage["params"] == train["params"]
    if options.get("mode") != "nf4":  # 4-bit weights are stored in fp32 and quantized at load
        assert stage["size_bytes"] < 0.7 * train["size_bytes"]
    within_shipped_gate(stage["info"]["parity"])
    assert train["metrics"]["ndcg@10"] - stage["metrics"]["ndcg@10"] <= SHIPPED.max_ndcg_drop


@pytest.mark.parametrize("mode", ["nf4", "fp4"])
def test_four_bit_quantizes_widths_in_blocks_of_32_and_keeps_the_others_fp32(mode):
    """bitsandbytes packs 4-bit weights in 32-output x 64-input blocks on AVX512-BF16 CPUs; other widths stay fp32.

    The 4-bit layers really hold 4-bit weights: at most 16 values per 64-wide scale group, each within half
    the largest gap of the 4-bit code (times the group's absmax) of the float weight; the fp32 layers are
    the float ones unchanged; and the quantized model ranks like the float one within the shipped gate."""
    bnb = import_bitsandbytes()
    config = RecommenderConfig(num_items=40, hidden_size=64, num_layers=1, num_heads=2, num_kv_heads=1,
                               intermediate_size=48, max_len=8)
    torch.manual_seed(0)
    model = SequentialRecommender(config).eval()
    spec = QuantizationSpec(backend="bitsandbytes", mode=mode)
    skipped = set(four_bit_skipped(model))
    assert skipped and skipped < set(linear_names(model))  # the MLP (48 wide) stays, attention goes 4-bit
    quantized = apply_runtime(copy.deepcopy(model), spec, {}, torch.device("cpu"))
    levels = bnb.functional.get_4bit_type(mode, device="cpu").sort().values
    half_step = float((levels[1:] - levels[:-1]).max()) / 2  # the worst rounding, relative to a group's absmax
    for name in linear_names(model):  # before any forward, which repacks the weights on AVX512-BF16 CPUs
        layer, original = quantized.get_submodule(name), model.get_submodule(name).weight.detach()
        assert isinstance(layer, bnb.nn.Linear4bit) == (name not in skipped)
        fits = layer.out_features % FOUR_BIT_BLOCK == 0 and layer.in_features % FOUR_BIT_GROUP == 0
        assert fits == (name not in skipped)
        if name in skipped:
            assert torch.equal(layer.weight.detach(), original)
            continue
        state = layer.weight.quant_state
        assert layer.weight.dtype == torch.uint8 and layer.weight.numel() == original.numel() // 2  # 2 per byte
        assert state.quant_type == mode and state.blocksize == FOUR_BIT_GROUP
        groups = bnb.functional.dequantize_4bit(layer.weight.data, state).reshape(-1, FOUR_BIT_GROUP)
        exact = original.reshape(-1, FOUR_BIT_GROUP)
        absmax = exact.abs().amax(dim=1, keepdim=True)
        assert max(len(torch.unique(group)) for group in groups) <= 16
        worst = float(((groups - exact).abs() / absmax).max())  # the error in units of its group's absmax
        assert worst <= 1.05 * half_step, (name, worst, half_step)  # 1.05: the absmax is stored in 8 bits itself
        assert not torch.equal(groups, exact)
    generator = torch.Generator().manual_seed(0)
    items, mask = torch.randint(1, 41, (32, 8), generator=generator), torch.ones(32, 8, dtype=torch.long)
    with torch.no_grad():
        reference = model.score(model.last_states(items, mask))[:, 1:]
        candidate = quantized.score(quantized.last_states(items, mask))[:, 1:]
    assert candidate.shape == reference.shape and torch.isfinite(candidate).all()
    top_ref, top_cand = reference.topk(10).indices, candidate.topk(10).indices
    overlap = sum(len(set(a.tolist()) & set(b.tolist())) for a, b in zip(top_ref, top_cand)) / top_ref.numel()
    assert overlap >= SHIPPED.min_overlap


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
