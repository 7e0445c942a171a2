import copy

import pytest
import torch

from compress.evaluation.metrics import EvalConfig, evaluate_model
from compress.training.losses import next_item_loss
from compress.training.loop import OptimConfig, TrainContext, fit


def ce_loss(model, batch):
    states, _ = model(batch.item_ids, batch.attention_mask)
    loss = next_item_loss(model, states, batch.targets)
    return loss, {}


def context(tmp_path, seed=0):
    return TrainContext(
        device=torch.device("cpu"), seed=seed, max_len=20, eval_config=EvalConfig(),
        checkpoint=tmp_path / "ckpt.pt", log=lambda _: None, show_progress=False,
    )


def test_training_improves_validation_and_checkpoints(tmp_path, tiny_data, tiny_model):
    before = tiny_model.state_dict()["item_embeddings.weight"].clone()
    result = fit(tiny_model, ce_loss, tiny_data, OptimConfig(epochs=3, batch_size=32, lr=0.01, patience=0), context(tmp_path))
    assert result.epochs_run == 3 and len(result.history) == 3
    assert result.history[-1]["loss"] < result.history[0]["loss"]
    assert not torch.equal(before, tiny_model.state_dict()["item_embeddings.weight"])
    assert (tmp_path / "ckpt.pt").is_file()


def test_resume_reaches_the_same_weights(tmp_path, tiny_data, tiny_model):
    interrupted = copy.deepcopy(tiny_model)
    config = OptimConfig(epochs=3, batch_size=32, lr=0.01, patience=0)
    fit(tiny_model, ce_loss, tiny_data, config, context(tmp_path / "straight"))

    epochs_done = _train_until_interrupted(interrupted, tiny_data, config, tmp_path / "resumed", stop_after=2)
    resumed = fit(interrupted, ce_loss, tiny_data, config, context(tmp_path / "resumed"))

    assert epochs_done == 2 and resumed.epochs_run == 3
    for key, value in tiny_model.state_dict().items():
        torch.testing.assert_close(value, interrupted.state_dict()[key], rtol=0, atol=0)


class Interrupted(Exception):
    pass


def _train_until_interrupted(model, data, config, folder, stop_after):
    """Train, but raise out of the loop once `stop_after` epochs are checkpointed, as a kill would."""
    ctx = context(folder)
    epochs = []
    ctx.log = lambda message: epochs.append(message) if message.startswith("epoch") else None

    def loss(model, batch):
        if len(epochs) >= stop_after:
            raise Interrupted
        return ce_loss(model, batch)

    with pytest.raises(Interrupted):
        fit(model, loss, data, config, ctx)
    assert ctx.checkpoint.is_file()
    return len(epochs)


def test_early_stopping_restores_the_best_weights(tmp_path, tiny_data, tiny_model):
    config = OptimConfig(epochs=6, batch_size=32, lr=0.5, patience=1)  # a too-high lr makes it worsen
    ctx = context(tmp_path)
    weights = {}  # epoch -> the weights as that epoch's validation saw them (logged right after it)

    def log(message):
        if message.startswith("epoch "):
            epoch = int(message.split()[1].split("/")[0])
            weights[epoch] = {k: v.detach().clone() for k, v in tiny_model.state_dict().items()}

    ctx.log = log
    result = fit(tiny_model, ce_loss, tiny_data, config, ctx)
    assert result.best_metric == max(h["ndcg@10"] for h in result.history)
    assert result.best_epoch < result.epochs_run  # the last weights are not the best: there is something to restore
    restored = tiny_model.state_dict()
    for key, value in weights[result.best_epoch].items():
        torch.testing.assert_close(restored[key], value, rtol=0, atol=0)
    assert any(not torch.equal(restored[k], v) for k, v in weights[result.epochs_run].items())
    again = evaluate_model(tiny_model, tiny_data, "valid", EvalConfig(max_users=config.eval_users), torch.device("cpu"))
    assert again["ndcg@10"] == pytest.approx(result.best_metric)


def test_full_softmax_loss_is_cross_entropy_over_the_items_without_padding(tiny_model):
    ids = torch.tensor([[0, 3, 5, 7], [2, 4, 6, 8]])
    targets = torch.tensor([[0, 5, 7, 9], [4, 6, 8, 1]])
    states, _ = tiny_model(ids, (ids > 0).long())
    logits = states @ tiny_model.item_table.t()
    picked = targets > 0
    log_probs = torch.log_softmax(logits[picked][:, 1:], dim=-1)  # padding (column 0) is no candidate
    expected = -log_probs.gather(1, (targets[picked] - 1)[:, None]).mean()
    torch.testing.assert_close(next_item_loss(tiny_model, states, targets), expected)


def test_each_epoch_line_gives_the_elapsed_time_and_an_eta(tmp_path, tiny_data, tiny_model):
    lines: list[str] = []
    ctx = context(tmp_path)
    ctx.log = lines.append
    fit(tiny_model, ce_loss, tiny_data, OptimConfig(epochs=2, batch_size=32, lr=0.01, patience=0), ctx)
    epoch_lines = [line for line in lines if line.startswith("epoch ")]
    assert [line.split()[1] for line in epoch_lines] == ["1/2", "2/2"]
    assert all(" elapsed, eta " in line for line in epoch_lines)
    assert epoch_lines[-1].endswith("eta 0:00:00")  # nothing left after the last epoch
