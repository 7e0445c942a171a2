"""Where a training step's CPU time goes: torch.profiler over full-softmax CE steps of a Beauty-shaped
model on a synthetic batch (no data files needed), top operators by self CPU time with their shapes.

    python benchmarks/train_step_profile.py                      # 2 layers, 1 head, 12,101 items
    python benchmarks/train_step_profile.py --items 3416 --heads 4 --kv-heads 2

Measured on the 2-core Xeon (2026-11-30, `--heads 4 --kv-heads 2 --steps 20`): before the loss scored
items 1..N only (compress/training/losses.py `item_logits`), the backward of the padding column's
in-place write copied the whole [targets, items + 1] score matrix (copy_ 78 ms of 952 ms self CPU
over 2 steps); without it a step took 439 ms instead of 472 ms (-7%). The remaining fill_ of that
shape is cross_entropy's own backward.
"""

from __future__ import annotations

import argparse

import torch
from torch.profiler import profile

from compress.bench.timing import time_calls
from compress.models import RecommenderConfig, SequentialRecommender
from compress.training.losses import next_item_loss


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, default=12101, help="catalogue size (Beauty: 12,101)")
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--heads", type=int, default=1)
    parser.add_argument("--kv-heads", type=int, default=1)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--max-len", type=int, default=50)
    parser.add_argument("--steps", type=int, default=10, help="timed steps (after 3 warm-up steps)")
    args = parser.parse_args()

    torch.manual_seed(0)
    config = RecommenderConfig(num_items=args.items, max_len=args.max_len, hidden_size=64, num_layers=args.layers,
                               num_heads=args.heads, num_kv_heads=args.kv_heads, intermediate_size=128, dropout=0.5)
    model = SequentialRecommender(config).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    lengths = torch.randint(4, args.max_len + 1, (args.batch,))
    ids = torch.zeros(args.batch, args.max_len, dtype=torch.long)
    for row, length in enumerate(lengths.tolist()):  # left-padded histories of random lengths
        ids[row, args.max_len - length:] = torch.randint(1, args.items + 1, (length,))
    mask = (ids > 0).long()
    targets = torch.roll(ids, -1, 1)
    targets[:, -1] = torch.randint(1, args.items + 1, (args.batch,))
    targets = targets * mask

    def step() -> None:
        states, _ = model(ids, mask)
        loss = next_item_loss(model, states, targets)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    timings = time_calls(lambda _: step(), range(3 + args.steps), warmup=3)  # 3 warm-up steps, then timed ones
    print(f"{timings.wall_ms.mean():.0f} ms per step, {int((targets > 0).sum()):,} targets, "
          f"{torch.get_num_threads()} threads")
    with profile(record_shapes=True) as prof:
        for _ in range(2):
            step()
    print(prof.key_averages(group_by_input_shape=True).table(sort_by="self_cpu_time_total", row_limit=12))


if __name__ == "__main__":
    main()
