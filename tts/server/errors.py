"""Errors of the serving layer; ``tts.server.interceptors`` maps each to a gRPC code."""

from __future__ import annotations

from tts.errors import TTSError


class QueueFullError(TTSError):
    """The batching queue is at its bound: the server is overloaded (RESOURCE_EXHAUSTED)."""


class DeadlineExpiredError(TTSError):
    """The call's deadline passed before its batch ran (DEADLINE_EXCEEDED)."""


class ShuttingDownError(TTSError):
    """The server is draining and takes no new work (UNAVAILABLE)."""


class AuthError(TTSError):
    """Missing or wrong bearer token (UNAUTHENTICATED)."""


class ResponseTooLargeError(TTSError):
    """The reply would exceed the server's largest message (``--max-send-bytes``) (RESOURCE_EXHAUSTED)."""


#: Longest user-given string echoed in an error message or log line (longer ones are cut, with "…").
ECHO_CHARS = 64


def clip(text: str, limit: int = ECHO_CHARS) -> str:
    """``text`` cut to ``limit`` characters plus "…": how user input is echoed in messages and logs."""
    return text if len(text) <= limit else text[:limit] + "…"
