"""What `compress serve` serves, without the HTTP: the artifacts, the scorers, the state store, the limits.

`ServeConfig` is the command's options; `Service(config)` resolves the artifact (a run, stage or
onnx/ folder), loads model.onnx for /recommend (`HistoryScorer`) and, where the artifact (or, for a
run folder, its last ONNX stage that has one) has a step model, step.onnx for /events
(`EventEngine` over the state store). Its methods are the batch functions the micro-batcher calls
and the bodies of /model and /readyz. Torch-free.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from compress.errors import ArtifactError, CompressError
from compress.serve.events import EventEngine, EventOutcome
from compress.serve.step_model import OVERFLOW_POLICIES
from compress.serve.locate import resolve_artifact
from compress.serve.requests import Event, Limits
from compress.serve.scoring import Encoded, HistoryScorer
from compress.serve.state_store import open_store
from compress.serve.step_model import STEP_FILE

NO_INT8_STEP = ("the quantize stage writes no int8 step.onnx: dynamic int8 computes its activation scale over "
                "the whole onnxruntime call, so a user's per-event scores would depend on the other users of the "
                "batch, and int8 adds no speed over the fused fp32 step graph on the CPUs measured (README, "
                "Quantize); a run folder serves /events from its last stage with a step model (the fp32 export)")


@dataclass
class ServeConfig:
    artifact: str
    host: str = "127.0.0.1"
    port: int = 8000
    max_batch: int = 64  # items (histories or events) per onnxruntime call
    max_wait_ms: float = 2.0  # how long the first request of a batch waits for others
    redis: str | None = None  # state shared by replicas; None: in-process
    redis_prefix: str = "compress:"
    workers: int = 1
    threads: int | None = None  # onnxruntime intra-op threads per worker
    max_users: int = 1_000_000  # in-process store: users kept (least recently active forgotten)
    cache_users: int | None = None  # KV cache slots per replica; None: as many as cache_mb holds
    cache_mb: int = 2048  # KV cache memory per replica when cache_users is None
    overflow: str | None = None  # None: the policy the artifact states (metadata.json)
    limits: Limits = field(default_factory=Limits)

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> ServeConfig:
        values = json.loads(text)
        return cls(**{**values, "limits": Limits(**values["limits"])})


class Service:
    def __init__(self, config: ServeConfig) -> None:
        if config.overflow is not None and config.overflow not in OVERFLOW_POLICIES:
            raise CompressError(f"--overflow {config.overflow!r}: expected one of {', '.join(OVERFLOW_POLICIES)}")
        self.config, self.limits = config, config.limits
        path = Path(config.artifact)
        self.folder = resolve_artifact(path)
        self.scorer = HistoryScorer(self.folder, "cpu", config.threads)
        self.engine: EventEngine | None = None
        self.events_unavailable: str | None = None
        try:
            step_folder = resolve_artifact(path, need_step=True)
            if not (step_folder / STEP_FILE).is_file():
                quantized = (self.scorer.model.metadata.get("quantization") or {}).get("backend")
                raise ArtifactError(f"{step_folder} has no step model ({STEP_FILE})"
                                    + (f"; {NO_INT8_STEP}" if quantized else ""),
                                    "export with `incremental: true`, or point at the run folder")
        except ArtifactError as exc:
            self.events_unavailable = str(exc)
            return
        store = open_store(config.redis, config.max_users, config.redis_prefix)
        if config.redis and not store.ping():
            raise CompressError(f"cannot reach Redis at {config.redis}", "start redis-server, or leave out --redis")
        try:
            self.engine = EventEngine(step_folder, store, config.cache_users, config.overflow, "cpu", config.threads,
                                      cache_bytes=config.cache_mb << 20)
        except ValueError as exc:
            raise CompressError(str(exc), "give a smaller --cache-users or --cache-mb") from None

    @property
    def top_k(self) -> int:
        return self.scorer.top_k

    def score(self, rows: list[Encoded]) -> list[tuple[list[Any], list[float]]]:
        """The batch function of /recommend: (original ids, scores) at the export's K per history."""
        scores, ids = self.scorer.score([r.ids for r in rows], self.config.max_batch)
        return [(self.scorer.items(i), s.tolist()) for s, i in zip(scores, np.asarray(ids))]

    def apply(self, events: list[Event]) -> list[EventOutcome]:
        """The batch function of /events."""
        assert self.engine is not None
        return self.engine.apply(events)

    def ready(self) -> tuple[bool, dict[str, Any]]:
        checks: dict[str, Any] = {"model": True}
        if self.engine is not None:
            checks["state_store"] = self.engine.store.ping()
        return all(checks.values()), checks

    def close(self) -> None:
        if self.engine is not None:
            self.engine.store.close()

    def model_info(self) -> dict[str, Any]:
        """The body of GET /model: what is served, from which stage, with its metrics, parity and files."""
        metadata = {k: v for k, v in self.scorer.model.metadata.items() if k != "item_ids"}
        info: dict[str, Any] = {
            "artifact": str(self.folder.resolve()),
            "stage": self.folder.parent.name if self.folder.name == "onnx" else None,
            "num_items": self.scorer.model.num_items, "max_len": self.scorer.max_len, "top_k": self.top_k,
            "quantization": metadata.get("quantization"),
            "batching": {
                "max_batch": self.config.max_batch, "max_wait_ms": self.config.max_wait_ms,
                "recommend": "one row per onnxruntime call (batch-wide ops: " + ", ".join(self.scorer.batch_wide) + ")"
                if self.scorer.row_at_a_time else "whole batches (no batch-wide op: results do not depend on the batch)",
            },
            "metadata": metadata,
            "metrics": _read_json(self.folder.parent / "metrics.json"),
            "parity": _read_json(self.folder / "parity.json"),
            "files": _files(self.folder),
            "limits": asdict(self.limits),
        }
        if self.engine is None:
            info["events"] = {"available": False, "reason": self.events_unavailable}
        else:
            step_folder = self.engine.folder
            info["events"] = {
                "available": True, "artifact": str(step_folder.resolve()),
                "stage": step_folder.parent.name if step_folder.name == "onnx" else None,
                "overflow": {"policy": self.engine.overflow, "meaning": OVERFLOW_POLICIES[self.engine.overflow]},
                "state_store": self.engine.store.kind, "cache_users": self.engine.cache_capacity,
                "cache_bytes": self.engine.cache_capacity * self.engine.kv.slot_bytes,
                "files": _files(step_folder) if step_folder != self.folder else None,
            }
            if self.engine.store.kind == "memory":
                info["events"]["max_users"] = self.config.max_users
            if step_folder != self.folder and self.scorer.model.metadata.get("quantization"):
                info["events"]["note"] = NO_INT8_STEP
        return info


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text()) if path.is_file() else None
    except (OSError, ValueError):
        return None


def _files(folder: Path) -> dict[str, int]:
    return {p.name: p.stat().st_size for p in sorted(folder.iterdir()) if p.is_file()}

