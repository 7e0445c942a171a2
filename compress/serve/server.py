"""The HTTP shell of `compress serve`: Starlette on uvicorn. It parses, micro-batches and reports; the work
is in plain modules (requests.py: validation, service.py: scoring and state, batcher.py: batching).

Endpoints: POST /recommend, POST /events, GET /healthz, /readyz, /metrics, /model. Every client
mistake is a 4xx JSON `{"error": {"code", "message"}}` (requests.py); an unreachable state store is a
503; anything else a 500 JSON (a bug: logged with its traceback). The server keeps serving after each.
"""

from __future__ import annotations

import logging
import os
import sys
import tempfile
import time
from collections import Counter
from contextlib import asynccontextmanager
from typing import Any, Awaitable, Callable

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from compress.errors import CompressError
from compress.serve.batcher import MicroBatcher
from compress.serve.metrics import MULTIPROC_ENV, Metrics
from compress.serve.requests import RequestError, decode_json, parse_events, parse_recommend
from compress.serve.service import ServeConfig, Service
from compress.serve.state_store import StateStoreError

CONFIG_ENV = "COMPRESS_SERVE_CONFIG"  # the config of `--workers N` workers (JSON)
log = logging.getLogger("compress.serve")


def create_app(service: Service) -> Starlette:
    config, limits, metrics = service.config, service.limits, Metrics()
    wait = config.max_wait_ms / 1000

    def batch_metrics(kind: str) -> Callable[[int, int], None]:
        def record(items: int, requests: int) -> None:
            metrics.batch_items.labels(kind).observe(items)
            metrics.batch_requests.labels(kind).observe(requests)
        return record

    reported: Counter[str] = Counter()  # engine seconds already added to the metrics
    recommender = MicroBatcher(service.score, config.max_batch, wait, "recommend", batch_metrics("recommend"))
    applier = MicroBatcher(service.apply, config.max_batch, wait, "events", batch_metrics("events"))

    async def read_body(request: Request) -> bytes:
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limits.max_body_bytes:
            raise RequestError(413, "body_too_large", f"request body of {declared} bytes exceeds {limits.max_body_bytes}")
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limits.max_body_bytes:
                raise RequestError(413, "body_too_large", f"request body exceeds {limits.max_body_bytes} bytes")
            chunks.append(chunk)
        return b"".join(chunks)

    async def recommend(request: Request) -> Response:
        parsed = parse_recommend(decode_json(await read_body(request), limits), limits, service.top_k)
        rows = [service.scorer.encode(h, f"histories[{i}]") for i, h in enumerate(parsed.histories)]
        k = parsed.top_k or service.top_k
        results = []
        for row, (items, scores) in zip(rows, await recommender.submit(rows)):
            result: dict[str, Any] = {"items": items[:k], "scores": scores[:k]}
            if row.truncated:
                result["truncated"] = row.truncated
                metrics.truncated.inc()
            if row.unknown:
                result["unknown"] = row.unknown
                metrics.unknown.inc(len(row.unknown))
            results.append(result)
        metrics.items.labels("recommend").inc(len(rows))
        body: dict[str, Any] = {"results": results}
        if any(r.truncated for r in rows):
            body["note"] = (f"histories longer than max_len {service.scorer.max_len} were truncated to their last "
                            f"{service.scorer.max_len} known items (`truncated`: items dropped)")
        return JSONResponse(body)

    async def events(request: Request) -> Response:
        if service.engine is None:
            raise RequestError(404, "no_step_model", f"/events is not served: {service.events_unavailable}")
        parsed = parse_events(decode_json(await read_body(request), limits), limits, service.top_k)
        service.engine.check(parsed.events)
        k = parsed.top_k or service.top_k
        engine = service.engine
        evictions, conflicts = engine.evictions, engine.counts["conflict"]
        outcomes = await applier.submit(parsed.events)
        metrics.evictions.inc(max(0, engine.evictions - evictions))  # approximate under concurrent batches
        metrics.conflicts.inc(max(0, engine.counts["conflict"] - conflicts))
        for phase, seconds in list(engine.seconds.items()):  # the batches finished since the last request
            metrics.event_seconds.labels(phase).inc(seconds - reported[phase])
            reported[phase] = seconds
        results = []
        for o in outcomes:
            result: dict[str, Any] = {"user": o.user, "item": o.item, "id": o.id}
            if o.error:
                result["error"] = o.error
            else:
                result |= {"items": o.items[:k], "scores": o.scores[:k], "state": o.state, "window": o.window}
                if o.duplicate:
                    result["duplicate"] = True
                metrics.state.labels("duplicate" if o.duplicate else o.state if o.state in ("hit", "full")
                                     else "miss").inc()
            results.append(result)
        metrics.items.labels("events").inc(len(outcomes))
        return JSONResponse({"results": results})

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def readyz(request: Request) -> Response:
        ready, checks = service.ready()
        return JSONResponse({"ready": ready, "checks": checks}, status_code=200 if ready else 503)

    async def model(request: Request) -> Response:
        return JSONResponse(service.model_info())

    async def prometheus(request: Request) -> Response:
        body, content_type = metrics.exposition()
        return Response(body, media_type=content_type)

    def endpoint(name: str, handler: Callable[[Request], Awaitable[Response]]) -> Callable[[Request], Awaitable[Response]]:
        async def run(request: Request) -> Response:
            start = time.perf_counter()
            try:
                response = await handler(request)
            except RequestError as exc:
                response = JSONResponse(exc.body(), status_code=exc.status)
            except ClientDisconnect:
                response = Response(status_code=499)
            except StateStoreError as exc:
                response = JSONResponse(RequestError(503, "state_store_unavailable", str(exc)).body(), status_code=503)
            except Exception as exc:  # noqa: BLE001 - a bug: logged, answered, the server keeps serving
                log.exception("internal error on %s", name)
                response = JSONResponse({"error": {"code": "internal", "message": f"{type(exc).__name__}: {exc}"}},
                                        status_code=500)
            status = response.status_code
            outcome = ("ok" if status < 400 else "client_error" if status < 500 else
                       "unavailable" if status == 503 else "error")
            metrics.requests.labels(name, outcome, str(status)).inc()
            metrics.latency.labels(name).observe(time.perf_counter() - start)
            return response
        return run

    async def http_error(request: Request, exc: Exception) -> Response:
        status = exc.status_code if isinstance(exc, HTTPException) else 500
        detail = exc.detail if isinstance(exc, HTTPException) else "internal error"
        return JSONResponse({"error": {"code": "http", "message": f"{request.method} {request.url.path}: {detail}"}},
                            status_code=status)

    @asynccontextmanager
    async def lifespan(app: Starlette):
        recommender.start()
        applier.start()
        try:
            yield
        finally:
            await recommender.stop()
            await applier.stop()
            service.close()

    routes = [
        Route("/recommend", endpoint("recommend", recommend), methods=["POST"]),
        Route("/events", endpoint("events", events), methods=["POST"]),
        Route("/healthz", endpoint("healthz", healthz), methods=["GET"]),
        Route("/readyz", endpoint("readyz", readyz), methods=["GET"]),
        Route("/model", endpoint("model", model), methods=["GET"]),
        Route("/metrics", prometheus, methods=["GET"]),
    ]
    app = Starlette(routes=routes, lifespan=lifespan, exception_handlers={HTTPException: http_error,
                                                                          Exception: http_error})
    app.state.service = service
    return app


def app_from_env() -> Starlette:
    """The app of one uvicorn worker (`--workers N`): the config comes from the parent in CONFIG_ENV."""
    return create_app(Service(ServeConfig.from_json(os.environ[CONFIG_ENV])))


def serve(config: ServeConfig, log_level: str = "warning") -> None:
    """Load the artifact (errors before binding), then run uvicorn until SIGINT/SIGTERM."""
    import uvicorn

    service = Service(config)
    if config.workers > 1 and service.engine is not None and not config.redis:
        service.close()
        raise CompressError(f"--workers {config.workers} without --redis: each worker would keep its own users' "
                            "state", "give --redis redis://127.0.0.1:6379/0 (state shared by the workers), or --workers 1")
    describe(service, config)
    common = dict(host=config.host, port=config.port, log_level=log_level, access_log=False,
                  timeout_graceful_shutdown=5)
    if config.workers == 1:
        uvicorn.run(create_app(service), **common)
        return
    service.close()
    os.environ[CONFIG_ENV] = config.to_json()
    with tempfile.TemporaryDirectory(prefix="compress-metrics-") as folder:
        os.environ[MULTIPROC_ENV] = folder
        uvicorn.run("compress.serve.server:app_from_env", factory=True, workers=config.workers, **common)


def describe(service: Service, config: ServeConfig) -> None:
    """What is served, on stderr, before uvicorn starts."""
    scorer = service.scorer
    lines = [f"serving {service.folder} on http://{config.host}:{config.port} ({config.workers} worker(s))",
             f"  /recommend: model.onnx, K {scorer.top_k}, max_len {scorer.max_len}, "
             + ("one row per onnxruntime call (batch-wide ops " + ", ".join(scorer.batch_wide) + ": results would "
                "depend on batch partners)" if scorer.row_at_a_time else
                f"micro-batches of up to {config.max_batch} within {config.max_wait_ms} ms")]
    if service.engine is None:
        lines.append(f"  /events: not served: {service.events_unavailable}")
    else:
        engine = service.engine
        lines.append(f"  /events: {engine.folder / 'step.onnx'}, state in {engine.store.kind}"
                     + (f" ({config.redis})" if config.redis else "") + f", overflow policy {engine.overflow}, "
                     f"KV cache {engine.cache_capacity:,} users ({engine.cache_capacity * engine.kv.slot_bytes / 2**20:,.0f} "
                     "MiB at max_len)")
    print("\n".join(lines), file=sys.stderr, flush=True)
