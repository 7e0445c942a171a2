"""The `stages:` entries of a recipe, one pydantic model per stage (importable without torch).

Each stage's implementation (its `run`) lives in the stage's own module (train.py, ...); the
registry (registry.py) ties a name to its config, its run and the facts the recipe checks.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, model_validator

from compress.evaluation.config import ParityConfig
from compress.export.config import CalibrateMethod, ExportSettings, OnnxMode
from compress.methods.config import PruneTargets, Selection, WidthImportance
from compress.models.config import ModelShape, TableBits, TorchBackend
from compress.training.config import DistillWeights, OptimConfig

ArtifactKind = Literal["torch", "onnx"]  # a model folder (config.json + safetensors) or an ONNX folder
QuantizeBackend = Literal["onnxruntime", TorchBackend]
MODES: dict[str, tuple[str, ...]] = {  # each backend's modes, its default first
    "onnxruntime": get_args(OnnxMode),
    "torch": ("int8",),
    "fp16": ("half",),
    "bf16": ("half",),
    "bitsandbytes": ("int8", "nf4", "fp4"),
}
assert set(MODES) == set(get_args(QuantizeBackend))
ONNX_ONLY = ("op_types", "per_channel", "reduce_range", "calibration_users", "calibrate_method")


class TrainConfig(OptimConfig):
    stage: Literal["train"] = "train"
    model: ModelShape = Field(default_factory=ModelShape, description="Architecture of the model to train.")
    init_from: Path | None = Field(
        None, description="Local Hugging Face LLaMA checkpoint folder to initialise the backbone from."
    )


IMPORT_FIELDS = (
    "item_embeddings", "item_ids", "projections", "adapter", "instruction", "response", "tokenizer", "num_layers"
)
SLMREC_FIELDS = ("adapter", "instruction", "response")


class LoadConfig(BaseModel):
    """Our own model folder, or a teacher trained elsewhere (docs/import.md): a Hugging Face decoder folder
    plus an item table (kind hf), or an SLMRec/E4SRec checkpoint (kind slmrec: also a LoRA adapter and
    the instruction/response prompt)."""

    model_config = ConfigDict(extra="forbid")

    stage: Literal["load"] = "load"
    path: Path = Field(
        description="A model folder (config.json + model.safetensors), e.g. artifacts/<run>/01-train/model; "
        "or a Hugging Face decoder folder (llama, qwen2, mistral) to import."
    )
    kind: Literal["auto", "compress", "hf", "slmrec"] = Field(
        "auto",
        description="auto: our model folder when config.json says so, else an import (slmrec when an adapter or "
        "a prompt is given, else hf).",
    )
    item_embeddings: Path | None = Field(
        None, description="hf/slmrec: the item table [items, d] or [items + 1, d] (row 0 padding), rows in the "
        "run's internal item order; .safetensors, .pt/.pth/.bin or .npy.",
    )
    item_ids: Path | None = Field(
        None, description="hf/slmrec: the original item id of each row of item_embeddings (a JSON list, null for a "
        "padding row, or one id per line); rows are then picked by id. Default: rows in the run's internal order.",
    )
    projections: Path | None = Field(
        None, description="hf/slmrec, when d differs from the decoder width: input_proj.weight [hidden, d], optional "
        "input_proj.bias [hidden], score.weight [d, hidden] (an LLM4Rec state dict works).",
    )
    adapter: Path | None = Field(None, description="slmrec: a PEFT LoRA adapter folder, merged at import.")
    instruction: list[int] | str | None = Field(
        None, description="slmrec: the instruction before the items, as token ids or text (tokenized without "
        "special tokens by the tokenizer folder).",
    )
    response: list[int] | str | None = Field(
        None, description="slmrec: the response after the items (token ids or text); the state is read at its last token.",
    )
    tokenizer: Path | None = Field(None, description="slmrec with prompt text: the tokenizer folder; default path.")
    num_layers: int | None = Field(
        None, ge=1, description="hf/slmrec: keep the decoder's first N layers (SLMRec's llama_decoder_nums); default all.",
    )
    content_sha256: str | None = Field(
        None, description="Set at validation: the import files' contents, so new files at the same paths rerun the chain.",
    )

    @model_validator(mode="after")
    def _check_kind(self) -> "LoadConfig":
        given = [name for name in IMPORT_FIELDS if getattr(self, name) is not None]
        if self.kind == "compress" and given:
            raise ValueError(f"{', '.join(given)} apply to an imported teacher (kind hf or slmrec), not kind compress")
        slmrec_only = [name for name in SLMREC_FIELDS if getattr(self, name) is not None]
        if self.kind == "hf" and slmrec_only:
            raise ValueError(f"{', '.join(slmrec_only)} apply to kind slmrec (a LoRA adapter, a prompt), not hf")
        if self.kind in ("hf", "slmrec") and self.item_embeddings is None:
            raise ValueError(f"kind {self.kind} needs item_embeddings (the item table file)")
        if self.tokenizer is not None and not any(isinstance(t, str) for t in (self.instruction, self.response)):
            raise ValueError("tokenizer applies to a prompt given as text (instruction/response)")
        self.content_sha256 = _import_files_sha256(self) if given else None
        return self

    @property
    def importing(self) -> bool:
        """A teacher to import (hf or slmrec) rather than our own model folder."""
        return self.kind in ("hf", "slmrec") or (self.kind == "auto" and self.item_embeddings is not None)


def _import_files_sha256(config: LoadConfig) -> str | None:
    """The contents of the files an import reads besides config.json and model.safetensors (which the
    registry's cache id covers): the item table, the projections, the adapter and tokenizer folders."""
    import hashlib

    from compress.runs.files import folder_sha256, sha256_file

    digest = hashlib.sha256()
    for name in ("item_embeddings", "item_ids", "projections", "adapter", "tokenizer"):
        path = getattr(config, name)
        if path is None:
            continue
        if path.is_file():
            digest.update(f"{name}\0{sha256_file(path)}\0".encode())
        elif path.is_dir():
            digest.update(f"{name}\0{folder_sha256(path)}\0".encode())
        else:
            digest.update(f"{name}\0missing\0".encode())  # the load stage names the missing file
    return digest.hexdigest()[:16]


class DistillConfig(OptimConfig):
    stage: Literal["distill"] = "distill"
    num_layers: int = Field(2, ge=1, description="Decoder layers of the student.")
    layer_selection: Selection = Field(
        "first", description="Which teacher layers the student keeps: first (SLMRec), uniform, or importance."
    )
    init: Literal["teacher", "fresh"] = Field(
        "teacher", description="Start from the copied teacher weights, or from a fresh random init."
    )
    init_from: Path | None = Field(
        None, description="Local Hugging Face LLaMA checkpoint to initialise the student's backbone from."
    )
    blocks: int = Field(1, ge=1, description="B: hidden states are aligned at B evenly spaced blocks.")
    weights: DistillWeights = Field(default_factory=DistillWeights, description="Loss term weights.")


class Recovery(OptimConfig):
    """Fine-tuning after pruning (or item-table compression), the model before it as a frozen teacher."""

    epochs: int = Field(3, ge=1, description="Maximum recovery epochs.")
    blocks: int = Field(1, ge=1, description="B: hidden states are aligned at B blocks (cosine/l2 weights).")
    weights: DistillWeights = Field(
        default_factory=lambda: DistillWeights(ce=1.0, kd=1.0), description="Loss term weights (distill's losses)."
    )


class PruneConfig(PruneTargets):
    stage: Literal["prune"] = "prune"
    importance: WidthImportance = Field(
        "magnitude", description="Width importance: magnitude (weights) or taylor (|weight x gradient|)."
    )
    calibration_batches: int = Field(8, ge=1, description="Training batches for Block Influence and Taylor gradients.")
    calibration_batch_size: int = Field(64, ge=1, description="Sequences per calibration batch.")
    recovery: Recovery | None = Field(
        default_factory=Recovery, description="Recovery fine-tuning after pruning; null: none."
    )


TABLE_METHOD_FIELDS = {
    "rowwise": {"bits", "clip", "quantization_aware"},
    "mixed": {"high_bits", "low_bits", "coverage", "bits_per_weight", "allocation", "clip", "quantization_aware"},
    "lowrank": {"rank"},
}


class ItemTableConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    stage: Literal["item_table"] = "item_table"
    method: Literal["rowwise", "mixed", "lowrank"] = Field(
        "rowwise", description="rowwise integers | mixed (bits by item frequency) | lowrank (table = A·B)."
    )
    bits: TableBits = Field(8, description="rowwise: bits per value (per-row fp16 scale and offset).")
    high_bits: TableBits = Field(8, description="mixed: bits of the frequent items.")
    low_bits: TableBits = Field(4, description="mixed: bits of the other items.")
    coverage: float = Field(
        0.8, ge=0, le=1,
        description="mixed: the most frequent items that make this share of training interactions get high_bits.",
    )
    bits_per_weight: float | None = Field(
        None, gt=0,
        description="mixed, instead of coverage: as many of the most frequent items get high_bits as keep the "
        "table (codes, fp16 scales and offsets, row groups) within this many bits per weight (4.0: 8x smaller).",
    )
    allocation: Literal["frequency", "error"] = Field(
        "frequency",
        description="mixed: which rows get high_bits (as many as coverage or bits_per_weight allow): the most "
        "frequent items, or those where high_bits saves the most squared error weighted by sqrt(1 + interactions).",
    )
    rank: int = Field(16, ge=1, description="lowrank: inner dimension r (below the table width).")
    recovery: Recovery | None = Field(
        default_factory=lambda: Recovery(epochs=2),
        description="Fine-tuning after compression, the uncompressed model as teacher, kept only if it "
        "improves validation NDCG@10; null: none.",
    )
    clip: bool = Field(
        True,
        description="rowwise/mixed, below 8 bits: clip each row's range where that lowers its squared error "
        "(up to 16% off either end); false: the row's [min, max].",
    )
    quantization_aware: bool = Field(
        True,
        description="rowwise/mixed recovery: train the float table through the quantizer (straight-through) and "
        "quantize it again; false: the codes stay fixed and only the rest of the model adapts.",
    )

    @model_validator(mode="after")
    def _check_method(self) -> "ItemTableConfig":
        # a field counts as given when it was set to something other than its default, so a dumped
        # config (every field present) validates again
        given = {name for name in self.model_fields_set
                 if getattr(self, name) != type(self).model_fields[name].get_default(call_default_factory=True)}
        stray = set().union(*TABLE_METHOD_FIELDS.values()) - TABLE_METHOD_FIELDS[self.method]
        if stray & given:
            raise ValueError(f"{', '.join(sorted(stray & given))} do not apply to method {self.method}")
        if self.bits_per_weight is not None and "coverage" in given:
            raise ValueError("give coverage or bits_per_weight, not both")
        return self


class ExportConfig(ExportSettings):
    stage: Literal["export"] = "export"
    parity: ParityConfig = Field(
        default_factory=ParityConfig, description="Ranking parity gate against the PyTorch model."
    )


class QuantizeConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    stage: Literal["quantize"] = "quantize"
    backend: QuantizeBackend = Field(
        "onnxruntime", description="Library that quantizes and runs the model (onnxruntime needs an export first)."
    )
    mode: str | None = Field(
        None,
        description="onnxruntime: dynamic (default) | static; torch: int8; bitsandbytes: int8 (default) | nf4 | fp4.",
    )
    item_table: bool = Field(False, description="Also quantize the item table (lookup and scoring) to int8.")
    op_types: list[str] | None = Field(
        None, description="onnxruntime op types to quantize; default MatMul (dynamic), MatMul+Gemm (static)."
    )
    per_channel: bool = Field(True, description="onnxruntime: per-channel weight scales.")
    reduce_range: bool = Field(
        True,
        description="onnxruntime: 7-bit weights. Full 8-bit per-channel weights saturate on CPUs without VNNI "
        "(measured on Amazon Beauty, AVX2 AMD EPYC: top-10 overlap 0.847 with 8 bits, 0.949 with 7).",
    )
    calibration_users: int = Field(256, ge=1, description="onnxruntime static: training sequences to calibrate on.")
    calibrate_method: CalibrateMethod = Field(
        "MinMax", description="onnxruntime static: how activation ranges are chosen."
    )
    parity: ParityConfig = Field(
        default_factory=lambda: ParityConfig(min_overlap=0.9, max_ndcg_drop=0.02),
        description="Ranking parity gate against the unquantized source model.",
    )

    @model_validator(mode="after")
    def _check_backend(self) -> "QuantizeConfig":
        allowed = MODES[self.backend]
        self.mode = self.mode or allowed[0]
        if self.mode not in allowed:
            raise ValueError(f"backend {self.backend} has modes {', '.join(allowed)}; got mode {self.mode!r}")
        stray = [name for name in ONNX_ONLY if name in self.model_fields_set and self.backend != "onnxruntime"]
        if stray:
            raise ValueError(f"{', '.join(stray)} apply to backend onnxruntime only (backend is {self.backend})")
        if self.item_table and self.backend in ("fp16", "bf16"):
            raise ValueError(f"item_table: {self.backend} already halves the item table; drop item_table")
        return self
