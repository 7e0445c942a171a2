"""Analytic FLOPs of one forward pass of a SequentialRecommender, counted from its config.

Counted: every matrix product, 2 FLOPs per multiply-add (the usual convention; elementwise work
such as RMSNorm, RoPE, softmax and SiLU is left out: it is a few percent at these widths).
One *sequence* is one request: every layer but the last runs over all `length` positions (the
padded length in the benchmark's fixed mode), attention as computed with a padding/causal mask (the
full length x length square per head, as SDPA and ONNX Attention compute it); the last layer
computes keys and values at every position but its query, attention, output projection and MLP at
the last position alone (compress/models/last_query.py); then that position is projected and
scored against every item (num_items + 1 rows, padding included).
"""

from __future__ import annotations

from compress.models.config import RecommenderConfig


def flops_per_sequence(config: RecommenderConfig, length: int | None = None) -> dict[str, int]:
    """FLOPs of scoring one sequence of `length` items (default: max_len), by part and in total; a
    prompted model's prompt tokens count as positions of the decoder.

    Parts: `input_projection` (item_dim -> hidden, when they differ), `attention_projections`
    (q, k, v, o; grouped-query k/v are num_kv_heads wide), `attention_scores` (QK^T and the
    weighted sum of V), `mlp` (gate, up, down), `output_projection` (hidden -> item_dim at the
    last position), `scoring` (the last state against the item table).
    """
    items = config.max_len if length is None else length
    length = items + config.prefix_len + config.suffix_len  # a prompt (imported teacher) adds fixed positions
    hidden, item_dim, layers = config.hidden_size, config.item_dim, config.num_layers
    heads, kv_heads, head_dim = config.num_heads, config.num_kv_heads, config.head_dim
    projected = item_dim != hidden or config.input_bias
    full = layers - 1  # layers run at every position; the last one's queries run at one
    parts = {
        "input_projection": 2 * items * item_dim * hidden if projected else 0,
        "attention_projections": 2 * hidden * head_dim * (
            full * length * (2 * heads + 2 * kv_heads) + 2 * heads + length * 2 * kv_heads),
        "attention_scores": 2 * 2 * heads * head_dim * (full * length * length + length),
        "mlp": 3 * 2 * hidden * config.intermediate_size * (full * length + 1),
        "output_projection": 2 * hidden * item_dim if item_dim != hidden else 0,
        "scoring": 2 * item_dim * (config.num_items + 1),
    }
    return {**parts, "total": sum(parts.values())}


def achieved_gflops(flops: int, seconds_per_sequence: float) -> float:
    """GFLOP/s of an engine that scores one sequence of `flops` in `seconds_per_sequence`."""
    return flops / seconds_per_sequence / 1e9
