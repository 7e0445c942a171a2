"""Stages: configs (config.py, torch-free), the registry of StageSpecs (registry.py), what a stage
gets and gives (base.py), and one module per stage with its `run`: train, load, distill, prune,
export, quantize."""
