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
(state after the last new item), new.{i}.key / new.{i}.value [B, kv_heads, T, head_dim]: the keys and
values of the new slots alone. The present state is the past followed by these; the caller owns the
cache and appends them (compress/serve/kv_store.py writes them into each user's slot in place), so
the graph never copies the cache (a `present` output would be a copy of the whole past per call).

Attention is transformers' own LlamaAttention (RoPE, projections, the cache update). The cache is
transformers' DynamicCache with `PastNewLayer` layers, which hand the attention the cached and the
new keys/values apart instead of concatenating them, and the attention kernel is
`grouped_query_attention`, registered in transformers' AttentionInterface: it attends over both
parts and stacks the queries of a key/value head's group so the cached keys/values are used as
they are (sdpa would copy them once per query head, `repeat_kv`). The cached slots of a row may
come in any order (the mask says which are real; RoPE is applied before caching), which lets a
server keep each user's cache as a ring buffer.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator, NamedTuple

import torch
from torch import nn
from transformers import AttentionInterface, DynamicCache
from transformers.cache_utils import DynamicLayer

from compress.models.recommender import SequentialRecommender


def past_names(num_layers: int) -> list[str]:
    return [f"past.{i}.{kind}" for i in range(num_layers) for kind in ("key", "value")]


def new_names(num_layers: int) -> list[str]:
    return [f"new.{i}.{kind}" for i in range(num_layers) for kind in ("key", "value")]


STEP_INPUTS = ("item_ids", "attention_mask", "position_ids", "exclude_ids")
STEP_OUTPUTS = ("top_scores", "top_ids", "scores")
STEP_ATTENTION = "compress_grouped_query"


class PastAndNew(NamedTuple):
    """Keys (or values) of the cached slots [B, kv, P, d] and of the new ones [B, kv, T, d], not concatenated."""

    past: torch.Tensor
    new: torch.Tensor


class PromptPastAndNew(NamedTuple):
    """As PastAndNew, behind a prompted model's constant instruction keys (or values) [B, kv, P0, d]."""

    prompt: torch.Tensor
    past: torch.Tensor
    new: torch.Tensor


class PastNewLayer(DynamicLayer):
    """A DynamicLayer holding a given past that returns past and new keys/values apart (`PastAndNew`)
    from `update`, for `grouped_query_attention`; `new_keys`/`new_values` keep what was appended."""

    def __init__(
        self, keys: torch.Tensor, values: torch.Tensor,
        prompt: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> None:
        super().__init__()
        self.keys, self.values, self.device, self.is_initialized = keys, values, keys.device, True
        self.prompt = prompt  # a prompted model's instruction keys/values, attended to before the past
        self.new_keys: torch.Tensor | None = None
        self.new_values: torch.Tensor | None = None

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args: object, **kwargs: object) -> tuple:
        self.new_keys, self.new_values = key_states, value_states
        if self.prompt is not None:
            return (PromptPastAndNew(self.prompt[0], self.keys, key_states),
                    PromptPastAndNew(self.prompt[1], self.values, value_states))
        return PastAndNew(self.keys, key_states), PastAndNew(self.values, value_states)


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
    so keys and values are never repeated per query head. `key`/`value`: tensors [B, kv, S, d], or
    `PastAndNew` parts (S = P + T: attended to as if concatenated, without the copy). `attention_mask`:
    boolean [B, 1, T, S] (True: attend). Returns [B, T, heads, d] as transformers' attention functions do."""
    batch, heads, new, dim = query.shape
    keys = list(key) if isinstance(key, (PastAndNew, PromptPastAndNew)) else [key]
    values = list(value) if isinstance(value, (PastAndNew, PromptPastAndNew)) else [value]
    kv_heads = keys[0].shape[1]
    groups = heads // kv_heads
    stacked = query.reshape(batch, kv_heads, groups * new, dim)
    scores = torch.cat([torch.matmul(stacked, k.transpose(-1, -2)) for k in keys], dim=-1)
    total = scores.shape[-1]
    scores = scores.view(batch, kv_heads, groups, new, total) * (scaling if scaling is not None else dim**-0.5)
    if attention_mask is not None:
        scores = scores.masked_fill(~attention_mask.unsqueeze(2), float("-inf"))
    weights = torch.softmax(scores, dim=-1).view(batch, kv_heads, groups * new, total)
    if len(keys) == 1:
        output = torch.matmul(weights, values[0])
    elif len(keys) == 2:
        past = keys[0].shape[2]
        output = torch.matmul(weights[..., :past], values[0]) + torch.matmul(weights[..., past:], values[1])
    else:  # prompt, past, new
        prompt, past = keys[0].shape[2], keys[1].shape[2]
        output = (torch.matmul(weights[..., :prompt], values[0])
                  + torch.matmul(weights[..., prompt : prompt + past], values[1])
                  + torch.matmul(weights[..., prompt + past :], values[2]))
    return output.view(batch, heads, new, dim).transpose(1, 2).contiguous(), None


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
    """The step model (see the module doc): new items + past keys/values -> top-K, scores, new keys/values."""

    def __init__(self, model: SequentialRecommender, top_k: int) -> None:
        super().__init__()
        self.model = model
        self.top_k = top_k
        self.num_layers = model.config.num_layers
        # a prompted model (an imported SLMRec teacher): the instruction's keys/values are the same for every
        # user (it attends to itself alone, at positions 0..P0-1), constants of the graph; the cache holds
        # the items only, and the response is run after the new items on every call, its keys/values dropped
        self.prompt_len = model.config.prefix_len
        self.suffix_len = model.config.suffix_len
        if self.prompt_len:
            for i, (key, value) in enumerate(_prompt_keys_values(model)):
                self.register_buffer(f"prompt_key_{i}", key)
                self.register_buffer(f"prompt_value_{i}", value)

    def forward(
        self,
        item_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        position_ids: torch.Tensor,
        exclude_ids: torch.Tensor,
        *past: torch.Tensor,
    ) -> tuple[torch.Tensor, ...]:
        scores, new = self.advance(item_ids, attention_mask, position_ids, list(past))
        unseen = scores.scatter(1, exclude_ids, float("-inf"))
        top_scores, top_ids = unseen.topk(self.top_k, dim=-1)
        return (top_scores, top_ids, scores, *new)

    def advance(
        self,
        item_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        position_ids: torch.Tensor,
        past: list[torch.Tensor],
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Scores after the last new item, and the new slots' keys/values (flat: key, value per layer; the
        present state is `past` followed by them, see `append`)."""
        model = self.model
        batch, items = item_ids.shape
        cache = DynamicCache()
        cache.layers = [PastNewLayer(past[2 * i], past[2 * i + 1], self._prompt(i, batch)) for i in range(self.num_layers)]
        embeddings = model.embedding_dropout(model.input_proj(model.item_embeddings(item_ids)))
        if self.prompt_len or self.suffix_len:
            position_ids = position_ids + self.prompt_len  # the instruction comes first
            ones = attention_mask.new_ones
            if self.suffix_len:  # the response after the new items, at the positions after the last one
                suffix = model.prompt_suffix.to(embeddings.dtype).expand(batch, -1, -1)
                embeddings = torch.cat([embeddings, suffix], dim=1)
                steps = torch.arange(1, self.suffix_len + 1, device=position_ids.device)
                position_ids = torch.cat([position_ids, position_ids[:, -1:] + steps], dim=1)
            attention_mask = torch.cat([ones(batch, self.prompt_len), attention_mask, ones(batch, self.suffix_len)], dim=1)
        with step_attention(model):
            outputs = model.backbone(
                inputs_embeds=embeddings,
                attention_mask=step_mask(attention_mask, embeddings.shape[1]),
                position_ids=position_ids,
                cache=cache,
                use_cache=True,
            )
        state = model.output_proj(outputs.last_hidden_state[:, -1])
        new = []
        for layer in cache.layers:  # the items' keys/values; the response's are recomputed next time
            new += [layer.new_keys[:, :, :items], layer.new_values[:, :, :items]]
        return model.score(state), new

    def _prompt(self, layer: int, batch: int) -> tuple[torch.Tensor, torch.Tensor] | None:
        if not self.prompt_len:
            return None
        key, value = getattr(self, f"prompt_key_{layer}"), getattr(self, f"prompt_value_{layer}")
        return key.expand(batch, -1, -1, -1), value.expand(batch, -1, -1, -1)


@torch.no_grad()
def _prompt_keys_values(model: SequentialRecommender) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Each layer's keys and values [1, kv_heads, P0, head_dim] (RoPE applied) of the instruction alone."""
    prefix = model.prompt_prefix[None]
    positions = torch.arange(prefix.shape[1], device=prefix.device)[None]
    outputs = model.backbone(inputs_embeds=prefix, position_ids=positions, use_cache=True)
    cache = outputs.past_key_values
    return [(layer.keys.detach().clone(), layer.values.detach().clone()) for layer in cache.layers]


def append(past: list[torch.Tensor], new: list[torch.Tensor]) -> list[torch.Tensor]:
    """The present state: each past key/value followed by the new slots'."""
    return [torch.cat([p, n], dim=2) for p, n in zip(past, new)]


def empty_past(model: SequentialRecommender, batch: int) -> list[torch.Tensor]:
    """A cache holding no position: per layer a key and a value of shape [batch, kv_heads, 0, head_dim]."""
    c = model.config
    shape = (batch, c.num_kv_heads, 0, c.head_dim)
    param = next(model.parameters())
    return [torch.zeros(shape, dtype=param.dtype, device=param.device) for _ in range(2 * c.num_layers)]
