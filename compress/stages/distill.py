"""Distill stage: SLMRec layer-wise knowledge distillation into a shallower student.

The student keeps `num_layers` of the teacher's decoder layers (chosen `first`, `uniform` or
by Block Influence) and starts from the copied teacher weights (or fresh, or a local LLaMA
checkpoint). It trains with the teacher frozen on a weighted sum of next-item cross-entropy,
hidden-state alignment at B blocks (1 - cosine, L2), multiple supervision of intermediate
blocks, and optional logit distillation (KL at temperature T). A prompted teacher (an imported SLMRec
checkpoint) gives a student with the same prompt, trained on the state after the response, as SLMRec does.
"""

from __future__ import annotations

from compress.runtime import distributed
from compress.errors import RecipeError
from compress.methods.layer_importance import block_influence, select_layers
from compress.training.losses import BlockMap, distillation_objective
from compress.models import SequentialRecommender, init_backbone_from_llama, load_model, save_model
from compress.methods.surgery import keep_layers
from compress.stages.config import DistillConfig
from compress.handlers import TorchArtifact
from compress.stages.base import StageContext, StageResult
from compress.training.loop import fit


def build_student(teacher: SequentialRecommender, config: DistillConfig, ctx: StageContext) -> SequentialRecommender:
    depth = teacher.config.num_layers
    if config.num_layers >= depth:
        raise RecipeError(
            f"distill: the student asks for {config.num_layers} layers but the teacher has {depth}",
            "a student keeps fewer layers than its teacher",
        )
    importance = None
    if config.layer_selection == "importance":
        importance = block_influence(teacher, ctx.data, ctx.device, seed=ctx.seed)
        ctx.log("block influence per teacher layer: " + ", ".join(f"{v:.3f}" for v in importance))
    kept = select_layers(config.layer_selection, depth, config.num_layers, importance)
    ctx.log(f"student keeps teacher layers {kept} of {depth}")
    student = keep_layers(teacher, kept)
    if config.init == "fresh" or config.init_from:
        student = _fresh_keeping_prompt(student).to(ctx.device)
    if config.init_from:
        init_backbone_from_llama(student, config.init_from)
    return student


def _fresh_keeping_prompt(model: SequentialRecommender) -> SequentialRecommender:
    """A freshly initialised model of `model`'s shape with its fixed prompt (the instruction and response
    embeddings of an imported SLMRec teacher are constants, never initialised)."""
    fresh = SequentialRecommender(model.config)
    fresh.load_state_dict({**fresh.state_dict(), **model.prompt_embeddings()})
    return fresh


def run(ctx: StageContext, config: DistillConfig, source: Artifact) -> StageResult:
    teacher = load_model(source.path, ctx.device).eval().requires_grad_(False)
    try:
        blocks = BlockMap.build(config.num_layers, teacher.config.num_layers, config.blocks)
    except ValueError as exc:
        raise RecipeError(f"distill: {exc}") from None
    student = build_student(teacher, config, ctx)
    ctx.log(
        f"student: {student.num_parameters():,} parameters ({student.num_parameters() / teacher.num_parameters():.0%}"
        f" of the teacher); aligned blocks student {blocks.student} <- teacher {blocks.teacher}"
    )

    loss_fn = distillation_objective(teacher, config.weights, blocks, config.softmax, config.num_negatives)
    result = fit(student, loss_fn, ctx.data, config, ctx.train_context())
    if distributed.is_main():
        save_model(student, ctx.model_folder)
    info = {
        "teacher_params": teacher.num_parameters(),
        "best_epoch": result.best_epoch,
        "epochs_run": result.epochs_run,
        "train_seconds": round(result.seconds, 2),
    }
    return StageResult(TorchArtifact(ctx.model_folder), {**info, "history": result.history})
