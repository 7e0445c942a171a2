import pytest
import torch

from compress.errors import RecipeError
from compress.methods.layer_importance import block_influence, select_layers
from compress.training.losses import BlockMap, DistillWeights, distillation_loss
from compress.models import RecommenderConfig, SequentialRecommender, load_model
from compress.methods.surgery import keep_layers
from compress.pipeline import RunOptions, run_recipe
from compress.recipe import validate_recipe
from tests.conftest import tiny_recipe, with_prompt

TERMS = ("cosine", "l2", "multi_supervision", "kd")


@pytest.fixture
def teacher(tiny_data):
    torch.manual_seed(0)
    config = RecommenderConfig(hidden_size=16, num_layers=4, num_heads=2, intermediate_size=32,
                               num_items=tiny_data.num_items, max_len=20, dropout=0.0)
    return SequentialRecommender(config).eval()


@pytest.fixture
def batch():
    ids = torch.tensor([[0, 0, 3, 4, 5, 6], [1, 2, 3, 4, 5, 6]])
    targets = torch.tensor([[0, 0, 4, 5, 6, 7], [2, 3, 4, 5, 6, 7]])
    return ids, (ids > 0).long(), targets


def student_grads(student, teacher, batch, weights, blocks):
    student.zero_grad()
    loss, terms = distillation_loss(student, teacher, *batch, weights, blocks)
    loss.backward()
    return torch.cat([p.grad.flatten() for p in student.parameters() if p.grad is not None]), terms


@pytest.mark.parametrize("term", TERMS)
def test_each_term_acts_on_the_student_gradient(teacher, batch, term):
    student = keep_layers(teacher, [0, 3])
    # perturb the student so it differs from the teacher's corresponding states
    with torch.no_grad():
        for p in student.backbone.layers.parameters():
            p.add_(0.05 * torch.randn_like(p))
    blocks = BlockMap.build(2, 4, 2)
    base, _ = student_grads(student, teacher, batch, DistillWeights(ce=1.0), blocks)
    with_term, terms = student_grads(student, teacher, batch, DistillWeights(ce=1.0, **{term: 1.0}), blocks)
    alone, _ = student_grads(student, teacher, batch, DistillWeights(ce=0.0, **{term: 1.0}), blocks)
    assert terms[term].item() > 0 and not terms[term].requires_grad  # detached: read only where logged
    assert not torch.allclose(base, with_term)
    assert alone.abs().sum() > 0


def test_alignment_of_an_identical_student_is_zero(teacher, batch):
    student = keep_layers(teacher, [0, 1, 2, 3])
    blocks = BlockMap.build(4, 4, 2)
    _, terms = distillation_loss(student, teacher, *batch, DistillWeights(ce=0, cosine=1, l2=1, kd=1), blocks)
    assert terms["cosine"].item() == pytest.approx(0, abs=1e-5)
    assert terms["l2"].item() == pytest.approx(0, abs=1e-4)
    assert terms["kd"].item() == pytest.approx(0, abs=1e-5)


def test_kd_and_multi_supervision_match_their_definitions(teacher, batch):
    student = keep_layers(teacher, [0, 3])
    with torch.no_grad():
        for p in student.backbone.layers.parameters():
            p.add_(0.05 * torch.randn_like(p))
    ids, mask, targets = batch
    picked = targets > 0
    blocks = BlockMap.build(2, 4, 2)
    _, terms = distillation_loss(student, teacher, ids, mask, targets,
                                 DistillWeights(ce=0, kd=1, multi_supervision=1, temperature=2.0), blocks)

    def item_scores(model, states):  # every real item, padding (column 0) dropped
        return (states @ model.item_table.t())[:, 1:]

    temperature = 2.0
    s = torch.log_softmax(item_scores(student, student(ids, mask)[0][picked]) / temperature, -1)
    t = torch.log_softmax(item_scores(teacher, teacher(ids, mask)[0][picked]) / temperature, -1)
    kd = (t.exp() * (t - s)).sum(-1).mean() * temperature**2
    torch.testing.assert_close(terms["kd"], kd)
    hidden = student(ids, mask, output_hidden_states=True)[1]
    first_block = item_scores(student, student.backbone.norm(hidden[1][picked]))
    torch.testing.assert_close(terms["multi_supervision"], torch.nn.functional.cross_entropy(first_block, targets[picked] - 1))


def test_block_map_follows_slmrec():
    blocks = BlockMap.build(student_layers=2, teacher_layers=8, blocks=2)
    assert blocks.student == (1, 2) and blocks.teacher == (4, 8)
    with pytest.raises(ValueError, match="blocks \\(3\\) must be between 1 and the student's layer count \\(2\\)"):
        BlockMap.build(2, 8, 3)


def test_all_weights_zero_is_rejected():
    with pytest.raises(ValueError, match="every loss weight is 0"):
        DistillWeights(ce=0)


def test_keep_all_layers_is_identical_and_subset_is_consistent(tmp_path, teacher):
    ids = torch.tensor([[1, 2, 3, 4]])
    mask = torch.ones_like(ids)
    same = keep_layers(teacher, [0, 1, 2, 3])
    torch.testing.assert_close(same.last_states(ids, mask), teacher.last_states(ids, mask), rtol=0, atol=0)
    student = keep_layers(teacher, [1, 3])
    assert student.config.num_layers == 2 and len(student.backbone.layers) == 2
    torch.testing.assert_close(student.backbone.layers[1].mlp.up_proj.weight, teacher.backbone.layers[3].mlp.up_proj.weight)
    from compress.models import save_model

    save_model(student, tmp_path / "s")
    torch.testing.assert_close(load_model(tmp_path / "s").last_states(ids, mask), student.last_states(ids, mask))
    with pytest.raises(ValueError, match="distinct and within"):
        keep_layers(teacher, [0, 4])


def test_layer_selection():
    assert select_layers("first", 8, 2) == [0, 1]
    assert select_layers("uniform", 8, 2) == [0, 7]
    assert select_layers("importance", 4, 2, [0.1, 0.5, 0.05, 0.3]) == [1, 3]
    with pytest.raises(ValueError):
        select_layers("first", 2, 3)


def test_block_influence_scores_every_layer(teacher, tiny_data):
    scores = block_influence(teacher, tiny_data, torch.device("cpu"), batches=2, batch_size=16)
    assert len(scores) == 4 and all(0 <= s <= 2 for s in scores)
    assert len(set(round(s, 6) for s in scores)) > 1


def test_block_influence_of_a_prompted_model_counts_the_prompt_positions(teacher, tiny_data):
    """The first layer's BI by hand: 1 - mean cosine of its input and output over every real position
    of [instruction, items, response] (the padding between them excluded)."""
    import numpy as np

    from compress.data.batching import train_batches

    prompted = with_prompt(teacher)
    [score, *_] = block_influence(prompted, tiny_data, torch.device("cpu"), batches=1, batch_size=16, seed=3)
    batch = next(train_batches(tiny_data, prompted.config.max_len, 16, np.random.default_rng(3)))
    embeddings, mask, positions = prompted.decoder_inputs(batch.item_ids, batch.attention_mask)
    with torch.no_grad():
        hidden = prompted.backbone(inputs_embeds=embeddings, attention_mask=mask, position_ids=positions,
                                   output_hidden_states=True).hidden_states
    cosine = torch.nn.functional.cosine_similarity(hidden[0], hidden[1], dim=-1)[mask.bool()]
    assert mask.shape[1] == batch.item_ids.shape[1] + 5
    assert score == pytest.approx(1 - cosine.mean().item(), rel=1e-5)


def distill_recipe(tmp_path, **distill):
    raw = tiny_recipe(tmp_path)
    raw["stages"][0]["model"] = {**raw["stages"][0]["model"], "num_layers": 4}
    raw["stages"].append({"stage": "distill", "num_layers": 2, "blocks": 2, "epochs": 1, "batch_size": 32,
                          "lr": 0.01, "weights": {"ce": 1, "cosine": 1, "multi_supervision": 1, "kd": 1}, **distill})
    return raw


def test_train_then_distill_in_a_recipe(tmp_path):
    manifest = run_recipe(validate_recipe(distill_recipe(tmp_path)), RunOptions(show_progress=False, log=lambda _: None))
    teacher, student = manifest["stages"]
    assert [teacher["name"], student["name"]] == ["train", "distill"]
    assert student["params"] < teacher["params"]
    assert student["info"]["teacher_params"] == teacher["params"]
    model = load_model(tmp_path / "artifacts" / "tiny" / student["output"])
    assert model.config.num_layers == 2
    assert 0 <= student["metrics"]["ndcg@10"] <= 1


@pytest.mark.parametrize(
    "distill, message",
    [
        ({"num_layers": 4}, "student asks for 4 layers but the teacher has 4"),
        ({"num_layers": 2, "blocks": 3}, "blocks (3) must be at most the student's layers (2)"),
    ],
)
def test_impossible_students_are_rejected_before_any_training(tmp_path, distill, message):
    with pytest.raises(RecipeError) as info:
        validate_recipe(distill_recipe(tmp_path, **distill))
    assert message in str(info.value)


def test_student_deeper_than_teacher_is_caught_at_run_time_too(tmp_path, teacher, tiny_data):
    from compress.stages.base import StageContext
    from compress.stages.config import DistillConfig
    from compress.stages.distill import build_student
    from compress.evaluation.metrics import EvalConfig

    ctx = StageContext(tiny_data, 20, EvalConfig(), torch.device("cpu"), 0, tmp_path, log=lambda _: None)
    with pytest.raises(RecipeError, match="student asks for 5 layers but the teacher has 4"):
        build_student(teacher, DistillConfig(num_layers=5), ctx)


def test_a_prompted_teacher_is_distilled_after_its_response(teacher, batch):
    """A prompted model (an imported SLMRec teacher) has a state after its response only: every term is read
    there, against the next item after the sequence (SLMRec's one target per sequence)."""
    prompted = with_prompt(teacher)
    student = keep_layers(prompted, [0, 3])
    with torch.no_grad():
        for p in student.backbone.layers.parameters():
            p.add_(0.05 * torch.randn_like(p))
    ids, mask, targets = batch
    blocks = BlockMap.build(2, 4, 2)
    weights = DistillWeights(ce=1, cosine=1, kd=1, multi_supervision=1, temperature=2.0)
    _, terms = distillation_loss(student, prompted, ids, mask, targets, weights, blocks)

    def item_scores(model, states):
        return (states @ model.item_table.t())[:, 1:]

    last = targets[:, -1] - 1
    student_last = student.last_states(ids, mask)
    torch.testing.assert_close(terms["ce"], torch.nn.functional.cross_entropy(item_scores(student, student_last), last))
    s = torch.log_softmax(item_scores(student, student_last) / 2.0, -1)
    t = torch.log_softmax(item_scores(prompted, prompted.last_states(ids, mask)) / 2.0, -1)
    torch.testing.assert_close(terms["kd"], (t.exp() * (t - s)).sum(-1).mean() * 4.0)
    hidden = student(ids, mask, output_hidden_states=True, last_only=True)[1]
    teacher_hidden = prompted(ids, mask, output_hidden_states=True, last_only=True)[1]
    cosine = [1 - torch.nn.functional.cosine_similarity(hidden[i][:, -1], teacher_hidden[j][:, -1], dim=-1).mean()
              for i, j in zip(blocks.student, blocks.teacher)]
    torch.testing.assert_close(terms["cosine"], torch.stack(cosine).mean())
    first_block = item_scores(student, student.backbone.norm(hidden[1][:, -1]))
    torch.testing.assert_close(terms["multi_supervision"], torch.nn.functional.cross_entropy(first_block, last))
