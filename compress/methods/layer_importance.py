"""How much each decoder layer changes its input: ShortGPT's Block Influence, and layer selection.

BI_l = 1 - mean over real positions of cos(x_l, x_{l+1}), where x_l is layer l's input and
x_{l+1} its output, measured on calibration sequences from the training split (a prompted model's
prompt tokens are positions too: the layers transform them as they do the items). A layer that
barely turns the hidden state (low BI) is the first candidate for removal.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from compress.data.batching import train_batches
from compress.data.sequences import SequenceData
from compress.methods.config import Selection
from compress.models import SequentialRecommender



@torch.no_grad()
def block_influence(
    model: SequentialRecommender,
    data: SequenceData,
    device: torch.device,
    batches: int = 8,
    batch_size: int = 64,
    seed: int = 0,
) -> list[float]:
    """Block Influence of every decoder layer, averaged over `batches` calibration batches."""
    model.eval().to(device)
    layers = model.backbone.layers
    totals = np.zeros(len(layers))
    counts = np.zeros(len(layers))
    captured: dict[int, torch.Tensor] = {}

    def grab_input(index: int):
        def hook(_module, args, kwargs):
            captured[index] = args[0] if args else kwargs["hidden_states"]

        return hook

    def grab_output(index: int):
        def hook(_module, _args, output):
            out = output[0] if isinstance(output, tuple) else output
            cosine = F.cosine_similarity(captured[index].float(), out.float(), dim=-1)
            real = current_mask.bool()
            totals[index] += (1 - cosine[real]).sum().item()
            counts[index] += real.sum().item()

        return hook

    handles = []
    for index, layer in enumerate(layers):
        handles.append(layer.register_forward_pre_hook(grab_input(index), with_kwargs=True))
        handles.append(layer.register_forward_hook(grab_output(index)))
    try:
        for step, batch in enumerate(train_batches(data, model.config.max_len, batch_size, np.random.default_rng(seed))):
            if step >= batches:
                break
            embeddings, current_mask, positions = model.decoder_inputs(batch.item_ids.to(device),
                                                                       batch.attention_mask.to(device))
            model.backbone(inputs_embeds=embeddings, attention_mask=current_mask, position_ids=positions, use_cache=False)
    finally:
        for handle in handles:
            handle.remove()
    return (totals / np.maximum(counts, 1)).tolist()


def select_layers(
    strategy: Selection, depth: int, keep: int, importance: list[float] | None = None
) -> list[int]:
    """Indices of the `keep` layers to keep out of `depth`, in order."""
    if not 1 <= keep <= depth:
        raise ValueError(f"cannot keep {keep} of {depth} layers")
    if strategy == "first":
        return list(range(keep))
    if strategy == "uniform":
        return sorted({int(round(i)) for i in np.linspace(0, depth - 1, keep)})
    if importance is None or len(importance) != depth:
        raise ValueError("importance selection needs one score per layer")
    most_important = np.argsort(importance)[::-1][:keep]
    return sorted(int(i) for i in most_important)
