"""Tiny random teachers "trained elsewhere", written the way their own code writes them, for the import
tests and the import example (docs/import.md): a Hugging Face decoder folder (Llama, Qwen2 with q/k/v
biases, Mistral) with an item table, and an SLMRec/E4SRec checkpoint.

    python -m compress.models.tiny_teachers artifacts/import_teacher [--items 500] [--kind qwen2] [--layers 4]

writes <folder>/decoder (save_pretrained), <folder>/items.safetensors [items, hidden] and, with
--slmrec, <folder>/slmrec/{decoder,adapter,item_embeds.pt,projections.pt} (an LLM4Rec keeping `--layers`
of its decoder's layers + 1). Random weights: what they
are for is running the stack, never their metrics.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import nn

DECODERS = ("llama", "qwen2", "mistral")
HIDDEN = 32


def hf_decoder(kind: str, folder: Path, layers: int = 2, seed: int = 0) -> nn.Module:
    """A random tiny decoder of `kind` saved with save_pretrained into `folder`; returned in eval mode."""
    from transformers import LlamaConfig, LlamaModel, MistralConfig, MistralModel, Qwen2Config, Qwen2Model

    torch.manual_seed(seed)
    common = dict(
        vocab_size=64, hidden_size=HIDDEN, intermediate_size=48, num_hidden_layers=layers, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=128, rms_norm_eps=1e-6,
    )
    if kind == "llama":
        model = LlamaModel(LlamaConfig(**common, rope_theta=500.0))
    elif kind == "qwen2":
        model = Qwen2Model(Qwen2Config(**common))
        with torch.no_grad():  # Qwen2 initialises its q/k/v biases to zero: make them count
            for layer in model.layers:
                for proj in (layer.self_attn.q_proj, layer.self_attn.k_proj, layer.self_attn.v_proj):
                    proj.bias.normal_(std=0.5)
    elif kind == "mistral":
        model = MistralModel(MistralConfig(**common, sliding_window=96))
    else:
        raise ValueError(kind)
    with torch.no_grad():  # larger than the init's std 0.02, so a wrong position or bias shows
        for name, param in model.named_parameters():
            if "norm" not in name and "bias" not in name:
                param.normal_(std=0.2)
    model.save_pretrained(str(folder))
    return model.eval()


def item_table(num_items: int, dim: int, path: Path, seed: int = 1, padding_row: bool = False) -> torch.Tensor:
    """A random item table saved to `path` (.safetensors / .pt / .npy); returned with rows = the file's."""
    generator = torch.Generator().manual_seed(seed)
    table = torch.randn(num_items + int(padding_row), dim, generator=generator)
    if path.suffix == ".safetensors":
        save_file({"weight": table}, str(path))
    elif path.suffix == ".npy":
        import numpy as np

        np.save(path, table.numpy())
    else:
        torch.save(table, path)
    return table


INSTRUCTION_IDS = [5, 17, 3, 40]  # stand-ins for a tokenized instruction and response
RESPONSE_IDS = [9, 2]


def randomize_lora(peft_model: nn.Module, seed: int) -> nn.Module:
    """Random LoRA weights (peft initialises B to zero, which would make the adapter a no-op)."""
    torch.manual_seed(seed)
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_" in name:
                param.normal_(std=0.3)
    return peft_model


def slmrec_checkpoint(root: Path, num_items: int, kept_layers: int = 2, item_dim: int = 128) -> dict[str, nn.Module]:
    """An SLMRec LLM4Rec's pieces, built as LLM4Rec.__init__ builds them (WujiangXu/SLMRec, model.py) and
    written under `root`: LlamaModel.from_pretrained of `root/decoder`, its layers cut to the first
    `kept_layers` ("trune"), get_peft_model(LoraConfig(task_type='FEATURE_EXTRACTION', ...)) with random LoRA
    weights (a trained adapter's B is not zero) saved to `root/adapter`; the item table [items, item_dim] in
    `root/item_embeds.pt`; input_proj (with bias) and score (without) in `root/projections.pt`, named as in
    LLM4Rec's state dict. Returns the in-memory modules (llama_model unmerged, input_embeds, input_proj, score)."""
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaModel

    root = Path(root)
    hf_decoder("llama", root / "decoder", layers=kept_layers + 1)
    llama = LlamaModel.from_pretrained(str(root / "decoder"), local_files_only=True, dtype=torch.float32)
    llama.layers = nn.ModuleList(llama.layers[:kept_layers])
    config = LoraConfig(
        task_type="FEATURE_EXTRACTION", r=4, lora_alpha=8, lora_dropout=0.0,
        target_modules=["q_proj", "k_proj", "v_proj", "o_proj"], bias="none",
    )
    peft_model = randomize_lora(get_peft_model(llama, config), seed=3)
    peft_model.save_pretrained(str(root / "adapter"))
    input_embeds = nn.Embedding.from_pretrained(torch.randn(num_items, item_dim), freeze=True)
    torch.save(input_embeds.weight.data.clone(), root / "item_embeds.pt")
    input_proj = nn.Linear(item_dim, HIDDEN)
    score = nn.Linear(HIDDEN, item_dim, bias=False)
    with torch.no_grad():
        input_proj.bias.normal_(std=0.5)
    torch.save({"input_proj.weight": input_proj.weight.data, "input_proj.bias": input_proj.bias.data,
                "score.weight": score.weight.data, "input_embeds.weight": input_embeds.weight.data},
               root / "projections.pt")
    return {"llama_model": peft_model.eval(), "input_embeds": input_embeds, "input_proj": input_proj, "score": score}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--items", type=int, default=500, help="catalogue size (the recipe's data must have as many)")
    parser.add_argument("--kind", choices=DECODERS, default="qwen2")
    parser.add_argument("--layers", type=int, default=4, help="decoder layers (an SLMRec checkpoint keeps as many)")
    parser.add_argument("--slmrec", action="store_true", help="also an SLMRec checkpoint (needs peft)")
    args = parser.parse_args(argv)
    hf_decoder(args.kind, args.folder / "decoder", layers=args.layers)
    item_table(args.items, HIDDEN, args.folder / "items.safetensors")
    if args.slmrec:
        slmrec_checkpoint(args.folder / "slmrec", args.items, kept_layers=args.layers)
    print(f"wrote a tiny {args.kind} teacher for {args.items} items to {args.folder}")


if __name__ == "__main__":
    main()
