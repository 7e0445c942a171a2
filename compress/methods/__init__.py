"""Compression methods on torch models: layer importance, pruning plans, model surgery."""
