"""The one error type the user sees: a message and a hint on how to fix it."""

from __future__ import annotations

from typing import Any


class CompressError(Exception):
    """A user-facing error (bad recipe, bad data, bad artifact); the CLI prints it and exits 2."""

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message}\n  hint: {self.hint}"


class RecipeError(CompressError):
    """The recipe is invalid: unknown key, wrong type, impossible stage chain, missing file."""


class DataError(CompressError):
    """A data file is missing, empty or malformed."""


class ArtifactError(CompressError):
    """A folder is not a valid model artifact, or its files do not agree."""


class RunFolderError(CompressError):
    """A folder is not a run folder written by `compress run`, or its files are incomplete."""


class ParityError(CompressError):
    """A converted model (exported, quantized) ranks too differently from its source."""


class ResourceError(CompressError):
    """A stage ran out of disk space or memory; finished stages are kept."""


def shown(value: Any) -> str:
    """A value as a user reads it in a message: no numpy repr (`np.float64(1.0)`), whole floats without `.0`,
    strings quoted."""
    if hasattr(value, "item") and callable(value.item) and getattr(value, "ndim", None) == 0:
        value = value.item()  # numpy scalar -> Python scalar
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**63:
        return str(int(value))
    if isinstance(value, str):
        return repr(value)
    return str(value)
