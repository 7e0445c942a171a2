"""Stateful serving: per-event top-K equal to the full pass, LRU eviction, the window policy, bad events."""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from compress.errors import ArtifactError
from compress.serve.locate import resolve_artifact
from compress.serve.onnx_model import OnnxRecommender
from compress.data.padding import left_pad
from compress.serve.stateful import EventResult, StatefulRecommender, event_records, parse_event
from compress.models.step import StepGraph, append, empty_past
from compress.serve.step_model import OnnxStepModel, next_items
from tests.serve.test_predict import NO_TORCH_CLI


def full_topk(folder, internal_histories, k=10):
    model = OnnxRecommender(folder)
    ids = left_pad([np.array(h) for h in internal_histories], model.max_len)
    return model.topk(ids, (ids > 0).astype(np.int64))[1][:, :k]


def test_event_stream_gives_the_full_pass_top_k_while_the_history_fits(tiny_step_onnx, tiny_data):
    _, folder = tiny_step_onnx
    original = tiny_data.item_ids.tolist()
    streams = {"a": [3, 7, 7, 21, 40], "b": [12], "c": [5, 6, 9]}
    events = [(u, original[i - 1]) for t in range(5) for u, s in streams.items() if t < len(s) for i in [s[t]]]
    events += [("a", original[2]), ("a", original[4])]  # two events of one user in one call stay in order
    server = StatefulRecommender(folder)
    results = server.observe(events)
    seen = {u: [] for u in streams}
    for (user, item), result in zip(events, results):
        seen[user].append(original.index(item) + 1)
        assert result.error is None and result.positions == len(seen[user])
        assert result.state == ("new" if len(seen[user]) == 1 else "cached")
        expected = full_topk(folder, [seen[user]])[0]
        assert result.items == [original[i - 1] for i in expected]
    assert server.stats()["users"] == 3 and server.stats()["state_bytes_per_user_mean"] > 0


def test_lru_evicts_the_least_recent_user_who_then_starts_again(tiny_step_onnx, tiny_data):
    _, folder = tiny_step_onnx
    item = str(tiny_data.item_ids[0])
    server = StatefulRecommender(folder, max_users=2)
    server.observe([("a", item)])
    server.observe([("b", item)])
    server.observe([("a", item)])  # a is now more recent than b
    server.observe([("c", item)])  # evicts b
    assert list(server.users) == ["a", "c"] and server.evictions == 1
    [again] = server.observe([("b", item)])  # takes a's slot (a holds 2 positions): nothing of a's leaks
    assert again.state == "new" and again.positions == 1 and list(server.users) == ["c", "b"]
    assert again.items == [tiny_data.item_ids[i - 1] for i in full_topk(folder, [[1]])[0]]
    stats = server.stats()
    assert stats["users"] == 2 and stats["evictions"] == 2


def test_unknown_items_are_skipped_and_change_no_state(tiny_step_onnx, tiny_data):
    _, folder = tiny_step_onnx
    item = str(tiny_data.item_ids[3])
    server = StatefulRecommender(folder)
    first, unknown, second = server.observe([("u", item), ("u", "no-such-item"), ("u", item)])
    assert unknown.error.startswith("unknown item id 'no-such-item'") and unknown.items == []
    assert first.positions == 1 and second.positions == 2
    with pytest.raises(ValueError, match="expected `user item`"):
        parse_event("just-one-field")
    assert parse_event("u1,42") == ("u1", "42") and parse_event("u1 42 978300760") == ("u1", "42")


def test_window_policy_slides_and_refresh_every_one_is_full_recompute(tiny_step_onnx):
    _, folder = tiny_step_onnx
    step = OnnxStepModel(folder)
    history = list(range(1, 15))  # longer than max_len 8

    def replay(refresh_every):
        store = step.new_store(1)
        for item in history:
            out = step.advance(store, [0], [next_items(store, 0, item, refresh_every)], scores=True)
            assert store.length[0] <= step.max_len
        return out, store

    slid, store = replay(0)
    assert store.length[0] == 8 and store.position[0] == 14 and store.window(0).tolist() == history[-8:]
    assert store.overflowed[0] == 6 and store.write[0] == 14 % 8  # a ring: the oldest position is overwritten
    recomputed, store = replay(1)
    assert store.position[0] == 8  # every overflowing event re-prefills the window from position 0
    expected = full_topk(folder, [history])[0]
    assert recomputed.top_ids[0].tolist() == expected.tolist()
    # sliding keeps deeper layers' context from dropped items: close to, but not the same as, recompute
    assert not np.allclose(slid.scores[0, 1:], recomputed.scores[0, 1:], atol=1e-6)
    assert set(slid.top_ids[0].tolist()).isdisjoint(history[-8:])


@torch.no_grad()
def test_the_ring_slide_equals_dropping_the_oldest_cached_position(tiny_step_onnx):
    """The slot overwrites its oldest position in place; the policy it implements drops that position and
    appends (PyTorch step over a cache kept oldest first): same scores and cached keys/values."""
    model, folder = tiny_step_onnx
    step, graph = OnnxStepModel(folder), StepGraph(model, 10)
    history = [3, 9, 12, 40, 2, 7, 7, 18, 5, 33, 21, 4, 9, 16, 30, 1, 8]  # wraps the ring of 8 twice
    store = step.new_store(3)
    past = empty_past(model, 1)
    for position, item in enumerate(history):
        got = step.advance(store, [2], [next_items(store, 2, item)], scores=True)
        if past[0].shape[2] == step.max_len:
            past = [p[:, :, 1:] for p in past]
        length = past[0].shape[2]
        scores, new = graph.advance(torch.tensor([[item]]), torch.ones(1, length + 1, dtype=torch.long),
                                    torch.tensor([[position]]), past)
        past = append(past, new)
        assert np.abs(got.scores[0, 1:] - scores[0, 1:].numpy()).max() < 1e-4
    order = (store.write[2] + np.arange(step.max_len)) % step.max_len  # ring indices, oldest first
    for i, reference in enumerate(past):
        assert np.abs(store.kv[i][2][:, order] - reference[0].numpy()).max() < 1e-4
    assert store.window(2).tolist() == history[-8:] and store.length[[0, 1]].tolist() == [0, 0]


def test_written_back_positions_equal_a_prefill_of_the_whole_history(tiny_step_onnx):
    _, folder = tiny_step_onnx
    step = OnnxStepModel(folder)
    histories = [np.array([4, 8, 15, 16, 23, 42, 5]), np.array([2, 7])]
    one_by_one, at_once = step.new_store(2), step.new_store(2)
    for t in range(len(histories[0])):
        active = [i for i, h in enumerate(histories) if t < len(h)]
        step.advance(one_by_one, active, [histories[i][t : t + 1] for i in active])
    step.advance(at_once, [0, 1], histories)  # several new items per row, of different counts
    for slot, history in enumerate(histories):
        n = len(history)
        assert one_by_one.length[slot] == at_once.length[slot] == n
        assert np.abs(one_by_one.kv[:, slot, :, :n] - at_once.kv[:, slot, :, :n]).max() < 1e-5
        assert one_by_one.window(slot).tolist() == at_once.window(slot).tolist() == history.tolist()
    with pytest.raises(ValueError, match="a slot appears twice"):
        step.advance(at_once, [0, 0], [[1], [2]])
    full = step.new_store(1)
    step.advance(full, [0], [np.arange(1, 9)])
    with pytest.raises(ValueError, match="several new items past max_len"):
        step.advance(full, [0], [[1, 2]])


def cli(*args):
    result = subprocess.run([sys.executable, "-c", NO_TORCH_CLI, *args], capture_output=True, text=True)
    result.stderr = " ".join(result.stderr.split())
    return result


@pytest.mark.slow
def test_predict_stateful_cli_without_torch(tiny_step_onnx, tiny_data, tmp_path):
    _, folder = tiny_step_onnx
    original = tiny_data.item_ids.tolist()
    events = tmp_path / "events.txt"
    events.write_text(f"u1 {original[2]}\nmalformed\n\nu1 nope\nu2 {original[4]}\nu1 {original[9]}\n")
    result = cli("predict", str(folder), "--stateful", "--input", str(events), "--top-k", "3")
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["line"] for r in records] == [1, 2, 4, 5, 6]
    assert "malformed event" in records[1]["error"] and "unknown item id" in records[2]["error"]
    assert records[4]["positions"] == 2 and len(records[4]["items"]) == 3
    assert records[4]["items"] == [original[i - 1] for i in full_topk(folder, [[3, 10]], 3)[0]]
    assert "line 2: malformed event" in result.stderr and "users in memory 2" in result.stderr


def test_predict_finds_the_artifact_from_a_run_or_stage_folder(tiny_step_onnx, tmp_path):
    _, folder = tiny_step_onnx
    run = tmp_path / "run"
    (run / "02-export").mkdir(parents=True)
    (run / "02-export" / "onnx").symlink_to(folder)
    (run / "03-quantize" / "onnx").mkdir(parents=True)
    (run / "03-quantize" / "onnx" / "model.onnx").write_bytes(b"")
    stages = [{"kind": "torch", "output": "01-train/model"}, {"kind": "onnx", "output": "02-export/onnx"},
              {"kind": "onnx", "output": "03-quantize/onnx"}]
    (run / "manifest.json").write_text(json.dumps({"stages": stages}))
    assert resolve_artifact(run) == run / "03-quantize" / "onnx"  # the last ONNX stage
    assert resolve_artifact(run, need_step=True) == run / "02-export" / "onnx"  # the last one with step.onnx
    assert resolve_artifact(run / "02-export") == run / "02-export" / "onnx"
    assert resolve_artifact(folder) == folder
    with pytest.raises(ArtifactError, match="not an ONNX artifact"):
        resolve_artifact(tmp_path)
    result = cli("predict", str(run / "02-export"), "--stateful", "--input", "/no/such/file")
    assert result.returncode == 2 and "input file not found" in result.stderr


def test_event_records_keep_line_order_across_chunks_and_errors():
    class EchoServer:  # the top-K is the event's own item; item "x" is unknown
        def __init__(self):
            self.batches = []

        def observe(self, events):
            self.batches.append(len(events))
            return [EventResult(u, i, error="unknown item x") if i == "x" else EventResult(u, i, [i], [1.0])
                    for u, i in events]

    server = EchoServer()
    lines = ["u1 10\n", "\n", "garbage\n", "u2 x\n", "u1 11\n"]
    records = list(event_records(server, lines, chunk_size=2))
    assert [r["line"] for r in records] == [1, 3, 4, 5]  # the blank line 2 gives no record
    assert records[0]["items"] == ["10"] and records[3]["items"] == ["11"]
    assert records[1]["error"].startswith("malformed event") and records[2]["error"] == "unknown item x"
    assert server.batches == [1, 2, 0]  # chunks of two lines (1, 3) and (4, 5), then the empty rest; line 3 is not observed


def test_the_overflow_policy_is_stated_by_the_export_and_applied_by_default(tiny_step_onnx, tiny_data):
    """metadata.json states `exact`; StatefulRecommender's default then equals the full pass past max_len."""
    _, folder = tiny_step_onnx
    step = json.loads((folder / "metadata.json").read_text())["step"]
    assert step["overflow"] == "exact" and set(step["overflow_policies"]) == {"exact", "slide"}
    server = StatefulRecommender(folder)
    assert server.refresh_every == 1
    full = OnnxRecommender(folder, "cpu")
    history = [str(i) for i in range(1, 2 * full.max_len + 3)]  # well past max_len
    for count, item in enumerate(history, start=1):
        result = server.observe([("u", item)])[0]
        window = np.array([server.lookup[i] for i in history[:count]][-full.max_len:])
        ids = left_pad([window], full.max_len)
        expected = full.topk(ids, (ids > 0).astype(np.int64))[1][0][: server.top_k]
        assert [server.lookup[str(i)] for i in result.items] == expected.tolist(), count
