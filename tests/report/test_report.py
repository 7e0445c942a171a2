import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from compress.errors import RunFolderError
from compress.pipeline import RunOptions, run_recipe
from compress.recipe import validate_recipe
from compress.report import build_report
from compress.report.plots import pareto_front
from tests.conftest import tiny_distill_recipe

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
QUIET = RunOptions(show_progress=False, log=lambda _: None)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> tuple[Path, dict]:
    tmp_path = tmp_path_factory.mktemp("report")
    manifest = run_recipe(validate_recipe(tiny_distill_recipe(tmp_path)), QUIET)
    return tmp_path / "artifacts" / "tiny", manifest


def test_pareto_front_keeps_the_undominated_points():
    points = [(1.0, 0.30), (2.0, 0.40), (3.0, 0.35), (0.5, 0.10), (2.0, 0.38)]
    assert pareto_front(points) == [3, 0, 1]  # by increasing latency; (3, .35) and (2, .38) are dominated


def test_report_files_tables_and_plots(tiny_run, tmp_path):
    run_dir, manifest = tiny_run
    files = build_report([run_dir], tmp_path / "out")

    for image in files.images:
        data = image.read_bytes()
        assert data[:8] == PNG_SIGNATURE and len(data) > 1000
    markdown, html = files.markdown.read_text(), files.html.read_text()
    for stage in manifest["stages"]:
        bench = stage["bench"]
        for text in (markdown, html):
            assert f"{stage['metrics']['ndcg@10']:.4f}" in text and f"{stage['metrics']['hr@10']:.4f}" in text
            assert f"{stage['params']:,}" in text
            assert f"{bench['latency_p50_ms']:.2f} ({bench['ratios']['latency_p50_ms']:.2f}x)" in text
            assert f"{bench['throughput_seq_per_s']:,.0f}" in text
            assert f"{bench['gflops_batch1']:.1f}" in text and f"{bench['gflops_throughput']:.1f}" in text
    assert f"{manifest['baseline']['metrics']['ndcg@10']:.4f}" in markdown
    assert "GFLOP/seq" in markdown and "GFLOP/s, batch 1" in markdown
    assert "(quality_latency.png)" in markdown and "(cost_per_stage.png)" in markdown
    # self-contained: plots embedded, nothing fetched from elsewhere
    assert html.count('src="data:image/png;base64,') == len(files.images)
    assert "http://" not in html and "https://" not in html
    assert "fingerprint" in html and manifest["environment"]["cpu"] in html and "stages:" in markdown

    rows = json.loads(files.json.read_text())["runs"][0]["stages"]
    assert [r["stage"] for r in rows] == ["train", "distill"]
    assert rows[1]["ratios"]["params"] == pytest.approx(manifest["stages"][1]["params"] / manifest["stages"][0]["params"])


def test_report_of_unbenchmarked_run_says_so(tmp_path):
    recipe = tiny_distill_recipe(tmp_path, name="plain")
    recipe["stages"] = recipe["stages"][:1]
    recipe["bench"] = {"enabled": False}
    run_recipe(validate_recipe(recipe), QUIET)
    files = build_report([tmp_path / "artifacts" / "plain"], tmp_path / "out")
    assert "No stage was benchmarked" in files.markdown.read_text()


@pytest.mark.slow  # a subprocess
def test_report_on_a_folder_that_is_not_a_run(tmp_path):
    with pytest.raises(RunFolderError, match="not a run folder"):
        build_report([tmp_path], tmp_path / "out")
    result = subprocess.run([sys.executable, "-m", "compress", "report", str(tmp_path)], capture_output=True, text=True)
    stderr = " ".join(result.stderr.split())  # rich wraps long lines
    assert result.returncode == 2 and "not a run folder" in stderr and "Traceback" not in stderr


@pytest.mark.skipif(shutil.which("chromium") is None, reason="headless chromium is not installed")
def test_html_renders_in_headless_chromium(tiny_run, tmp_path):
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
    from screenshot_report import screenshot

    files = build_report([tiny_run[0]], tmp_path / "out")
    shot = screenshot(files.html, tmp_path / "shot.png", height=1200)
    assert shot.read_bytes()[:8] == PNG_SIGNATURE and shot.stat().st_size > 10_000


def _timed_row(stage: str, p50: float, rounds: list[float] | None) -> "StageRow":
    from compress.report.collect import StageRow

    bench = {"round_latency_p50_ms": rounds} if rounds else None
    return StageRow("run", stage, {"latency_p50_ms": p50}, {}, bench)


def test_latency_difference_is_noise_when_the_round_ranges_overlap():
    from compress.report.tables import latency_versus

    reference = _timed_row("a", 2.2, [2.0, 2.2, 2.6])
    assert latency_versus(reference, reference) == "reference"
    assert latency_versus(_timed_row("b", 2.5, [2.5, 2.4, 3.0]), reference).startswith("≈ (+14%")
    assert latency_versus(_timed_row("c", 4.4, [4.2, 4.4, 4.9]), reference) == "+100%"
    assert latency_versus(_timed_row("d", 1.1, None), reference) == "-50% (noise not measured)"


def test_points_drawn_on_top_of_each_other_share_one_label():
    from compress.report.plots import near_groups

    points = [(2.19, 0.165), (2.20, 0.1651), (4.7, 0.160), (12.0, 0.168), (2.21, 0.150)]
    assert near_groups(points) == [[0, 1], [2], [3], [4]]
    assert near_groups([]) == []
