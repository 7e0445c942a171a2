"""The stage registry: the one mapping from a recipe's `stage:` name to its module.

A stage module defines NAME, Config (pydantic, with `stage: Literal[NAME]`), ACCEPTS (the
artifact kind it takes, None for a first stage), PRODUCES, and run(ctx, config, source).
Adding a stage means adding its file and one line here.
"""

from __future__ import annotations

from types import ModuleType

from compress.stages import distill, train

STAGES: dict[str, ModuleType] = {module.NAME: module for module in (train, distill)}
