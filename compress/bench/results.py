"""What a stage's bench.json says, read without torch (the report and `compress report` use it)."""

from __future__ import annotations

from typing import Any

from compress.models.flops import achieved_gflops

BENCH_FILE = "bench.json"


def headline(result: dict[str, Any]) -> dict[str, float | None]:
    """The numbers a report shows and ratios are taken of: batch-1 latency and throughput at max length,
    and the FLOPs per sequence with the GFLOP/s they make at both (None where the shape is unknown)."""
    flops = (result.get("flops_per_sequence") or {}).get("total")
    p50_s, throughput = result["latency_ms"]["fixed"]["p50"] / 1000.0, result["throughput_seq_per_s"]["fixed"]
    return {
        "params": result["params"],
        "size_bytes": result["size_bytes"],
        "latency_p50_ms": result["latency_ms"]["fixed"]["p50"],
        "latency_p95_ms": result["latency_ms"]["fixed"]["p95"],
        "latency_p99_ms": result["latency_ms"]["fixed"]["p99"],
        "throughput_seq_per_s": result["throughput_seq_per_s"]["fixed"],
        "peak_memory_bytes": result["memory"]["increase_bytes"],
        "flops_per_sequence": flops,
        "gflops_batch1": achieved_gflops(flops, p50_s) if flops else None,
        "gflops_throughput": achieved_gflops(flops, 1.0 / throughput) if flops else None,
    }
