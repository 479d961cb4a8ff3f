"""Which exceptions are a user's problem, reported as one line (everything else keeps its traceback).

A user error is a ``PipelineError``: a bad config value, an unreadable file, a failed download, a
failed verification, an input a stage needs that is missing. The CLI prints its first line as
``error: ...`` and exits non-zero; any other exception is a bug and keeps its traceback.
"""
from __future__ import annotations


class PipelineError(Exception):
    """Base of every known user error."""


class MissingInputError(PipelineError, FileNotFoundError):
    """A file or folder the command needs is not there (names it and says which stage makes it)."""


class StageError(PipelineError, RuntimeError):
    """A stage can't produce its outputs from these inputs (says why and what to change)."""


def known_error_message(error: BaseException) -> str | None:
    if isinstance(error, PipelineError):
        return str(error).splitlines()[0] if str(error) else type(error).__name__
    return None
