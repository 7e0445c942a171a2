"""Append-one-event scoring: the backbone over new items only, attending to cached keys/values.

The model anchors positions at the first real item (`position_ids = cumsum(mask) - 1`) and uses
RoPE, so the keys/values (RoPE applied) of positions already seen stay valid when items are
appended: a new item costs one position of work plus attention over the cache. `StepGraph` is
what the ONNX step model computes (decoder-with-past style, flat tensors in and out); the cache
itself is transformers' `DynamicCache`, filled from the past tensors, and attention is the
LlamaModel's own.

Inputs (B users, P cached slots, T new slots; every row's cache is left-padded to P):
    item_ids        [B, T]      new items, left-padded with 0 (every row has at least one)
    attention_mask  [B, P + T]  1 where a slot (cached, then new) holds a real item
    position_ids    [B, T]      RoPE position of each new item (the user's count of items so far)
    exclude_ids     [B, S]      items not to recommend (the history window; 0 is padding)
    past.{i}.key / past.{i}.value  [B, kv_heads, P, head_dim] for every layer i
Outputs: top_scores, top_ids [B, K] (best first, exclude_ids left out), scores [B, num_items + 1]
(state after the last new item), present.{i}.key / present.{i}.value [B, kv_heads, P + T, head_dim]
(past then new, the decoder-with-past contract) and new.{i}.key / new.{i}.value [B, kv_heads, T, head_dim]
(the new slots alone: a server that keeps the cache in place writes only these back).

Attention is transformers' own LlamaAttention (RoPE, projections, the cache update) with the
attention kernel `grouped_query_attention` registered in transformers' AttentionInterface: the
queries of a key/value head's group are stacked so the cached keys/values are used as they are
(sdpa would first copy them once per query head, `repeat_kv`, the largest cost of the step).
The cached slots of a row may come in any order (the mask says which are real; RoPE is applied
before caching), which lets a server keep each user's cache as a ring buffer.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch
from torch import nn
from transformers import AttentionInterface, DynamicCache

from compress.models.recommender import SequentialRecommender


def past_names(num_layers: int) -> list[str]:
    return [f"past.{i}.{kind}" for i in range(num_layers) for kind in ("key", "value")]


def present_names(num_layers: int) -> list[str]:
    return [f"present.{i}.{kind}" for i in range(num_layers) for kind in ("key", "value")]


def new_names(num_layers: int) -> list[str]:
    return [f"new.{i}.{kind}" for i in range(num_layers) for kind in ("key", "value")]


STEP_INPUTS = ("item_ids", "attention_mask", "position_ids", "exclude_ids")
STEP_OUTPUTS = ("top_scores", "top_ids", "scores")
STEP_ATTENTION = "compress_grouped_query"


def grouped_query_attention(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float | None = None,
    dropout: float = 0.0,
    **kwargs: object,
) -> tuple[torch.Tensor, None]:
    """Masked softmax attention with the queries of each key/value head stacked ([B, kv, groups * T, d]),
    so keys and values are never repeated per query head. `attention_mask`: boolean [B, 1, T, S]
    (True: attend). Returns [B, T, heads, d] as transformers' attention functions do."""
    batch, heads, new, dim = query.shape
    kv_heads, total = key.shape[1], key.shape[2]
    groups = heads // kv_heads
    scores = torch.matmul(query.reshape(batch, kv_heads, groups * new, dim), key.transpose(-1, -2))
    scores = scores.view(batch, kv_heads, groups, new, total) * (scaling if scaling is not None else dim**-0.5)
    if attention_mask is not None:
        scores = scores.masked_fill(~attention_mask.unsqueeze(2), float("-inf"))
    weights = torch.softmax(scores, dim=-1).view(batch, kv_heads, groups * new, total)
    output = torch.matmul(weights, value).view(batch, heads, new, dim)
    return output.transpose(1, 2).contiguous(), None


AttentionInterface.register(STEP_ATTENTION, grouped_query_attention)


@contextmanager
def step_attention(model: SequentialRecommender) -> Iterator[None]:
    """Run the backbone with `grouped_query_attention` (restores the model's own kernel after)."""
    config = model.backbone.config
    before = config._attn_implementation
    config._attn_implementation = STEP_ATTENTION
    try:
        yield
    finally:
        config._attn_implementation = before


def step_mask(attention_mask: torch.Tensor, new: int) -> torch.Tensor:
    """[B, 1, T, P + T] boolean mask: a new slot sees real slots up to itself (and always itself,
    so a padding row never attends to nothing)."""
    total = attention_mask.shape[1]
    slots = torch.ones_like(attention_mask).cumsum(-1) - 1  # [B, P + T]: 0..P+T-1, traced with dynamic shapes
    queries = slots[:, total - new :]  # [B, T]
    keys = slots.unsqueeze(1)  # [B, 1, P + T]
    causal = keys <= queries.unsqueeze(-1)  # [B, T, P + T]
    real = attention_mask.bool().unsqueeze(1)
    return ((causal & real) | (keys == queries.unsqueeze(-1))).unsqueeze(1)


class StepGraph(nn.Module):
    """The step model (see the module doc): new items + past keys/values -> top-K, scores, present."""

    def __init__(self, model: SequentialRecommender, top_k: int) -> None:
        super().__init__()
        self.model = model
        self.top_k = top_k
        self.num_layers = model.config.num_layers

    def forward(
        self,
        item_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        position_ids: torch.Tensor,
        exclude_ids: torch.Tensor,
        *past: torch.Tensor,
    ) -> tuple[torch.Tensor, ...]:
        scores, present = self.advance(item_ids, attention_mask, position_ids, list(past))
        unseen = scores.scatter(1, exclude_ids, float("-inf"))
        top_scores, top_ids = unseen.topk(self.top_k, dim=-1)
        new = item_ids.shape[1]
        return (top_scores, top_ids, scores, *present, *[p[:, :, p.shape[2] - new :] for p in present])

    def advance(
        self,
        item_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        position_ids: torch.Tensor,
        past: list[torch.Tensor],
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Scores after the last new item, and the present keys/values (flat: key, value per layer)."""
        model = self.model
        cache = DynamicCache(ddp_cache_data=[(past[2 * i], past[2 * i + 1]) for i in range(self.num_layers)])
        embeddings = model.embedding_dropout(model.input_proj(model.item_embeddings(item_ids)))
        with step_attention(model):
            outputs = model.backbone(
                inputs_embeds=embeddings,
                attention_mask=step_mask(attention_mask, item_ids.shape[1]),
                position_ids=position_ids,
                cache=cache,
                use_cache=True,
            )
        state = model.output_proj(outputs.last_hidden_state[:, -1])
        present = []
        for layer in cache.layers:
            present += [layer.keys, layer.values]
        return model.score(state), present


def empty_past(model: SequentialRecommender, batch: int) -> list[torch.Tensor]:
    """A cache holding no position: per layer a key and a value of shape [batch, kv_heads, 0, head_dim]."""
    c = model.config
    shape = (batch, c.num_kv_heads, 0, c.head_dim)
    param = next(model.parameters())
    return [torch.zeros(shape, dtype=param.dtype, device=param.device) for _ in range(2 * c.num_layers)]
