"""Importing a teacher trained elsewhere (compress/models/importers.py): parity with the source's own
forward on tiny checkpoints built here, and clear errors for missing or mismatched pieces."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file

from compress.errors import ArtifactError
from compress.models import RecommenderConfig, load_model, save_model
from compress.models.importers import import_decoder
from compress.models.step import StepGraph
from compress.models.tiny_teachers import randomize_lora
from tests.models.import_checkpoints import DECODERS, HIDDEN, hf_decoder, item_table, slmrec_predict, slmrec_teacher

NUM_ITEMS = 30
MAX_LEN = 12
TOLERANCE = 1e-5

pytest.importorskip("peft")


def _sequences(seed: int = 0, batch: int = 4, length: int = MAX_LEN, low: int = 1) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(low, NUM_ITEMS + 1, (batch, length), generator=generator)


@pytest.mark.parametrize("kind", DECODERS)
@pytest.mark.parametrize("padding_row", [False, True])
def test_hf_decoder_matches_transformers(tmp_path, kind, padding_row):
    decoder = hf_decoder(kind, tmp_path / kind)
    table = item_table(NUM_ITEMS, HIDDEN, tmp_path / "items.safetensors", padding_row=padding_row)
    model = import_decoder(tmp_path / kind, tmp_path / "items.safetensors", NUM_ITEMS, MAX_LEN)
    assert model.config.attention_bias == ("qkv" if kind == "qwen2" else "none")
    assert model.config.num_kv_heads == 2 and model.config.prefix_len == model.config.suffix_len == 0
    full = torch.cat([torch.zeros(1, HIDDEN), table]) if not padding_row else table
    ids = _sequences()
    ours = model.next_item_scores(ids, torch.ones_like(ids))
    with torch.no_grad():
        states = decoder(inputs_embeds=full[ids], attention_mask=torch.ones_like(ids)).last_hidden_state[:, -1]
    reference = states @ full.t()
    assert (ours[:, 1:] - reference[:, 1:]).abs().max().item() < TOLERANCE
    # left padding: the same scores as the unpadded sequence through transformers
    padded = ids.clone()
    padded[0, :5] = 0
    mask = (padded > 0).long()
    ours = model.next_item_scores(padded, mask)
    with torch.no_grad():
        alone = decoder(inputs_embeds=full[ids[:1, 5:]]).last_hidden_state[:, -1] @ full.t()
    assert (ours[0, 1:] - alone[0, 1:]).abs().max().item() < TOLERANCE
    # in float64 on both sides the same computation: the float32 differences above are rounding alone
    model64 = import_decoder(tmp_path / kind, tmp_path / "items.safetensors", NUM_ITEMS, MAX_LEN, dtype=torch.float64)
    with torch.no_grad():
        states = decoder.double()(inputs_embeds=full.double()[ids]).last_hidden_state[:, -1]
    reference = states @ full.double().t()
    assert (model64.next_item_scores(ids, torch.ones_like(ids))[:, 1:] - reference[:, 1:]).abs().max().item() < 1e-10


def test_hf_decoder_with_projections_and_a_cut(tmp_path):
    """A narrower item table with its projections (names as SLMRec's), the decoder cut to its first layer."""
    decoder = hf_decoder("llama", tmp_path / "dec", layers=3)
    table = item_table(NUM_ITEMS, 16, tmp_path / "items.npy")
    weights = {"input_proj.weight": torch.randn(HIDDEN, 16), "score.weight": torch.randn(16, HIDDEN)}
    save_file(weights, str(tmp_path / "proj.safetensors"))
    model = import_decoder(tmp_path / "dec", tmp_path / "items.npy", NUM_ITEMS, MAX_LEN,
                           projections=tmp_path / "proj.safetensors", num_layers=1)
    assert model.config.num_layers == 1 and not model.config.input_bias
    decoder.layers = decoder.layers[:1]
    decoder.config.num_hidden_layers = 1
    ids = _sequences()
    with torch.no_grad():
        states = decoder(inputs_embeds=table[ids - 1] @ weights["input_proj.weight"].t()).last_hidden_state[:, -1]
    reference = (states @ weights["score.weight"].t()) @ table.t()
    assert (model.next_item_scores(ids, torch.ones_like(ids))[:, 1:] - reference).abs().max().item() < TOLERANCE


@pytest.mark.parametrize("merged", [True, False])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_slmrec_checkpoint_matches_llm4rec_predict(tmp_path, merged, dtype):
    """LLM4Rec.predict's scores. float64 (the import loading and merging in float64, the reference in float64):
    within 1e-10, the same computation. float32: within 1e-5 of the largest |score| (~14 here; an unmerged
    LoRA rounds differently from merged weights: up to 1.6e-5 absolute measured, 5e-6 merged)."""
    teacher = slmrec_teacher(tmp_path, NUM_ITEMS, kept_layers=2)
    model = import_decoder(
        teacher.decoder, teacher.items, NUM_ITEMS, MAX_LEN, projections=teacher.projections, adapter=teacher.adapter,
        instruction_ids=teacher.instruct_ids[0].tolist(), response_ids=teacher.response_ids[0].tolist(), num_layers=2,
        dtype=dtype,
    )
    c = model.config
    assert (c.item_dim, c.hidden_size, c.num_layers, c.prefix_len, c.suffix_len, c.input_bias) == (128, HIDDEN, 2, 4, 2, True)
    ids = _sequences(batch=5)
    # SLMRec's table has num_items rows: its id r is our id r + 1 (our row 0 is padding)
    reference = slmrec_predict(teacher, ids - 1, torch.ones_like(ids), merged=merged, dtype=dtype)
    ours = model.next_item_scores(ids, torch.ones_like(ids))
    bound = TOLERANCE * reference.abs().max().item() if dtype == torch.float32 else 1e-10
    assert (ours[:, 1:] - reference).abs().max().item() < bound
    # a shorter (left-padded) history scores as LLM4Rec.predict on that history alone
    padded = ids.clone()
    padded[1, :7] = 0
    alone = slmrec_predict(teacher, ids[1:2, 7:] - 1, torch.ones(1, MAX_LEN - 7, dtype=torch.long), merged=merged,
                           dtype=dtype)
    ours = model.next_item_scores(padded, (padded > 0).long())
    assert (ours[1, 1:] - alone[0]).abs().max().item() < bound


def test_a_prompted_model_saves_loads_and_refuses_what_it_cannot_do(tmp_path):
    teacher = slmrec_teacher(tmp_path, NUM_ITEMS, kept_layers=1)
    model = import_decoder(
        teacher.decoder, teacher.items, NUM_ITEMS, MAX_LEN, projections=teacher.projections, adapter=teacher.adapter,
        instruction_ids=[1, 2, 3], response_ids=[4], num_layers=1,
    )
    save_model(model, tmp_path / "saved")
    again = load_model(tmp_path / "saved")
    ids = _sequences()
    mask = torch.ones_like(ids)
    assert torch.equal(model.next_item_scores(ids, mask), again.next_item_scores(ids, mask))
    with pytest.raises(ArtifactError, match="fixed prompt around the items"):
        again(ids, mask)  # per-position states do not exist for it (training reads the last: training_states)


@pytest.mark.parametrize("prompt", [(3, 2), (3, 0), (0, 2)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_the_step_model_of_a_prompted_model_equals_its_full_pass(tmp_path, prompt, dtype):
    """The cache holds the items alone; the instruction's keys/values are constants and the response is
    run after the new items on every call: event by event (and two at a time), the full pass's scores
    (float64: to 1e-10; float32: to 1e-5 of the largest score, the attention kernels round differently)."""
    from compress.models.step import append, empty_past

    teacher = slmrec_teacher(tmp_path, NUM_ITEMS, kept_layers=2)
    before, after = prompt
    model = import_decoder(
        teacher.decoder, teacher.items, NUM_ITEMS, MAX_LEN, projections=teacher.projections, adapter=teacher.adapter,
        instruction_ids=[5, 17, 3][:before], response_ids=[9, 2][:after], num_layers=2, dtype=dtype,
    )
    graph = StepGraph(model, top_k=5).eval()
    scale = 0.0
    ids = _sequences(batch=3, length=8)
    past = empty_past(model, 3)
    worst = 0.0
    with torch.no_grad():
        for t in range(0, 8, 1 if before != 3 or after != 2 else 2):  # one event per call, or two
            width = 1 if before != 3 or after != 2 else 2
            new_ids = ids[:, t : t + width]
            mask = torch.ones(3, past[0].shape[2] + width, dtype=torch.long)
            positions = torch.arange(t, t + width)[None].expand(3, -1)
            scores, new = graph.advance(new_ids, mask, positions, past)
            past = append(past, new)
            full = model.next_item_scores(ids[:, : t + width], torch.ones(3, t + width, dtype=torch.long))
            worst = max(worst, (scores[:, 1:] - full[:, 1:]).abs().max().item())
            scale = max(scale, full[:, 1:].abs().max().item())
    assert past[0].shape[2] == 8  # items only
    assert worst < (TOLERANCE * scale if dtype == torch.float32 else 1e-10)


def test_import_errors(tmp_path):
    hf_decoder("llama", tmp_path / "dec")
    item_table(NUM_ITEMS, HIDDEN, tmp_path / "items.pt")
    item_table(NUM_ITEMS + 3, HIDDEN, tmp_path / "wrong_rows.pt")
    item_table(NUM_ITEMS, 16, tmp_path / "narrow.pt")
    dec, items = tmp_path / "dec", tmp_path / "items.pt"
    with pytest.raises(ArtifactError, match=r"the item table \(item_embeddings\) file .*missing.pt is missing"):
        import_decoder(dec, tmp_path / "missing.pt", NUM_ITEMS, MAX_LEN)
    with pytest.raises(ArtifactError, match=r"wrong_rows.pt: the item table is \(33, 32\); expected \[30, dim\]"):
        import_decoder(dec, tmp_path / "wrong_rows.pt", NUM_ITEMS, MAX_LEN)
    with pytest.raises(ArtifactError, match=r"16 wide and the decoder 32: give `projections`.*input_proj.weight \[32, 16\]"):
        import_decoder(dec, tmp_path / "narrow.pt", NUM_ITEMS, MAX_LEN)
    save_file({"input_proj.weight": torch.zeros(HIDDEN, 8), "score.weight": torch.zeros(16, HIDDEN)},
              str(tmp_path / "proj.safetensors"))
    with pytest.raises(ArtifactError, match=r"proj.safetensors: input_proj.weight is \(32, 8\); expected \[32, 16\]"):
        import_decoder(dec, tmp_path / "narrow.pt", NUM_ITEMS, MAX_LEN, projections=tmp_path / "proj.safetensors")
    save_file({"input_proj.weight": torch.zeros(HIDDEN, 16)}, str(tmp_path / "half.safetensors"))
    with pytest.raises(ArtifactError, match=r"score.weight \[16, 32\] is missing"):
        import_decoder(dec, tmp_path / "narrow.pt", NUM_ITEMS, MAX_LEN, projections=tmp_path / "half.safetensors")
    with pytest.raises(ArtifactError, match="config.json is missing"):
        import_decoder(tmp_path, items, NUM_ITEMS, MAX_LEN)
    with pytest.raises(ArtifactError, match="adapter_config.json is missing"):
        import_decoder(dec, items, NUM_ITEMS, MAX_LEN, adapter=tmp_path)
    with pytest.raises(ArtifactError, match=r"token ids \[64\] are outside the decoder's vocabulary \(0..63\)"):
        import_decoder(dec, items, NUM_ITEMS, MAX_LEN, response_ids=[1, 64])
    with pytest.raises(ArtifactError, match="has 2 decoder layers; the recipe keeps the first 3"):
        import_decoder(dec, items, NUM_ITEMS, MAX_LEN, num_layers=3)
    config = json.loads((dec / "config.json").read_text())
    (dec / "config.json").write_text(json.dumps({**config, "model_type": "gpt2"}))
    with pytest.raises(ArtifactError, match="model_type 'gpt2' cannot be imported; supported: llama, qwen2, mistral"):
        import_decoder(dec, items, NUM_ITEMS, MAX_LEN)
    hf_decoder("mistral", tmp_path / "mistral")
    with pytest.raises(ArtifactError, match="sliding_window 96 is shorter than the input"):
        import_decoder(tmp_path / "mistral", items, NUM_ITEMS, 95, instruction_ids=[1, 2])


def test_flops_count_the_prompt_as_positions():
    from compress.models import RecommenderConfig
    from compress.models.flops import flops_per_sequence

    shape = dict(hidden_size=32, num_layers=2, num_heads=4, item_dim=128, num_items=NUM_ITEMS)
    prompted = flops_per_sequence(RecommenderConfig(**shape, max_len=MAX_LEN, prefix_len=4, suffix_len=2, input_bias=True))
    plain = flops_per_sequence(RecommenderConfig(**shape, max_len=MAX_LEN + 6))
    for part in ("attention_projections", "attention_scores", "mlp", "output_projection", "scoring"):
        assert prompted[part] == plain[part], part
    assert prompted["input_projection"] == 2 * MAX_LEN * 128 * 32  # the prompt enters already embedded


def test_a_decoder_missing_weights_is_refused_not_filled_at_random(tmp_path):
    from safetensors.torch import load_file

    hf_decoder("llama", tmp_path / "dec")
    item_table(NUM_ITEMS, HIDDEN, tmp_path / "items.pt")
    weights = load_file(str(tmp_path / "dec" / "model.safetensors"))
    save_file({k: v for k, v in weights.items() if "layers.1.mlp" not in k}, str(tmp_path / "dec" / "model.safetensors"))
    with pytest.raises(ArtifactError, match=r"the weights do not match config.json: missing \['layers.1.mlp"):
        import_decoder(tmp_path / "dec", tmp_path / "items.pt", NUM_ITEMS, MAX_LEN)


def test_an_adapter_trained_on_a_causal_lm_is_merged_into_its_base_model(tmp_path):
    """E4SRec-style: LoRA (task_type CAUSAL_LM) on a LlamaForCausalLM; its keys are one `model.` deeper."""
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaForCausalLM

    hf_decoder("llama", tmp_path / "dec")
    table = item_table(NUM_ITEMS, HIDDEN, tmp_path / "items.pt")
    causal = LlamaForCausalLM.from_pretrained(str(tmp_path / "dec"), local_files_only=True, dtype=torch.float32)
    lora = LoraConfig(task_type="CAUSAL_LM", r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"])
    peft_model = randomize_lora(get_peft_model(causal, lora), seed=5)
    peft_model.save_pretrained(str(tmp_path / "lora"))
    model = import_decoder(tmp_path / "dec", tmp_path / "items.pt", NUM_ITEMS, MAX_LEN, adapter=tmp_path / "lora",
                           response_ids=[7, 8])
    full = torch.cat([torch.zeros(1, HIDDEN), table])
    ids = _sequences()
    base = peft_model.eval().merge_and_unload().model
    with torch.no_grad():
        suffix = base.embed_tokens(torch.tensor([[7, 8]])).expand(len(ids), -1, -1)
        reference = base(inputs_embeds=torch.cat([full[ids], suffix], dim=1)).last_hidden_state[:, -1] @ full.t()
    ours = model.next_item_scores(ids, torch.ones_like(ids))
    assert (ours[:, 1:] - reference[:, 1:]).abs().max().item() < TOLERANCE


def test_an_adapter_for_other_layers_is_refused(tmp_path):
    teacher = slmrec_teacher(tmp_path, NUM_ITEMS, kept_layers=2)  # the decoder folder has 3 layers
    for layers, match in ((None, r"missing \['base_model.model.layers.2"), (1, r"unexpected \['base_model.model.layers.1")):
        with pytest.raises(ArtifactError, match=r"does not fit the decoder \(were its layers cut\? set num_layers\).*" + match):
            import_decoder(teacher.decoder, teacher.items, NUM_ITEMS, MAX_LEN, projections=teacher.projections,
                           adapter=teacher.adapter, num_layers=layers)


def test_llama_attention_bias_keeps_all_four_biases(tmp_path):
    from transformers import LlamaConfig, LlamaModel

    torch.manual_seed(0)
    decoder = LlamaModel(LlamaConfig(vocab_size=8, hidden_size=HIDDEN, intermediate_size=48, num_hidden_layers=1,
                                     num_attention_heads=4, attention_bias=True)).eval()
    with torch.no_grad():
        for name, param in decoder.named_parameters():
            if name.endswith("bias"):
                param.normal_(std=0.5)
    decoder.save_pretrained(str(tmp_path / "dec"))
    table = item_table(NUM_ITEMS, HIDDEN, tmp_path / "items.pt", padding_row=True)
    model = import_decoder(tmp_path / "dec", tmp_path / "items.pt", NUM_ITEMS, MAX_LEN)
    assert model.config.attention_bias == "all" and model.backbone.layers[0].self_attn.o_proj.bias is not None
    ids = _sequences()
    with torch.no_grad():
        reference = decoder(inputs_embeds=table[ids]).last_hidden_state[:, -1] @ table.t()
    assert (model.next_item_scores(ids, torch.ones_like(ids))[:, 1:] - reference[:, 1:]).abs().max().item() < TOLERANCE


def test_an_item_ids_file_picks_the_rows_by_original_id(tmp_path):
    """A teacher with its own row order and a larger catalogue: rows are matched to the run's items by id."""
    from compress.models.importers import read_item_ids

    hf_decoder("llama", tmp_path / "dec")
    ordered = item_table(NUM_ITEMS, HIDDEN, tmp_path / "ordered.pt")
    run_ids = [f"i{n}" for n in range(100, 100 + NUM_ITEMS)]  # the run's original ids of internal items 1..30
    teacher_rows = run_ids + [f"extra{n}" for n in range(5)]  # the teacher knows 5 items more
    order = torch.randperm(len(teacher_rows), generator=torch.Generator().manual_seed(0))
    shuffled = torch.cat([ordered, torch.randn(5, HIDDEN)])[order]
    torch.save(torch.cat([torch.zeros(1, HIDDEN), shuffled]), tmp_path / "shuffled.pt")  # with a padding row
    (tmp_path / "rows.json").write_text(json.dumps([None] + [teacher_rows[i] for i in order.tolist()]))
    row_ids = read_item_ids(tmp_path / "rows.json")
    by_id = import_decoder(tmp_path / "dec", tmp_path / "shuffled.pt", NUM_ITEMS, MAX_LEN, row_ids=row_ids, run_ids=run_ids)
    plain = import_decoder(tmp_path / "dec", tmp_path / "ordered.pt", NUM_ITEMS, MAX_LEN)
    ids = _sequences()
    mask = torch.ones_like(ids)
    assert torch.equal(by_id.next_item_scores(ids, mask), plain.next_item_scores(ids, mask))
    (tmp_path / "rows.txt").write_text("\n".join([""] + [teacher_rows[i] for i in order.tolist()]) + "\n")
    assert read_item_ids(tmp_path / "rows.txt") == row_ids
    with pytest.raises(ArtifactError, match=r"2 of the recipe's 31 items have no row in the teacher's table \(e.g. new1, new2\)"):
        import_decoder(tmp_path / "dec", tmp_path / "shuffled.pt", NUM_ITEMS + 1, MAX_LEN, row_ids=row_ids,
                       run_ids=run_ids[1:] + ["new1", "new2"])
    with pytest.raises(ArtifactError, match=r"the item_ids file lists 35 ids, one per row: expected \[35, dim\]"):
        import_decoder(tmp_path / "dec", tmp_path / "shuffled.pt", NUM_ITEMS, MAX_LEN, row_ids=row_ids[1:], run_ids=run_ids)


def test_llama3_rope_scaling_is_kept(tmp_path):
    from transformers import LlamaConfig, LlamaModel

    torch.manual_seed(0)
    rope = {"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0, "low_freq_factor": 1.0,
            "high_freq_factor": 4.0, "original_max_position_embeddings": 16}
    decoder = LlamaModel(LlamaConfig(vocab_size=8, hidden_size=HIDDEN, intermediate_size=48, num_hidden_layers=2,
                                     num_attention_heads=4, rope_parameters=rope)).eval()
    with torch.no_grad():
        for name, param in decoder.named_parameters():
            if "norm" not in name:
                param.normal_(std=0.2)
    decoder.save_pretrained(str(tmp_path / "dec"))
    table = item_table(NUM_ITEMS, HIDDEN, tmp_path / "items.pt", padding_row=True)
    model = import_decoder(tmp_path / "dec", tmp_path / "items.pt", NUM_ITEMS, MAX_LEN)
    assert model.config.rope_parameters["rope_type"] == "llama3"
    saved = tmp_path / "saved"
    save_model(model, saved)
    again = load_model(saved)
    ids = _sequences()
    with torch.no_grad():
        reference = decoder(inputs_embeds=table[ids]).last_hidden_state[:, -1] @ table.t()
    plain = import_decoder(tmp_path / "dec", tmp_path / "items.pt", NUM_ITEMS, MAX_LEN)
    plain.backbone.rotary_emb = type(plain.backbone.rotary_emb)(config=RecommenderConfig(
        **{**plain.config.model_dump(), "rope_parameters": None}).to_llama())  # the same model without the scaling
    for got in (model, again):
        assert (got.next_item_scores(ids, torch.ones_like(ids))[:, 1:] - reference[:, 1:]).abs().max().item() < TOLERANCE
    assert (plain.next_item_scores(ids, torch.ones_like(ids))[:, 1:] - reference[:, 1:]).abs().max().item() > 1e-3

    config = json.loads((tmp_path / "dec" / "config.json").read_text())
    config["rope_parameters"] = {"rope_type": "dynamic", "rope_theta": 10000.0, "factor": 2.0}
    (tmp_path / "dec" / "config.json").write_text(json.dumps(config))
    with pytest.raises(ArtifactError, match="rope_type 'dynamic' cannot be imported; supported: default, linear, llama3"):
        import_decoder(tmp_path / "dec", tmp_path / "items.pt", NUM_ITEMS, MAX_LEN)
