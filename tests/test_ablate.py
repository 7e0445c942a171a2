import os

import pytest
import yaml

from compress.studies.ablation import plan_variants, run_ablation
from compress.studies.compare import MIN_ROUNDS
from compress.errors import RecipeError
from compress.pipeline import RunOptions
from compress.runs.files import read_json
from tests.conftest import tiny_distill_recipe


def ablation_recipe(tmp_path, variants):
    raw = tiny_distill_recipe(tmp_path)
    raw["ablation"] = {"variants": variants}
    path = tmp_path / "ablate.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path, raw


@pytest.mark.slow
def test_two_variants_share_the_cached_teacher_and_are_compared(tmp_path):
    path, _ = ablation_recipe(tmp_path, {"base": [], "short": {"set": ["stages.distill.lr=0.01"]}})
    messages = []
    result = run_ablation(path, [], RunOptions(show_progress=False, log=messages.append))

    assert list(result.runs) == ["base", "short"]
    first, second = result.runs["base"], result.runs["short"]
    assert second.name == "tiny-short"
    short_log = messages[messages.index(f"== variant short -> {second}"):]
    assert f"[1/2] train: cached ({first / '01-train'})" in short_log
    assert not any(m.startswith("model:") for m in short_log)  # the train stage never built a model
    assert any("distill: running" in m for m in short_log)
    weights = "01-train/model/model.safetensors"
    assert os.stat(first / weights).st_ino == os.stat(second / weights).st_ino  # linked, not copied

    markdown = result.report.markdown.read_text()
    assert "| 1 | base | (the recipe as is) | distill |" in markdown
    assert "| 2 | short | stages.distill.lr=0.01 | distill |" in markdown
    assert (result.report.markdown.parent / "ablation.png").read_bytes()[:4] == b"\x89PNG"

    # every final stage and the shared teacher timed in one bench session, in rounds
    benches = [read_json(run / stage / "bench.json") for run in (first, second) for stage in ("01-train", "02-distill")]
    assert {b["session"] for b in benches} == {result.session}
    assert all(len(b["round_latency_p50_ms"]) == MIN_ROUNDS for b in benches)
    lines = markdown.splitlines()
    assert sum(line.startswith("| shared by all | train |") for line in lines) == 1  # the teacher once
    assert not any(line.startswith("| tiny-short | train |") for line in lines)
    # NDCG@10 difference to the first variant, paired over the test users, with its interval
    difference = result.differences["short"]
    ndcg = [read_json(run / "manifest.json")["stages"][-1]["metrics"]["ndcg@10"] for run in (first, second)]
    assert difference["mean"] == pytest.approx(ndcg[1] - ndcg[0], abs=1e-9)
    assert difference["low"] <= difference["mean"] <= difference["high"] and result.differences["base"] is None
    assert "ΔNDCG@10 vs base [95% CI]" in markdown and f"{difference['mean']:+.4f} [" in markdown
    row = next(line for line in markdown.splitlines() if line.startswith("| 2 | short |"))
    assert "within noise" in row or row.count("%") >= 1  # p50 compared with base's, noise marked


def test_variants_are_validated_before_anything_runs(tmp_path):
    _, raw = ablation_recipe(tmp_path, {"no-distill": {"drop_stages": ["distill"]}, "bad": ["stages.train.epochs=0"]})
    with pytest.raises(RecipeError, match=r"(?s)variant bad.*epochs"):
        plan_variants(raw)
    _, raw = ablation_recipe(tmp_path, {"x": {"drop_stages": ["prune"]}})
    with pytest.raises(RecipeError, match="no stage named 'prune'"):
        plan_variants(raw)
    _, raw = ablation_recipe(tmp_path, {"x": {"drop_stages": ["distil"]}})
    with pytest.raises(RecipeError, match="no stage named 'distil' in the recipe; did you mean 'distill'"):
        plan_variants(raw)
    raw.pop("ablation")
    with pytest.raises(RecipeError, match="no `ablation:` section"):
        plan_variants(raw)


def test_drop_stages_shortens_the_chain(tmp_path):
    _, raw = ablation_recipe(tmp_path, {"teacher-only": {"drop_stages": ["distill"]}})
    _, planned = plan_variants(raw)
    assert [s.stage for s in planned[0].recipe.stages] == ["train"] and planned[0].changes == "drop distill"
