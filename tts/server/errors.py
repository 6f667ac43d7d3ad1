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
