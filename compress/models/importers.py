"""Bring your own teacher: build a SequentialRecommender from a model trained elsewhere.

Two layouts besides our own model folder (docs/import.md):

- a Hugging Face decoder folder of the LLaMA family (`config.json` + safetensors; Llama, Qwen2 with
  its q/k/v biases, Mistral) plus an item-embedding file [items (+1), d]; with d != hidden a
  projections file gives `input_proj.weight` [hidden, d] (optional `input_proj.bias` [hidden]) and
  `score.weight` (or `output_proj.weight`) [d, hidden];
- an SLMRec/E4SRec checkpoint (`LLM4Rec` of WujiangXu/SLMRec, model.py): the decoder folder, a PEFT LoRA
  adapter folder (merged here), the frozen SASRec item table [items, 128], `input_proj`
  Linear(128 -> hidden) with bias and `score` Linear(hidden -> 128) without, and the instruction /
  response prompt token ids, embedded with the decoder's token table: the model runs
  [instruction, items, response] and reads the state at the last response token.

Item ids: with an item_ids file (the original id of each row), rows are picked by the run's original
ids, so a teacher with its own id order or a larger catalogue fits. Without one, row i of the item table
is the run's internal item id i (the order of the run's `item_ids.json`); a table of num_items rows gets a
zero padding row 0 in front, one of num_items + 1 rows keeps its row 0 as the padding row.

Every missing or mismatched piece is an ArtifactError naming the file and the expected shape.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from compress.errors import ArtifactError
from compress.models.config import RecommenderConfig
from compress.models.recommender import SequentialRecommender

SUPPORTED = ("llama", "qwen2", "mistral")
STATIC_ROPE = ("default", "linear", "llama3")  # RoPE variants whose frequencies are fixed at init
PROJECTION_KEYS = {  # our name: names accepted in the file (a full LLM4Rec state dict works too: matched by suffix)
    "input_proj.weight": ("input_proj.weight",),
    "input_proj.bias": ("input_proj.bias",),
    "output_proj.weight": ("score.weight", "output_proj.weight"),
}
ITEM_TABLE_KEYS = ("input_embeds.weight", "item_embeddings.weight")  # in a file of several tensors


def decoder_type(folder: Path) -> str | None:
    """The `model_type` of a folder's config.json (None without one)."""
    config = Path(folder) / "config.json"
    if not config.is_file():
        return None
    try:
        return json.loads(config.read_text()).get("model_type")
    except (json.JSONDecodeError, AttributeError):
        raise ArtifactError(f"{config} is not valid JSON") from None


def import_decoder(
    folder: Path,
    item_embeddings: Path,
    num_items: int,
    max_len: int,
    *,
    projections: Path | None = None,
    adapter: Path | None = None,
    instruction_ids: list[int] | None = None,
    response_ids: list[int] | None = None,
    num_layers: int | None = None,
    row_ids: list[str | None] | None = None,
    run_ids: list[str] | None = None,
    dtype: torch.dtype = torch.float32,
) -> SequentialRecommender:
    """A model holding the decoder at `folder` (cut to its first `num_layers` layers, the LoRA `adapter`
    merged) over the item table in `item_embeddings`, with the optional prompt around the items. The
    decoder is loaded, and the adapter merged, in `dtype` (float64: parity tests free of float32 rounding).
    With `row_ids` (the original item id of each row of the table; None for a padding row) and `run_ids`
    (the original id of each internal item 1..num_items, the run's item_ids.json), rows are picked by id."""
    folder = Path(folder)
    table = _item_table(Path(item_embeddings), num_items, row_ids, run_ids).to(dtype)  # first: a wrong table fails before the decoder loads
    decoder = load_decoder(folder, num_layers, adapter, dtype)
    hf = decoder.config
    item_dim = table.shape[1]
    hidden = hf.hidden_size
    state_extra = _projections(projections, item_dim, hidden) if projections is not None else {}
    if item_dim != hidden and not state_extra:
        raise ArtifactError(
            f"{item_embeddings}: the item table is {item_dim} wide and the decoder {hidden}: give `projections`, a file "
            f"with input_proj.weight [{hidden}, {item_dim}] (input_proj.bias [{hidden}] optional) and "
            f"score.weight [{item_dim}, {hidden}]"
        )
    embed = decoder.get_input_embeddings().weight.detach()  # the prompt's token table (LoRA leaves it)
    prefix = _prompt(embed, instruction_ids, "instruction")
    suffix = _prompt(embed, response_ids, "response")
    config = RecommenderConfig(
        **_shape(hf, folder),
        item_dim=item_dim,
        tie_weights=True,
        dropout=0.0,
        num_items=num_items,
        max_len=max_len,
        input_bias="input_proj.bias" in state_extra,
        prefix_len=len(prefix),
        suffix_len=len(suffix),
    )
    _check_window(hf, folder, max_len + len(prefix) + len(suffix))
    model = SequentialRecommender(config).to(dtype)
    state = {f"backbone.{k}": v for k, v in decoder.state_dict().items() if not k.startswith("embed_tokens.")}
    state["item_embeddings.weight"] = table
    state.update(state_extra)
    if len(prefix):
        state["prompt_prefix"] = prefix
    if len(suffix):
        state["prompt_suffix"] = suffix
    wanted = model.state_dict()
    state["backbone.embed_tokens.weight"] = wanted["backbone.embed_tokens.weight"]  # unused (items enter as embeddings)
    missing = sorted(set(wanted) - set(state))
    unexpected = sorted(set(state) - set(wanted))
    if missing or unexpected:
        raise ArtifactError(
            f"{folder}: the decoder's weights do not fit a {hf.model_type} model of its config.json: "
            f"missing {missing[:5]}, unexpected {unexpected[:5]}"
        )
    for key, value in state.items():
        if tuple(value.shape) != tuple(wanted[key].shape):
            raise ArtifactError(f"{folder}: {key} is {tuple(value.shape)}, expected {tuple(wanted[key].shape)}")
    model.load_state_dict({k: v.to(dtype) for k, v in state.items()}, strict=True)
    return model.eval()


def load_decoder(
    folder: Path, num_layers: int | None = None, adapter: Path | None = None, dtype: torch.dtype = torch.float32
) -> nn.Module:
    """The transformers base model (LlamaModel, Qwen2Model, MistralModel) in `dtype`, cut to its first
    `num_layers` layers (SLMRec's `llama_decoder_nums`) before the LoRA `adapter` is merged into it."""
    from transformers import AutoConfig, AutoModel

    model_type = decoder_type(folder)
    if model_type is None:
        raise ArtifactError(f"{folder} is not a Hugging Face decoder folder: config.json is missing")
    if model_type not in SUPPORTED:
        raise ArtifactError(
            f"{folder / 'config.json'}: model_type {model_type!r} cannot be imported; supported: {', '.join(SUPPORTED)}"
        )
    try:
        hf = AutoConfig.from_pretrained(str(folder), local_files_only=True)
        decoder, info = AutoModel.from_pretrained(
            str(folder), config=hf, local_files_only=True, dtype=dtype, output_loading_info=True
        )
    except (OSError, ValueError, RuntimeError) as exc:
        raise ArtifactError(f"cannot load {folder} as a {model_type} decoder: {exc}") from None
    missing = sorted(info.get("missing_keys") or [])  # transformers would fill them with random weights
    if missing or info.get("mismatched_keys"):
        raise ArtifactError(
            f"{folder}: the weights do not match config.json: missing {missing[:5]}, "
            f"mismatched {list(info.get('mismatched_keys') or [])[:5]}"
        )
    have = decoder.config.num_hidden_layers
    if num_layers is not None:
        if num_layers > have:
            raise ArtifactError(f"{folder} has {have} decoder layers; the recipe keeps the first {num_layers}")
        decoder.layers = nn.ModuleList(decoder.layers[:num_layers])
        decoder.config.num_hidden_layers = num_layers
        if getattr(decoder.config, "layer_types", None):
            decoder.config.layer_types = decoder.config.layer_types[:num_layers]
    if adapter is not None:
        decoder = _merge_adapter(decoder, Path(adapter))
    return decoder.eval()


def _merge_adapter(decoder: nn.Module, adapter: Path) -> nn.Module:
    """The decoder with the LoRA adapter merged. SLMRec trains it on the LlamaModel (task_type
    FEATURE_EXTRACTION); an adapter trained on a LlamaForCausalLM (E4SRec-style, CAUSAL_LM) has its keys one
    `model.` deeper, which is stripped. Every adapter tensor must land: none is left at its initial value."""
    if not (adapter / "adapter_config.json").is_file():
        raise ArtifactError(f"{adapter} is not a PEFT adapter folder: adapter_config.json is missing")
    try:
        from peft import LoraConfig, PeftConfig, get_peft_model, set_peft_model_state_dict
    except ImportError:
        raise ArtifactError(
            "importing a LoRA adapter needs peft", "pip install -e '.[peft]' (make install includes it)"
        ) from None
    try:
        config = PeftConfig.from_pretrained(str(adapter))
    except (OSError, ValueError, TypeError) as exc:
        raise ArtifactError(f"{adapter / 'adapter_config.json'} is not a valid PEFT config: {exc}") from None
    if not isinstance(config, LoraConfig):
        raise ArtifactError(f"{adapter}: a {type(config).__name__} adapter; only LoRA adapters can be merged")
    config.task_type = "FEATURE_EXTRACTION"  # the decoder is the base model, whatever head it was trained with
    config.inference_mode = True
    files = [adapter / name for name in ("adapter_model.safetensors", "adapter_model.bin") if (adapter / name).is_file()]
    if not files:
        raise ArtifactError(f"{adapter}: adapter_model.safetensors (or adapter_model.bin) is missing")
    state = read_tensors(files[0], "adapter weights")
    state = {_base_key(key): value for key, value in state.items()}
    wrapped = get_peft_model(decoder, config)
    try:
        result = set_peft_model_state_dict(wrapped, state)
    except (RuntimeError, ValueError) as exc:  # a shape that does not fit the decoder
        raise ArtifactError(f"the adapter {adapter} does not fit the decoder: {exc}") from None
    missing = [key for key in result.missing_keys if "lora_" in key]
    if result.unexpected_keys or missing:
        raise ArtifactError(
            f"the adapter {files[0]} does not fit the decoder (were its layers cut? set num_layers): "
            f"unexpected {sorted(result.unexpected_keys)[:3]}, missing {sorted(missing)[:3]}"
        )
    return wrapped.merge_and_unload()


def _base_key(key: str) -> str:
    """An adapter key as on the base model: base_model.model.model.layers... (a CausalLM's) -> base_model.model.layers..."""
    prefix = "base_model.model.model."
    return "base_model.model." + key[len(prefix):] if key.startswith(prefix) else key


def _shape(hf: Any, folder: Path) -> dict[str, Any]:
    """Our ModelShape fields from a transformers config; what we cannot run exactly is refused."""
    config_file = folder / "config.json"
    act = getattr(hf, "hidden_act", "silu")
    if act != "silu":
        raise ArtifactError(f"{config_file}: hidden_act {act!r}; the LLaMA backbone runs silu only")
    if getattr(hf, "mlp_bias", False):
        raise ArtifactError(f"{config_file}: mlp_bias is true; the backbone's MLP has no biases")
    rope = dict(getattr(hf, "rope_parameters", None) or {})
    rope_type = rope.get("rope_type", "default")
    if rope_type not in STATIC_ROPE:
        raise ArtifactError(
            f"{config_file}: rope_type {rope_type!r} cannot be imported; supported: {', '.join(STATIC_ROPE)} "
            "(their frequencies do not depend on the input's length)"
        )
    theta = rope.get("rope_theta", getattr(hf, "rope_theta", 10000.0))
    if hf.model_type == "qwen2":
        bias = "qkv"
    elif getattr(hf, "attention_bias", False):
        bias = "all"
    else:
        bias = "none"
    heads = hf.num_attention_heads
    return {
        "hidden_size": hf.hidden_size,
        "num_layers": hf.num_hidden_layers,
        "num_heads": heads,
        "num_kv_heads": getattr(hf, "num_key_value_heads", None) or heads,
        "head_dim": getattr(hf, "head_dim", None) or hf.hidden_size // heads,
        "intermediate_size": hf.intermediate_size,
        "rms_norm_eps": hf.rms_norm_eps,
        "rope_theta": float(theta),
        "attention_bias": bias,
        "rope_parameters": {**rope, "rope_theta": float(theta)} if rope_type != "default" else None,
    }


def _check_window(hf: Any, folder: Path, length: int) -> None:
    """Sliding-window attention (Mistral, Qwen2 with use_sliding_window) equals full attention when the
    window covers the whole input; otherwise the import would compute something else."""
    window = getattr(hf, "sliding_window", None)
    used = window is not None and (hf.model_type != "qwen2" or getattr(hf, "use_sliding_window", False))
    if used and window < length:
        raise ArtifactError(
            f"{folder / 'config.json'}: sliding_window {window} is shorter than the input "
            f"(max_len + prompt = {length}); the backbone attends over the whole sequence",
            "use a data.max_len within the window",
        )


def read_tensors(path: Path, what: str = "tensor") -> dict[str, torch.Tensor]:
    """Tensors of a .safetensors, .pt/.pth/.bin (a tensor or a state dict) or .npy file, by name."""
    path = Path(path)
    if not path.is_file():
        raise ArtifactError(f"the {what} file {path} is missing")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path))
        if path.suffix == ".npy":
            import numpy as np

            return {"weight": torch.from_numpy(np.load(path, allow_pickle=False))}
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # each reader raises its own error types on a damaged file
        raise ArtifactError(f"cannot read {path}: {exc}") from None
    if isinstance(loaded, torch.Tensor):
        return {"weight": loaded}
    if isinstance(loaded, dict) and all(isinstance(v, torch.Tensor) for v in loaded.values()):
        return dict(loaded)
    raise ArtifactError(f"{path} holds neither a tensor nor a dict of tensors")


def _item_table(
    path: Path, num_items: int, row_ids: list[str | None] | None = None, run_ids: list[str] | None = None
) -> torch.Tensor:
    tensors = read_tensors(path, "item table (item_embeddings)")
    if len(tensors) == 1:
        table = next(iter(tensors.values()))
    else:
        found = [v for k, v in tensors.items() if any(k == name or k.endswith("." + name) for name in ITEM_TABLE_KEYS)]
        if len(found) != 1:
            raise ArtifactError(f"{path} holds {len(tensors)} tensors and no single input_embeds.weight: which is the item table?")
        table = found[0]
    if row_ids is not None:
        return _rows_by_id(table, path, row_ids, run_ids or [])
    if table.dim() != 2 or table.shape[0] not in (num_items, num_items + 1):
        raise ArtifactError(
            f"{path}: the item table is {tuple(table.shape)}; expected [{num_items}, dim] (items 1..{num_items}) or "
            f"[{num_items + 1}, dim] (row 0 padding) for the recipe's {num_items} items",
            "rows in the run's internal item order (its item_ids.json), or give item_ids: the original id of each row",
        )
    table = table.detach().float()
    if table.shape[0] == num_items:
        table = torch.cat([torch.zeros(1, table.shape[1]), table])
    return table.contiguous()


def _rows_by_id(table: torch.Tensor, path: Path, row_ids: list[str | None], run_ids: list[str]) -> torch.Tensor:
    """[len(run_ids) + 1, d]: row 0 padding (zeros), row i the table's row of the run's item i."""
    if table.dim() != 2 or table.shape[0] != len(row_ids):
        raise ArtifactError(
            f"{path}: the item table is {tuple(table.shape)}; the item_ids file lists {len(row_ids)} ids, one per row: "
            f"expected [{len(row_ids)}, dim]"
        )
    index = {str(item): row for row, item in enumerate(row_ids) if item is not None}
    missing = [str(item) for item in run_ids if str(item) not in index]
    if missing:
        raise ArtifactError(
            f"{path}: {len(missing)} of the recipe's {len(run_ids)} items have no row in the teacher's table "
            f"(e.g. {', '.join(missing[:5])})",
            "import a teacher trained on the same items, or filter the data to its catalogue",
        )
    rows = torch.tensor([index[str(item)] for item in run_ids], dtype=torch.long)
    table = table.detach().float()
    return torch.cat([torch.zeros(1, table.shape[1]), table[rows]]).contiguous()


def read_item_ids(path: Path) -> list[str | None]:
    """The original item id of each row of a teacher's item table: a JSON list (null: a padding row) or a
    text file, one id per line (an empty line: a padding row)."""
    path = Path(path)
    if not path.is_file():
        raise ArtifactError(f"the item_ids file {path} is missing")
    text = path.read_text()
    if path.suffix == ".json":
        try:
            ids = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ArtifactError(f"{path} is not valid JSON: {exc}") from None
        if not isinstance(ids, list):
            raise ArtifactError(f"{path}: expected a JSON list of item ids, one per row of the item table")
        return [None if item is None else str(item) for item in ids]
    return [line.strip() or None for line in text.splitlines()]


def _projections(path: Path, item_dim: int, hidden: int) -> dict[str, torch.Tensor]:
    tensors = read_tensors(Path(path), "projections")
    expected = {"input_proj.weight": (hidden, item_dim), "input_proj.bias": (hidden,), "output_proj.weight": (item_dim, hidden)}
    state = {}
    for ours, names in PROJECTION_KEYS.items():
        found = [v for k, v in tensors.items() for name in names if k == name or k.endswith("." + name)]
        if len(found) > 1:
            raise ArtifactError(f"{path}: several tensors match {names[0]}")
        if not found:
            if ours == "input_proj.bias":
                continue
            raise ArtifactError(f"{path}: {names[0]} [{', '.join(map(str, expected[ours]))}] is missing")
        if tuple(found[0].shape) != expected[ours]:
            raise ArtifactError(
                f"{path}: {names[0]} is {tuple(found[0].shape)}; expected {list(expected[ours])} "
                f"(item table {item_dim} wide, decoder {hidden})"
            )
        state[ours] = found[0].detach().float().contiguous()
    return state


def _prompt(embed: torch.Tensor, ids: list[int] | None, name: str) -> torch.Tensor:
    if not ids:
        return embed.new_zeros(0, embed.shape[1])
    bad = [i for i in ids if not 0 <= i < embed.shape[0]]
    if bad:
        raise ArtifactError(f"{name} token ids {bad[:5]} are outside the decoder's vocabulary (0..{embed.shape[0] - 1})")
    return embed[torch.tensor(ids)].clone()


def tokenize(folder: Path, text: str) -> list[int]:
    """Token ids of `text` with the tokenizer in `folder`, no special tokens added (as SLMRec does)."""
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    except (OSError, ValueError) as exc:
        raise ArtifactError(f"cannot load a tokenizer from {folder} for the prompt text: {exc}",
                            "give the token ids instead, or a tokenizer folder") from None
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])
