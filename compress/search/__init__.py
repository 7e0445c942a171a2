"""`compress search`: an accuracy-aware search over stage settings with Optuna.

spec.py (the spec and its validation), space.py (Optuna suggestions, grid, sampler), judge.py
(validation CI gate), frontier.py (Pareto set, pick, closest misses), law.py (performance-law
fit), report.py (report page), runner.py (the study, trials as recipes, files after each trial).
"""
