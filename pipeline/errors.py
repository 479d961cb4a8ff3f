"""Which exceptions are a user's problem, reported as one line (the rest keep their traceback)."""
from __future__ import annotations


def known_error_message(error: BaseException) -> str | None:
    from pipeline.audio import AudioError
    from pipeline.config import ConfigError
    from pipeline.download import DownloadError
    from pipeline.verify import VerificationError

    if isinstance(error, (ConfigError, AudioError, DownloadError, VerificationError, FileNotFoundError)):
        return str(error).splitlines()[0] if str(error) else type(error).__name__
    return None
