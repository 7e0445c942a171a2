"""Bounded load test of `compress serve` on loopback: stateless (/recommend) and stateful (/events), several
concurrencies and events per request, against the in-process throughput at the same batch size.

    # the ML-1M headline student (its run folder: /recommend from the last ONNX stage, /events from the last
    # one with step.onnx); Redis started on a free loopback port for the stateful rows, 1 and 2 workers
    python benchmarks/serve_load.py artifacts/<run> --start-redis --workers 1 2 \
        --concurrency 1 8 64 --events 1 64 --requests 3000 --seconds 15

Each cell (mode, workers, concurrency, events per request) stops by itself after `--requests` requests or
`--seconds` seconds, whichever comes first, after `--warmup` untimed requests. The client is a minimal
asyncio HTTP/1.1 keep-alive client (one connection per concurrent caller, request bodies built before
timing) so that it takes little of the CPU the server needs. Reported per cell: requests/s, events/s
(histories/s for /recommend), p50/p99 latency, the server's CPU share (CPU seconds of the server and its
workers per wall second: 1.0 = one core busy) and the client's; and the in-process throughput at the same
batch size (min(concurrency x events, max_batch)): model.onnx on histories, step.onnx `advance` on one new
event per user, and the served/in-process ratio. Results: <out>/serve_load.json and serve_load.md.

Only loopback; the server binds 127.0.0.1. Never run in CI on real data: tests/serve/test_service_load.py
runs it on a tiny artifact.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "results" / "serve"
CLK_TCK = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- processes: Redis and the server ----------------------------------------------------------------------

class Process:
    def __init__(self, command: list[str], ready: Any, timeout: float, log: Path) -> None:
        self.log = log.open("w")
        self.process = subprocess.Popen(command, stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while not ready():
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"{command[:3]} did not start: see {log}")
            time.sleep(0.1)

    def cpu_seconds(self) -> float:
        """User + system CPU seconds of the process and its children (uvicorn workers)."""
        pids = {self.process.pid}
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                except OSError:
                    continue
                if int(fields[1]) == self.process.pid:
                    pids.add(int(entry.name))
        total = 0
        for pid in pids:
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            total += int(fields[11]) + int(fields[12])  # utime, stime
        return total / CLK_TCK

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        self.log.close()


def port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def healthy(port: int) -> bool:
    try:
        status, _ = asyncio.run(_get(port, "/readyz"))
        return status == 200
    except OSError:
        return False


async def _get(port: int, path: str) -> tuple[int, bytes]:
    connection = await Connection.open(port)
    try:
        return await connection.request("GET", path, b"")
    finally:
        connection.close()


def start_redis(logs: Path) -> tuple[Process, str]:
    if shutil.which("redis-server") is None:
        raise SystemExit("redis-server not found: apt-get install redis-server, or give --redis URL")
    port = free_port()
    command = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    return Process(command, lambda: port_open(port), 30, logs / "redis.log"), f"redis://127.0.0.1:{port}/0"


def start_server(artifact: str, workers: int, redis: str | None, args: argparse.Namespace, logs: Path) -> tuple[Process, int]:
    port = free_port()
    command = [sys.executable, "-m", "compress", "serve", artifact, "--port", str(port), "--workers", str(workers),
               "--max-batch", str(args.max_batch), "--max-wait-ms", str(args.max_wait_ms),
               "--max-events", str(max(args.events)), "--max-histories", str(max(args.events)),
               "--max-body-bytes", str(64 << 20)]
    if args.threads:
        command += ["--threads", str(args.threads)]
    if redis:
        command += ["--redis", redis]
    return Process(command, lambda: healthy(port), args.start_timeout, logs / f"server-{workers}.log"), port


# --- the client ---------------------------------------------------------------------------------------------

class Connection:
    """One keep-alive HTTP/1.1 connection (uvicorn answers with Content-Length)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, port: int) -> Connection:
        reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=1 << 24)
        return cls(reader, writer)

    async def request(self, method: str, path: str, body: bytes) -> tuple[int, bytes]:
        head = (f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\n\r\n").encode()
        self.writer.write(head + body)
        header = await self.reader.readuntil(b"\r\n\r\n")
        lines = header.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        length = next(int(line.split(":", 1)[1]) for line in lines[1:] if line.lower().startswith("content-length:"))
        return status, await self.reader.readexactly(length)

    def close(self) -> None:
        self.writer.close()


async def run_cell(port: int, path: str, bodies: list[bytes], warmup: list[bytes], concurrency: int,
                   seconds: float) -> dict[str, Any]:
    connections = [await Connection.open(port) for _ in range(concurrency)]
    try:
        for i, body in enumerate(warmup):  # untimed
            status, reply = await connections[i % concurrency].request("POST", path, body)
            if status != 200:
                raise RuntimeError(f"warm-up request answered {status}: {reply[:300]!r}")
        latencies: list[float] = []
        failures = 0
        next_index = 0
        deadline = time.perf_counter() + seconds

        async def caller(connection: Connection) -> None:
            nonlocal next_index, failures
            while next_index < len(bodies) and time.perf_counter() < deadline:
                body = bodies[next_index]
                next_index += 1
                start = time.perf_counter()
                status, _ = await connection.request("POST", path, body)
                latencies.append(time.perf_counter() - start)
                failures += status != 200

        start = time.perf_counter()
        await asyncio.gather(*(caller(c) for c in connections))
        wall = time.perf_counter() - start
    finally:
        for connection in connections:
            connection.close()
    return {"requests": len(latencies), "failures": failures, "wall_s": wall, "latencies": latencies}


def recommend_bodies(items: list, max_len: int, count: int, per_request: int, rng: np.random.Generator) -> list[bytes]:
    bodies = []
    for _ in range(count):
        histories = [[items[i] for i in rng.integers(0, len(items), max_len)] for _ in range(per_request)]
        bodies.append(json.dumps({"histories": histories}).encode())
    return bodies


def event_bodies(items: list, count: int, per_request: int, users: int, tag: str, rng: np.random.Generator,
                 ids: bool = True) -> list[bytes]:
    """Events of `users` users in turn (a request's events are of distinct users), random items."""
    bodies, n = [], 0
    for _ in range(count):
        events = []
        for _ in range(per_request):
            event = {"user": f"{tag}-{n % users}", "item": items[int(rng.integers(len(items)))]}
            if ids:
                event["id"] = f"{tag}-{n}"
            events.append(event)
            n += 1
        bodies.append(json.dumps({"events": events}).encode())
    return bodies


# --- in-process baselines -----------------------------------------------------------------------------------

def in_process(folder_full: Path, folder_step: Path | None, batch: int, seconds: float, threads: int | None,
               max_len: int) -> dict[str, float]:
    """Histories/s of model.onnx and events/s of step.onnx `advance` (one new event per user, distinct users,
    windows below max_len) at `batch`, in this process."""
    from compress.data.padding import left_pad
    from compress.serve.onnx_model import OnnxRecommender
    from compress.serve.step_model import OnnxStepModel

    rng = np.random.default_rng(0)
    result = {}
    model = OnnxRecommender(folder_full, "cpu", threads)
    ids = left_pad([rng.integers(1, model.num_items + 1, max_len) for _ in range(batch)], model.max_len)
    mask = (ids > 0).astype(np.int64)
    result["recommend_per_s"] = batch * _rate(lambda: model.topk(ids, mask), seconds)
    if folder_step is not None:
        step = OnnxStepModel(folder_step, "cpu", threads)
        store = step.new_store(batch)
        slots = list(range(batch))
        num_items = int(step.metadata["num_items"])

        def advance() -> None:
            full = store.length[slots] >= step.max_len - 1
            if full.any():
                store.clear(np.array(slots)[full])  # keep every step one appended position
            step.advance(store, slots, [rng.integers(1, num_items + 1, 1) for _ in slots])

        result["step_events_per_s"] = batch * _rate(advance, seconds)
    return result


def _rate(call: Any, seconds: float) -> float:
    for _ in range(3):
        call()
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        call()
        count += 1
    return count / (time.perf_counter() - start)


# --- the run ------------------------------------------------------------------------------------------------

def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("artifact", help="run folder, stage folder or onnx/ folder (as `compress serve`)")
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--modes", nargs="+", default=["stateless", "stateful"], choices=["stateless", "stateful"])
    parser.add_argument("--workers", nargs="+", type=int, default=[1])
    parser.add_argument("--concurrency", nargs="+", type=int, default=[1, 8, 64])
    parser.add_argument("--events", nargs="+", type=int, default=[1, 64], help="events (histories) per request")
    parser.add_argument("--requests", type=int, default=2000, help="per cell, at most")
    parser.add_argument("--seconds", type=float, default=10.0, help="per cell, at most")
    parser.add_argument("--warmup", type=int, default=20, help="untimed requests per cell")
    parser.add_argument("--users", type=int, default=20_000, help="stateful: users the events go round")
    parser.add_argument("--max-batch", type=int, default=64)
    parser.add_argument("--max-wait-ms", type=float, default=2.0)
    parser.add_argument("--threads", type=int, default=None, help="onnxruntime threads per worker")
    parser.add_argument("--redis", default=None, help="Redis URL for the stateful rows")
    parser.add_argument("--start-redis", action="store_true", help="start redis-server on a free loopback port")
    parser.add_argument("--baseline-seconds", type=float, default=3.0)
    parser.add_argument("--start-timeout", type=float, default=180.0)
    args = parser.parse_args()

    from compress.serve.locate import resolve_artifact
    from compress.serve.onnx_model import read_metadata
    from compress.errors import ArtifactError

    folder = resolve_artifact(Path(args.artifact))
    try:
        step_folder: Path | None = resolve_artifact(Path(args.artifact), need_step=True)
        if not (step_folder / "step.onnx").is_file():
            step_folder = None
    except ArtifactError:
        step_folder = None
    if "stateful" in args.modes and step_folder is None:
        print("no step.onnx: stateful rows skipped", file=sys.stderr)
        args.modes = [m for m in args.modes if m != "stateful"]
    metadata = read_metadata(folder)
    items, max_len = metadata["item_ids"], int(metadata["max_len"])
    if "stateful" in args.modes and args.requests * max(args.events) > args.users * (max_len - 1):
        print("note: more events per cell than --users x (max_len - 1): windows slide (overflow policy cost)",
              file=sys.stderr)
    args.out.mkdir(parents=True, exist_ok=True)
    logs = args.out / "logs"
    logs.mkdir(exist_ok=True)
    rng = np.random.default_rng(0)
    redis_process, redis = None, args.redis
    if "stateful" in args.modes and not redis and (args.start_redis or max(args.workers) > 1):
        redis_process, redis = start_redis(logs)
    rows, baselines = [], {}
    try:
        for batch in sorted({min(c * e, args.max_batch) for c in args.concurrency for e in args.events}):
            baselines[batch] = in_process(folder, step_folder, batch, args.baseline_seconds, args.threads, max_len)
            print(f"in-process batch {batch}: {baselines[batch]}", file=sys.stderr)
        for workers in args.workers:
            server, port = start_server(args.artifact, workers, redis if "stateful" in args.modes else None, args, logs)
            try:
                for mode in args.modes:
                    for per_request in args.events:
                        for concurrency in args.concurrency:
                            tag = f"w{workers}c{concurrency}e{per_request}"
                            if mode == "stateless":
                                path = "/recommend"
                                warm = recommend_bodies(items, max_len, args.warmup, per_request, rng)
                                bodies = recommend_bodies(items, max_len, args.requests, per_request, rng)
                            else:
                                path = "/events"
                                warm = event_bodies(items, args.warmup, per_request, args.users, "warm" + tag, rng)
                                bodies = event_bodies(items, args.requests, per_request, args.users, tag, rng)
                            cpu_server, cpu_client = server.cpu_seconds(), time.process_time()
                            cell = asyncio.run(run_cell(port, path, bodies, warm, concurrency, args.seconds))
                            cpu_server = server.cpu_seconds() - cpu_server
                            cpu_client = time.process_time() - cpu_client
                            rows.append(summarise(mode, workers, concurrency, per_request, cell, cpu_server,
                                                  cpu_client, baselines[min(concurrency * per_request, args.max_batch)]))
                            print(json.dumps(rows[-1]), file=sys.stderr)
            finally:
                server.stop()
    finally:
        if redis_process is not None:
            redis_process.stop()
    write(args, folder, step_folder, rows, baselines)


def summarise(mode: str, workers: int, concurrency: int, per_request: int, cell: dict[str, Any], cpu_server: float,
              cpu_client: float, baseline: dict[str, float]) -> dict[str, Any]:
    latencies = np.array(cell["latencies"]) * 1000
    wall = cell["wall_s"]
    served = cell["requests"] * per_request / wall
    reference = baseline["recommend_per_s" if mode == "stateless" else "step_events_per_s"]
    p50, p99 = (float(np.percentile(latencies, q)) for q in (50, 99)) if len(latencies) else (float("nan"),) * 2
    return {
        "mode": mode, "workers": workers, "concurrency": concurrency, "events_per_request": per_request,
        "requests": cell["requests"], "failures": cell["failures"], "seconds": round(wall, 3),
        "requests_per_s": cell["requests"] / wall, "events_per_s": served, "p50_ms": p50, "p99_ms": p99,
        "p99_over_p50": p99 / p50 if p50 else float("nan"),
        "server_cpu_share": cpu_server / wall, "client_cpu_share": cpu_client / wall,
        "in_process_per_s": reference, "served_over_in_process": served / reference,
    }


COLUMNS = ["mode", "workers", "concurrency", "events/request", "requests", "req/s", "events/s", "p50 ms", "p99 ms",
           "p99/p50", "server CPU", "client CPU", "in-process/s", "served/in-process"]


def table(rows: list[dict[str, Any]]) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for r in rows:
        values = [r["mode"], r["workers"], r["concurrency"], r["events_per_request"], r["requests"],
                  f"{r['requests_per_s']:,.0f}", f"{r['events_per_s']:,.0f}", f"{r['p50_ms']:.2f}", f"{r['p99_ms']:.2f}",
                  f"{r['p99_over_p50']:.1f}", f"{r['server_cpu_share']:.2f}", f"{r['client_cpu_share']:.2f}",
                  f"{r['in_process_per_s']:,.0f}", f"{r['served_over_in_process']:.2f}"]
        lines.append("| " + " | ".join(map(str, values)) + " |")
    return "\n".join(lines)


def targets(rows: list[dict[str, Any]]) -> list[str]:
    """The issue's four ratio targets, each met or not (only those the rows allow)."""
    out = []
    stateful = [r for r in rows if r["mode"] == "stateful" and r["workers"] == min(x["workers"] for x in rows)]
    for per_request, goal in ((1, 0.5), (64, 0.8)):
        cells = [r for r in stateful if r["events_per_request"] == per_request]
        if cells:
            best = max(cells, key=lambda r: r["served_over_in_process"])
            out.append(f"stateful, {per_request} event(s)/request: served/in-process step {best['served_over_in_process']:.2f} "
                       f"at concurrency {best['concurrency']} (target >= {goal}): "
                       + ("met" if best["served_over_in_process"] >= goal else "NOT met"))
    for r in rows:
        if r["concurrency"] == 64:
            out.append(f"{r['mode']}, {r['workers']} worker(s), {r['events_per_request']} event(s)/request, concurrency 64: "
                       f"p99/p50 {r['p99_over_p50']:.1f} (target <= 4): " + ("met" if r["p99_over_p50"] <= 4 else "NOT met"))
    by_workers: dict[int, float] = {}
    for r in rows:
        if r["mode"] == "stateful":
            by_workers[r["workers"]] = max(by_workers.get(r["workers"], 0), r["events_per_s"])
    if 1 in by_workers and 2 in by_workers:
        ratio = by_workers[2] / by_workers[1]
        out.append(f"2 workers / 1 worker, best stateful events/s: {ratio:.2f} (target >= 1.5): "
                   + ("met" if ratio >= 1.5 else "NOT met"))
    return out


def write(args: argparse.Namespace, folder: Path, step_folder: Path | None, rows: list[dict[str, Any]],
          baselines: dict[int, dict[str, float]]) -> None:
    environment = {"python": platform.python_version(), "cpus": os.cpu_count(), "machine": platform.machine(),
                   "processor": _cpu_model()}
    settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    result = {"artifact": str(folder), "step_artifact": str(step_folder) if step_folder else None,
              "settings": settings, "environment": environment,
              "in_process": {str(k): v for k, v in baselines.items()}, "rows": rows, "targets": targets(rows)}
    (args.out / "serve_load.json").write_text(json.dumps(result, indent=2) + "\n")
    text = (f"# compress serve load test\n\nartifact `{folder}`; {environment['cpus']} CPUs ({environment['processor']}); "
            f"max batch {args.max_batch}, max wait {args.max_wait_ms} ms; at most {args.requests} requests or "
            f"{args.seconds} s per cell.\n\n{table(rows)}\n\n" + "\n".join(f"- {t}" for t in result["targets"]) + "\n")
    (args.out / "serve_load.md").write_text(text)
    print(text)


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


if __name__ == "__main__":
    main()
