"""GPU end to end: ``tts-synth --device cuda`` through the engines equals the e2e references; the server on CUDA.

Runs on a CUDA GPU only (``-m gpu``; skipped elsewhere). fp32 means IEEE fp32
(the engines turn TF32 off: ``tts.engines.precision``). Stated tolerances (max
abs error against the fp32 CPU references of ``tests/fixtures/reference/e2e``),
the CPU tests' own (fixture README, ``tests/test_synth_cli.py``):

- fp32 engines: Tacotron2 mel 1e-3, FastSpeech mel 1e-4, audio read back from
  the 16-bit WAV files 1/32767 + 1e-5 (the e2e audio tolerance 1e-5 plus one
  quantization step); measured values are printed;
- fp16 engines: mel 0.05 with identical mel lengths (the ``tts-bench --verify``
  limit), audio SNR >= 30 dB;
- ``--batch 4``: Tacotron2 against the CPU eager run of the same batches
  (padded items follow DLE's batch arithmetic, which differs from a single
  run, see the fixture README); FastSpeech against the single-utterance
  references (its engine is pad-exact).

Measured errors go to stdout and, when ``$TTS_GPU_REPORT`` names a folder, to
``engines_gpu.json`` there.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import FIXTURES, load_npz

pytestmark = [pytest.mark.gpu, pytest.mark.timeout(600)]

T2 = str(FIXTURES / "tacotron2" / "checkpoint_Tacotron2_current_1gpu.pt")
WG = str(FIXTURES / "waveglow" / "checkpoint_WaveGlow_ngc_style_ddp.pt")
FS = str(FIXTURES / "fastspeech" / "checkpoint_005000.pt")
FS_YAML = str(FIXTURES / "fastspeech" / "hparams.yaml")
PHRASES = Path(__file__).resolve().parents[1] / "phrases" / "reference_e2e.txt"
DET = ["--prenet-dropout", "0", "--sigma", "0", "--text-normalizer", "dle"]   # parity: NVIDIA's cleaners
REPORT: dict[str, object] = {}
#: e2e audio tolerance of the CPU tests (1e-5) plus one step of the 16-bit WAV files read back.
WAV_ATOL = 1 / 32767 + 1e-5


@pytest.fixture(autouse=True)
def _no_tf32(tmp_path, monkeypatch):
    monkeypatch.setenv("TTS_ENGINE_CACHE", str(tmp_path / "engine-cache"))
    mm, cd = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = mm, cd


def _record(name: str, value) -> None:
    REPORT[name] = value
    print(f"\n{name}: {value}")
    folder = os.environ.get("TTS_GPU_REPORT")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        (Path(folder) / "engines_gpu.json").write_text(json.dumps(REPORT, indent=1, default=str))


def _synth(out: Path, voice: list[str], *extra: str) -> None:
    from tts.cli.synth import main
    code = main([str(PHRASES), "--out", str(out), *voice, *DET, "--save-mel", "--quiet", *extra])
    assert code == 0


def _audio(path: Path) -> np.ndarray:
    import soundfile as sf
    return sf.read(path, dtype="float32")[0]


def _snr(ref: np.ndarray, got: np.ndarray) -> float:
    return float(10 * np.log10((ref ** 2).sum() / max(((ref - got) ** 2).sum(), 1e-30)))


def _t2_voice() -> list[str]:
    return ["--tacotron2", T2, "--waveglow", WG]


def _fs_voice() -> list[str]:
    return ["--fastspeech", FS, "--fastspeech-config", FS_YAML, "--waveglow", WG, "--denoiser-strength", "0"]


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_tacotron2_synth_cuda_equals_e2e_reference(tmp_path, precision):
    _synth(tmp_path, _t2_voice(), "--device", "cuda", "--precision", precision)
    ref = load_npz("e2e/ref_e2e.npz")
    mel_err, audio_err, snrs = [], [], []
    for i in range(6):
        mel = np.load(tmp_path / f"{i + 1}.mel.npy")
        want = ref[f"mel_{i}"][0]
        assert mel.shape == want.shape, (i, mel.shape, want.shape)
        mel_err.append(float(np.abs(mel - want).max()))
        audio = _audio(tmp_path / f"{i + 1}.wav")
        n = int(ref[f"mel_len_{i}"][0]) * 256
        expected = ref[f"denoised_{i}"][0, :n]
        assert audio.shape == expected.shape
        audio_err.append(float(np.abs(audio - expected).max()))
        snrs.append(_snr(expected, audio))
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["device"].startswith("cuda") and report["precision"] == precision
    _record(f"t2_{precision}", {"mel_max_abs": max(mel_err), "audio_max_abs": max(audio_err),
                                "audio_snr_min_db": min(snrs), "per_phrase_mel": mel_err})
    if precision == "fp32":
        assert max(mel_err) <= 1e-3
        assert max(audio_err) <= WAV_ATOL
    else:
        assert max(mel_err) <= 0.05
        assert min(snrs) >= 30.0


def test_tacotron2_synth_cuda_batch4_equals_cpu_batch4(tmp_path):
    _synth(tmp_path / "gpu", _t2_voice(), "--device", "cuda", "--precision", "fp32", "--batch", "4")
    _synth(tmp_path / "cpu", _t2_voice(), "--device", "cpu", "--batch", "4")
    errs = []
    for i in range(1, 7):
        g, c = np.load(tmp_path / "gpu" / f"{i}.mel.npy"), np.load(tmp_path / "cpu" / f"{i}.mel.npy")
        assert g.shape == c.shape
        errs.append(float(np.abs(g - c).max()))
        a, b = _audio(tmp_path / "gpu" / f"{i}.wav"), _audio(tmp_path / "cpu" / f"{i}.wav")
        assert a.shape == b.shape and float(np.abs(a - b).max()) <= WAV_ATOL
    _record("t2_fp32_batch4_vs_cpu_batch4", {"mel_max_abs": max(errs)})
    assert max(errs) <= 1e-3


@pytest.mark.parametrize("precision,batch", [("fp32", 1), ("fp32", 4), ("fp16", 1)])
def test_fastspeech_synth_cuda_equals_e2e_reference(tmp_path, precision, batch):
    _synth(tmp_path, _fs_voice(), "--device", "cuda", "--precision", precision, "--batch", str(batch))
    ref = load_npz("e2e/ref_e2e_fastspeech.npz")
    mel_err, snrs = [], []
    for i in range(6):
        mel = np.load(tmp_path / f"{i + 1}.mel.npy")
        want = ref[f"mel_{i}"][0]
        assert mel.shape == want.shape, (i, mel.shape, want.shape)     # same durations, same length
        mel_err.append(float(np.abs(mel - want).max()))
        snrs.append(_snr(ref[f"audio_{i}"][0], _audio(tmp_path / f"{i + 1}.wav")))
    _record(f"fs_{precision}_batch{batch}", {"mel_max_abs": max(mel_err), "audio_snr_min_db": min(snrs)})
    assert max(mel_err) <= (1e-4 if precision == "fp32" else 0.05)     # CPU: FastSpeech mel 1e-4
    assert min(snrs) >= 30.0


def test_fastspeech_engine_gpu_bucket_equals_single_eager():
    """Pad-exact buckets on the GPU: each item of a padded batch equals its unpadded eager run (fp32)."""
    from tts.engines.fastspeech import FastSpeechEngine
    from tts.voice import Voice
    v = Voice.from_checkpoints(fastspeech=FS, fastspeech_config=FS_YAML, waveglow=WG)
    fs = v.acoustic.cuda().eval()
    eng = FastSpeechEngine(fs, device="cuda", precision="fp32")
    g = torch.Generator().manual_seed(0)
    seqs = [torch.randint(1, 140, (n,), generator=g) for n in (57, 20, 33, 8)]
    batch = torch.zeros(4, 57, dtype=torch.long)
    for i, s in enumerate(seqs):
        batch[i, :len(s)] = s
    out, again = eng.infer(batch.cuda()), eng.infer(batch.cuda())
    assert torch.equal(out.mel, again.mel)
    errs = []
    for i, s in enumerate(seqs):
        ref = fs.infer(s[None].cuda())
        n = int(ref.mel_lengths[0])
        assert torch.equal(out.repeats[i, :len(s)], ref.repeats[0])
        errs.append(float((out.mel[i, :n] - ref.mel[0]).abs().max()))
    _record("fs_gpu_bucket_vs_single_eager", max(errs))
    assert max(errs) <= 1e-4


def test_engine_cache_on_gpu_and_build_engines_cli(tmp_path, capsys):
    """tts-build-engines builds into the cache; a second run loads; engines from the cache give equal audio."""
    from tts.cli import build_engines
    cache_dir = tmp_path / "cache"
    args = [*_t2_voice(), "--device", "cuda", "--precision", "fp16", "--engine-cache", str(cache_dir)]
    t0 = time.perf_counter()
    assert build_engines.main(args) == 0
    t_build = time.perf_counter() - t0
    first = capsys.readouterr()
    t0 = time.perf_counter()
    assert build_engines.main(args) == 0
    t_load = time.perf_counter() - t0
    second = capsys.readouterr()
    assert "2 built" in first.out and "2 loaded" in second.out, (first, second)
    names = sorted(p.name for p in cache_dir.glob("*.engine"))
    assert len(names) == 2 and all("fp16" in n and "sm" in n for n in names)
    _record("build_engines_fixture_voice_s", {"build": t_build, "load": t_load, "files": names,
                                              "out_build": first.out, "out_load": second.out})
    for p in cache_dir.glob("tacotron2-*.engine"):                 # tamper: rebuilt, never used
        data = bytearray(p.read_bytes())
        data[-64] ^= 0xFF
        p.write_bytes(bytes(data))
    assert build_engines.main(args) == 0
    third = capsys.readouterr()
    assert "1 built" in third.out and "1 loaded" in third.out and "1 rejected" in third.out, third


def test_server_on_cuda_unary_and_streaming(tmp_path):
    """The server on CUDA: Tacotron2 through the continuous scheduler (eager step API on the GPU),
    FastSpeech through the batcher; unary equals the synthesizer, streaming equals unary."""
    from tts.client import TTSClient
    from tts.options import SynthesisOptions
    from tts.server.app import ServerConfig, TTSServer
    from tts.server.audio import Encoding, decode
    from tts.server.batcher import BatcherConfig
    from tts.server.testing import ServerThread
    from tts.synthesizer import Synthesizer
    from tts.voice import Voice

    t2 = Voice.from_checkpoints(tacotron2=T2, waveglow=WG, name="t2")
    fs = Voice.from_checkpoints(fastspeech=FS, fastspeech_config=FS_YAML, waveglow=WG, name="fs")
    synths = {"t2": Synthesizer(t2, device="cuda", max_batch=8), "fs": Synthesizer(fs, device="cuda", max_batch=8)}
    srv = TTSServer({k: [v] for k, v in synths.items()},
                    ServerConfig(host="127.0.0.1", port=0, metrics_port=None, warmup=True,
                                 batcher=BatcherConfig(max_batch_size=8, max_queue_delay_s=0.002),
                                 stream_chunk_frames=16, stream_first_chunk_frames=4, stream_overlap_frames=8),
                    default_voice="t2")
    det = {"prenet_dropout": 0.0, "sigma": 0.0}
    texts = ["Hello there.", "A much longer sentence that should take the decoder many more steps to finish.",
             "Testing, one two three."]
    errs: dict[str, float] = {}
    with ServerThread(srv) as st, TTSClient(f"127.0.0.1:{st.server.port}", timeout=120) as c:
        assert hasattr(srv.engine.synthesizers["t2"][0].acoustic_module, "decoder")   # an engine, with the step API
        for voice in ("t2", "fs"):
            for text in texts:
                want = synths[voice].synthesize(text, SynthesisOptions(**det)).audio
                r = c.synthesize(text, voice=voice, encoding="FLOAT32", options=det)
                got = decode(r.audio, Encoding.FLOAT32)
                assert len(got) == len(want) > 0
                errs[f"{voice} unary vs synth"] = max(errs.get(f"{voice} unary vs synth", 0.0),
                                                      float(np.abs(got - want).max()))
                parts = [decode(ch.audio, Encoding.FLOAT32) for ch in
                         c.stream(text, voice=voice, encoding="FLOAT32", options=det)]
                streamed = np.concatenate(parts)
                assert len(streamed) == len(got)
                errs[f"{voice} stream vs unary"] = max(errs.get(f"{voice} stream vs unary", 0.0),
                                                       float(np.abs(streamed - got).max()))
        import concurrent.futures as cf
        with cf.ThreadPoolExecutor(6) as pool:
            outs = list(pool.map(lambda t: c.synthesize(t, voice="t2", encoding="FLOAT32", options=det),
                                 texts * 2))
        assert max(o.timings.batch_size for o in outs) >= 1
        sched = srv.engine.schedulers["t2"][0]
        assert max(sched.step_sizes) > 1                         # rows shared decoder steps on the GPU
    _record("server_cuda_max_abs", errs)
    assert all(v <= 1e-3 for v in errs.values()), errs
