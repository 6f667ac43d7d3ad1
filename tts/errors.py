"""Exception types shared by every layer.

The split matters at the edges: the CLI prints ``TTSError`` as a one-line
message (no traceback), and the gRPC server maps ``InvalidInputError`` to
``INVALID_ARGUMENT`` and everything else to ``INTERNAL``.
"""

from __future__ import annotations


class TTSError(Exception):
    """Base class of every error this package raises on purpose."""


class InvalidInputError(TTSError, ValueError):
    """The caller's input is wrong (text, option value, voice name). A client mistake."""

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        #: Name of the offending field or option, when one can be named.
        self.field = field


class CheckpointError(TTSError):
    """A checkpoint file is missing, unreadable, of the wrong kind or does not fit its model."""

    def __init__(self, path: object, problem: str) -> None:
        super().__init__(f"{path}: {problem}")
        #: The file that was being read.
        self.path = str(path)
        #: What is wrong with it.
        self.problem = problem


class VoiceError(TTSError):
    """A voice cannot be found or assembled (unknown name, bad manifest)."""
