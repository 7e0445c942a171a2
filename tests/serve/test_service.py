"""compress serve without a server: validation, batch independence (int8 too), the event engine's state and
overflow policy, the micro-batcher, the torch-free import, and the two `compress predict` fixes."""

import asyncio
import json
import subprocess
import sys

import numpy as np
import pytest

from compress.data.padding import left_pad
from compress.export.quantize import quantize_onnx
from compress.serve.batcher import MicroBatcher
from compress.serve.events import EventEngine
from compress.serve.onnx_model import OnnxRecommender
from compress.serve.requests import Event, Limits, RequestError, decode_json, parse_events, parse_recommend
from compress.serve.scoring import HistoryScorer
from compress.serve.service import ServeConfig, Service
from compress.serve.state_store import MemoryStateStore
from tests.serve.test_predict import NO_TORCH_CLI

SERVE_MODULES = ["compress.serve." + m for m in
                 ("server", "service", "events", "scoring", "state_store", "batcher", "metrics", "requests")]


@pytest.fixture(scope="session")
def tiny_int8(tiny_onnx, tmp_path_factory):
    """The tiny export quantized as the quantize stage does by default (onnxruntime dynamic int8)."""
    folder = tmp_path_factory.mktemp("int8") / "onnx"
    quantize_onnx(tiny_onnx[1], folder, "dynamic", per_channel=True, reduce_range=True)
    return folder


def random_histories(num_items, count=64, seed=0, longest=30):
    rng = np.random.default_rng(seed)
    return [rng.integers(1, num_items + 1, rng.integers(1, longest)) for _ in range(count)]


# --- validation: every mistake is a RequestError with a 4xx status, nothing else ---------------------------

LIMITS = Limits(max_body_bytes=2000, max_histories=4, max_events=4, max_id_chars=20)


@pytest.mark.parametrize("body, status, code", [
    (b"\xff\xfe{}", 400, "not_utf8"),
    (b"{\"histories\": [[1, 2]", 400, "malformed_json"),
    (b"", 400, "empty_body"),
    (b"NaN", 400, "malformed_json"),
    (b"[" * 100_000, 413, "body_too_large"),
    (b"[" * 1900, 400, "malformed_json"),  # deep nesting is a malformed body, not a RecursionError
])
def test_unreadable_bodies(body, status, code):
    with pytest.raises(RequestError) as caught:
        decode_json(body, LIMITS)
    assert (caught.value.status, caught.value.code) == (status, code)


@pytest.mark.parametrize("payload, status, code", [
    ([], 422, "not_an_object"),
    ({}, 422, "missing_field"),
    ({"histories": [[1]], "extra": 1}, 422, "unknown_field"),
    ({"histories": "1 2"}, 422, "bad_histories"),
    ({"histories": []}, 422, "empty_histories"),
    ({"histories": [[1]] * 5}, 413, "too_many_histories"),
    ({"histories": [1]}, 422, "bad_history"),
    ({"histories": [[]]}, 422, "empty_history"),
    ({"histories": [[1.5]]}, 422, "bad_id"),
    ({"histories": [[None]]}, 422, "bad_id"),
    ({"histories": [[True]]}, 422, "bad_id"),
    ({"histories": [[" "]]}, 422, "empty_id"),
    ({"histories": [["x" * 21]]}, 422, "id_too_long"),
    ({"histories": [[1]], "top_k": 0}, 422, "bad_top_k"),
    ({"histories": [[1]], "top_k": 11}, 422, "bad_top_k"),
    ({"histories": [[1]], "top_k": "5"}, 422, "bad_top_k"),
])
def test_bad_recommend_requests(payload, status, code):
    with pytest.raises(RequestError) as caught:
        parse_recommend(payload, LIMITS, 10)
    assert (caught.value.status, caught.value.code) == (status, code)
    assert json.dumps(caught.value.body())  # JSON-ready


@pytest.mark.parametrize("payload, status, code", [
    ({"events": {}}, 422, "bad_events"),
    ({"events": []}, 422, "empty_events"),
    ({"events": [{"user": 1, "item": 2}] * 5}, 413, "too_many_events"),
    ({"events": [[1, 2]]}, 422, "bad_event"),
    ({"events": [{"user": "u"}]}, 422, "missing_field"),
    ({"events": [{"user": "u", "item": 1, "ts": 3}]}, 422, "unknown_field"),
    ({"events": [{"user": "", "item": 1}]}, 422, "empty_id"),
    ({"events": [{"user": "u", "item": {}}]}, 422, "bad_id"),
    ({"events": [{"user": "u", "item": 1, "id": 2.5}]}, 422, "bad_id"),
])
def test_bad_event_requests(payload, status, code):
    with pytest.raises(RequestError) as caught:
        parse_events(payload, LIMITS, 10)
    assert (caught.value.status, caught.value.code) == (status, code)


def test_good_requests_parse():
    parsed = parse_recommend({"histories": [[1, "b"]], "top_k": 3}, LIMITS, 10)
    assert parsed.histories == [["1", "b"]] and parsed.top_k == 3
    assert parse_recommend({"history": [4]}, LIMITS, 10).histories == [["4"]]
    events = parse_events({"events": [{"user": 7, "item": "i", "id": "e1"}, {"user": "u", "item": 2}]}, LIMITS, 10)
    assert events.events == [Event("7", "i", "e1"), Event("u", "2", None)] and events.top_k is None


def test_unknown_ids_are_reported_truncation_is_said_and_no_known_item_is_422(tiny_step_onnx):
    scorer = HistoryScorer(tiny_step_onnx[1])
    items = [str(i) for i in scorer.original]
    encoded = scorer.encode(["nope", *items[:12]])
    assert encoded.unknown == ["nope"] and encoded.truncated == 12 - scorer.max_len
    assert encoded.ids.tolist() == list(range(5, 13))  # the last max_len known items
    with pytest.raises(RequestError) as caught:
        scorer.encode(["nope", "neither"])
    assert (caught.value.status, caught.value.code) == (422, "no_known_item")


# --- results do not depend on the batch ---------------------------------------------------------------------

def alone_and_batched(scorer, histories):
    together = scorer.score(histories)
    alone = [scorer.score([h]) for h in histories]
    return together, (np.concatenate([a[0] for a in alone]), np.concatenate([a[1] for a in alone]))


def test_dynamic_int8_is_batch_dependent_in_onnxruntime_and_served_row_by_row(tiny_int8, tiny_data):
    histories = random_histories(tiny_data.num_items)
    # the problem: one onnxruntime call over the batch changes a user's int8 scores
    raw = OnnxRecommender(tiny_int8, "cpu")
    ids = left_pad(histories, raw.max_len)
    batched = raw.topk(ids, (ids > 0).astype(np.int64))[0]
    single = np.concatenate([raw.topk(ids[i : i + 1], (ids[i : i + 1] > 0).astype(np.int64))[0] for i in range(64)])
    assert np.abs(batched - single).max() > 1e-6
    # the server's scorer sees the batch-wide op and never mixes rows in one call
    scorer = HistoryScorer(tiny_int8)
    assert scorer.row_at_a_time and scorer.batch_wide == ["DynamicQuantizeLinear"]
    (scores, top), (scores_alone, top_alone) = alone_and_batched(scorer, histories)
    assert (top == top_alone).all() and np.abs(scores - scores_alone).max() <= 1e-6
    assert np.abs(scores_alone - single).max() == 0  # and equal what onnxruntime gives a batch of one


def test_fp32_runs_whole_batches_with_results_independent_of_the_batch(tiny_onnx, tiny_data):
    scorer = HistoryScorer(tiny_onnx[1])
    assert not scorer.row_at_a_time
    (scores, top), (scores_alone, top_alone) = alone_and_batched(scorer, random_histories(tiny_data.num_items))
    assert (top == top_alone).all() and np.abs(scores - scores_alone).max() <= 1e-6


def test_event_results_do_not_depend_on_the_other_users_of_the_batch(tiny_step_onnx, tiny_data):
    folder = tiny_step_onnx[1]
    items = [str(i) for i in tiny_data.item_ids]
    rng = np.random.default_rng(3)
    streams = {f"u{u}": [items[i] for i in rng.integers(0, len(items), rng.integers(1, 14))] for u in range(24)}
    together = EventEngine(folder, MemoryStateStore())  # every user's events in the same calls
    longest = max(len(s) for s in streams.values())
    got = {u: [] for u in streams}
    for t in range(longest):
        wave = [Event(u, s[t]) for u, s in streams.items() if t < len(s)]
        for event, outcome in zip(wave, together.apply(wave)):
            got[event.user].append(outcome)
    for user, stream in streams.items():
        alone = EventEngine(folder, MemoryStateStore())
        for item, other in zip(stream, got[user]):
            [outcome] = alone.apply([Event(user, item)])
            assert outcome.items == other.items
            assert np.abs(np.array(outcome.scores) - other.scores).max() <= 1e-6


# --- the event engine: overflow policy, idempotence, replicas sharing one store ----------------------------

def full_pass(folder, internal_history):
    model = OnnxRecommender(folder, "cpu")
    ids = left_pad([np.array(internal_history)], model.max_len)
    scores, top = model.topk(ids, (ids > 0).astype(np.int64))
    return scores[0], top[0]


def test_exact_overflow_policy_equals_the_full_pass_on_the_last_max_len_events(tiny_step_onnx, tiny_data):
    folder = tiny_step_onnx[1]
    original = [str(i) for i in tiny_data.item_ids]
    history = [3, 9, 12, 40, 2, 7, 7, 18, 5, 33, 21, 4, 9, 16, 30, 1, 8, 44, 2, 19]  # 20 events, max_len 8
    engine = EventEngine(folder, MemoryStateStore())
    for t, item in enumerate(history, start=1):
        [outcome] = engine.apply([Event("u", original[item - 1])])
        scores, top = full_pass(folder, history[:t])  # the full pass scores the last max_len events
        assert outcome.items == [tiny_data.item_ids[i - 1] for i in top]
        assert np.abs(np.array(outcome.scores) - scores).max() < 1e-4
        assert outcome.window == min(t, 8) and outcome.state == ("new" if t == 1 else "hit" if t <= 8 else "full")
    slide = EventEngine(folder, MemoryStateStore(), overflow="slide")
    outcomes = slide.apply([Event("u", original[i - 1]) for i in history])
    assert outcomes[7].scores == pytest.approx(full_pass(folder, history[:8])[0].tolist(), abs=1e-4)
    assert any(np.abs(np.array(o.scores) - full_pass(folder, history[: t + 1])[0]).max() > 1e-4
               for t, o in enumerate(outcomes) if t >= 8)  # sliding drifts from the full pass
    with pytest.raises(ValueError, match="overflow policy"):
        EventEngine(folder, MemoryStateStore(), overflow="grow")


def test_repeated_event_ids_are_applied_once(tiny_step_onnx, tiny_data):
    items = [str(i) for i in tiny_data.item_ids]
    store = MemoryStateStore()
    engine = EventEngine(tiny_step_onnx[1], store)
    first = engine.apply([Event("u", items[0], "e1"), Event("u", items[1], "e2")])
    again = engine.apply([Event("u", items[1], "e2"), Event("u", items[0], "e1"), Event("u", items[2], "e3")])
    assert [o.duplicate for o in again] == [True, True, False]
    assert again[0].items == first[1].items  # a duplicate answers the user's current top-K
    assert store.users["u"][0].seq == 3 and store.users["u"][0].window == items[:3]
    assert engine.counts["duplicate"] == 2


def test_unknown_items_refuse_the_whole_request(tiny_step_onnx, tiny_data):
    engine = EventEngine(tiny_step_onnx[1], MemoryStateStore())
    with pytest.raises(RequestError) as caught:
        engine.check([Event("u", str(tiny_data.item_ids[0])), Event("u", "nope")])
    assert caught.value.status == 422 and "events[1].item 'nope'" in caught.value.message


def test_replicas_sharing_a_store_rebuild_and_agree_with_one_replica(tiny_step_onnx, tiny_data):
    """Two engines (replicas) over one store, events alternating between them: each rebuilds a slot another
    moved on from the window, and every answer equals a single replica's."""
    folder = tiny_step_onnx[1]
    items = [str(i) for i in tiny_data.item_ids]
    rng = np.random.default_rng(5)
    stream = [Event(f"u{rng.integers(4)}", items[rng.integers(len(items))], f"e{n}") for n in range(60)]
    single = EventEngine(folder, MemoryStateStore())
    expected = single.apply(stream)
    shared = MemoryStateStore()
    replicas = [EventEngine(folder, shared, cache_users=2), EventEngine(folder, shared, cache_users=2)]
    got = []
    for start in range(0, len(stream), 5):
        got += replicas[(start // 5) % 2].apply(stream[start : start + 5])
    for a, b in zip(expected, got):
        assert a.items == b.items and np.abs(np.array(a.scores) - b.scores).max() < 1e-5
    assert sum(r.counts["rebuilt"] for r in replicas) > 0 and sum(r.evictions for r in replicas) > 0


def test_a_lost_race_is_retried_on_the_new_state(tiny_step_onnx, tiny_data):
    items = [str(i) for i in tiny_data.item_ids]
    shared = MemoryStateStore()
    a, b = EventEngine(tiny_step_onnx[1], shared), EventEngine(tiny_step_onnx[1], shared)
    a.apply([Event("u", items[0])])
    load = shared.load

    def racing_load(users, ids):  # another replica applies an event between a's read and its commit
        states = load(users, ids)
        shared.load = load
        b.apply([Event("u", items[1])])
        return states

    shared.load = racing_load
    [outcome] = a.apply([Event("u", items[2])])
    assert a.counts["conflict"] == 1 and outcome.window == 3 and outcome.state == "rebuilt"
    assert shared.users["u"][0].window == items[:3]


# --- service: /model and the int8 step explanation ------------------------------------------------------

def test_service_explains_what_it_serves(tiny_int8, tiny_step_onnx):
    service = Service(ServeConfig(str(tiny_int8)))
    info = service.model_info()
    assert service.engine is None and not info["events"]["available"]
    assert "writes no int8 step.onnx" in info["events"]["reason"]
    assert info["quantization"]["mode"] == "dynamic" and "one row per onnxruntime call" in info["batching"]["recommend"]
    info = Service(ServeConfig(str(tiny_step_onnx[1]))).model_info()
    assert info["events"]["overflow"]["policy"] == "exact" and info["events"]["state_store"] == "memory"
    assert "step.onnx" in info["files"] and "item_ids" not in info["metadata"]


# --- the micro-batcher -----------------------------------------------------------------------------------------

def test_micro_batcher_gathers_concurrent_requests_in_order():
    calls = []

    def double(items):
        calls.append(list(items))
        return [2 * i for i in items]

    async def main():
        batcher = MicroBatcher(double, max_batch=8, max_wait_s=0.05)
        results = await asyncio.gather(*(batcher.submit([i, 10 + i]) for i in range(6)))
        big = await batcher.submit(list(range(20)))  # larger than max_batch: a batch of its own
        await batcher.stop()
        return results, big

    results, big = asyncio.run(main())
    assert results == [[2 * i, 20 + 2 * i] for i in range(6)] and big == [2 * i for i in range(20)]
    assert [len(c) for c in calls] == [8, 4, 20]  # 4 requests of 2, then the other 2, then the big one


def test_micro_batcher_hands_an_error_to_its_batch_and_goes_on():
    def fail_on_negative(items):
        if min(items) < 0:
            raise RuntimeError("boom")
        return items

    async def main():
        batcher = MicroBatcher(fail_on_negative, max_batch=4, max_wait_s=0.0)
        with pytest.raises(RuntimeError, match="boom"):
            await batcher.submit([-1])
        ok = await batcher.submit([1, 2])
        await batcher.stop()
        return ok

    assert asyncio.run(main()) == [1, 2]


# --- torch-free, and the predict fixes -----------------------------------------------------------------------

def test_serving_imports_no_torch(tiny_step_onnx):
    code = ("import sys; sys.modules['torch'] = None\n"
            + "".join(f"import {m}\n" for m in SERVE_MODULES)
            + "from compress.serve.service import ServeConfig, Service\n"
            + f"s = Service(ServeConfig({str(tiny_step_onnx[1])!r}))\n"
            + "from compress.serve.server import create_app; create_app(s); print('ok')\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0 and "ok" in result.stdout, result.stderr


def cli(*args):
    result = subprocess.run([sys.executable, "-c", NO_TORCH_CLI, *args], capture_output=True, text=True)
    result.stderr = " ".join(result.stderr.split())
    return result


def test_predict_input_that_is_not_utf8_exits_2(tiny_step_onnx, tmp_path):
    path = tmp_path / "latin1.txt"
    path.write_bytes(b"1 2 3\n4 \xe9 5\n")
    result = cli("predict", str(tiny_step_onnx[1]), "--input", str(path))
    assert result.returncode == 2 and "latin1.txt:2: not UTF-8" in result.stderr and "Traceback" not in result.stderr
    result = cli("predict", str(tiny_step_onnx[1]), "--stateful", "--input", str(path))
    assert result.returncode == 2 and "not UTF-8" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize("stateful", [False, True])
def test_predict_top_k_zero_is_refused(tiny_step_onnx, tmp_path, stateful):
    events = tmp_path / "events.txt"
    events.write_text("u 1\n")
    args = ["--stateful", "--input", str(events)] if stateful else ["--history", "1 2"]
    result = cli("predict", str(tiny_step_onnx[1]), *args, "--top-k", "0")
    assert result.returncode == 2 and "top-k 0 is out of range" in result.stderr and not result.stdout
