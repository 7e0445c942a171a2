import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
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


def drawn_figures(monkeypatch) -> dict[str, Any]:
    """The matplotlib figures the report saves, by file name (kept as they were when saved)."""
    from matplotlib.figure import Figure

    figures, save = {}, Figure.savefig

    def keep(figure, path, *args, **kwargs):
        figures[Path(path).name] = figure
        return save(figure, path, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", keep)
    return figures


def check_png_is_the_figure(path: Path, figure) -> None:
    """The file is a PNG of the figure's pixel size, with something drawn on it."""
    from matplotlib.image import imread

    assert path.read_bytes()[:8] == PNG_SIGNATURE
    pixels = imread(path)
    width, height = figure.get_size_inches() * figure.dpi
    assert pixels.shape[:2] == (round(height), round(width))
    assert (pixels[..., :3] < 0.5).mean() > 0.001  # dark pixels: text, points, bars; not a blank canvas


def test_report_files_tables_and_plots(tiny_run, tmp_path, monkeypatch):
    run_dir, manifest = tiny_run
    figures = drawn_figures(monkeypatch)
    files = build_report([run_dir], tmp_path / "out")

    assert [image.name for image in files.images] == ["quality_latency.png", "cost_per_stage.png"]
    for image in files.images:
        check_png_is_the_figure(image, figures[image.name])
    stages = manifest["stages"]
    names = [stage["name"] for stage in stages]
    # quality vs latency: one point per stage at (its p50, its NDCG@10), numbered and keyed, the front ringed
    quality = figures["quality_latency.png"]
    ax = quality.axes[0]
    points = [(stage["bench"]["latency_p50_ms"], stage["metrics"]["ndcg@10"]) for stage in stages]
    assert np.asarray(ax.collections[0].get_offsets()) == pytest.approx(np.array(points))
    front = np.array([points[i] for i in pareto_front(points)])
    assert np.asarray(ax.collections[1].get_offsets()) == pytest.approx(front)  # the rings
    assert ax.lines[0].get_xydata() == pytest.approx(front) and ax.lines[0].get_label() == "Pareto front"
    assert sorted(",".join(t.get_text() for t in ax.texts).split(",")) == [str(i + 1) for i in range(len(stages))]
    assert quality.texts[0].get_text().splitlines() == [f"{i + 1:>2}  {name}" for i, name in enumerate(names)]
    assert (ax.get_xlabel(), ax.get_ylabel(), ax.get_title()) == (
        "batch-1 latency p50 (ms, max length)", "NDCG@10 (test, full ranking)", "Quality vs latency")
    # cost per stage: size on disk and batch-1 latency, a bar per stage
    size, latency = figures["cost_per_stage.png"].axes
    assert [bar.get_height() for bar in size.patches] == pytest.approx([s["size_bytes"] / 2**20 for s in stages])
    assert [bar.get_height() for bar in latency.patches] == pytest.approx([p for p, _ in points])
    for ax, title in ((size, "Size on disk"), (latency, "Batch-1 latency p50")):
        assert [label.get_text() for label in ax.get_xticklabels()] == names and ax.get_title() == title
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


def pixels_near(pixels, colour: str, tolerance: float = 12 / 255):
    """How many pixels of an RGB(A) float image lie within `tolerance` of `colour` ('#rrggbb') on every channel."""
    rgb = np.array([int(colour[i : i + 2], 16) / 255 for i in (1, 3, 5)])
    return int((np.abs(pixels[..., :3] - rgb) <= tolerance).all(axis=-1).sum())


BLUE, ORANGE = "#4c72b0", "#dd8452"  # the plots' points and bars, and their Pareto front (plots.py)


def check_the_plots_are_drawn(shot: Path, plots: list[Path], width: int, height: int) -> None:
    """The screenshot is the window, and it shows the report's plots: as many of their blue (points, bars)
    and orange (Pareto front) pixels as the plot files hold, give or take scaling; a page whose images
    did not load has only the heading's blue rule."""
    from matplotlib.image import imread

    pixels = imread(shot)
    assert pixels.shape[:2] == (height, width)
    for colour in (BLUE, ORANGE):
        in_plots = sum(pixels_near(imread(plot), colour) for plot in plots)
        assert in_plots > 20 and pixels_near(pixels, colour) >= 0.8 * in_plots, colour


def test_the_plot_check_tells_drawn_plots_from_missing_ones(tiny_run, tmp_path):
    """check_the_plots_are_drawn on pages made here: the plots pasted on white pass, white alone does not."""
    from matplotlib.image import imread, imsave

    files = build_report([tiny_run[0]], tmp_path / "out")
    page = np.ones((3000, 1280, 4))
    top = 100
    for plot in files.images:
        image = imread(plot)
        page[top : top + image.shape[0], 40 : 40 + image.shape[1]] = image
        top += image.shape[0] + 50
    imsave(tmp_path / "page.png", page)
    check_the_plots_are_drawn(tmp_path / "page.png", files.images, 1280, 3000)
    text_only = np.ones((3000, 1280, 4))
    text_only[60:62, 90:1190, :3] = [int(BLUE[i : i + 2], 16) / 255 for i in (1, 3, 5)]  # the h1's blue rule
    imsave(tmp_path / "text_only.png", text_only)
    with pytest.raises(AssertionError, match=BLUE):
        check_the_plots_are_drawn(tmp_path / "text_only.png", files.images, 1280, 3000)


@pytest.mark.skipif(shutil.which("chromium") is None, reason="headless chromium is not installed")
def test_html_renders_in_headless_chromium(tiny_run, tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[2] / "benchmarks"))  # undone after the test
    from screenshot_report import screenshot

    files = build_report([tiny_run[0]], tmp_path / "out")
    width, height = 1280, 6000  # tall enough for the whole page of a two-stage run, plots included
    shot = screenshot(files.html, tmp_path / "shot.png", width=width, height=height)
    check_the_plots_are_drawn(shot, files.images, width, height)


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
