"""Exceptions shown to users: each names the file (and line) it is about."""

from __future__ import annotations

from pathlib import Path


class SamuError(Exception):
    """Base class of every error the command line reports as a clean message (exit code 2)."""


class DataError(SamuError):
    """Bad input data: a file or a line of one that cannot be used.

    The message always starts with ``file`` or ``file:line`` so that editors can jump to it.
    """

    def __init__(self, path: str | Path, reason: str, line: int | None = None) -> None:
        self.path = str(path)
        self.line = line
        self.reason = reason
        where = f"{self.path}:{line}" if line is not None else self.path
        super().__init__(f"{where}: {reason}")


class AudioError(DataError):
    """An audio file that cannot be read or is not usable speech."""


class ConfigError(SamuError):
    """A configuration file or override that does not validate."""


class ModelLoadError(SamuError):
    """A model folder that is missing, incomplete or does not match its config."""
