"""Request and response bodies of the OpenAI-compatible HTTP API (pydantic models for FastAPI and /docs).

The names and ranges follow OpenAI's ``POST /v1/audio/speech``; what this
server does with each field is said in ``tts.server.http`` and the README.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

#: OpenAI's built-in voice names: each is an alias of the server's default voice.
OPENAI_VOICES = ("alloy", "ash", "ballad", "coral", "echo", "fable", "onyx", "nova", "sage", "shimmer", "verse",
                 "marin", "cedar")

#: Model ids accepted in ``model`` and listed by ``GET /v1/models``. All of them mean the same thing
#: here (this server's pipeline); the voice, not the model, picks what speaks.
MODELS = ("tts-1", "tts-1-hd", "gpt-4o-mini-tts", "gpt-4o-mini-tts-2025-12-15", "tts-serve")

#: ``response_format`` values of OpenAI's API, and the ones this server makes.
OPENAI_FORMATS = ("mp3", "opus", "aac", "flac", "wav", "pcm")
#: What this server makes: OpenAI's formats but aac, and headerless G.711 (telephony), as every API here.
FORMATS = ("mp3", "opus", "flac", "wav", "pcm", "mulaw", "alaw")

#: OpenAI's range of ``speed``.
MIN_SPEED, MAX_SPEED = 0.25, 4.0


class VoiceId(BaseModel):
    """OpenAI's custom-voice object ``{"id": "..."}``; the id is looked up like a voice name."""

    model_config = ConfigDict(extra="ignore")
    id: str


class SpeechRequest(BaseModel):
    """Body of ``POST /v1/audio/speech``. Fields OpenAI may add later are ignored."""

    model_config = ConfigDict(extra="ignore")

    model: str = Field(description=f"one of {', '.join(MODELS)} (all the same pipeline here)")
    input: str = Field(description="the text to speak (at most the server's --max-text-chars characters)")
    voice: str | VoiceId = Field(
        description="a voice of this server (GET /v1/audio/voices) or an OpenAI voice name "
                    f"({', '.join(OPENAI_VOICES)}), which speaks with the server's default voice")
    response_format: str = Field(
        "mp3", description=f"{', '.join(FORMATS)} (aac is not supported)",
        json_schema_extra={"enum": list(OPENAI_FORMATS) + ["mulaw", "alaw"]})
    speed: float | None = Field(
        None, ge=MIN_SPEED, le=MAX_SPEED, allow_inf_nan=False,
        description="speaking rate, 1.0 = normal (applied by FastSpeech voices; Tacotron2 voices ignore it)")
    instructions: str | None = Field(None, description="accepted and ignored (OpenAI's style prompt)")
    timestamps: bool = Field(
        False, description="this server's extension: answer JSON instead of audio bytes, "
                           '{"audio": base64 of the whole file in response_format, "format", "sample_rate", '
                           '"normalized_text", "words": [{"word", "start", "end", "char_start", "char_end"}]} '
                           "(word timings in seconds of the audio; words as written in input)")
    stream_format: str | None = Field(
        None, description="audio (the default: the response body is the audio file); sse is not supported",
        json_schema_extra={"enum": ["audio", "sse"]})


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(BaseModel):
    """OpenAI's error shape; every error of this API has it."""

    error: ErrorDetail


class Model(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int = 0
    owned_by: str = "tts-serve"


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[Model]


class VoiceEntry(BaseModel):
    name: str
    sample_rate: int
    acoustic_model: str
    default: bool


class VoiceList(BaseModel):
    voices: list[VoiceEntry]
    #: OpenAI voice name -> the voice that speaks for it.
    openai_aliases: dict[str, str]
    default_voice: str
    max_input_chars: int
    response_formats: list[str]


class Status(BaseModel):
    status: str
    details: dict[str, Any] = {}


class WordTimingOut(BaseModel):
    """One word of the input as written and where the audio speaks it (seconds)."""

    word: str
    start: float
    end: float
    #: ``input[char_start:char_end] == word``.
    char_start: int
    char_end: int


class SpeechWithTimestamps(BaseModel):
    """``POST /v1/audio/speech`` with ``"timestamps": true``: the audio and its word timings in one JSON body."""

    audio: str = Field(description="base64 of the whole audio file in `format`")
    format: str
    sample_rate: int
    normalized_text: str
    words: list[WordTimingOut]
