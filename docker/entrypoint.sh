#!/bin/sh
# Start command of the tts-server image (also run outside Docker by tests/test_server_docker.py).
#
# Voice: $TTS_VOICE (a voice folder or bundled name), or checkpoint files
# $TTS_TACOTRON2 / $TTS_FASTSPEECH (+ $TTS_FASTSPEECH_CONFIG) and $TTS_WAVEGLOW,
# relative to $TTS_MODELS (default /models); paths must not contain spaces.
# Engines: built at first start into $TTS_ENGINE_CACHE (a volume) when the
# package provides tts-build-engines (extra flags: $TTS_BUILD_ARGS, e.g. the
# cache-dir flag that tool takes); later starts reuse the cache.
# Extra arguments go to tts-server; its SIGTERM drain works because of `exec`.
set -eu

MODELS="${TTS_MODELS:-/models}"
CACHE="${TTS_ENGINE_CACHE:-/engines}"
SERVER="${TTS_SERVER_CMD:-tts-server}"

VOICE_ARGS=""
if [ -n "${TTS_VOICE:-}" ]; then
    case "$TTS_VOICE" in
        /*) VOICE_ARGS="--voice $TTS_VOICE" ;;
        *) if [ -d "$MODELS/$TTS_VOICE" ]; then VOICE_ARGS="--voice $MODELS/$TTS_VOICE"; else VOICE_ARGS="--voice $TTS_VOICE"; fi ;;
    esac
else
    [ -n "${TTS_TACOTRON2:-}" ] && VOICE_ARGS="$VOICE_ARGS --tacotron2 $MODELS/$TTS_TACOTRON2"
    [ -n "${TTS_FASTSPEECH:-}" ] && VOICE_ARGS="$VOICE_ARGS --fastspeech $MODELS/$TTS_FASTSPEECH"
    [ -n "${TTS_FASTSPEECH_CONFIG:-}" ] && VOICE_ARGS="$VOICE_ARGS --fastspeech-config $MODELS/$TTS_FASTSPEECH_CONFIG"
    [ -n "${TTS_WAVEGLOW:-}" ] && VOICE_ARGS="$VOICE_ARGS --waveglow $MODELS/$TTS_WAVEGLOW"
fi

if command -v tts-build-engines >/dev/null 2>&1 && [ -w "$CACHE" ]; then
    if [ ! -e "$CACHE/.built" ] || [ "${TTS_REBUILD_ENGINES:-0}" = "1" ]; then
        echo "tts-entrypoint: building engines into $CACHE (first start)" >&2
        # shellcheck disable=SC2086
        tts-build-engines $VOICE_ARGS ${TTS_BUILD_ARGS:-} && touch "$CACHE/.built" \
            || echo "tts-entrypoint: engine build failed; serving with eager engines" >&2
    fi
fi

# shellcheck disable=SC2086
exec $SERVER $VOICE_ARGS "$@"
