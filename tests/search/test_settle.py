"""The settling loop: a candidate that the first re-timing moves onto the frontier is timed again with
the others, in one session."""

from types import SimpleNamespace

from compress.search import runner
from compress.search.frontier import summarise
from compress.search.settle import apply_settled


def record(trial, candidate, p50, ndcg, passed):
    return {"trial": trial, "candidate": candidate, "params": {"x": trial}, "latency_p50_ms": p50, "size_bytes": 1,
            "throughput_seq_per_s": 1.0, "valid_ndcg@10": ndcg, "passed": passed, "drop_budget": 0.01,
            "misses": {"ndcg_drop": -0.01 if passed else 0.01}, "ndcg_drop": {"mean": 0.0, "ci_high": 0.0}}


def test_a_candidate_moved_onto_the_frontier_by_settling_is_timed_with_the_others(tmp_path, monkeypatch):
    # c is dominated by a as timed in its trial (slower, worse), so the first pass does not time it; the
    # first pass finds a much slower than its trial said, which puts c on the frontier
    records = [record(0, "a", 1.0, 0.30, True), record(1, "b", 3.0, 0.31, True), record(2, "c", 1.5, 0.25, False)]
    truth = {"a": 2.0, "b": 3.0, "c": 1.5}
    calls = []

    def fake_settle(recipe, runs, candidates, log):
        calls.append(list(candidates))
        return {"session": f"s{len(calls)}", "candidates": {c: {"latency_p50_ms": truth[c]} for c in candidates}}

    monkeypatch.setattr(runner, "settle", fake_settle)
    monkeypatch.setattr(runner, "write_settled", lambda folder, settled: None)
    search = SimpleNamespace(options=SimpleNamespace(log=lambda m: None), base=None, runs=tmp_path, folder=tmp_path,
                             settled=None)
    search.write_outputs = lambda study: summarise(apply_settled(records, search.settled), "p50", 1)

    summary = runner.Search.settle_answer(search, None, search.write_outputs(None), records)
    assert calls == [["a", "b"], ["a", "b", "c"]]  # the second pass times all three in one session
    assert search.settled["session"] == "s2" and [r["candidate"] for r in summary["frontier"]] == ["c", "a", "b"]
    assert summary["chosen"]["candidate"] == "a"
