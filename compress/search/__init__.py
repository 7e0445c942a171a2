"""`compress search`: an accuracy-aware search over stage settings with Optuna (see runner.py)."""

from compress.search.runner import SearchOptions, SearchResult, run_search
from compress.search.spec import SearchSpec, load_spec

__all__ = ["SearchOptions", "SearchResult", "SearchSpec", "load_spec", "run_search"]
