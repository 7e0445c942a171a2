"""Quantized PyTorch recommenders: how they are stored and how `load_model` rebuilds them.

Backends (recorded as `quantization` in config.json):
- `torch` int8: linear layers as torch.ao dynamic int8 (per-channel weights, CPU only);
- `fp16` / `bf16`: every weight in half precision;
- `bitsandbytes` int8 (LLM.int8), nf4, fp4: linear layers as bitsandbytes layers.
`item_table: true` also stores the item table(s) in int8; PyTorch dequantizes it at load, so
it saves disk, not memory, and its effect on ranking is measured on its own.

Storage: the float model's state dict, where an int8 tensor `name` comes with `name.scale`
(symmetric per row: scale = max|row| / 127), so int8 weights take a quarter of the bytes.
bitsandbytes 4-bit layers are stored in fp32 and quantized when loaded. Only linear layers whose
output width is a multiple of FOUR_BIT_BLOCK (32) and input width a multiple of FOUR_BIT_GROUP
(64) become 4-bit, on every device: bitsandbytes' CPU kernels on AVX512-BF16 CPUs pack 4-bit
weights in blocks of 32 output channels and 64-wide scale groups per row, and fail on other
widths; a model must load the same way on any machine. The others stay fp32 (the quantize
stage logs them).
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch
from torch import nn

from compress.errors import ArtifactError, CompressError
from compress.models.config import QuantizationSpec

SCALE_SUFFIX = ".scale"
FOUR_BIT_BLOCK = 32  # output channels per packed block
FOUR_BIT_GROUP = 64  # weights per absmax scale (bitsandbytes' default blocksize), along the input
_HALF = {"fp16": torch.float16, "bf16": torch.bfloat16}


def pack_state(model: nn.Module, spec: QuantizationSpec) -> dict[str, torch.Tensor]:
    """The state dict to save for `model` quantized as `spec` (int8 tensors carry a `.scale`)."""
    state = {k: v.detach().float().contiguous().cpu() for k, v in model.state_dict().items()}
    if spec.backend in _HALF:
        return {k: v.to(_HALF[spec.backend]) for k, v in state.items()}
    packed = set(_table_keys(model)) if spec.item_table else set()
    if spec.mode == "int8":
        packed |= {f"{name}.weight" for name in linear_names(model)}
    for key in sorted(packed):
        state[key], state[key + SCALE_SUFFIX] = quantize_rows(state[key])
    return state


def unpack_state(state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """(float32 state dict, per-row scales of the tensors that were stored in int8)."""
    scales = {k[: -len(SCALE_SUFFIX)]: v for k, v in state.items() if k.endswith(SCALE_SUFFIX)}
    plain = {k: v for k, v in state.items() if not k.endswith(SCALE_SUFFIX)}
    for key, scale in scales.items():
        plain[key] = plain[key].float() * scale[:, None]
    return {k: v.float() for k, v in plain.items()}, scales


def quantize_rows(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric per-row int8: (int8 values, float32 scales) with weight ≈ values * scale[:, None]."""
    scale = (weight.abs().amax(dim=1) / 127).clamp(min=1e-12)
    return torch.round(weight / scale[:, None]).clamp(-127, 127).to(torch.int8), scale.float()


def apply_runtime(
    model: nn.Module, spec: QuantizationSpec, scales: dict[str, torch.Tensor], device: torch.device
) -> nn.Module:
    """Turn a float model (holding the dequantized weights) into `spec`'s runtime layers on `device`."""
    if spec.backend in _HALF:
        return model.to(device=device, dtype=_HALF[spec.backend])
    if spec.backend == "torch":
        if device.type != "cpu":
            raise ArtifactError("torch int8 (torch.ao dynamic) runs on CPU only", "load it with device='cpu'")
        return _torch_dynamic_int8(model, scales)
    return _bitsandbytes(model, spec.mode).to(device)


def linear_names(model: nn.Module) -> list[str]:
    """Names of the nn.Linear modules (attention, MLP and item projections)."""
    return [name for name, module in model.named_modules() if isinstance(module, nn.Linear)]


def four_bit_skipped(model: nn.Module) -> list[str]:
    """Linear layers a 4-bit mode keeps in fp32: widths bitsandbytes' CPU packing cannot take."""
    layers = {name: model.get_submodule(name) for name in linear_names(model)}
    return [name for name, layer in layers.items()
            if layer.out_features % FOUR_BIT_BLOCK or layer.in_features % FOUR_BIT_GROUP]


@runtime_checkable
class StandsForFloats(Protocol):
    """A module of integer buffers (a compressed item table) that counts the float weights it replaces."""

    def float_parameters(self) -> int: ...


def count_parameters(model: nn.Module) -> int:
    """Weights of the architecture; quantized layers count the float weights they stand for."""
    total = 0
    for module in model.modules():
        if isinstance(module, torch.ao.nn.quantized.dynamic.Linear):
            bias = module.bias()
            total += module.weight().numel() + (bias.numel() if bias is not None else 0)
        if isinstance(module, StandsForFloats):  # a quantized item table: integer buffers, no parameters
            total += module.float_parameters()
        for param in module.parameters(recurse=False):
            shape = getattr(getattr(param, "quant_state", None), "shape", None)  # bitsandbytes 4-bit packs 2 per byte
            total += int(torch.Size(shape).numel()) if shape is not None else param.numel()
    return total


def _table_keys(model: nn.Module) -> list[str]:
    return [f"{name}.weight" for name, module in model.named_modules() if isinstance(module, nn.Embedding)]


def _torch_dynamic_int8(model: nn.Module, scales: dict[str, torch.Tensor]) -> nn.Module:
    """torch.ao dynamic int8 linears whose weights are exactly the stored int8 values and scales."""
    model = torch.ao.quantization.quantize_dynamic(
        model.cpu(), {nn.Linear: torch.ao.quantization.per_channel_dynamic_qconfig}, dtype=torch.qint8
    )
    for name, module in model.named_modules():
        if isinstance(module, torch.ao.nn.quantized.dynamic.Linear):
            scale = scales[f"{name}.weight"].double()
            exact = torch.quantize_per_channel(
                module.weight().dequantize(), scale, torch.zeros_like(scale, dtype=torch.int64), 0, torch.qint8
            )
            module.set_weight_bias(exact, module.bias())
    return model


def _bitsandbytes(model: nn.Module, mode: str) -> nn.Module:
    bnb = import_bitsandbytes()
    skipped = set(four_bit_skipped(model)) if mode != "int8" else set()
    for name in linear_names(model):
        if name in skipped:
            continue
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name)
        old: nn.Linear = getattr(parent, child)
        bias = old.bias is not None
        if mode == "int8":
            new = bnb.nn.Linear8bitLt(old.in_features, old.out_features, bias=bias, has_fp16_weights=False)
            new.weight = bnb.nn.Int8Params(old.weight.data.clone(), requires_grad=False, has_fp16_weights=False)
        else:
            new = bnb.nn.Linear4bit(
                old.in_features, old.out_features, bias=bias, quant_type=mode, compute_dtype=torch.float32
            )
            new.weight = bnb.nn.Params4bit(
                old.weight.data.clone(), requires_grad=False, quant_type=mode, blocksize=FOUR_BIT_GROUP
            )
        if bias:
            new.bias = nn.Parameter(old.bias.data.clone(), requires_grad=False)
        setattr(parent, child, new)
    return model


def import_bitsandbytes():
    """bitsandbytes, or a CompressError saying how to install it (never a silent fallback)."""
    try:
        import bitsandbytes
    except ImportError:
        raise CompressError(
            "the bitsandbytes backend needs the bitsandbytes package, which is not installed",
            "pip install 'compress[bnb]' (or 'compress[gpu]'), or choose backend: torch / onnxruntime",
        ) from None
    return bitsandbytes
