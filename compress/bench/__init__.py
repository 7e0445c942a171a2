"""Benchmarks, one job a module:

- `timing`: the one timing loop, the memory probe, test histories and batches (torch-free at import);
- `config`: the recipe's `bench` section; `results`: what a bench.json says (torch-free);
- `session`: `BenchSession`, which measures artifacts in this process, ratios to a teacher measured alike;
- `incremental`: the step model against the full pass, per event (torch-free);
- `runs`: a run folder's stages benchmarked into their bench.json files and the manifest (`compress bench`).
"""
