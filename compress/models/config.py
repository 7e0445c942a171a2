"""Model settings: the architecture a recipe chooses and what config.json records (pydantic only,
importable without torch; transformers is imported only to build a LlamaConfig)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

if TYPE_CHECKING:
    from transformers import LlamaConfig

TorchBackend = Literal["torch", "fp16", "bf16", "bitsandbytes"]  # libraries that run a quantized PyTorch model
WeightFormat = Literal["int8", "nf4", "fp4", "half"]


class ModelShape(BaseModel):
    """The architecture a recipe chooses; data-dependent sizes are added by RecommenderConfig."""

    model_config = ConfigDict(extra="forbid")

    hidden_size: int = Field(64, ge=8, description="Backbone width.")
    num_layers: int = Field(2, ge=1, description="Decoder layers.")
    num_heads: int = Field(2, ge=1, description="Attention heads.")
    num_kv_heads: int | None = Field(None, ge=1, description="Key/value heads (grouped-query); default num_heads.")
    head_dim: int | None = Field(None, ge=1, description="Width of one head; default hidden_size / num_heads.")
    intermediate_size: int | None = Field(None, ge=1, description="MLP width; default 4 x hidden_size.")
    item_dim: int | None = Field(None, ge=8, description="Item table width; projected to hidden_size if different.")
    tie_weights: bool = Field(True, description="Score against the input item table (else a separate table).")
    dropout: float = Field(0.1, ge=0, lt=1, description="Dropout on item embeddings and attention.")
    hidden_dropout: float = Field(
        0.0, ge=0, lt=1,
        description="Dropout on each attention and MLP output before its residual add (SASRec's; LLaMA has none).",
    )
    rms_norm_eps: float = Field(1e-6, gt=0, description="RMSNorm epsilon.")
    rope_theta: float = Field(10000.0, gt=0, description="RoPE base.")

    @model_validator(mode="after")
    def _derive(self) -> "ModelShape":
        self.num_kv_heads = self.num_kv_heads or self.num_heads
        if self.num_heads % self.num_kv_heads:
            raise ValueError(f"num_heads ({self.num_heads}) must be a multiple of num_kv_heads ({self.num_kv_heads})")
        if self.head_dim is None:
            if self.hidden_size % self.num_heads:
                raise ValueError(
                    f"hidden_size ({self.hidden_size}) must be divisible by num_heads ({self.num_heads}), "
                    "or set head_dim"
                )
            self.head_dim = self.hidden_size // self.num_heads
        self.intermediate_size = self.intermediate_size or 4 * self.hidden_size
        self.item_dim = self.item_dim or self.hidden_size
        return self


TableBits = Literal[2, 3, 4, 5, 6, 8]


class TableSpec(BaseModel):
    """A compressed item table's shape (compress/models/item_tables.py), enough to rebuild it before its weights load."""

    model_config = ConfigDict(extra="forbid")

    method: Literal["rowwise", "mixed", "lowrank"] = Field(description="How the table is compressed.")
    group_bits: list[TableBits] = Field(default_factory=list, description="rowwise/mixed: bits of each row group.")
    group_rows: list[int] = Field(default_factory=list, description="rowwise/mixed: rows in each group.")
    rank: int | None = Field(None, ge=1, description="lowrank: inner dimension r.")


class RecommenderConfig(ModelShape):
    """Everything needed to rebuild the model without the recipe."""

    num_items: int = Field(ge=1, description="Catalogue size; ids 1..num_items, 0 is padding.")
    max_len: int = Field(ge=1, description="Longest input sequence the model was trained on.")
    table: TableSpec | None = Field(None, description="A compressed (tied) item table; null: a float nn.Embedding.")
    # what an imported teacher (compress/models/importers.py) may need; the defaults are our own models'
    input_bias: bool = Field(False, description="The input projection (item_dim -> hidden) has a bias (SLMRec's input_proj).")
    attention_bias: Literal["none", "qkv", "all"] = Field(
        "none", description="Biases of the attention projections: none (LLaMA), qkv (Qwen2), all (LLaMA attention_bias)."
    )
    rope_parameters: dict[str, Any] | None = Field(
        None, description="An imported decoder's scaled RoPE (transformers' rope_parameters, e.g. rope_type llama3); "
        "null: plain RoPE with rope_theta.",
    )
    prefix_len: int = Field(
        0, ge=0, description="Fixed embeddings (a prompt, e.g. SLMRec's instruction) before the items; 0: none."
    )
    suffix_len: int = Field(
        0, ge=0, description="Fixed embeddings after the items (SLMRec's response); the state is read at the last one."
    )

    @property
    def prompted(self) -> bool:
        """A fixed prompt surrounds the items: the model gives the state after its last token only."""
        return self.prefix_len > 0 or self.suffix_len > 0

    def to_llama(self) -> "LlamaConfig":
        from transformers import LlamaConfig

        return LlamaConfig(
            vocab_size=1,  # items enter as embeddings; the token table is unused
            hidden_size=self.hidden_size,
            intermediate_size=self.intermediate_size,
            num_hidden_layers=self.num_layers,
            num_attention_heads=self.num_heads,
            num_key_value_heads=self.num_kv_heads,
            head_dim=self.head_dim,
            max_position_embeddings=max(self.max_len + self.prefix_len + self.suffix_len, 8),
            rms_norm_eps=self.rms_norm_eps,
            rope_parameters=dict(self.rope_parameters or {"rope_type": "default", "rope_theta": self.rope_theta}),
            attention_dropout=self.dropout,
            attention_bias=self.attention_bias != "none",
            pad_token_id=None,
            bos_token_id=None,
            eos_token_id=None,
            use_cache=False,
            attn_implementation="sdpa",
        )


class QuantizationSpec(BaseModel):
    """What config.json records about a quantized PyTorch model."""

    model_config = ConfigDict(extra="forbid")

    backend: TorchBackend = Field(description="Runtime that executes the quantized layers.")
    mode: WeightFormat = Field(description="Weight format of the linear layers.")
    item_table: bool = Field(False, description="Item table(s) stored in int8 (dequantized at load).")
