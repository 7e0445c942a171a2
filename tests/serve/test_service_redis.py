"""compress serve with its users' state in a real Redis (redis-server on a free loopback port): the store's
compare-and-set, two server processes sharing it, one killed with SIGKILL mid-stream and another going on
with no event lost or applied twice, and answers equal to an uninterrupted run's."""

import json
import shutil
import subprocess
import threading
import time

import httpx
import numpy as np
import pytest

from compress.serve.events import EventEngine
from compress.serve.requests import Event
from compress.serve.state_store import APPLIED, DUPLICATE, STALE, Commit, MemoryStateStore, RedisStateStore
from tests.serve.test_service_http import Server, free_port

pytestmark = pytest.mark.skipif(shutil.which("redis-server") is None,
                                reason="redis-server is not installed (apt-get install redis-server; .ci/run does)")


class Redis:
    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        store = RedisStateStore(self.url)
        deadline = time.monotonic() + 20
        while not store.ping():
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("redis-server did not start")
            time.sleep(0.05)
        store.close()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)


@pytest.fixture(scope="module")
def redis_url():
    server = Redis()
    yield server.url
    server.stop()


def test_redis_store_applies_each_event_once_by_compare_and_set(redis_url):
    store = RedisStateStore(redis_url, prefix="cas:", keep_ids=3)
    recs = {"items": [1], "scores": [0.5]}
    assert store.load(["u"], ["e1"])[0].seq == 0
    assert store.commit([Commit("u", 0, ["a"], recs, "e1")]) == [APPLIED]
    assert store.commit([Commit("u", 0, ["a", "b"], recs, "e2")]) == [STALE]  # someone else applied seq 1
    assert store.commit([Commit("u", 1, ["a", "a"], recs, "e1")]) == [DUPLICATE]
    assert store.commit([Commit("u", 1, ["a", "b"], recs, None), Commit("v", 0, ["c"], recs, "e1")]) == [APPLIED] * 2
    state, other = store.load(["u", "v"], ["e1", None])
    assert (state.window, state.seq, state.recs, state.seen) == (["a", "b"], 2, recs, True)
    assert (other.window, other.seq, other.seen) == (["c"], 1, False)
    for n in range(2, 6):  # the oldest event ids fall out past keep_ids
        assert store.commit([Commit("u", n, ["x"], recs, f"e{n}")]) == [APPLIED]
    assert [s.seen for s in store.load(["u"] * 3, ["e1", "e3", "e5"])] == [False, True, True]
    store.close()


def events_stream(items, users=6, per_user=14, seed=2):
    """Interleaved events of several users, each with a unique id; longer than max_len 8 (the window slides)."""
    rng = np.random.default_rng(seed)
    order = [u for u in range(users) for _ in range(per_user)]
    rng.shuffle(order)
    counts = [0] * users
    stream = []
    for u in order:
        stream.append({"user": f"user{u}", "item": items[int(rng.integers(len(items)))], "id": f"user{u}-{counts[u]}"})
        counts[u] += 1
    return stream


@pytest.mark.slow
def test_a_replica_killed_mid_stream_loses_no_event_and_applies_none_twice(redis_url, tiny_step_onnx, tiny_data):
    folder = tiny_step_onnx[1]
    items = tiny_data.item_ids.tolist()
    stream = events_stream(items)
    requests = [stream[i : i + 6] for i in range(0, len(stream), 6)]
    # the uninterrupted run: one replica, in-process state, the same requests
    reference = EventEngine(folder, MemoryStateStore())
    expected = {}
    for request in requests:
        for event, outcome in zip(request, reference.apply([Event(e["user"], str(e["item"]), e["id"]) for e in request])):
            expected[event["id"]] = outcome
    args = ["--redis", redis_url, "--max-wait-ms", "1"]
    a, b = Server(folder, *args), Server(folder, *args)
    got = {}

    def check(results):
        for result in results:
            want = expected[result["id"]]
            assert result["items"] == want.items, result["id"]
            assert np.abs(np.array(result["scores"]) - want.scores).max() < 1e-5

    try:
        kill_at = len(requests) // 2
        for n, request in enumerate(requests[:kill_at]):  # alternate replicas: each rebuilds what the other moved
            results = (a if n % 2 else b).post("/events", json={"events": request}).json()["results"]
            check(results)
            got.update((r["id"], r) for r in results)
        # a request in flight on A when it is killed: applied wholly, partly or not at all
        in_flight = requests[kill_at]
        sender = threading.Thread(target=lambda: _post_ignoring_errors(a.url, in_flight))
        sender.start()
        time.sleep(0.01)
        a.kill()
        sender.join(30)
        # the client retries the request on B, then goes on there
        for request in requests[kill_at:]:
            response = b.post("/events", json={"events": request})
            assert response.status_code == 200, response.text
            results = response.json()["results"]
            check(results)
            got.update((r["id"], r) for r in results)
        assert set(got) == {e["id"] for e in stream}
        # every event applied exactly once: each user's sequence number counts its events, its window the last 8
        store = RedisStateStore(redis_url)
        users = sorted({e["user"] for e in stream})
        for user, state in zip(users, store.load(users, [None] * len(users))):
            mine = [str(e["item"]) for e in stream if e["user"] == user]
            assert state.seq == len(mine) and state.window == mine[-8:]
        store.close()
        text = b.client.get("/metrics").text
        assert "compress_serve_state_total" in text and b.client.get("/readyz").json()["ready"]
    finally:
        a.stop()
        b.stop()


def _post_ignoring_errors(url, events):
    try:
        httpx.post(url + "/events", json={"events": events}, timeout=10)
    except httpx.HTTPError:
        pass  # the replica died under it


@pytest.mark.slow
def test_a_lost_redis_is_a_503_and_not_ready(tiny_step_onnx, tiny_data):
    redis = Redis()
    server = Server(tiny_step_onnx[1], "--redis", redis.url)
    try:
        item = tiny_data.item_ids.tolist()[0]
        assert server.post("/events", json={"events": [{"user": "u", "item": item}]}).status_code == 200
        redis.stop()
        response = server.post("/events", json={"events": [{"user": "u", "item": item}]})
        assert response.status_code == 503 and response.json()["error"]["code"] == "state_store_unavailable"
        assert server.client.get("/readyz").status_code == 503
        assert server.client.get("/healthz").status_code == 200
        assert server.post("/recommend", json={"history": [item]}).status_code == 200  # stateless goes on
        assert json.loads(server.client.get("/readyz").text)["checks"]["state_store"] is False
    finally:
        server.stop()
        redis.stop()


@pytest.mark.slow
def test_two_workers_share_redis_and_report_metrics_together(redis_url, tiny_step_onnx, tiny_data):
    server = Server(tiny_step_onnx[1], "--redis", redis_url, "--workers", "2", timeout=180)
    try:
        items = tiny_data.item_ids.tolist()
        windows = []
        for n in range(12):  # new connections: uvicorn's workers share the socket, so both get some
            response = httpx.post(server.url + "/events", json={"events": [{"user": "w", "item": items[n], "id": str(n)}]})
            windows.append(response.json()["results"][0]["window"])
        assert windows == [min(n + 1, 8) for n in range(12)]
        text = server.client.get("/metrics").text
        assert sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                   if line.startswith("compress_serve_items_total") and 'kind="events"' in line) == 12
    finally:
        server.stop()
