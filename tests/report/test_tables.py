"""Report tables: every timed ratio can be recomputed from the numbers in its own row."""

import re

from compress.report.build import _what_the_stack_buys
from compress.report.collect import RunSummary, StageRow, same_round_ratios
from compress.report.tables import bench_table, stage_table, variant_table

# benchmarks/results/ml1m/headline.json, the prune stage: three bench rounds; the teacher drifted, so the
# median of per-round ratios (bench.json `ratios`: 1.44x) is not the quotient of the medians (849 / 594)
PRUNE_BENCH = {
    "engine": "torch-eager", "device": "cpu", "session": "s1",
    "latency_ms": {"fixed": {"p50": 3.4066335, "p95": 3.9, "p99": 4.58}, "realistic": {"p50": 2.65}},
    "throughput_seq_per_s": {"fixed": 849.33, "realistic": 869.0},
    "memory": {"kind": "process_rss", "increase_bytes": 1_500_000},
    "round_latency_p50_ms": [3.4474180, 3.3510675, 3.4066335],
    "reference": {"session": "s1", "latency_p50_ms": 4.871294, "throughput_seq_per_s": 593.578117},
    "ratios": {"latency_p50_ms": 0.693124514, "throughput_seq_per_s": 1.442052788, "peak_memory_bytes": 0.77},
}
TEACHER_BENCH = {
    **PRUNE_BENCH, "latency_ms": {"fixed": {"p50": 5.0643910, "p95": 5.9, "p99": 6.44}, "realistic": {"p50": 3.76}},
    "throughput_seq_per_s": {"fixed": 543.87353, "realistic": 544.6},
    "round_latency_p50_ms": [5.0643910, 5.0074885, 5.2352445],
    "reference": {"session": "s1", "latency_p50_ms": 5.0643910, "throughput_seq_per_s": 543.87353},
    "ratios": {"latency_p50_ms": 1.0, "throughput_seq_per_s": 1.0, "peak_memory_bytes": 1.0},
}
MANIFEST = {"data": {"fingerprint": "f"}, "baseline": {"metrics": {"ndcg@10": 0.0178, "hr@10": 0.0363, "mrr@10": 0.0123}}}


def timed_row(stage: str, bench: dict, ndcg: float) -> StageRow:
    values = {"ndcg@10": ndcg, "hr@10": 0.3, "mrr@10": 0.1, "params": 1000, "size_bytes": 4000,
              "latency_p50_ms": bench["latency_ms"]["fixed"]["p50"],
              "throughput_seq_per_s": bench["throughput_seq_per_s"]["fixed"], "peak_memory_bytes": 1}
    ratios = {key: 1.0 for key in ("ndcg@10", "hr@10", "mrr@10", "params", "size_bytes")}
    ratios.update(bench["ratios"])  # as recorded: the median of per-round ratios
    row = StageRow("ml1m", stage, values, ratios, bench, key=stage)
    row.ratios.update(same_round_ratios(row))  # what collect_run does
    return row


def test_a_timed_ratio_is_the_quotient_of_two_numbers_in_its_row():
    teacher, prune = timed_row("train", TEACHER_BENCH, 0.1907), timed_row("prune", PRUNE_BENCH, 0.1880)
    assert prune.ratios["latency_p50_ms"] == 3.4066335 / 4.871294
    assert prune.ratios["peak_memory_bytes"] == 0.77  # memory keeps the recorded ratio
    table = stage_table([RunSummary("ml1m", None, MANIFEST, rows=[teacher, prune])])
    assert "teacher p50 (ms), same rounds" in table.columns and "teacher seq/s, same rounds" in table.columns
    by_stage = {row[0]: dict(zip(table.columns, row)) for row in table.rows}
    cells = by_stage["prune"]
    assert cells["latency p50 (ms, batch 1)"] == "3.41 (0.70x)" and cells["throughput (seq/s)"] == "849 (1.43x)"
    assert cells["teacher p50 (ms), same rounds"] == "4.87" and cells["teacher seq/s, same rounds"] == "594"
    assert by_stage["train"]["teacher p50 (ms), same rounds"] == "5.06"  # the teacher's own rounds
    assert by_stage["popularity"]["teacher seq/s, same rounds"] == "-"
    for cells in by_stage.values():  # recompute every printed ratio from the printed numbers of its row
        for value_column, teacher_column in (("latency p50 (ms, batch 1)", "teacher p50 (ms), same rounds"),
                                             ("throughput (seq/s)", "teacher seq/s, same rounds")):
            shown = re.fullmatch(r"([\d,.]+) \(([\d.]+)x\)", cells[value_column])
            if shown:
                value, teacher_value = (float(text.replace(",", "")) for text in (shown[1], cells[teacher_column]))
                assert abs(value / teacher_value - float(shown[2])) <= 0.01, (cells["stage"], value_column)

    details = bench_table([RunSummary("ml1m", None, MANIFEST, rows=[teacher, prune])])
    rounds = {row[0]: dict(zip(details.columns, row))["p50 ms per round"] for row in details.rows}
    assert rounds == {"train": "5.06 / 5.01 / 5.24", "prune": "3.45 / 3.35 / 3.41"}

    variants = variant_table([RunSummary("a", None, MANIFEST, rows=[teacher, prune])], [("a", "")])
    assert variants.rows[0][-1] == "4.87 / 594" and variants.rows[0][-2] == "849 (1.43x)"


def test_a_row_benchmarked_without_a_teacher_keeps_its_recorded_ratio():
    bench = {**PRUNE_BENCH, "reference": {"session": "s1"}}
    row = timed_row("prune", bench, 0.1880)
    assert row.teacher_timing == {} and row.ratios["throughput_seq_per_s"] == 1.442052788


PAIRED = {
    "final_vs_scratch": {"stage": "quantize", "mean": 0.0369, "low": 0.0307, "high": 0.0434, "confidence": 0.95},
    "final_vs_scratch_converged": {"stage": "quantize", "mean": -0.0031, "low": -0.0070, "high": 0.0009,
                                   "confidence": 0.95},
}
TRAINING = {
    "student": {"stages": ["distill", "prune"], "epochs_run": 11, "train_seconds": 1200.0},
    "scratch": {"stages": ["train"], "epochs_run": 11, "best_epoch": 11, "train_seconds": 800.0},
    "scratch-converged": {"stages": ["train"], "epochs_run": 38, "best_epoch": 35, "train_seconds": 2494.0},
}


def test_the_report_says_what_the_stack_buys_against_each_scratch_control():
    scratch, converged = _what_the_stack_buys(PAIRED, TRAINING)
    assert scratch.startswith("final stage (quantize) minus the scratch control: +0.0369 [+0.0307, +0.0434]")
    assert scratch.endswith("Against scratch the stack buys accuracy.")  # but no training time: 1,200 s > 800 s
    assert "the control 38 epochs (best 35) in 2,494 s" in converged and "11 epochs in 1,200 s" in converged
    assert converged.endswith("Against scratch-converged the stack buys training time, not accuracy.")
    worse = {**PAIRED["final_vs_scratch_converged"], "mean": -0.006, "low": -0.009, "high": -0.002}
    (line,) = _what_the_stack_buys({"final_vs_scratch_converged": worse}, {})
    assert line.endswith("buys no accuracy (the control is more accurate).")  # no training record: no time claim
    faster = {**TRAINING, "student": {**TRAINING["student"], "train_seconds": 500.0}}
    assert _what_the_stack_buys(PAIRED, faster)[0].endswith("buys accuracy and training time.")
