"""Word timings are computed only for calls that ask for them, at every layer: the pipeline, the slot
and step row decoders (whose attention is read back only for rows that want it), the Tacotron2
scheduler (unary and streaming), and the doors (tts.v1, HTTP ``timestamps``, Riva, ``tts-synth --timings``).

Calls are counted, never timed: the functions that make timings (``attention_path``,
``token_bounds_from_durations``, ``piece_words``) are wrapped with counters, and a call that did
not ask gets the same audio as one that did, with no words.
"""

from __future__ import annotations

import asyncio
import json
import urllib.request

import numpy as np
import pytest
import torch

from conftest import FIXTURES, fixture_synths
from tts.options import SynthesisOptions

pytestmark = pytest.mark.timeout(600)

HOST = "127.0.0.1"
DET = dict(prenet_dropout=0.0, sigma=0.0, max_decoder_steps=60)
TEXT = "Hello there. How are you?"


@pytest.fixture(scope="module")
def synths():
    return fixture_synths()


class Counted:
    """Wraps ``module.name`` with a call counter (monkeypatch undoes it)."""

    def __init__(self, monkeypatch, module, name: str) -> None:
        self.calls = 0
        inner = getattr(module, name)

        def wrapper(*args, **kwargs):
            self.calls += 1
            return inner(*args, **kwargs)

        monkeypatch.setattr(module, name, wrapper)


@pytest.fixture()
def counters(monkeypatch):
    """Counters of everything that makes word timings, wherever it is called from."""
    import tts.server.scheduler
    import tts.server.vocoding
    import tts.synthesizer
    import tts.timings

    return {"path": Counted(monkeypatch, tts.synthesizer, "attention_path"),
            "durations": Counted(monkeypatch, tts.synthesizer, "token_bounds_from_durations"),
            "timings.path": Counted(monkeypatch, tts.timings, "attention_path"),
            "unary_words": Counted(monkeypatch, tts.server.vocoding, "piece_words"),
            "stream_words": Counted(monkeypatch, tts.server.scheduler, "piece_words")}


def total(counters) -> int:
    return sum(c.calls for c in counters.values())


# ----------------------------------------------------------------------------- the pipeline

@pytest.mark.parametrize("voice", ["t2", "fs"])
def test_pipeline_makes_timings_only_when_asked_and_the_audio_is_the_same(synths, counters, voice):
    synth = synths[voice]
    opts = SynthesisOptions(**DET)
    plain = synth.synthesize(TEXT, opts)
    assert plain.words == [] and total(counters) == 0              # nothing of the timings was computed
    timed = synth.synthesize(TEXT, opts, word_timings=True)
    assert [w.word for w in timed.words] == ["Hello", "there", "How", "are", "you"]
    assert counters["path" if voice == "t2" else "durations"].calls == len(synth.plan(TEXT).pieces)
    np.testing.assert_array_equal(plain.audio, timed.audio)        # the same result but the words
    np.testing.assert_array_equal(plain.mel, timed.mel)
    assert (plain.normalized_text, plain.pieces) == (timed.normalized_text, timed.pieces)
    (ac,) = synth.acoustic([TEXT], opts)
    assert ac.words == []


def test_a_batch_makes_timings_only_for_the_texts_that_ask(synths, counters):
    synth = synths["fs"]
    texts = ["Short one.", TEXT]
    out = synth.synthesize_batch(texts, word_timings=[False, True])
    assert out[0].words == [] and [w.word for w in out[1].words] == ["Hello", "there", "How", "are", "you"]
    assert counters["durations"].calls == len(synth.plan(TEXT).pieces)
    alone = synth.synthesize(texts[1], word_timings=True)
    assert out[1].words == alone.words
    with pytest.raises(ValueError, match="flags"):
        synth.synthesize_batch(texts, word_timings=[True])


# ----------------------------------------------------------------------------- row decoders

def _t2_ids(synth) -> list[int]:
    return list(synth.plan("Hello there.").pieces[0][1])


def test_slot_decoder_reads_attention_back_only_for_rows_that_joined_with_align(synths):
    from tts.engines.tacotron2 import Tacotron2Engine

    synth = synths["t2"]
    eng = Tacotron2Engine(synth.acoustic_module, device=torch.device("cpu"), precision="fp32", backend="torch")
    ids = _t2_ids(synth)
    t, lengths = torch.tensor([ids]), torch.tensor([len(ids)])
    with torch.inference_mode():
        memory = eng.encode(t, lengths)
        sd = eng.slots(2, len(ids), steps_per_replay=4)
        sd.join(0, memory, len(ids))
        plain = sd.run(0.0)
        assert plain.align is None                                  # no active row wants it: not copied
        sd.join(1, memory, len(ids), align=True)
        both = sd.run(0.0)
        assert both.align is not None and both.align.shape[:2] == (2, 4)
        sd.leave(1)
        assert sd.run(0.0).align is None
        kept = sd.resized(4, len(ids), keep=[0])
        assert kept.align == [False] * 4


@pytest.mark.parametrize("kind", ["eager", "slots"])
def test_row_decoders_hand_out_attention_only_to_rows_that_ask(synths, kind):
    from tts.server.rows import RowStart, make_row_decoder

    synth = synths["t2"]
    dec = make_row_decoder(synth.acoustic_module, synth.device, kind, steps_per_replay=2)
    ids = _t2_ids(synth)
    with torch.inference_mode():
        dec.join([RowStart("plain", ids, 0.5, "gate"), RowStart("timed", ids, 0.5, "gate", align=True)])
        out = dec.step(0.0)
        assert out["plain"].align is None
        assert out["timed"].align is not None and out["timed"].align.shape == (dec.steps_per_call, len(ids))
        np.testing.assert_allclose(out["plain"].frames.numpy(), out["timed"].frames.numpy(), atol=1e-5)
        dec.leave(["timed"])
        assert dec.step(0.0)["plain"].align is None


# ----------------------------------------------------------------------------- the scheduler

@pytest.mark.parametrize("kw", [{"decoder": "eager"}, {"decoder": "slots", "steps_per_replay": 4}])
def test_scheduler_keeps_attention_and_makes_words_only_for_calls_that_ask(synths, counters, kw):
    from tts.server.scheduler import TacotronScheduler

    synth = synths["t2"]
    sched = TacotronScheduler(synth, max_rows=4, **kw)
    aligned: list[int] = []          # attention chunks kept by the rows of each step
    sched.on_step = lambda i, rows: aligned.append(sum(len(r.align) for r in rows))
    opts = SynthesisOptions(**DET)

    async def main():
        plain = await sched.synthesize(TEXT, opts)
        plain_chunks = [p async for p in sched.stream(TEXT, opts)]
        n_plain = len(aligned)
        quiet = total(counters)
        timed = await sched.synthesize(TEXT, opts, word_timings=True)
        timed_chunks = [p async for p in sched.stream(TEXT, opts, word_timings=True)]
        return plain, plain_chunks, n_plain, quiet, timed, timed_chunks

    sched.start()
    try:
        plain, plain_chunks, n_plain, quiet, timed, timed_chunks = asyncio.run(main())
    finally:
        sched.close()
    assert quiet == 0 and not any(aligned[:n_plain])                # nothing kept, nothing computed
    assert plain.result.words == [] and not any(p.words for p in plain_chunks)
    n = len(synth.plan(TEXT).pieces)
    assert counters["unary_words"].calls == n and counters["stream_words"].calls == n
    assert any(aligned[n_plain:])
    words = ["Hello", "there", "How", "are", "you"]
    assert [w.word for w in timed.result.words] == words
    assert [w.word for p in timed_chunks for w in p.words] == words
    np.testing.assert_array_equal(plain.result.audio, timed.result.audio)
    np.testing.assert_array_equal(np.concatenate([p.audio for p in plain_chunks]),
                                  np.concatenate([p.audio for p in timed_chunks]))


# ----------------------------------------------------------------------------- the doors

@pytest.fixture(scope="module")
def server(synths):
    from tts.server.app import ServerConfig, TTSServer
    from tts.server.batcher import BatcherConfig
    from tts.server.testing import ServerThread

    srv = TTSServer({k: [v] for k, v in synths.items()},
                    ServerConfig(host=HOST, port=0, metrics_port=None, http_port=0, warmup=False,
                                 batcher=BatcherConfig(max_batch_size=2, max_queue_delay_s=0.002)),
                    default_voice="fs")
    st = ServerThread(srv)
    st.start()
    yield st
    st.stop()


@pytest.mark.parametrize("voice", ["fs", "t2"])
def test_tts_v1_computes_timings_only_for_calls_that_ask(server, counters, voice):
    from tts.client import TTSClient

    with TTSClient(f"{HOST}:{server.server.port}", timeout=300) as c:
        plain = c.synthesize(TEXT, voice=voice, encoding="FLOAT32", options=DET)
        plain_chunks = list(c.stream(TEXT, voice=voice, encoding="FLOAT32", options=DET))
        assert total(counters) == 0
        timed = c.synthesize(TEXT, voice=voice, encoding="FLOAT32", options=DET, word_timings=True)
        timed_chunks = list(c.stream(TEXT, voice=voice, encoding="FLOAT32", options=DET, word_timings=True))
    assert not plain.words and not any(ch.words for ch in plain_chunks)
    assert len(timed.words) == 5 and sum(len(ch.words) for ch in timed_chunks) == 5
    assert total(counters) > 0
    assert plain.audio == timed.audio
    assert b"".join(ch.audio for ch in plain_chunks) == b"".join(ch.audio for ch in timed_chunks)


def _speech(port: int, **body) -> bytes:
    req = urllib.request.Request(f"http://{HOST}:{port}/v1/audio/speech", method="POST",
                                 headers={"Content-Type": "application/json"},
                                 data=json.dumps({"model": "tts-1", "voice": "fs", "input": TEXT,
                                                  "response_format": "pcm", **body}).encode())
    with urllib.request.urlopen(req, timeout=120) as r:
        return r.read()


def test_http_computes_timings_only_with_timestamps(server, counters):
    _speech(server.server.http_port)
    assert total(counters) == 0
    body = json.loads(_speech(server.server.http_port, timestamps=True))
    assert [w["word"] for w in body["words"]] == ["Hello", "there", "How", "are", "you"]
    assert counters["durations"].calls > 0


def test_riva_never_computes_timings(server, counters):
    import grpc

    from tts.server.proto_gen import riva_audio_pb2, riva_tts_pb2, riva_tts_pb2_grpc

    with grpc.insecure_channel(f"{HOST}:{server.server.port}") as ch:
        stub = riva_tts_pb2_grpc.RivaSpeechSynthesisStub(ch)
        for voice in ("fs", "t2"):
            req = riva_tts_pb2.SynthesizeSpeechRequest(text=TEXT, voice_name=voice, language_code="en-US",
                                                       encoding=riva_audio_pb2.AudioEncoding.LINEAR_PCM)
            assert len(stub.Synthesize(req, timeout=300).audio)
            assert sum(len(r.audio) for r in stub.SynthesizeOnline(iter([req]), timeout=300))
    assert total(counters) == 0


def test_tts_synth_computes_timings_only_with_the_flag(tmp_path, monkeypatch, counters):
    from tts.cli.synth import main

    phrases = tmp_path / "p.txt"
    phrases.write_text("One. Two.\n", encoding="utf-8")
    ckpts = ["--fastspeech", str(FIXTURES / "fastspeech/checkpoint_005000.pt"),
             "--waveglow", str(FIXTURES / "waveglow/checkpoint_WaveGlow_ngc_style_ddp.pt")]
    assert main([str(phrases), "--out", str(tmp_path / "a"), "--quiet", *ckpts]) == 0
    assert total(counters) == 0 and not (tmp_path / "a" / "1.json").exists()
    assert main([str(phrases), "--out", str(tmp_path / "b"), "--quiet", "--timings", *ckpts]) == 0
    assert counters["durations"].calls > 0
    assert [w["word"] for w in json.loads((tmp_path / "b" / "1.json").read_text())["words"]] == ["One", "Two"]
