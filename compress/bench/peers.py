"""Peers: what a user would pick instead of compress, applied to the same teacher and measured in the same
bench session as the stack's rows, ranked on the same test users (DESIGN.md, "Numbers that matter").

- `torch-compile`: the teacher under torch.compile (inductor, CPU);
- `ort-transformers-optimizer`: the teacher's ONNX through onnxruntime.transformers.optimizer, in onnxruntime;
- `openvino-fp32`: the teacher's ONNX run by OpenVINO (f32);
- `openvino-nncf-int8`: the teacher's ONNX quantized by NNCF (int8 QDQ, calibrated on training sequences,
  smooth quant off: NNCF 3.4 fails on our graph with it), run by OpenVINO;
- `torchao-int8`: the teacher's linear layers as torchao int8 (dynamic activations, int8 weights), compiled
  (torchao's own advice: its int8 kernels are fused by inductor);
- `olive`: Olive's passes on the teacher's ONNX (peephole, transformer fusions, dynamic int8 on MatMul/Gemm),
  in onnxruntime.

Each peer is a handler (compress/handlers/), so the session times it and `ranks` scores it like a stage.
A peer whose package is missing, or whose build fails, is skipped with its reason; nothing else fails.
"""

from __future__ import annotations

import importlib
import shutil
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, ClassVar

import numpy as np
import torch

from compress.bench.results import headline
from compress.evaluation.metrics import evaluation_users, metrics_from_ranks, score_ranks
from compress.evaluation.paired import ndcg_difference
from compress.handlers import Artifact, OnnxArtifact, Predictor, TorchArtifact
from compress.report.collect import PEERS_FILE, QUALITY, TIMED
from compress.runs.files import CONFIG_FILE, dir_size_bytes, write_json
from compress.runs.layout import read_manifest
from compress.serve.onnx_model import METADATA_FILE, MODEL_FILE

if TYPE_CHECKING:
    from compress.bench.session import BenchSession
    from compress.data.batching import Split
    from compress.data.sequences import SequenceData
    from compress.evaluation.config import EvalConfig
    from compress.export.config import ExportSettings
    from compress.models import RecommenderConfig

PEER_PACKAGES = ("onnxruntime", "openvino", "nncf", "torchao", "olive-ai", "neural-compressor")
QUALITY_K = (1, 5, 10, 20)
CALIBRATION_USERS = 128


@dataclass(frozen=True)
class TorchPeerArtifact(TorchArtifact):
    """The teacher (`source`) through a PyTorch peer: torch.compile, or torchao int8 then torch.compile.
    `path` is the peer's own folder (what it would deploy: its size)."""

    source: Path = Path()
    transform: str = "compile"
    kind: ClassVar[str] = "torch-peer"

    def _scores(self, device: torch.device) -> tuple[Callable[[torch.Tensor, torch.Tensor], torch.Tensor], Any]:
        from compress.models import load_model

        model = load_model(self.source, device).eval()
        if self.transform == "torchao-int8":
            from torchao.quantization import Int8DynamicActivationInt8WeightConfig, quantize_

            quantize_(model, Int8DynamicActivationInt8WeightConfig())
        return torch.compile(model.next_item_scores), model

    def predictor(self, device: torch.device, threads: int | None = None) -> Predictor:
        scores, model = self._scores(device)

        @torch.inference_mode()
        def predict(item_ids: np.ndarray, attention_mask: np.ndarray) -> torch.Tensor:
            return scores(torch.as_tensor(item_ids).to(device), torch.as_tensor(attention_mask).to(device))

        engine = "torch-inductor" + ("-torchao-int8" if self.transform == "torchao-int8" else "")
        return Predictor(predict, engine, model.num_parameters(), model.config.max_len, model.config)

    def ranks(self, data: SequenceData, config: EvalConfig, device: torch.device, split: Split = "test") -> np.ndarray:
        scores, model = self._scores(device)

        @torch.no_grad()
        def score(batch: Any) -> torch.Tensor:
            return scores(batch.item_ids.to(device), batch.attention_mask.to(device)).float().cpu().clone()

        return score_ranks(score, data, split, config, model.config.max_len, evaluation_users(data, config))


@dataclass
class PeerInputs:
    """What every peer starts from: the teacher's folder and its ONNX export, its shape, calibration feeds."""

    teacher: TorchArtifact
    teacher_onnx: Path
    shape: RecommenderConfig
    calibration: list[dict[str, np.ndarray]]


def peer_inputs(
    teacher: TorchArtifact, data: SequenceData, workdir: Path, seed: int, settings: ExportSettings | None = None
) -> PeerInputs:
    """The teacher exported to ONNX under `workdir` (the recipe's export settings, without a step model) and
    calibration feeds of training sequences (as the quantize stage's)."""
    from compress.export.config import ExportSettings
    from compress.export.onnx_export import export_onnx
    from compress.models import load_model
    from compress.stages.quantize import calibration_feeds

    model = load_model(teacher.path, "cpu").eval()
    settings = (settings or ExportSettings()).model_copy(update={"incremental": False})
    folder = Path(workdir) / "teacher-onnx"
    export_onnx(model, folder, settings, list(range(1, model.config.num_items + 1)), {"peers": str(teacher.path)})
    calibration = calibration_feeds(data, settings.max_len or model.config.max_len, CALIBRATION_USERS, seed)
    return PeerInputs(teacher, folder, model.config, calibration)


def _copy_metadata(source: Path, folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy2(source / METADATA_FILE, folder / METADATA_FILE)


def torch_compile(inputs: PeerInputs, folder: Path) -> Artifact:
    shutil.copytree(inputs.teacher.path, folder, dirs_exist_ok=True)
    return TorchPeerArtifact(folder, source=inputs.teacher.path, transform="compile")


def torchao_int8(inputs: PeerInputs, folder: Path) -> Artifact:
    """The quantized weights are saved (torch.save) for the size column; the predictor quantizes the teacher again."""
    peer = TorchPeerArtifact(folder, source=inputs.teacher.path, transform="torchao-int8")
    folder.mkdir(parents=True, exist_ok=True)
    _, model = peer._scores(torch.device("cpu"))
    torch.save(model.state_dict(), folder / "model.pt")
    shutil.copy2(inputs.teacher.path / CONFIG_FILE, folder / CONFIG_FILE)
    return peer


def ort_transformers_optimizer(inputs: PeerInputs, folder: Path) -> Artifact:
    from onnxruntime.transformers.optimizer import optimize_model

    optimized = optimize_model(str(inputs.teacher_onnx / MODEL_FILE), model_type="bert", opt_level=99,
                               num_heads=inputs.shape.num_heads, hidden_size=inputs.shape.hidden_size)
    _copy_metadata(inputs.teacher_onnx, folder)
    optimized.save_model_to_file(str(folder / MODEL_FILE))
    return OnnxArtifact(folder)


def openvino_fp32(inputs: PeerInputs, folder: Path) -> Artifact:
    importlib.import_module("openvino")
    return OnnxArtifact(inputs.teacher_onnx, engine="openvino")


def openvino_nncf_int8(inputs: PeerInputs, folder: Path) -> Artifact:
    import nncf
    import onnx
    from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters

    importlib.import_module("openvino")
    quantized = nncf.quantize(
        onnx.load(str(inputs.teacher_onnx / MODEL_FILE)), nncf.Dataset(inputs.calibration),
        model_type=nncf.ModelType.TRANSFORMER, subset_size=sum(len(f["item_ids"]) for f in inputs.calibration),
        advanced_parameters=AdvancedQuantizationParameters(smooth_quant_alpha=-1),
    )
    _copy_metadata(inputs.teacher_onnx, folder)
    onnx.save(quantized, str(folder / MODEL_FILE))
    return OnnxArtifact(folder, engine="openvino")


def olive(inputs: PeerInputs, folder: Path) -> Artifact:
    """Olive's workflow with its ONNX passes a user would list for a CPU transformer: peephole, transformer
    fusions, dynamic int8 (MatMul and Gemm)."""
    from olive.workflows import run as olive_run

    shape = inputs.shape
    olive_run({
        "input_model": {"type": "ONNXModel", "model_path": str(inputs.teacher_onnx / MODEL_FILE)},
        "systems": {"local": {"type": "LocalSystem",
                              "accelerators": [{"device": "cpu", "execution_providers": ["CPUExecutionProvider"]}]}},
        "passes": {
            "peephole": {"type": "OnnxPeepholeOptimizer"},
            "fusions": {"type": "OrtTransformersOptimization", "model_type": "bert",
                        "num_heads": shape.num_heads, "hidden_size": shape.hidden_size},
            # MatMul/Gemm only: Olive 0.13 turns the ONNX Attention op into a QAttention onnxruntime rejects
            "int8": {"type": "OnnxDynamicQuantization", "op_types_to_quantize": ["MatMul", "Gemm"]},
        },
        "host": "local", "target": "local", "output_dir": str(folder / "olive"), "log_severity_level": 3,
        "cache_dir": str(folder / "olive-cache"),  # not Olive's default, .olive-cache in the working directory
    })
    found = sorted((folder / "olive").rglob("*.onnx"), key=lambda p: p.stat().st_mtime)
    if not found:
        raise RuntimeError(f"Olive wrote no ONNX model under {folder / 'olive'}")
    _copy_metadata(inputs.teacher_onnx, folder)
    shutil.copy2(found[-1], folder / MODEL_FILE)
    for scratch in ("olive", "olive-cache"):
        shutil.rmtree(folder / scratch)
    OnnxArtifact(folder).load(torch.device("cpu"))  # a graph onnxruntime rejects fails the build, here
    return OnnxArtifact(folder)


@dataclass(frozen=True)
class Peer:
    name: str
    package: str  # the module it needs (a missing one: skipped with the reason)
    build: Callable[[PeerInputs, Path], Artifact]
    note: str


PEERS = (
    Peer("torch-compile", "torch", torch_compile, "the teacher under torch.compile (inductor, CPU), PyTorch"),
    Peer("ort-transformers-optimizer", "onnxruntime.transformers.optimizer", ort_transformers_optimizer,
         "the teacher's ONNX through onnxruntime's transformer optimizer (model_type bert, opt_level 99)"),
    Peer("openvino-fp32", "openvino", openvino_fp32, "the teacher's ONNX run by OpenVINO, f32"),
    Peer("openvino-nncf-int8", "nncf", openvino_nncf_int8,
         "the teacher's ONNX quantized by NNCF (int8 QDQ, calibrated on training sequences), run by OpenVINO"),
    Peer("torchao-int8", "torchao", torchao_int8,
         "the teacher's linear layers as torchao int8 (dynamic activations, int8 weights), torch.compile"),
    Peer("olive", "olive", olive,
         "Olive on the teacher's ONNX: peephole, transformer fusions, dynamic int8 (MatMul, Gemm); onnxruntime"),
)
UNAVAILABLE = {  # peers that cannot install beside our pins: shown as skipped, never attempted
    "neural-compressor": "Intel Neural Compressor's ONNX package (onnx-neural-compressor 1.0) needs numpy<2; "
                         "neural-compressor 3.10 installs but quantizes PyTorch/TensorFlow/JAX models only",
}


def peer_versions() -> dict[str, str]:
    """Installed versions of the peers' packages (absent ones left out)."""
    found = {}
    for package in PEER_PACKAGES:
        try:
            found[package] = version(package)
        except PackageNotFoundError:
            continue
    return found


def build_peers(
    inputs: PeerInputs, workdir: Path, names: list[str] | None = None, log: Callable[[str], None] = print
) -> tuple[dict[str, Artifact], dict[str, str]]:
    """(name -> the peer's artifact, name -> why it was skipped) for the peers `names` (default: all)."""
    built: dict[str, Artifact] = {}
    skipped: dict[str, str] = dict(UNAVAILABLE) if names is None else {}
    for peer in PEERS:
        if names is not None and peer.name not in names:
            continue
        try:
            importlib.import_module(peer.package)
        except ImportError as exc:
            skipped[peer.name] = f"not installed ({peer.package}: {exc}); pip install 'compress[peers]'"
            continue
        log(f"peers: building {peer.name}")
        try:
            built[peer.name] = peer.build(inputs, Path(workdir) / peer.name)
        except Exception as exc:  # a third-party tool failing on our graph is a result to report, not a crash
            first_line = (str(exc).splitlines() or [""])[0][:300]
            skipped[peer.name] = f"build failed: {type(exc).__name__}: {first_line}"
            log(f"peers: {peer.name} skipped: {skipped[peer.name]}")
    return built, skipped


def bench_peers(
    session: BenchSession, peers: dict[str, Artifact], teacher: Artifact, data: SequenceData,
    eval_config: EvalConfig, teacher_ranks: np.ndarray | None = None,
) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """(one row per peer, keyed as a stage entry; name -> why a peer failed to rank). Quality from the peer's
    ranks of the test users, with the paired-bootstrap NDCG@10 interval against the teacher; speed from
    `session`, all peers side by side in the session's rounds, the teacher first in every round
    (`bench_interleaved`: ratios to the teacher of the same rounds)."""
    from compress.bench.session import bench_interleaved

    teacher_ranks = teacher.ranks(data, eval_config, session.device) if teacher_ranks is None else teacher_ranks
    reference = metrics_from_ranks(teacher_ranks, list(QUALITY_K))
    ranked, failed = {}, {}
    for name, artifact in peers.items():
        session.log(f"peers: ranking the test users with {name}")
        try:  # loading and scoring: what timing does too
            ranked[name] = artifact.ranks(data, eval_config, session.device)
        except Exception as exc:  # a peer's engine failing on our graph is reported, never fatal
            failed[name] = f"failed to run: {type(exc).__name__}: {(str(exc).splitlines() or [''])[0][:300]}"
    timed = {name: peers[name] for name in ranked}
    results = bench_interleaved(session, timed, dict.fromkeys(timed, "teacher"), {"teacher": teacher},
                                session.config.rounds) if timed else {}
    rows = [peer_row(name, timed[name], ranked[name], teacher_ranks, reference, results[name]) for name in timed]
    return rows, failed


def peer_row(
    name: str, artifact: Artifact, ranks: np.ndarray, teacher_ranks: np.ndarray, reference: dict[str, float],
    bench: dict[str, Any],
) -> dict[str, Any]:
    """A peer as headline.json holds it: the keys of a stage entry (values, ratios to the teacher), its engine,
    the NDCG@10 difference to the teacher and the whole bench result."""
    quality, numbers = metrics_from_ranks(ranks, list(QUALITY_K)), headline(bench)
    values = {**{k: quality[k] for k in QUALITY}, "params": bench["params"], "size_bytes": dir_size_bytes(artifact.path),
              **{k: float(numbers[k]) for k in TIMED}}
    ratios = {k: (values[k] / reference[k] if reference[k] else None) for k in QUALITY}
    ratios.update({k: bench["ratios"][k] for k in ("params", "size_bytes", *TIMED)})
    note = next((peer.note for peer in PEERS if peer.name == name), "")
    return {"name": name, "engine": bench["engine"], "note": note, "values": values, "ratios": ratios,
            "difference": ndcg_difference(ranks, teacher_ranks).as_dict(), "bench": bench}


def run_peers(
    session: BenchSession, run_dir: Path, teacher: Artifact, data: SequenceData, eval_config: EvalConfig, seed: int,
    settings: ExportSettings | None = None, names: list[str] | None = None,
) -> Path:
    """Build every peer of the run's teacher under `<run>/peers/`, rank and time them in `session`, and write
    `<run>/peers.json` (rows, skipped peers with why, the peers' versions; read by the report)."""
    inputs = peer_inputs(teacher, data, Path(run_dir) / "peers", seed, settings)
    built, skipped = build_peers(inputs, Path(run_dir) / "peers", names, session.log)
    rows, failed = bench_peers(session, built, teacher, data, eval_config)
    path = Path(run_dir) / PEERS_FILE
    write_json(path, {
        "stage_ids": [entry["config_hash"] for entry in read_manifest(run_dir)["stages"]],  # the run they belong to
        "session": session.id, "rows": rows, "skipped": {**skipped, **failed}, "versions": peer_versions(),
    })
    return path
