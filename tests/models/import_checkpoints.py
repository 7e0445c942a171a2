"""The tiny teachers of compress/models/tiny_teachers.py in memory, and a reference forward that mirrors
SLMRec's LLM4Rec.predict (WujiangXu/SLMRec, model.py)."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from compress.models.tiny_teachers import (  # noqa: F401 (re-exported for the tests)
    DECODERS,
    HIDDEN,
    INSTRUCTION_IDS,
    RESPONSE_IDS,
    hf_decoder,
    item_table,
    slmrec_checkpoint,
)


@dataclass
class SLMRecTeacher:
    """An LLM4Rec (SLMRec's model.py) in memory, and where its pieces were written."""

    llama_model: nn.Module  # the PEFT-wrapped, cut LlamaModel (LoRA unmerged)
    input_embeds: nn.Embedding  # [items, 128], frozen
    input_proj: nn.Linear  # 128 -> hidden, with bias
    score: nn.Linear  # hidden -> 128, no bias
    instruct_ids: torch.Tensor  # [1, P]
    response_ids: torch.Tensor  # [1, S]
    decoder: Path
    adapter: Path
    items: Path
    projections: Path


def slmrec_teacher(root: Path, num_items: int, kept_layers: int = 2, item_dim: int = 128) -> SLMRecTeacher:
    """An SLMRec LLM4Rec (see compress/models/tiny_teachers.slmrec_checkpoint) and where its pieces are."""
    modules = slmrec_checkpoint(root, num_items, kept_layers, item_dim)
    return SLMRecTeacher(
        **modules, instruct_ids=torch.tensor([INSTRUCTION_IDS]), response_ids=torch.tensor([RESPONSE_IDS]),
        decoder=root / "decoder", adapter=root / "adapter", items=root / "item_embeds.pt",
        projections=root / "projections.pt",
    )


@torch.no_grad()
def slmrec_predict(
    teacher: SLMRecTeacher, inputs: torch.Tensor, inputs_mask: torch.Tensor, merged: bool,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """LLM4Rec.predict then the all-item scores of its forward (data_type 0): [B, items], columns in
    SLMRec's own ids (row r of input_embeds). `merged`: the LoRA merged into the weights first."""
    teacher = copy.copy(teacher)
    for name in ("llama_model", "input_embeds", "input_proj", "score"):
        setattr(teacher, name, copy.deepcopy(getattr(teacher, name)).to(dtype))
    llama_model = teacher.llama_model.merge_and_unload() if merged else teacher.llama_model
    bs = inputs.shape[0]
    embed_tokens = llama_model.get_input_embeddings()
    instruct_embeds = embed_tokens(teacher.instruct_ids).expand(bs, -1, -1)
    response_embeds = embed_tokens(teacher.response_ids).expand(bs, -1, -1)
    instruct_mask = torch.ones_like(teacher.instruct_ids).expand(bs, -1)
    response_mask = torch.ones_like(teacher.response_ids).expand(bs, -1)
    inputs = teacher.input_proj(teacher.input_embeds(inputs))
    inputs = torch.cat([instruct_embeds, inputs, response_embeds], dim=1)
    attention_mask = torch.cat([instruct_mask, inputs_mask, response_mask], dim=1)
    outputs = llama_model(inputs_embeds=inputs, attention_mask=attention_mask, return_dict=True)
    pooled_logits = teacher.score(outputs.last_hidden_state[:, -1])
    return pooled_logits @ teacher.input_embeds.weight.t()
