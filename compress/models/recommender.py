"""A sequential recommender with a LLaMA backbone, in one file: config → model → save/load.

item ids ─► item table (item_dim) ─► projection to the backbone width ─► LlamaModel over the
left-padded sequence ─► hidden state per position ─► projection back ─► scores against the
item table (tied) or a separate output table.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from pydantic import ValidationError
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import LlamaConfig, LlamaModel

from compress.runs.files import CONFIG_FILE, WEIGHTS_FILE, atomic_write
from compress.errors import ArtifactError, RecipeError
from compress.models.config import ModelShape, RecommenderConfig
from compress.models.item_tables import build_table
from compress.models.last_query import last_position_state
from compress.runs.integrity import verify_artifact
from compress.models.quantized import QuantizationSpec, apply_runtime, count_parameters, pack_state, unpack_state

MODEL_TYPE = "compress-sequential-recommender"


class SequentialRecommender(nn.Module):
    def __init__(self, config: RecommenderConfig) -> None:
        super().__init__()
        self.config = config
        if config.table is not None:  # compressed (compress/models/item_tables.py): weights come from a state dict
            self.item_embeddings = build_table(config.table, config.num_items + 1, config.item_dim)
        else:
            self.item_embeddings = nn.Embedding(config.num_items + 1, config.item_dim, padding_idx=0)
            nn.init.normal_(self.item_embeddings.weight, std=0.02)
            with torch.no_grad():
                self.item_embeddings.weight[0].zero_()
        widths_differ = config.item_dim != config.hidden_size
        projected = widths_differ or config.input_bias
        self.input_proj = (
            nn.Linear(config.item_dim, config.hidden_size, bias=config.input_bias) if projected else nn.Identity()
        )
        self.output_proj = nn.Linear(config.hidden_size, config.item_dim, bias=False) if widths_differ else nn.Identity()
        self.output_items = None if config.tie_weights else nn.Embedding(config.num_items + 1, config.item_dim)
        self.embedding_dropout = nn.Dropout(config.dropout)
        self.backbone = LlamaModel(config.to_llama())
        if config.attention_bias == "qkv":  # Qwen2: biases on q, k, v; none on the output projection
            for layer in self.backbone.layers:
                old = layer.self_attn.o_proj
                layer.self_attn.o_proj = nn.Linear(old.in_features, old.out_features, bias=False)
                layer.self_attn.o_proj.weight = old.weight
        # a fixed prompt around the items (an imported SLMRec/E4SRec teacher): constants, absent when empty
        if config.prefix_len:
            self.register_buffer("prompt_prefix", torch.zeros(config.prefix_len, config.hidden_size))
        if config.suffix_len:
            self.register_buffer("prompt_suffix", torch.zeros(config.suffix_len, config.hidden_size))
        if config.hidden_dropout:
            add_residual_dropout(self.backbone, config.hidden_dropout)

    @property
    def item_table(self) -> torch.Tensor:
        """The [num_items + 1, item_dim] table scores are computed against."""
        return (self.output_items or self.item_embeddings).weight

    def forward(
        self, item_ids: torch.Tensor, attention_mask: torch.Tensor, output_hidden_states: bool = False,
        last_only: bool = False,
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, ...] | None]:
        """Return the [B, L, item_dim] user states ([B, 1, item_dim] with `last_only`: the output
        projection runs on the last position alone; in eval mode so does the last layer) and, if
        asked, every layer's backbone states.

        Positions count from the first real item, so a left-padded sequence gets exactly
        the states of the same sequence without padding.

        A prompted model (`config.prompted`: fixed embeddings before and after the items, as an imported
        SLMRec teacher) runs [prefix, padding, items, suffix], positions counting the prompt (the padding
        is masked and skipped), and gives the state at the last suffix token: `last_only` alone.
        """
        if self.config.prompted and not last_only:
            raise ArtifactError(
                "this model has a fixed prompt around the items (an imported SLMRec/E4SRec teacher): it gives "
                "the state after its last prompt token only, not one per position; ask for last_only"
            )
        embeddings, attention_mask, position_ids = self.decoder_inputs(item_ids, attention_mask)
        if last_only and not output_hidden_states and not self.training:
            # the last layer at the last position alone (models/last_query.py): ~1/num_layers less work
            return self.output_proj(last_position_state(self.backbone, embeddings, attention_mask, position_ids)), None
        outputs = self.backbone(
            inputs_embeds=embeddings,
            attention_mask=attention_mask,
            position_ids=position_ids,
            use_cache=False,
            output_hidden_states=output_hidden_states,
        )
        hidden = outputs.last_hidden_state[:, -1:] if last_only else outputs.last_hidden_state
        states = self.output_proj(hidden)
        return states, (outputs.hidden_states if output_hidden_states else None)

    def decoder_inputs(
        self, item_ids: torch.Tensor, attention_mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """What the backbone runs on: the projected item embeddings (inside the prompt, if any), their mask and
        positions, which count from the first real token (padding is masked and skipped)."""
        embeddings = self.embedding_dropout(self.input_proj(self.item_embeddings(item_ids)))
        if self.config.prompted:
            embeddings, attention_mask = self._with_prompt(embeddings, attention_mask)
        position_ids = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
        return embeddings, attention_mask, position_ids

    def prompt_embeddings(self) -> dict[str, torch.Tensor]:
        """The fixed prompt's embeddings by buffer name (`prompt_prefix`, `prompt_suffix`); empty without one."""
        return {name: buffer for name, buffer in self.named_buffers(recurse=False) if name.startswith("prompt_")}

    def _with_prompt(
        self, embeddings: torch.Tensor, attention_mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """[prefix, items, suffix] and its mask (the prompt always real). With left padding the padding lies
        between the prefix and the first item: masked, and skipped by the positions (cumsum of the mask)."""
        batch = embeddings.shape[0]
        parts, masks = [embeddings], [attention_mask]
        if self.config.prefix_len:
            parts.insert(0, self.prompt_prefix.to(embeddings.dtype).expand(batch, -1, -1))
            masks.insert(0, attention_mask.new_ones(batch, self.config.prefix_len))
        if self.config.suffix_len:
            parts.append(self.prompt_suffix.to(embeddings.dtype).expand(batch, -1, -1))
            masks.append(attention_mask.new_ones(batch, self.config.suffix_len))
        return torch.cat(parts, dim=1), torch.cat(masks, dim=1)

    def score(self, states: torch.Tensor, start: int = 0, stop: int | None = None) -> torch.Tensor:
        """Scores over all items ([..., num_items + 1]), or over items start..stop-1 only (a chunk
        of a large catalogue); the padding column is -inf."""
        if self.config.table is not None and self.output_items is None:
            logits = self.item_embeddings.score(states, start, stop)  # straight from the compressed form
        else:
            table = self.item_table if (start, stop) == (0, None) else self.item_table[start:stop]
            logits = states @ table.t()
        if start == 0 and torch.onnx.is_in_onnx_export():
            # a bias row (-inf on padding) that onnxruntime fuses into the scoring Gemm, where writing
            # one column is a copy of the whole score matrix in the graph (ScatterND)
            columns = self.config.num_items + 1 if stop is None else stop
            padding = torch.zeros(columns, dtype=logits.dtype)
            padding[0] = float("-inf")
            logits = logits + padding.to(logits.device)  # a constant of the graph
        elif start == 0:
            logits[..., 0] = float("-inf")
        return logits

    def last_states(self, item_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """The state at the last position: with left padding, always index -1."""
        return self(item_ids, attention_mask, last_only=True)[0][:, -1]

    def next_item_scores(self, item_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """[B, num_items + 1] scores of every item as the next one after each sequence (padding -inf)."""
        return self.score(self.last_states(item_ids, attention_mask))

    def num_parameters(self) -> int:
        """Weights of the architecture; quantized layers count the float weights they stand for."""
        return count_parameters(self)


def add_residual_dropout(backbone: LlamaModel, p: float) -> None:
    """Drop each attention and MLP output before its residual add, in training only (forward hooks: the
    parameter names, the exported graphs and the step model stay those of the plain LLaMA layers)."""

    def drop(module: nn.Module, inputs: tuple, output: torch.Tensor | tuple) -> torch.Tensor | tuple:
        if not module.training:
            return output
        if isinstance(output, tuple):  # attention: (output, weights)
            return (nn.functional.dropout(output[0], p, training=True), *output[1:])
        return nn.functional.dropout(output, p, training=True)

    for layer in backbone.layers:
        layer.self_attn.register_forward_hook(drop)
        layer.mlp.register_forward_hook(drop)


def save_model(model: SequentialRecommender, folder: Path, quantization: QuantizationSpec | None = None) -> None:
    """Write `config.json` and `model.safetensors` into `folder`, each atomically.

    With `quantization`, the float `model` is stored quantized (see compress/models/quantized.py)
    and `load_model` rebuilds the quantized runtime layers.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if quantization is None:
        state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    else:
        state = pack_state(model, quantization)
    atomic_write(folder / WEIGHTS_FILE, lambda tmp: save_file(state, str(tmp)))
    config = {"model_type": MODEL_TYPE, **model.config.model_dump()}
    if quantization is not None:
        config["quantization"] = quantization.model_dump()
    atomic_write(folder / CONFIG_FILE, lambda tmp: tmp.write_text(json.dumps(config, indent=2) + "\n"))


def load_model(folder: Path, device: str | torch.device = "cpu") -> SequentialRecommender:
    """Rebuild a model from `folder`; a missing, damaged (see compress/runs/integrity.py) or mismatched file is an ArtifactError."""
    folder = Path(folder)
    for name in (CONFIG_FILE, WEIGHTS_FILE):
        if not (folder / name).is_file():
            raise ArtifactError(f"{folder} is not a model artifact: {name} is missing")
    verify_artifact(folder)
    try:
        raw = json.loads((folder / CONFIG_FILE).read_text())
    except json.JSONDecodeError as exc:
        raise ArtifactError(f"{folder / CONFIG_FILE} is not valid JSON: {exc}") from None
    if raw.pop("model_type", None) != MODEL_TYPE:
        raise ArtifactError(f"{folder} holds no {MODEL_TYPE} (config.json model_type differs)")
    quantization = raw.pop("quantization", None)
    try:
        config = RecommenderConfig(**raw)
        spec = QuantizationSpec(**quantization) if quantization is not None else None
    except ValidationError as exc:
        raise ArtifactError(f"{folder / CONFIG_FILE} is not a valid model config:\n{exc}") from None
    model = SequentialRecommender(config)
    try:
        state = load_file(str(folder / WEIGHTS_FILE))
    except Exception as exc:  # safetensors raises its own untyped errors on corrupt files
        raise ArtifactError(f"cannot read {folder / WEIGHTS_FILE}: {exc}") from None
    scales: dict[str, torch.Tensor] = {}
    if spec is not None:
        state, scales = unpack_state(state)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ArtifactError(f"{folder}: weights do not match config.json:\n{exc}") from None
    if spec is not None:
        model = apply_runtime(model, spec, scales, torch.device(device))
    return model.to(device).eval()


def init_backbone_from_llama(model: SequentialRecommender, checkpoint: Path) -> list[str]:
    """Copy the first `num_layers` decoder layers and the final norm of a local HF LLaMA checkpoint.

    Returns the names of the copied tensors. The model's backbone shape must match the
    checkpoint's (use `shape_from_llama` to derive it).
    """
    source = _load_llama(checkpoint)
    wanted = model.config.num_layers
    have = source.config.num_hidden_layers
    if wanted > have:
        raise RecipeError(f"init_from {checkpoint} has {have} layers; the model asks for {wanted}")
    state = {k: v for k, v in source.state_dict().items() if not k.startswith("embed_tokens")}
    state = {k: v for k, v in state.items() if not k.startswith("layers.") or int(k.split(".")[1]) < wanted}
    missing, unexpected = model.backbone.load_state_dict(state, strict=False)
    wrong = [k for k in missing if not k.startswith("embed_tokens")] + list(unexpected)
    if wrong:
        raise RecipeError(f"init_from {checkpoint} does not fit the model: {wrong[:5]}")
    return sorted(state)


def shape_from_llama(shape: ModelShape, checkpoint: Path) -> ModelShape:
    """The recipe's shape with the backbone dimensions taken from a LLaMA checkpoint."""
    config = LlamaConfig.from_pretrained(str(checkpoint))
    rope = (config.rope_parameters or {}).get("rope_theta", shape.rope_theta)
    return ModelShape(
        **{
            **shape.model_dump(),
            "hidden_size": config.hidden_size,
            "num_heads": config.num_attention_heads,
            "num_kv_heads": config.num_key_value_heads or config.num_attention_heads,
            "head_dim": getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads,
            "intermediate_size": config.intermediate_size,
            "rms_norm_eps": config.rms_norm_eps,
            "rope_theta": rope,
            "item_dim": shape.item_dim if shape.item_dim != shape.hidden_size else None,
        }
    )


def _load_llama(checkpoint: Path) -> LlamaModel:
    checkpoint = Path(checkpoint)
    if not (checkpoint / CONFIG_FILE).is_file():
        raise RecipeError(f"init_from: {checkpoint} is not a Hugging Face checkpoint folder (no config.json)")
    try:
        return LlamaModel.from_pretrained(str(checkpoint), local_files_only=True)
    except (OSError, ValueError) as exc:
        raise RecipeError(f"init_from: cannot load {checkpoint} as a LLaMA model: {exc}") from None
