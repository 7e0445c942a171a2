"""The backbone's state at the last position only, without computing the last layer at the others.

Scoring the next item needs one state per sequence: the last position's. Every layer but the last
must run at all positions (the last layer attends to their keys and values), but the last layer's
queries, attention output, residual and MLP are needed at the last position alone. Running that
layer on one row instead of L saves about one layer's work of a request (a third of a 3-layer
student at max_len 200), with the same result up to float rounding: the parity tests compare it
with the full backbone.

The layers are transformers' own modules (LlamaDecoderLayer, its projections and norms); what this
file re-states is the order LlamaModel.forward calls them in, and the last layer's attention for
one query, with the attention kernel the model is configured for (SDPA by default, which the dynamo
exporter writes as ONNX's fused Attention op, as in the other layers). Padding is on the left, so
the last position is always a real item.
"""

from __future__ import annotations

import torch
from transformers import LlamaModel
from transformers.masking_utils import create_causal_mask
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
from transformers.models.llama.modeling_llama import (
    LlamaDecoderLayer,
    apply_rotary_pos_emb,
    eager_attention_forward,
)


def last_position_state(
    backbone: LlamaModel, embeddings: torch.Tensor, attention_mask: torch.Tensor, position_ids: torch.Tensor
) -> torch.Tensor:
    """[B, 1, hidden]: the backbone's final (normed) hidden state at the last position of each row."""
    hidden = embeddings
    position_embeddings = backbone.rotary_emb(hidden, position_ids=position_ids)
    *before, last = backbone.layers[: backbone.config.num_hidden_layers]
    if before:
        causal_mask = create_causal_mask(
            config=backbone.config, inputs_embeds=hidden, attention_mask=attention_mask, cache=None,
            position_ids=position_ids,
        )
        for layer in before:
            hidden = layer(hidden, attention_mask=causal_mask, position_ids=position_ids,
                           position_embeddings=position_embeddings)
    return backbone.norm(_last_query_layer(last, hidden, position_embeddings, attention_mask))


def _last_query_layer(
    layer: LlamaDecoderLayer, hidden: torch.Tensor, position_embeddings: tuple[torch.Tensor, torch.Tensor],
    attention_mask: torch.Tensor,
) -> torch.Tensor:
    """The decoder layer's output at the last position ([B, 1, hidden]), its keys and values from all positions."""
    attention = layer.self_attn
    normed = layer.input_layernorm(hidden)
    batch, length, _ = normed.shape
    query = attention.q_proj(normed[:, -1:]).view(batch, 1, -1, attention.head_dim).transpose(1, 2)
    key = attention.k_proj(normed).view(batch, length, -1, attention.head_dim).transpose(1, 2)
    value = attention.v_proj(normed).view(batch, length, -1, attention.head_dim).transpose(1, 2)
    cos, sin = position_embeddings
    query, _ = apply_rotary_pos_emb(query, query, cos[:, -1:], sin[:, -1:])
    key, _ = apply_rotary_pos_emb(key, key, cos, sin)
    # the last query sees every real item (all precede it); a row always sees its own last slot
    visible = attention_mask.bool() | (torch.arange(length, device=attention_mask.device) == length - 1)
    bias = torch.zeros(visible.shape, dtype=query.dtype, device=query.device)
    bias = bias.masked_fill(~visible, torch.finfo(query.dtype).min)[:, None, None, :]
    kernel = ALL_ATTENTION_FUNCTIONS.get_interface(attention.config._attn_implementation, eager_attention_forward)
    attended, _ = kernel(attention, query, key, value, bias, scaling=attention.scaling, dropout=0.0)
    residual = hidden[:, -1:] + attention.o_proj(attended.reshape(batch, 1, -1))
    return residual + layer.mlp(layer.post_attention_layernorm(residual))
