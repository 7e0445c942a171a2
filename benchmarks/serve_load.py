"""Bounded load test of `compress serve` on loopback: stateless (/recommend) and stateful (/events), several
concurrencies and events per request, against the in-process throughput at the same batch size.

    # the ML-1M headline student (its run folder: /recommend from the last ONNX stage, /events from the last
    # one with step.onnx); Redis started on a free loopback port for the stateful rows, 1 and 2 workers,
    # both overflow policies
    python benchmarks/serve_load.py artifacts/<run> --start-redis --workers 1 2 --threads 1 \
        --overflow exact slide --concurrency 1 8 64 --events 1 64 --requests 3000 --seconds 6

Each cell (mode, policy, workers, concurrency, events per request) stops by itself after `--requests` requests
or `--seconds` seconds, whichever comes first, after untimed warm-up requests. The client is a minimal asyncio
HTTP/1.1 keep-alive client (one connection per concurrent caller, request bodies built before timing) so that
it takes little of the CPU the server needs.

Stateful workload: each cell has `--users` users of its own, each starting with `--history` random items in
its window (written to Redis before the cell; default max_len, so every event slides the window and the
overflow policy decides the cost), one untimed warm-up event per user (the replica then holds each user as
it would in steady state), then timed events going round the users (a request's events are of distinct users).

Reported per cell: requests/s, events/s (histories/s for /recommend), p50/p99 latency, the server's CPU share
(CPU seconds of the server and its workers per wall second of the timed part: 1.0 = one core busy), the
client's, the server's model share (the /events batches' wall seconds in onnxruntime and the KV cache, from
its `compress_serve_event_seconds_total` metric, per wall second and worker), and the in-process throughput at
the same batch size (min(concurrency x events, max_batch)): model.onnx on histories for /recommend; for
/events, the event engine in this process on the same workload (same policy, same seeded windows, the same
warm-up, in batches of that size, no HTTP, JSON, micro-batcher or Redis), counted over its model time alone
(the in-process step throughput). With `slide`, the in-process run at the largest batch also replays its
events through an `exact` engine and reports how often the top-10 agree (random items; real histories:
benchmarks/serve_overflow.py). Results: <out>/serve_load.json and serve_load.md.

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

from compress.serve.state_store import RedisStateStore

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


def start_server(artifact: str, workers: int, redis: str | None, overflow: str | None, args: argparse.Namespace,
                 logs: Path) -> tuple[Process, int]:
    port = free_port()
    command = [sys.executable, "-m", "compress", "serve", artifact, "--port", str(port), "--workers", str(workers),
               "--max-batch", str(args.max_batch), "--max-wait-ms", str(args.max_wait_ms),
               "--max-events", str(max(args.events)), "--max-histories", str(max(args.events)),
               "--max-body-bytes", str(64 << 20)]
    if args.threads:
        command += ["--threads", str(args.threads)]
    if redis:
        command += ["--redis", redis]
    if overflow:
        command += ["--overflow", overflow]
    log = logs / f"server-{workers}-{overflow or 'stateless'}.log"
    return Process(command, lambda: healthy(port), args.start_timeout, log), port


async def server_seconds(port: int) -> dict[str, float]:
    """The server's /events wall seconds by phase (compress_serve_event_seconds_total: load, model, commit)."""
    _, body = await _get(port, "/metrics")
    seconds = {}
    for line in body.decode().splitlines():
        if line.startswith("compress_serve_event_seconds_total{"):
            phase = line.split('phase="', 1)[1].split('"', 1)[0]
            seconds[phase] = seconds.get(phase, 0.0) + float(line.rsplit(" ", 1)[1])
    return seconds


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
                   seconds: float, probe: Any) -> dict[str, Any]:
    """Warm-up requests (untimed, one at a time), then `bodies` from `concurrency` callers until they run out or
    `seconds` pass; `probe()` (counters: CPU seconds, the server's phase seconds) is read around the timed part."""
    connections = [await Connection.open(port) for _ in range(concurrency)]
    try:
        for i, body in enumerate(warmup):  # untimed
            status, reply = await connections[i % concurrency].request("POST", path, body)
            if status != 200:
                raise RuntimeError(f"warm-up request answered {status}: {reply[:300]!r}")
        before = await probe()
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
        after = await probe()
    finally:
        for connection in connections:
            connection.close()
    return {"requests": len(latencies), "failures": failures, "wall_s": wall, "latencies": latencies,
            "counters": {k: after[k] - before.get(k, 0.0) for k in after}}


def recommend_bodies(items: list, max_len: int, count: int, per_request: int, rng: np.random.Generator) -> list[bytes]:
    bodies = []
    for _ in range(count):
        histories = [[items[i] for i in rng.integers(0, len(items), max_len)] for _ in range(per_request)]
        bodies.append(json.dumps({"histories": histories}).encode())
    return bodies


def event_streams(items: list, per_request: int, users: int, count: int, rng: np.random.Generator) -> tuple[list, list]:
    """(warm-up, timed) lists of requests, each a list of (user index, item) of distinct users: the warm-up
    gives every user one event (the replica then caches them all), the timed requests go round the users."""
    def request(start: int) -> list[tuple[int, Any]]:
        return [((start + j) % users, items[int(rng.integers(len(items)))]) for j in range(per_request)]

    warm = [request(start) for start in range(0, users, per_request)]
    timed = [request(users + n * per_request) for n in range(count)]
    return warm, timed


def event_bodies(requests: list, tag: str, kind: str) -> list[bytes]:
    return [json.dumps({"events": [{"user": f"{tag}-{u}", "item": item, "id": f"{tag}-{kind}{n}-{j}"}
                                   for j, (u, item) in enumerate(events)]}).encode() for n, events in enumerate(requests)]


def seed_windows(store: Any, tag: str, users: int, history: int, items: list, seed: int) -> None:
    """Every user of a cell starts with `history` random items in its window (its durable state), none cached."""
    from compress.serve.state_store import Commit

    if history == 0:
        return
    rng = np.random.default_rng(seed)
    commits = [Commit(f"{tag}-{u}", 0, [str(items[int(i)]) for i in rng.integers(0, len(items), history)],
                      {"items": [], "scores": []}, None) for u in range(users)]
    for start in range(0, users, 1000):
        assert set(store.commit(commits[start : start + 1000])) == {"applied"}


# --- in-process baselines -----------------------------------------------------------------------------------

def in_process_recommend(folder: Path, batch: int, seconds: float, threads: int | None, max_len: int) -> float:
    """Histories/s of model.onnx at `batch`, in this process."""
    from compress.data.padding import left_pad
    from compress.serve.onnx_model import OnnxRecommender

    rng = np.random.default_rng(0)
    model = OnnxRecommender(folder, "cpu", threads)
    ids = left_pad([rng.integers(1, model.num_items + 1, max_len) for _ in range(batch)], model.max_len)
    mask = (ids > 0).astype(np.int64)
    return batch * _rate(lambda: model.topk(ids, mask), seconds)


def in_process_events(step_folder: Path, policy: str, batch: int, args: argparse.Namespace, items: list,
                      compare: str | None = None) -> dict[str, Any]:
    """The served stateful path without HTTP, JSON, the micro-batcher and Redis: the event engine over the
    in-process store, the same workload as a cell (users seeded with `--history` items, a warm-up event per
    user, then events going round the users), in batches of `batch` events. `step_events_per_s`: events per
    second of the engine's model time (onnxruntime, the KV cache's gather and write-back: the in-process step
    throughput); `engine_events_per_s`: of its whole time. With `compare`, the same events through a second
    engine with that policy: the share of timed events whose top-10 is identical, and the mean overlap."""
    from compress.serve.events import EventEngine
    from compress.serve.requests import Event
    from compress.serve.state_store import MemoryStateStore

    def engine(overflow: str) -> EventEngine:
        store = MemoryStateStore()
        seed_windows(store, "b", args.users, args.history, items, seed=1)
        return EventEngine(step_folder, store, overflow=overflow, threads=args.threads)

    rng = np.random.default_rng(2)
    per_request = min(batch, args.users)
    warm, timed = event_streams(items, per_request, args.users, max(100, 20_000 // per_request), rng)
    main, other = engine(policy), engine(compare) if compare else None
    as_events = lambda request: [Event(f"b-{u}", str(item)) for u, item in request]  # noqa: E731
    for request in warm:
        main.apply(as_events(request))
        if other is not None:
            other.apply(as_events(request))
    main.seconds.clear()
    main.counts.clear()
    events, same, overlap, start = 0, 0, 0.0, time.perf_counter()
    for request in timed:
        outcomes = main.apply(as_events(request))
        events += len(outcomes)
        if other is not None:
            for a, b in zip(outcomes, other.apply(as_events(request))):
                same += a.items == b.items
                overlap += len(set(a.items) & set(b.items)) / len(a.items)
        if time.perf_counter() - start > args.baseline_seconds:
            break
    model, total = main.seconds["model"], sum(main.seconds.values())
    result = {"policy": policy, "batch": batch, "events": events, "step_events_per_s": events / model,
              "engine_events_per_s": events / total, "kinds": {k: v for k, v in main.counts.items()}}
    if other is not None:
        result |= {"compared_with": compare, "same_top10": same / events, "top10_overlap": overlap / events}
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
    parser.add_argument("--warmup", type=int, default=20, help="stateless: untimed requests per cell")
    parser.add_argument("--users", type=int, default=512, help="stateful: users of a cell (each gets one untimed "
                        "warm-up event, then the timed events go round them)")
    parser.add_argument("--history", type=int, default=None, help="stateful: items in each user's window before "
                        "the cell (written to Redis; default max_len: every window full, every event slides it)")
    parser.add_argument("--overflow", nargs="+", default=["exact"], choices=["exact", "slide"],
                        help="stateful: the server's overflow policies, one server per policy")
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
    args.history = max_len if args.history is None else min(args.history, max_len)
    args.out.mkdir(parents=True, exist_ok=True)
    logs = args.out / "logs"
    logs.mkdir(exist_ok=True)
    rng = np.random.default_rng(0)
    redis_process, redis = None, args.redis
    if "stateful" in args.modes and not redis and (args.start_redis or max(args.workers) > 1 or args.history):
        redis_process, redis = start_redis(logs)
    rows: list[dict[str, Any]] = []
    baselines: dict[str, Any] = {}
    stateful = "stateful" in args.modes
    batches = sorted({min(c * e, args.max_batch) for c in args.concurrency for e in args.events})
    try:
        if "stateless" in args.modes:
            for batch in batches:
                baselines[f"recommend/{batch}"] = in_process_recommend(folder, batch, args.baseline_seconds,
                                                                       args.threads, max_len)
        for policy in args.overflow if stateful else []:
            for batch in batches:
                compare = "exact" if policy != "exact" and batch == max(batches) else None
                baselines[f"events/{policy}/{batch}"] = in_process_events(step_folder, policy, batch, args, items,
                                                                          compare)
                print(f"in-process {policy} batch {batch}: {baselines[f'events/{policy}/{batch}']}", file=sys.stderr)
        for workers in args.workers:
            for number, policy in enumerate(args.overflow if stateful else [None]):
                modes = [m for m in args.modes if m == "stateful" or number == 0]  # stateless once per worker count
                server, port = start_server(args.artifact, workers, redis if stateful else None, policy, args, logs)
                store = RedisStateStore(redis) if stateful and redis else None
                try:
                    for mode in modes:
                        for per_request in args.events:
                            for concurrency in args.concurrency:
                                batch = min(concurrency * per_request, args.max_batch)
                                tag = f"{policy}w{workers}c{concurrency}e{per_request}"
                                if mode == "stateless":
                                    path = "/recommend"
                                    warm = recommend_bodies(items, max_len, args.warmup, per_request, rng)
                                    bodies = recommend_bodies(items, max_len, args.requests, per_request, rng)
                                    reference = baselines[f"recommend/{batch}"]
                                else:
                                    path = "/events"
                                    users = max(args.users, per_request)
                                    if store is not None:
                                        seed_windows(store, tag, users, args.history, items, seed=1)
                                    warm_events, timed = event_streams(items, per_request, users, args.requests, rng)
                                    warm, bodies = event_bodies(warm_events, tag, "w"), event_bodies(timed, tag, "t")
                                    reference = baselines[f"events/{policy}/{batch}"]["step_events_per_s"]

                                async def probe(server: Process = server, port: int = port, mode: str = mode) -> dict:
                                    phases = await server_seconds(port) if mode == "stateful" else {}
                                    return {"cpu_server": server.cpu_seconds(), "cpu_client": time.process_time(),
                                            **{f"phase_{k}": v for k, v in phases.items()}}

                                cell = asyncio.run(run_cell(port, path, bodies, warm, concurrency, args.seconds, probe))
                                counters = cell["counters"]
                                phases = {k[6:]: v for k, v in counters.items() if k.startswith("phase_")}
                                rows.append(summarise(mode, policy if mode == "stateful" else None, workers,
                                                      concurrency, per_request, cell, counters["cpu_server"],
                                                      counters["cpu_client"], reference, phases))
                                print(json.dumps(rows[-1]), file=sys.stderr)
                finally:
                    server.stop()
                    if store is not None:
                        store.close()
    finally:
        if redis_process is not None:
            redis_process.stop()
    write(args, folder, step_folder, rows, baselines)


def summarise(mode: str, policy: str | None, workers: int, concurrency: int, per_request: int, cell: dict[str, Any],
              cpu_server: float, cpu_client: float, reference: float, phases: dict[str, float]) -> dict[str, Any]:
    latencies = np.array(cell["latencies"]) * 1000
    wall = cell["wall_s"]
    served = cell["requests"] * per_request / wall
    p50, p99 = (float(np.percentile(latencies, q)) for q in (50, 99)) if len(latencies) else (float("nan"),) * 2
    return {
        "mode": mode, "policy": policy, "workers": workers, "concurrency": concurrency, "events_per_request": per_request,
        "requests": cell["requests"], "failures": cell["failures"], "seconds": round(wall, 3),
        "requests_per_s": cell["requests"] / wall, "events_per_s": served, "p50_ms": p50, "p99_ms": p99,
        "p99_over_p50": p99 / p50 if p50 else float("nan"),
        "server_cpu_share": cpu_server / wall, "client_cpu_share": cpu_client / wall,
        "in_process_per_s": reference, "served_over_in_process": served / reference,
        "server_seconds": phases, "server_model_share": phases.get("model", 0.0) / wall / workers if phases else None,
    }


COLUMNS = ["mode", "policy", "workers", "concurrency", "events/request", "requests", "req/s", "events/s", "p50 ms", "p99 ms",
           "p99/p50", "server CPU", "client CPU", "model share", "in-process/s", "served/in-process"]


def table(rows: list[dict[str, Any]]) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for r in rows:
        share = r.get("server_model_share")
        values = [r["mode"], r.get("policy") or "-", r["workers"], r["concurrency"], r["events_per_request"], r["requests"],
                  f"{r['requests_per_s']:,.0f}", f"{r['events_per_s']:,.0f}", f"{r['p50_ms']:.2f}", f"{r['p99_ms']:.2f}",
                  f"{r['p99_over_p50']:.1f}", f"{r['server_cpu_share']:.2f}", f"{r['client_cpu_share']:.2f}",
                  "-" if share is None else f"{share:.2f}", f"{r['in_process_per_s']:,.0f}", f"{r['served_over_in_process']:.2f}"]
        lines.append("| " + " | ".join(map(str, values)) + " |")
    return "\n".join(lines)


def targets(rows: list[dict[str, Any]]) -> list[str]:
    """The issue's four ratio targets, each met or not (only those the rows allow); stateful ones per policy."""
    out = []
    fewest = min(r["workers"] for r in rows)
    policies = sorted({r["policy"] for r in rows if r["mode"] == "stateful"})
    for policy in policies:
        stateful = [r for r in rows if r["mode"] == "stateful" and r["policy"] == policy and r["workers"] == fewest]
        for per_request, goal in ((1, 0.5), (64, 0.8)):
            cells = [r for r in stateful if r["events_per_request"] == per_request]
            if cells:
                best = max(cells, key=lambda r: r["served_over_in_process"])
                out.append(f"stateful {policy}, {per_request} event(s)/request: served/in-process step "
                           f"{best['served_over_in_process']:.2f} at concurrency {best['concurrency']} (target >= {goal}): "
                           + ("met" if best["served_over_in_process"] >= goal else "NOT met"))
    for r in rows:
        if r["concurrency"] == 64:
            mode = r["mode"] + (f" {r['policy']}" if r.get("policy") else "")
            out.append(f"{mode}, {r['workers']} worker(s), {r['events_per_request']} event(s)/request, concurrency 64: "
                       f"p99/p50 {r['p99_over_p50']:.1f} (target <= 4): " + ("met" if r["p99_over_p50"] <= 4 else "NOT met"))
    for policy in policies:
        by_workers: dict[int, float] = {}
        for r in rows:
            if r["mode"] == "stateful" and r["policy"] == policy:
                by_workers[r["workers"]] = max(by_workers.get(r["workers"], 0), r["events_per_s"])
        if 1 in by_workers and 2 in by_workers:
            ratio = by_workers[2] / by_workers[1]
            out.append(f"stateful {policy}: 2 workers / 1 worker, best events/s {by_workers[2]:,.0f} / {by_workers[1]:,.0f}"
                       f" = {ratio:.2f} (target >= 1.5): " + ("met" if ratio >= 1.5 else "NOT met"))
    return out


def write(args: argparse.Namespace, folder: Path, step_folder: Path | None, rows: list[dict[str, Any]],
          baselines: dict[str, Any]) -> None:
    environment = {"python": platform.python_version(), "cpus": os.cpu_count(), "machine": platform.machine(),
                   "processor": _cpu_model()}
    settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    result = {"artifact": str(folder), "step_artifact": str(step_folder) if step_folder else None,
              "command": " ".join(sys.argv), "settings": settings, "environment": environment,
              "in_process": baselines, "rows": rows, "targets": targets(rows)}
    (args.out / "serve_load.json").write_text(json.dumps(result, indent=2) + "\n")
    text = (f"# compress serve load test\n\nartifact `{folder}`; {environment['cpus']} CPUs ({environment['processor']}); "
            f"max batch {args.max_batch}, max wait {args.max_wait_ms} ms; onnxruntime threads per worker "
            f"{args.threads or 'default'}; at most {args.requests} requests or {args.seconds} s per cell; stateful: "
            f"{args.users} users per cell, each starting with {args.history} items in its window, one warm-up "
            f"event each.\n\n{table(rows)}\n\n" + "\n".join(f"- {t}" for t in result["targets"]) + "\n"
            + "".join(f"- in-process {b['policy']} at batch {b['batch']}: top-10 identical to {b['compared_with']} for "
                      f"{b['same_top10']:.1%} of events, overlap {b['top10_overlap']:.1%} (random items)\n"
                      for b in baselines.values() if isinstance(b, dict) and "compared_with" in b))
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
