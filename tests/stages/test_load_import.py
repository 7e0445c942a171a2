"""The load stage importing a teacher trained elsewhere (docs/import.md): a Hugging Face decoder folder with
an item table, an SLMRec checkpoint, the example recipe's stack on it, and the errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

from compress.errors import ArtifactError, CompressError, RecipeError
from compress.models import load_model
from compress.models.importers import import_decoder
from compress.models.tiny_teachers import HIDDEN, INSTRUCTION_IDS, RESPONSE_IDS, hf_decoder, item_table, slmrec_checkpoint
from compress.pipeline import RunOptions, run_recipe
from compress.recipe import validate_recipe
from tests.conftest import TINY_SYNTHETIC, tiny_recipe

pytest.importorskip("peft")

QUIET = RunOptions(show_progress=False, log=lambda _: None)
ROOT = Path(__file__).resolve().parents[2]
NUM_ITEMS = TINY_SYNTHETIC["items"]


def _recipe(tmp_path: Path, *stages: dict) -> dict:
    raw = tiny_recipe(tmp_path)
    raw["stages"] = list(stages)
    raw["bench"] = {"enabled": False}
    return raw


def _slmrec_load(root: Path) -> dict:
    return {"stage": "load", "path": str(root / "decoder"), "item_embeddings": str(root / "item_embeds.pt"),
            "projections": str(root / "projections.pt"), "adapter": str(root / "adapter"),
            "instruction": INSTRUCTION_IDS, "response": RESPONSE_IDS, "num_layers": 2}


def test_load_imports_a_hugging_face_decoder(tmp_path):
    hf_decoder("qwen2", tmp_path / "dec")
    item_table(NUM_ITEMS, HIDDEN, tmp_path / "items.safetensors")
    load = {"stage": "load", "path": str(tmp_path / "dec"), "item_embeddings": str(tmp_path / "items.safetensors")}
    messages = []
    manifest = run_recipe(validate_recipe(_recipe(tmp_path, load)), RunOptions(show_progress=False, log=messages.append))
    assert any("imported a hf teacher" in m for m in messages)
    saved = load_model(tmp_path / "artifacts" / "tiny" / manifest["stages"][0]["output"])
    assert saved.config.attention_bias == "qkv" and saved.config.num_items == NUM_ITEMS
    direct = import_decoder(tmp_path / "dec", tmp_path / "items.safetensors", NUM_ITEMS, 20)
    ids = torch.randint(1, NUM_ITEMS + 1, (3, 20))
    mask = torch.ones_like(ids)
    assert torch.equal(saved.next_item_scores(ids, mask), direct.next_item_scores(ids, mask))
    assert 0 <= manifest["stages"][0]["metrics"]["ndcg@10"] <= 1

    # a new item table at the same path reruns the stage (the cache id covers the import's files)
    item_table(NUM_ITEMS, HIDDEN, tmp_path / "items.safetensors", seed=7)
    messages.clear()
    again = run_recipe(validate_recipe(_recipe(tmp_path, load)), RunOptions(show_progress=False, log=messages.append))
    assert not any(": cached" in m for m in messages)
    assert again["stages"][0]["config_hash"] != manifest["stages"][0]["config_hash"]


def _example(name: str, teacher: Path, tmp_path: Path) -> dict:
    """docs/<name> made quick: its teacher's files under `teacher` (not artifacts/import_teacher), the tiny
    synthetic data, one epoch per training, no bench."""
    raw = yaml.safe_load((ROOT / "docs" / name).read_text())
    load = raw["stages"][0]
    for key, value in load.items():
        if isinstance(value, str) and value.startswith("artifacts/import_teacher/"):
            load[key] = str(teacher / value.removeprefix("artifacts/import_teacher/"))
    raw["output_dir"] = str(tmp_path / "artifacts")
    raw["device"] = "cpu"
    raw["data"] = {"source": "synthetic", "synthetic": TINY_SYNTHETIC, "max_len": 20}
    raw["bench"] = {"enabled": False}
    for stage in raw["stages"]:
        training = stage if stage["stage"] == "distill" else stage.get("recovery")
        if training:
            training.update(epochs=1, batch_size=32)
    return raw


def _assert_every_stage_ran(manifest: dict, stages: list[str]) -> None:
    assert [entry["name"] for entry in manifest["stages"]] == stages
    for entry in manifest["stages"]:
        assert 0 <= entry["metrics"]["ndcg@10"] <= 1


EXAMPLE_STAGES = ["load", "distill", "prune", "item_table", "export", "quantize"]


def test_the_import_example_runs_the_quickstart_stack(tmp_path):
    """docs/import_example.yaml on a tiny imported Qwen2 teacher: load -> distill -> prune -> item_table ->
    export (with the step model) -> quantize, every stage evaluated."""
    teacher = tmp_path / "import_teacher"
    hf_decoder("qwen2", teacher / "decoder", layers=4)
    item_table(NUM_ITEMS, HIDDEN, teacher / "items.safetensors")
    manifest = run_recipe(validate_recipe(_example("import_example.yaml", teacher, tmp_path)), QUIET)
    _assert_every_stage_ran(manifest, EXAMPLE_STAGES)


def test_the_slmrec_import_example_runs_the_quickstart_stack(tmp_path):
    """docs/import_slmrec_example.yaml on a tiny SLMRec checkpoint (4 kept layers, LoRA, a 4 + 2 token
    prompt): the same stack, every model keeping the teacher's prompt, the ONNX model in parity."""
    teacher = tmp_path / "import_teacher"
    slmrec_checkpoint(teacher / "slmrec", NUM_ITEMS, kept_layers=4)
    manifest = run_recipe(validate_recipe(_example("import_slmrec_example.yaml", teacher, tmp_path)), QUIET)
    _assert_every_stage_ran(manifest, EXAMPLE_STAGES)
    run = tmp_path / "artifacts" / "import_slmrec_example"
    imported, *students = [load_model(run / entry["output"]) for entry in manifest["stages"][:4]]
    assert [model.config.num_layers for model in students] == [2, 2, 2]
    for model in students:
        for name, value in imported.prompt_embeddings().items():
            assert torch.equal(model.prompt_embeddings()[name], value)
    compressed, exported = manifest["stages"][3]["metrics"], manifest["stages"][4]["metrics"]
    assert exported["ndcg@10"] == pytest.approx(compressed["ndcg@10"], abs=1e-6)


def test_load_imports_an_slmrec_checkpoint_and_exports_it(tmp_path):
    slmrec_checkpoint(tmp_path / "slm", NUM_ITEMS)
    stages = [_slmrec_load(tmp_path / "slm"), {"stage": "export", "top_k": 5, "incremental": False},
              {"stage": "quantize", "backend": "onnxruntime"}]
    manifest = run_recipe(validate_recipe(_recipe(tmp_path, *stages)), QUIET)
    model = load_model(tmp_path / "artifacts" / "tiny" / manifest["stages"][0]["output"])
    assert (model.config.prefix_len, model.config.suffix_len, model.config.item_dim) == (4, 2, 128)
    exported, torch_metrics = manifest["stages"][1]["metrics"], manifest["stages"][0]["metrics"]
    assert exported["ndcg@10"] == pytest.approx(torch_metrics["ndcg@10"], abs=1e-6)  # the prompt is in the graph


def test_a_prompted_teacher_exports_a_step_model_that_matches_its_full_pass(tmp_path):
    """export checks the step model against the PyTorch full pass event by event (its step parity gate)."""
    slmrec_checkpoint(tmp_path / "slm", NUM_ITEMS)
    stages = [_slmrec_load(tmp_path / "slm"), {"stage": "export", "top_k": 5, "incremental": True}]
    manifest = run_recipe(validate_recipe(_recipe(tmp_path, *stages)), QUIET)
    folder = tmp_path / "artifacts" / "tiny" / manifest["stages"][1]["output"]
    assert (folder / "step.onnx").is_file()


def test_load_import_errors(tmp_path):
    hf_decoder("llama", tmp_path / "dec")
    item_table(NUM_ITEMS + 3, HIDDEN, tmp_path / "wrong.pt")
    with pytest.raises(RecipeError, match="is not a compress model folder .*give item_embeddings"):
        run_recipe(validate_recipe(_recipe(tmp_path, {"stage": "load", "path": str(tmp_path / "dec")})), QUIET)
    load = {"stage": "load", "path": str(tmp_path / "dec"), "item_embeddings": str(tmp_path / "wrong.pt")}
    with pytest.raises(ArtifactError, match=r"wrong.pt: the item table is \(63, 32\); expected \[60, dim\]"):
        run_recipe(validate_recipe(_recipe(tmp_path, load)), QUIET)
    with pytest.raises(CompressError, match="kind hf needs item_embeddings"):
        validate_recipe(_recipe(tmp_path, {"stage": "load", "path": str(tmp_path / "dec"), "kind": "hf"}))
    with pytest.raises(CompressError, match="adapter apply to kind slmrec"):
        validate_recipe(_recipe(tmp_path, {**load, "kind": "hf", "adapter": str(tmp_path)}))
    with pytest.raises(CompressError, match="apply to an imported teacher"):
        validate_recipe(_recipe(tmp_path, {**load, "kind": "compress"}))


def test_a_prompt_given_as_text_is_tokenized_without_special_tokens(tmp_path):
    """As LLM4Rec.__init__ does (add_special_tokens=False), with the tokenizer saved in the decoder folder."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    from compress.stages.config import LoadConfig
    from compress.stages.load import import_teacher

    slmrec_checkpoint(tmp_path / "slm", NUM_ITEMS)
    words = ["<unk>", "<s>", "given", "the", "history", "next", "item", "answer:"]
    backend = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="<unk>", bos_token="<s>").save_pretrained(
        str(tmp_path / "slm" / "decoder"))
    base = _slmrec_load(tmp_path / "slm")
    by_text = LoadConfig(**{**base, "instruction": "given the history next item", "response": "answer:"})
    by_ids = LoadConfig(**{**base, "instruction": [2, 3, 4, 5, 6], "response": [7]})
    text_model, ids_model = import_teacher(by_text, NUM_ITEMS, 20), import_teacher(by_ids, NUM_ITEMS, 20)
    assert text_model.config.prefix_len == 5 and text_model.config.suffix_len == 1
    assert torch.equal(text_model.prompt_prefix, ids_model.prompt_prefix)
    assert torch.equal(text_model.prompt_suffix, ids_model.prompt_suffix)
    with pytest.raises(ArtifactError, match="cannot load a tokenizer from"):
        import_teacher(LoadConfig(**{**base, "instruction": "x", "tokenizer": str(tmp_path)}), NUM_ITEMS, 20)


def test_a_prompted_teacher_through_item_table_export_and_torch_quantize(tmp_path):
    """The prompt is untouched by item-table compression and stays a constant of the graph."""
    slmrec_checkpoint(tmp_path / "slm", NUM_ITEMS)
    load = _slmrec_load(tmp_path / "slm")
    table = {"stage": "item_table", "method": "rowwise", "bits": 8, "recovery": None}
    manifest = run_recipe(validate_recipe(_recipe(tmp_path, load, table, {"stage": "export", "top_k": 5})), QUIET)
    compressed, exported = manifest["stages"][1]["metrics"], manifest["stages"][2]["metrics"]
    assert exported["ndcg@10"] == pytest.approx(compressed["ndcg@10"], abs=1e-6)
    quantized = run_recipe(validate_recipe(_recipe(tmp_path, load, {"stage": "quantize", "backend": "torch"})), QUIET)
    assert 0 <= quantized["stages"][1]["metrics"]["ndcg@10"] <= 1


def test_import_fields_on_our_own_model_folder_are_refused(tmp_path, tiny_model):
    from compress.models import save_model

    save_model(tiny_model, tmp_path / "ours")
    load = {"stage": "load", "path": str(tmp_path / "ours"), "num_layers": 1}
    with pytest.raises(RecipeError, match="is a compress model folder; num_layers are for a teacher to import"):
        run_recipe(validate_recipe(_recipe(tmp_path, load)), QUIET)


def test_load_picks_item_rows_by_the_runs_original_ids(tmp_path, tiny_data):
    import json

    hf_decoder("llama", tmp_path / "dec")
    ordered = item_table(NUM_ITEMS, HIDDEN, tmp_path / "ordered.pt")
    original = [str(i) for i in tiny_data.item_ids]
    order = list(reversed(range(NUM_ITEMS)))
    torch.save(ordered[order], tmp_path / "reversed.pt")
    (tmp_path / "rows.json").write_text(json.dumps([original[i] for i in order]))
    base = {"stage": "load", "path": str(tmp_path / "dec")}
    by_id = run_recipe(validate_recipe(_recipe(tmp_path, {**base, "item_embeddings": str(tmp_path / "reversed.pt"),
                                                          "item_ids": str(tmp_path / "rows.json")})), QUIET)
    plain = run_recipe(validate_recipe(_recipe(tmp_path, {**base, "item_embeddings": str(tmp_path / "ordered.pt")})), QUIET)
    assert by_id["stages"][0]["metrics"] == plain["stages"][0]["metrics"]


def test_a_sharded_decoder_folder_is_imported_like_a_single_file(tmp_path):
    """save_pretrained(max_shard_size=...) writes model.safetensors.index.json + shards: the recipe accepts
    it, the cache id covers every shard, the import equals the single-file one; a missing shard is named."""
    decoder = hf_decoder("llama", tmp_path / "single")
    decoder.save_pretrained(str(tmp_path / "sharded"), max_shard_size="20KB")
    shards = sorted((tmp_path / "sharded").glob("model-*.safetensors"))
    assert len(shards) > 1 and not (tmp_path / "sharded" / "model.safetensors").exists()
    item_table(NUM_ITEMS, HIDDEN, tmp_path / "items.pt")
    load = {"stage": "load", "path": str(tmp_path / "sharded"), "item_embeddings": str(tmp_path / "items.pt")}
    manifest = run_recipe(validate_recipe(_recipe(tmp_path, load)), QUIET)
    imported = load_model(tmp_path / "artifacts" / "tiny" / manifest["stages"][0]["output"])
    single = import_decoder(tmp_path / "single", tmp_path / "items.pt", NUM_ITEMS, 20)
    ids = torch.randint(1, NUM_ITEMS + 1, (3, 20))
    assert torch.equal(imported.next_item_scores(ids, torch.ones_like(ids)), single.next_item_scores(ids, torch.ones_like(ids)))

    from safetensors.torch import load_file, save_file

    state = load_file(str(shards[-1]))
    save_file({k: v + 1 for k, v in state.items()}, str(shards[-1]), metadata={"format": "pt"})  # new weights, same paths
    again = run_recipe(validate_recipe(_recipe(tmp_path, load)), QUIET)
    assert again["stages"][0]["config_hash"] != manifest["stages"][0]["config_hash"]
    shards[0].unlink()
    with pytest.raises(CompressError, match=f"names shards the folder lacks: {shards[0].name}"):
        validate_recipe(_recipe(tmp_path, load))
    with pytest.raises(CompressError, match="config.json \\+ model.safetensors\\)"):
        validate_recipe(_recipe(tmp_path, {"stage": "load", "path": str(tmp_path / "sharded")}))
