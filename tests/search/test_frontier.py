import numpy as np
import pytest

from compress.search.frontier import summarise
from compress.search.law import fit_law, law
from compress.search.report import COLUMNS, bench_sessions_note, frontier_rows
from compress.search.settle import apply_settled, settle


def record(trial, candidate, p50, ndcg, passed, miss=0.0):
    return {
        "trial": trial, "candidate": candidate, "params": {"x": trial}, "latency_p50_ms": p50, "size_bytes": 100,
        "throughput_seq_per_s": 1000 / p50, "valid_ndcg@10": ndcg, "passed": passed, "drop_budget": 0.01,
        "misses": {"ndcg_drop": miss if not passed else -0.01},
        "ndcg_drop": {"mean": 0.0, "ci_high": 0.01 + miss},
    }


def test_frontier_and_pick():
    records = [
        record(0, "a", 5.0, 0.30, True),
        record(1, "b", 2.0, 0.29, True),   # faster, a bit worse: on the frontier, and the pick
        record(2, "c", 1.0, 0.20, False, miss=0.08),  # fastest but fails: on the frontier, never picked
        record(3, "d", 3.0, 0.25, True),   # dominated by b
        record(4, "b", 2.5, 0.29, True),   # b again (cached): counted once
    ]
    summary = summarise(records, "p50", keep_closest=2)
    assert [r["candidate"] for r in summary["frontier"]] == ["c", "b", "a"]
    assert summary["chosen"]["candidate"] == "b" and "3 of 4 candidates" in summary["chosen"]["why"]
    assert summary["candidates"] == 4 and summary["trials"] == 5 and summary["closest"] == []
    assert summarise(records, "throughput", 2)["chosen"]["candidate"] == "b"  # highest throughput that passes
    assert summary["base"] is None and summarise(records, "p50", 2, base_candidate="d")["base"]["candidate"] == "d"


def test_no_candidate_passes_keeps_the_closest_and_says_by_how_much():
    records = [record(0, "a", 1.0, 0.2, False, miss=0.05), record(1, "b", 2.0, 0.25, False, miss=0.002),
               record(2, "c", 3.0, 0.1, False, miss=0.2)]
    summary = summarise(records, "p50", keep_closest=2)
    assert summary["chosen"] is None
    assert [r["candidate"] for r in summary["closest"]] == ["b", "a"]
    assert "the NDCG@10 drop budget by 0.0020" in summary["closest"][0]["misses_by"]


def test_a_budget_narrower_than_the_cis_is_named_as_the_reason():
    def drop(candidate, mean, half):
        r = record(0, candidate, 1.0, 0.2, False, miss=mean + half - 0.01)
        r["ndcg_drop"] = {"mean": mean, "ci_high": mean + half}
        return r

    wide = [drop("a", 0.001, 0.012), drop("b", 0.004, 0.011), drop("c", 0.02, 0.013)]  # budget 0.01
    summary = summarise(wide, "p50", keep_closest=1)
    assert summary["ci_half_width"] == pytest.approx(0.012)
    assert "beats the teacher's by 0.0020 or more" in summary["hint"]
    narrow = [drop("a", 0.012, 0.004), drop("b", 0.02, 0.005)]  # resolvable: missing is the candidates' fault
    assert summarise(narrow, "p50", keep_closest=1)["hint"] is None


def test_performance_law_fit_recovers_its_curve():
    params = np.array([2e4, 4e4, 8e4, 1.6e5, 3.2e5, 6.4e5])
    truth = law(params / np.median(params), w=0.02, a=0.5, c=2.0, b=0.3)
    fit = fit_law(params, truth + np.random.default_rng(0).normal(0, 1e-4, len(params)))
    assert fit.r2 > 0.99
    assert fit.predict(params) == pytest.approx(truth, abs=1e-3)
    assert fit_law(params[:3], truth[:3]) is None  # too few sizes to fit four numbers


def test_candidates_benched_in_several_sessions_are_flagged_and_compared_by_their_ratio():
    one, two = record(0, "a", 1.0, 0.2, True), record(1, "b", 2.0, 0.2, True)
    for r, session, ratio in ((one, "s1", 0.31), (two, "s2", 0.52)):
        r.update({"bench_session": session, "latency_p50_vs_teacher": ratio, "params_count": 10, "test_ndcg@10": 0.2})
    assert "2 bench sessions" in bench_sessions_note([one, two])
    assert bench_sessions_note([one, {**two, "bench_session": "s1"}]) is None
    rows = frontier_rows([one, two])
    assert [row[COLUMNS.index("p50 vs teacher")] for row in rows] == ["0.31x", "0.52x"]
    assert frontier_rows([{**one, "latency_p50_vs_teacher": None}])[0][COLUMNS.index("p50 vs teacher")] == "-"


def test_settled_numbers_replace_the_trials_and_remote_candidates_keep_theirs(tmp_path):
    records = [record(0, "a", 5.0, 0.3, True), record(1, "b", 2.0, 0.3, True)]
    settled = {"session": "s", "candidates": {"a": {"latency_p50_ms": 1.0, "bench_session": "s"}}}
    a, b = apply_settled(records, settled)
    assert (a["latency_p50_ms"], a["settled"]) == (1.0, True) and b == records[1]
    assert summarise([a, b], "p50", 1)["chosen"]["candidate"] == "a"  # the re-timed numbers decide
    messages = []  # a candidate another machine ran has no run folder here: nothing to time, no crash
    assert settle(None, tmp_path, ["c-elsewhere"], messages.append) is None and "c-elsewhere" in messages[0]
