"""compress serve as a real server (a subprocess that cannot import torch) on loopback: the endpoints,
micro-batching with results independent of the batch (int8 too), and bad input that never gives a 500."""

import asyncio
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

from tests.serve.test_predict import NO_TORCH_CLI
from tests.serve.test_service import random_histories, tiny_int8  # noqa: F401 - fixture

pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """`compress serve ARTIFACT ARGS` on a free loopback port, ready once /healthz answers."""

    def __init__(self, artifact: Path, *args: str, timeout: float = 90) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = tempfile.NamedTemporaryFile("w+", suffix=".log", delete=False)
        command = [sys.executable, "-c", NO_TORCH_CLI, "serve", str(artifact), "--port", str(self.port), *args]
        self.process = subprocess.Popen(command, stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited {self.process.returncode}: {self.output()}")
            try:
                if httpx.get(self.url + "/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                self.kill()
                raise RuntimeError(f"server not up in {timeout}s: {self.output()}")
            time.sleep(0.1)
        self.client = httpx.Client(base_url=self.url, timeout=30)

    def output(self) -> str:
        return Path(self.log.name).read_text()

    def post(self, path: str, **kwargs) -> httpx.Response:
        return self.client.post(path, **kwargs)

    def kill(self) -> None:
        """SIGKILL: no shutdown, no flush, as a crashed replica."""
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()
        os.unlink(self.log.name)


@pytest.fixture(scope="module")
def step_server(tiny_step_onnx):
    server = Server(tiny_step_onnx[1], "--max-batch", "64", "--max-wait-ms", "20", "--max-body-bytes", "20000",
                    "--max-histories", "100", "--max-events", "100")
    yield server
    server.stop()


def metric(text: str, name: str, **labels: str) -> float:
    """Sum of a metric's samples whose labels include `labels`."""
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name) and all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_endpoints(step_server, tiny_data):
    items = tiny_data.item_ids.tolist()
    assert step_server.client.get("/healthz").json() == {"status": "ok"}
    assert step_server.client.get("/readyz").json()["ready"] is True
    model = step_server.client.get("/model").json()
    assert model["max_len"] == 8 and model["top_k"] == 10 and model["events"]["overflow"]["policy"] == "exact"
    response = step_server.post("/recommend", json={"histories": [items[:3], [items[4], "nope"], items[:20]],
                                                    "top_k": 4})
    assert response.status_code == 200
    results = response.json()["results"]
    assert [len(r["items"]) for r in results] == [4, 4, 4] and results[1]["unknown"] == ["nope"]
    assert results[2]["truncated"] == 12 and "truncated" in response.json()["note"]
    events = step_server.post("/events", json={"events": [{"user": "a", "item": items[0], "id": "1"},
                                                          {"user": "a", "item": items[1], "id": "2"},
                                                          {"user": "b", "item": items[2]}]}).json()["results"]
    assert [e["window"] for e in events] == [1, 2, 1] and [e["state"] for e in events] == ["new", "hit", "new"]
    again = step_server.post("/events", json={"events": [{"user": "a", "item": items[1], "id": "2"}]}).json()
    assert again["results"][0]["duplicate"] is True and again["results"][0]["items"] == events[1]["items"]
    text = step_server.client.get("/metrics").text
    assert metric(text, "compress_serve_requests_total", endpoint="events", outcome="ok") >= 2
    assert metric(text, "compress_serve_state_total", result="hit") >= 1
    assert metric(text, "compress_serve_state_total", result="miss") >= 2
    assert metric(text, "compress_serve_state_total", result="duplicate") == 1
    assert metric(text, "compress_serve_request_seconds_count", endpoint="recommend") >= 1
    assert "compress_serve_batch_items_bucket" in text and "compress_serve_state_evictions_total" in text


BAD_REQUESTS = [
    ("/recommend", b"{not json", 400),
    ("/recommend", b'{"histories": [["\xff\xfe"]]}', 400),
    ("/recommend", b"", 400),
    ("/recommend", b"[]", 422),
    ("/recommend", b'{"histories": [[]]}', 422),
    ("/recommend", b'{"histories": [["no-such-item"]]}', 422),
    ("/recommend", b'{"histories": [[1]], "top_k": -3}', 422),
    ("/recommend", b'{"histories": [[{"a": 1}]]}', 422),
    ("/recommend", b'{"histories": ' + b"[[1]]" * 0 + b"[" + b",".join([b"[1]"] * 101) + b"]}", 413),
    ("/recommend", b'{"histories": [[' + b",".join([b"1"] * 11000) + b"]]}", 413),
    ("/events", b'{"events": [{"user": "u"}]}', 422),
    ("/events", b'{"events": [{"user": "u", "item": "no-such-item"}]}', 422),
    ("/events", b'{"events": [{"user": null, "item": 1}]}', 422),
    ("/events", b'{"events": "u 1"}', 422),
    ("/events", b'{"events": [' + b",".join([b'{"user": 1, "item": 1}'] * 101) + b"]}", 413),
    ("/nowhere", b"{}", 404),
]


def test_bad_input_is_a_4xx_json_error_and_the_server_keeps_serving(step_server, tiny_data):
    before = step_server.client.get("/metrics").text
    for path, body, status in BAD_REQUESTS:
        response = step_server.post(path, content=body, headers={"content-type": "application/json"})
        assert response.status_code == status, (path, body[:60], response.text)
        assert "message" in response.json()["error"]
    assert step_server.client.get("/recommend").status_code == 405
    # nothing was applied by the refused event requests
    refused = step_server.post("/events", json={"events": [{"user": "z", "item": tiny_data.item_ids.tolist()[0]},
                                                           {"user": "z", "item": "no-such-item"}]})
    assert refused.status_code == 422
    first = step_server.post("/events", json={"events": [{"user": "z", "item": tiny_data.item_ids.tolist()[0]}]}).json()
    assert first["results"][0]["window"] == 1
    assert step_server.post("/recommend", json={"histories": [[tiny_data.item_ids.tolist()[0]]]}).status_code == 200
    after = step_server.client.get("/metrics").text
    errors = metric(after, "compress_serve_requests_total", outcome="client_error")
    assert errors - metric(before, "compress_serve_requests_total", outcome="client_error") >= len(BAD_REQUESTS) - 1
    assert metric(after, "compress_serve_requests_total", outcome="error") == 0
    assert "Traceback" not in step_server.output()


async def concurrent(url: str, bodies: list[dict], path: str = "/recommend") -> list[dict]:
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=httpx.Limits(max_connections=len(bodies))) as client:
        responses = await asyncio.gather(*(client.post(path, json=body) for body in bodies))
    assert all(r.status_code == 200 for r in responses), [r.text for r in responses if r.status_code != 200][:1]
    return [r.json() for r in responses]


@pytest.mark.parametrize("which", ["fp32", "int8"])
def test_micro_batched_results_equal_results_alone(which, tiny_onnx, tiny_int8, tiny_data):  # noqa: F811
    """The same history served alone and among 63 concurrent others: same top-K, scores within 1e-6."""
    server = Server(tiny_onnx[1] if which == "fp32" else tiny_int8, "--max-batch", "64", "--max-wait-ms", "50")
    try:
        original = tiny_data.item_ids.tolist()
        histories = [[original[i - 1] for i in h] for h in random_histories(tiny_data.num_items, 64, seed=7)]
        alone = [server.post("/recommend", json={"history": h}).json()["results"][0] for h in histories]
        batches_before = metric(server.client.get("/metrics").text, "compress_serve_batch_items_count")
        together = [r["results"][0] for r in asyncio.run(concurrent(server.url, [{"history": h} for h in histories]))]
        text = server.client.get("/metrics").text
        batches = metric(text, "compress_serve_batch_items_count") - batches_before
        assert batches < 64  # concurrent requests shared onnxruntime calls (micro-batches)
        for a, b in zip(alone, together):
            assert a["items"] == b["items"] and np.abs(np.array(a["scores"]) - b["scores"]).max() <= 1e-6
        if which == "int8":
            model = server.client.get("/model").json()
            assert "one row per onnxruntime call" in model["batching"]["recommend"]
            assert not model["events"]["available"] and "int8" in model["events"]["reason"]
            refused = server.post("/events", json={"events": [{"user": "u", "item": original[0]}]})
            assert refused.status_code == 404 and "no step model" in refused.json()["error"]["message"]
    finally:
        server.stop()


def test_concurrent_events_of_many_users_equal_each_user_alone(step_server, tiny_data):
    original = tiny_data.item_ids.tolist()
    rng = np.random.default_rng(11)
    users = [f"c{u}" for u in range(32)]
    streams = {u: [original[i] for i in rng.integers(0, len(original), 10)] for u in users}
    got = {u: [] for u in users}
    for t in range(10):  # each round: one request per user, all concurrent
        bodies = [{"events": [{"user": u, "item": streams[u][t], "id": f"{u}-{t}"}]} for u in users]
        for u, response in zip(users, asyncio.run(concurrent(step_server.url, bodies, "/events"))):
            got[u].append(response["results"][0])
    for u in users[:4]:  # the same stream alone, one user per request, under another name
        for t, item in enumerate(streams[u]):
            alone = step_server.post("/events", json={"events": [{"user": "solo-" + u, "item": item}]}).json()
            assert alone["results"][0]["items"] == got[u][t]["items"]
            assert np.abs(np.array(alone["results"][0]["scores"]) - got[u][t]["scores"]).max() <= 1e-6


def test_serve_refuses_bad_options_with_exit_2(tiny_step_onnx, tmp_path):
    def run(*args):
        result = subprocess.run([sys.executable, "-c", NO_TORCH_CLI, "serve", *args], capture_output=True, text=True,
                                timeout=120)
        return result.returncode, " ".join(result.stderr.split())

    code, err = run(str(tmp_path))
    assert code == 2 and "not an ONNX artifact" in err and "Traceback" not in err
    code, err = run(str(tiny_step_onnx[1]), "--workers", "2", "--port", str(free_port()))
    assert code == 2 and "without --redis" in err
    code, err = run(str(tiny_step_onnx[1]), "--overflow", "grow", "--port", str(free_port()))
    assert code == 2 and "--overflow 'grow'" in err
