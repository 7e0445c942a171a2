"""A row-wise quantized item table stored compressed inside an ONNX graph (torch-free).

The exporter and onnxruntime's optimiser fold every computation on constants, so a graph
exported from a model with a quantized table would hold the dequantized float table. After
export, `store_packed_table` replaces that float initializer (and any transposed copy) with the
packed integer codes, the fp16 per-row scales and offsets, and the nodes that dequantize them:

    codes (uint8 words) ─Cast→int64─[bytes → word: *256^k, ReduceSum]─Div/Mod→ values ─Cast→float─ * scale + offset
    [─Concat the row groups─Gather(order from the packed membership, by CumSum)]  ──► the table

The file then holds the compressed table; onnxruntime folds the dequantization once when it
loads the model (in memory), so scoring runs exactly as the float graph. `PackedTable.from_graph`
reads the packed table back (the onnxruntime quantize stage re-applies it after its own folding).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from compress.errors import ArtifactError
from compress.models.packing import membership_bits, word_layout
from compress.runs.files import atomic_write

PREFIX = "item_table."
METADATA_KEY = "compress.item_table"


@dataclass
class PackedGroup:
    bits: int
    codes: np.ndarray  # [rows, dim * bits / 8] uint8
    scale: np.ndarray  # [rows] float16
    offset: np.ndarray  # [rows] float16


@dataclass
class PackedTable:
    """Row groups of packed codes and the rows' groups: what a QuantizedTable stores, in numpy."""

    dim: int
    groups: list[PackedGroup]
    membership: np.ndarray | None  # [1, bytes] uint8: the group of every row, packed (membership_bits each)

    @property
    def num_rows(self) -> int:
        return sum(len(g.scale) for g in self.groups)

    def group_of_row(self) -> np.ndarray:
        """[rows] int64: the group each row is stored in."""
        if self.membership is None:
            return np.zeros(self.num_rows, dtype=np.int64)
        width = membership_bits(len(self.groups))
        values = unpack(self.membership, width, self.membership.shape[1] * 8 // width)
        return values[0, : self.num_rows].astype(np.int64)

    def dequantize(self) -> np.ndarray:
        """The float32 table, computed as the graph (and QuantizedTable.weight) computes it."""
        parts = [unpack(g.codes, g.bits, self.dim).astype(np.float32) * g.scale.astype(np.float32)[:, None]
                 + g.offset.astype(np.float32)[:, None] for g in self.groups]
        table = np.concatenate(parts)
        if self.membership is None:
            return table
        groups = self.group_of_row()
        order = np.zeros(len(groups), dtype=np.int64)
        start = 0
        for g in range(len(self.groups)):
            member = groups == g
            order[member] = start + np.arange(int(member.sum()))
            start += int(member.sum())
        return table[order]

    def nbytes(self) -> int:
        arrays = [a for g in self.groups for a in (g.codes, g.scale, g.offset)]
        return int(sum(a.nbytes for a in arrays) + (self.membership.nbytes if self.membership is not None else 0))

    @classmethod
    def from_module(cls, table) -> "PackedTable":
        """From a compress.models.item_tables.QuantizedTable."""
        groups = [PackedGroup(bits, codes.cpu().numpy(), scale.cpu().numpy(), offset.cpu().numpy())
                  for bits, codes, scale, offset in table.groups()]
        membership = table.membership.cpu().numpy() if len(groups) > 1 else None
        return cls(table.dim, groups, membership)

    @classmethod
    def from_graph(cls, model: onnx.ModelProto) -> "PackedTable | None":
        """The packed table `store_packed_table` wrote into `model`, or None."""
        meta = {p.key: p.value for p in model.metadata_props}.get(METADATA_KEY)
        if meta is None:
            return None
        spec = json.loads(meta)
        arrays = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer if t.name.startswith(PREFIX)}
        groups = [PackedGroup(bits, arrays[f"{PREFIX}codes_{i}"], arrays[f"{PREFIX}scale_{i}"].ravel(),
                              arrays[f"{PREFIX}offset_{i}"].ravel()) for i, bits in enumerate(spec["group_bits"])]
        return cls(spec["dim"], groups, arrays.get(f"{PREFIX}membership"))


def unpack(codes: np.ndarray, bits: int, dim: int) -> np.ndarray:
    """[rows, dim] int64 values of packed codes (compress.models.item_tables.pack_codes's layout)."""
    per_word, nbytes = word_layout(bits)
    parts = codes.astype(np.int64).reshape(codes.shape[0], -1, nbytes)
    words = (parts << (np.arange(nbytes, dtype=np.int64) * 8)).sum(-1)
    values = (words[..., None] >> (np.arange(per_word, dtype=np.int64) * bits)) & ((1 << bits) - 1)
    return values.reshape(codes.shape[0], dim)


def store_packed_table(path: Path, packed: PackedTable) -> int:
    """Replace the float table in the model at `path` by `packed` and its dequantization; return bytes saved."""
    model = onnx.load(str(path))
    graph = model.graph
    table = packed.dequantize()
    plain, transposed = [], []
    for tensor in graph.initializer:
        if tuple(tensor.dims) in (table.shape, table.shape[::-1]) and tensor.data_type == TensorProto.FLOAT:
            value = numpy_helper.to_array(tensor)
            if value.shape == table.shape and np.allclose(value, table, rtol=0, atol=1e-6):
                plain.append(tensor.name)
            elif value.shape == table.shape[::-1] and np.allclose(value, table.T, rtol=0, atol=1e-6):
                transposed.append(tensor.name)
    if not plain and not transposed:
        raise ArtifactError(f"{path}: no initializer holds the item table to compress")
    removed = set(plain) | set(transposed)
    saved = sum(t.ByteSize() for t in graph.initializer if t.name in removed)
    kept = [t for t in graph.initializer if t.name not in removed]
    del graph.initializer[:]
    graph.initializer.extend(kept + _packed_initializers(packed))
    taken = {t.name for t in graph.initializer} | {o for n in graph.node for o in (*n.output, n.name)}
    stem = next(f"{PREFIX}dq{k}." for k in range(len(taken) + 1) if not any(x.startswith(f"{PREFIX}dq{k}.") for x in taken))
    nodes = _dequantize_nodes(packed, stem)
    nodes += [helper.make_node("Identity", [f"{stem}table"], [name], name=f"{stem}as_{name}") for name in plain]
    nodes += [helper.make_node("Transpose", [f"{stem}table"], [name], name=f"{stem}as_{name}", perm=[1, 0])
              for name in transposed]
    ordered = nodes + list(graph.node)
    del graph.node[:]
    graph.node.extend(ordered)
    inputs = [i for i in graph.input if i.name not in removed]
    del graph.input[:]
    graph.input.extend(inputs)
    spec = {"dim": packed.dim, "group_bits": [g.bits for g in packed.groups]}
    helper.set_model_props(model, {**{p.key: p.value for p in model.metadata_props}, METADATA_KEY: json.dumps(spec)})
    atomic_write(Path(path), lambda tmp: onnx.save(model, str(tmp)))
    return int(saved - packed.nbytes())


def _packed_initializers(packed: PackedTable) -> list[TensorProto]:
    arrays = {}
    for i, group in enumerate(packed.groups):
        arrays |= {f"codes_{i}": group.codes, f"scale_{i}": group.scale[:, None], f"offset_{i}": group.offset[:, None]}
    if packed.membership is not None:
        arrays["membership"] = packed.membership
    return [numpy_helper.from_array(np.ascontiguousarray(value), PREFIX + name) for name, value in arrays.items()]


def _dequantize_nodes(packed: PackedTable, stem: str) -> list[onnx.NodeProto]:
    """Nodes computing the float table `<stem>table` from the packed initializers (node names start with `stem`)."""
    nodes: list[onnx.NodeProto] = []

    def node(op: str, inputs: list[str], **attrs) -> str:
        name = f"{stem}n{len(nodes)}"
        nodes.append(helper.make_node(op, inputs, [name], name=name, **attrs))
        return name

    def constant(value) -> str:
        return node("Constant", [], value=numpy_helper.from_array(np.asarray(value, dtype=np.int64)))

    def unpacked(codes: str, bits: int, width: int) -> str:
        """[rows, width] int64 codes of the packed uint8 [rows, bytes] `codes` (pack_codes's layout):
        each word's bytes summed as base-256 digits, then code p = (word // 2^(p*bits)) mod 2^bits."""
        per_word, nbytes = word_layout(bits)
        values = node("Cast", [codes], to=TensorProto.INT64)
        if nbytes > 1:
            digits = node("Mul", [node("Reshape", [values, constant([0, -1, nbytes])]), constant(256 ** np.arange(nbytes))])
            values = node("ReduceSum", [digits, constant([2])], keepdims=0)
        if per_word > 1:
            shifted = node("Div", [node("Unsqueeze", [values, constant([2])]), constant(1 << (np.arange(per_word) * bits))])
            values = node("Reshape", [node("Mod", [shifted, constant(1 << bits)]), constant([-1, width])])
        return values

    parts = []
    for i, group in enumerate(packed.groups):
        values = unpacked(f"{PREFIX}codes_{i}", group.bits, packed.dim)
        scaled = node("Mul", [node("Cast", [values], to=TensorProto.FLOAT), node("Cast", [f"{PREFIX}scale_{i}"], to=TensorProto.FLOAT)])
        parts.append(node("Add", [scaled, node("Cast", [f"{PREFIX}offset_{i}"], to=TensorProto.FLOAT)]))
    if len(parts) == 1:
        table = parts[0]
    else:  # row r's place in the concatenated groups: its group's start + the rows of that group before it
        width = membership_bits(len(parts))
        padded_rows = packed.membership.shape[1] * 8 // width
        flat = node("Reshape", [unpacked(f"{PREFIX}membership", width, padded_rows), constant([-1])])
        groups = node("Slice", [flat, constant([0]), constant([packed.num_rows])])
        terms, start = [], 0
        for i, group in enumerate(packed.groups):
            member = node("Cast", [node("Equal", [groups, constant(i)])], to=TensorProto.INT64)
            place = node("Add", [node("CumSum", [member, constant(0)]), constant(start - 1)])
            terms.append(node("Mul", [member, place]))
            start += len(group.scale)
        order = terms[0]
        for term in terms[1:]:  # Add, not Sum: Sum has no int64 kernel
            order = node("Add", [order, term])
        table = node("Gather", [node("Concat", parts, axis=0), order], axis=0)
    nodes.append(helper.make_node("Identity", [table], [f"{stem}table"], name=f"{stem}output"))
    return nodes
