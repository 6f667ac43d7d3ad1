"""One pipeline: the same request gives the same audio through ``tts-synth --batch 1``,
``tts-synth --batch 4``, unary gRPC and streaming gRPC (sigma 0, prenet dropout 0).

Batching never changes a piece's audio (``tts.synthesizer`` module doc): the phrase file's other
lines share its batches in the CLI, and the server gets the four requests at once, so they share
its batches (the dynamic batcher; the Tacotron2 scheduler's decoder rows) too.
"""

from __future__ import annotations

import concurrent.futures as cf
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from tts.cli.synth import main as synth_main
from tts.client import TTSClient
from tts.server.app import ServerConfig, TTSServer
from tts.server.batcher import BatcherConfig
from tts.server.testing import ServerThread

pytestmark = pytest.mark.timeout(600)

FIXTURES = Path(__file__).parent / "fixtures" / "reference"
TEXTS = ["Hello there.", "A much longer sentence, which takes the decoder many more steps to speak.",
         "Short one.", "The quick brown fox jumps over the lazy dog; twice."]
DET = {"sigma": 0.0, "prenet_dropout": 0.0}
TOL = 1e-5
#: Streaming Griffin-Lim (``heart``): each window's phase continues its stream's (tts.streaming), so
#: the windows give the unary audio up to float rounding of FFTs of other lengths, which the two
#: iterations amplify: measured 2-4e-5 at any overlap (6e-6 with no iterations).
TOL_STREAMED_GRIFFINLIM = 1e-4

VOICES = {
    # the bundled default voice: FastSpeech + Griffin-Lim
    "heart": ["--voice", "heart"],
    # NVIDIA-layout checkpoints (small random-weight reference models)
    "t2": ["--tacotron2", str(FIXTURES / "tacotron2/checkpoint_Tacotron2_current_1gpu.pt"),
           "--waveglow", str(FIXTURES / "waveglow/checkpoint_WaveGlow_ngc_style_ddp.pt")],
    "fs": ["--fastspeech", str(FIXTURES / "fastspeech/checkpoint_005000.pt"),
           "--waveglow", str(FIXTURES / "waveglow/checkpoint_WaveGlow_ngc_style_ddp.pt")],
}


def _cli(tmp_path: Path, voice_args: list[str], batch: int) -> list[np.ndarray]:
    phrases = tmp_path / "phrases.txt"
    phrases.write_text("\n".join(TEXTS) + "\n")
    out = tmp_path / f"batch{batch}"
    rc = synth_main([str(phrases), "--out", str(out), *voice_args, "--batch", str(batch), "--format", "wav-float",
                     "--sigma", "0", "--prenet-dropout", "0", "--max-decoder-steps", "400", "--quiet",
                     "--no-progress"])
    assert rc == 0
    audio = []
    for n in range(1, len(TEXTS) + 1):
        data, rate = sf.read(out / f"{n}.wav", dtype="float32")
        assert rate == 22050
        audio.append(data)
    return audio


def _server(voice_args: list[str]):
    from tts.cli.common import voice_from_args
    from tts.cli.synth import build_parser
    from tts.synthesizer import Synthesizer

    args = build_parser().parse_args(["x", "--out", "x", *voice_args])
    synth = Synthesizer(voice_from_args(args), max_batch=8)
    srv = TTSServer({"v": [synth]}, ServerConfig(host="127.0.0.1", port=0, metrics_port=None, warmup=False,
                                                 batcher=BatcherConfig(max_batch_size=8, max_queue_delay_s=0.05)))
    st = ServerThread(srv)
    st.start()
    return st


def _grpc(port: int) -> tuple[list[np.ndarray], list[np.ndarray], int]:
    opts = dict(DET, max_decoder_steps=400)
    with TTSClient(f"127.0.0.1:{port}", timeout=300) as c, cf.ThreadPoolExecutor(len(TEXTS)) as pool:
        def unary(t):
            return c.synthesize(t, encoding="FLOAT32", options=opts)

        def stream(t):
            return np.concatenate([np.frombuffer(ch.audio, np.float32)
                                   for ch in c.stream(t, encoding="FLOAT32", options=opts)])

        replies = list(pool.map(unary, TEXTS))
        streamed = list(pool.map(stream, TEXTS))
    return ([np.frombuffer(r.audio, np.float32) for r in replies], streamed,
            max(r.timings.batch_size for r in replies))


@pytest.mark.slow
@pytest.mark.parametrize("voice", sorted(VOICES))
def test_same_audio_through_cli_batches_unary_and_streaming(tmp_path, voice):
    b1 = _cli(tmp_path, VOICES[voice], 1)
    b4 = _cli(tmp_path, VOICES[voice], 4)
    st = _server(VOICES[voice])
    try:
        unary, streamed, largest_batch = _grpc(st.server.port)
    finally:
        st.stop()
    assert largest_batch > 1, "the four unary requests did not share a batch"
    for i, ref in enumerate(b1):
        assert len(ref) > 256 * 4, (voice, i)
        for name, other in (("tts-synth --batch 4", b4[i]), ("unary gRPC", unary[i]),
                            ("streaming gRPC", streamed[i])):
            assert other.shape == ref.shape, (voice, i, name, other.shape, ref.shape)
            err = float(np.abs(other - ref).max())
            tol = TOL_STREAMED_GRIFFINLIM if (voice, name) == ("heart", "streaming gRPC") else TOL
            assert err <= tol, f"{voice}: text {i}: {name} differs from --batch 1 by {err:.2e}"
