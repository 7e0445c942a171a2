import os

import pytest
import yaml

from compress.ablation import plan_variants, run_ablation
from compress.errors import RecipeError
from compress.pipeline import RunOptions
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
    assert "| base | (the recipe as is) | distill |" in markdown
    assert "| short | stages.distill.lr=0.01 | distill |" in markdown
    assert (result.report.markdown.parent / "ablation.png").read_bytes()[:4] == b"\x89PNG"


def test_variants_are_validated_before_anything_runs(tmp_path):
    _, raw = ablation_recipe(tmp_path, {"no-distill": {"drop_stages": ["distill"]}, "bad": ["stages.train.epochs=0"]})
    with pytest.raises(RecipeError, match=r"(?s)variant bad.*epochs"):
        plan_variants(raw)
    _, raw = ablation_recipe(tmp_path, {"x": {"drop_stages": ["prune"]}})
    with pytest.raises(RecipeError, match="no stage named"):
        plan_variants(raw)
    raw.pop("ablation")
    with pytest.raises(RecipeError, match="no `ablation:` section"):
        plan_variants(raw)


def test_drop_stages_shortens_the_chain(tmp_path):
    _, raw = ablation_recipe(tmp_path, {"teacher-only": {"drop_stages": ["distill"]}})
    _, planned = plan_variants(raw)
    assert [s.stage for s in planned[0].recipe.stages] == ["train"] and planned[0].changes == "drop distill"
