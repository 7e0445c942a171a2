"""Load stage: start a chain from a model trained elsewhere (e.g. another run's teacher).

Three kinds of teacher (docs/import.md), detected from the folder or named by `kind`:
- our own model folder: verified (it must load, and fit the recipe's catalogue) and linked into the run;
- a Hugging Face decoder folder (llama, qwen2, mistral) plus an item table (kind hf);
- an SLMRec/E4SRec checkpoint: the decoder folder, a LoRA adapter (merged), the item table, input_proj/
  score and the instruction/response prompt (kind slmrec).
An imported teacher is converted (compress/models/importers.py) and saved as our model folder.

The cache id includes the weights' and config's sha256 (and an import's other files, LoadConfig's
content_sha256), so replacing the files reruns the chain while a plain rerun reuses it.
"""

from __future__ import annotations

from pathlib import Path

from compress.errors import RecipeError
from compress.handlers import TorchArtifact
from compress.models import load_model, save_model
from compress.runs.files import CONFIG_FILE, WEIGHTS_FILE, link_or_copy
from compress.stages.base import StageContext, StageResult
from compress.stages.config import IMPORT_FIELDS, SLMREC_FIELDS, LoadConfig

OURS = "compress-sequential-recommender"


def resolve_kind(config: LoadConfig) -> str:
    """compress, hf or slmrec: what `kind: auto` means for this folder."""
    from compress.models.importers import decoder_type

    model_type = decoder_type(config.path)
    if config.kind != "auto":
        kind = config.kind
    elif model_type == OURS:
        kind = "compress"
    else:
        kind = "slmrec" if any(getattr(config, name) is not None for name in SLMREC_FIELDS) else "hf"
    given = [name for name in IMPORT_FIELDS if getattr(config, name) is not None]
    if kind == "compress" and given:
        raise RecipeError(
            f"load: {config.path} is a compress model folder; {', '.join(given)} are for a teacher to import "
            "(a Hugging Face decoder folder)"
        )
    if kind != "compress" and config.item_embeddings is None:
        raise RecipeError(
            f"load: {config.path} is not a compress model folder (config.json model_type {model_type!r}); "
            "to import it as a teacher, give item_embeddings (and for SLMRec adapter, projections, instruction, response)",
            "see docs/import.md",
        )
    return kind


def import_teacher(config: LoadConfig, num_items: int, max_len: int, run_ids: list[str] | None = None):
    """The imported teacher as a SequentialRecommender (errors name the file and the expected shape);
    `run_ids`: the original id of each internal item, for an item_ids file."""
    from compress.models.importers import import_decoder, read_item_ids

    tokenizer = config.tokenizer or config.path
    row_ids = read_item_ids(config.item_ids) if config.item_ids is not None else None
    return import_decoder(
        config.path,
        config.item_embeddings,
        num_items,
        max_len,
        projections=config.projections,
        adapter=config.adapter,
        instruction_ids=_token_ids(config.instruction, tokenizer),
        response_ids=_token_ids(config.response, tokenizer),
        num_layers=config.num_layers,
        row_ids=row_ids,
        run_ids=run_ids,
    )


def _token_ids(prompt: list[int] | str | None, tokenizer: Path) -> list[int] | None:
    if prompt is None or isinstance(prompt, list):
        return prompt
    from compress.models.importers import tokenize

    return tokenize(tokenizer, prompt)


def run(ctx: StageContext, config: LoadConfig, source: object | None) -> StageResult:
    kind = resolve_kind(config)
    ctx.model_folder.mkdir(parents=True, exist_ok=True)
    if kind != "compress":
        model = import_teacher(config, ctx.data.num_items, ctx.max_len, [str(i) for i in ctx.data.item_ids])
        for name in (CONFIG_FILE, WEIGHTS_FILE):
            (ctx.model_folder / name).unlink(missing_ok=True)  # a link to an earlier source: never write through it
        save_model(model, ctx.model_folder)
        c = model.config
        prompt = f", prompt {c.prefix_len} + {c.suffix_len} tokens" if c.prompted else ""
        ctx.log(f"imported a {kind} teacher from {config.path}: {c.num_layers} layers, hidden {c.hidden_size}, "
                f"item_dim {c.item_dim}{prompt}; {model.num_parameters():,} parameters")
        return StageResult(TorchArtifact(ctx.model_folder), {"source": str(config.path), "kind": kind})
    model = load_model(config.path)
    if model.config.num_items != ctx.data.num_items:
        raise RecipeError(
            f"load: {config.path} scores {model.config.num_items} items but the recipe's data has {ctx.data.num_items}",
            "load a model trained on the same dataset and preprocessing",
        )
    for name in (CONFIG_FILE, WEIGHTS_FILE):
        (ctx.model_folder / name).unlink(missing_ok=True)
        link_or_copy(config.path / name, ctx.model_folder / name)
    ctx.log(f"loaded {model.num_parameters():,} parameters from {config.path}")
    return StageResult(TorchArtifact(ctx.model_folder), {"source": str(config.path)})
