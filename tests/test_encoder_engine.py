"""The Tacotron2 engine's graph-capturable encoder and postnet paths against the model and the packed path.

CPU tests run the paths eagerly (no graphs) through the same bucketed static buffers the CUDA
graphs use, so padding to a bucket is covered; GPU tests (``-m gpu``) run the graphs.
"""

from __future__ import annotations

import pytest
import torch

from tts.engines.tacotron2 import INPUT_MULTIPLE, Tacotron2Engine
from tts.models.tacotron2 import Tacotron2, Tacotron2Config


def _tiny() -> Tacotron2:
    from tts.cli.bench import random_models
    return random_models("tacotron2", "tiny", 0)[0]


def _batch(lengths: list[int], t_in: int | None = None, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    t_in = t_in or max(lengths)
    ids = torch.randint(1, 148, (len(lengths), t_in), generator=g)
    for b, n in enumerate(lengths):
        ids[b, n:] = 0                       # padded as the synthesizer pads: id 0
    return ids, torch.tensor(lengths)


def _err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).abs().max())


@pytest.mark.parametrize("lengths", [[45], [7], [64], [45, 17, 30], [70, 1, 33, 69, 12]])
def test_graph_encoder_equals_model_and_packed_fp32(lengths):
    t2 = _tiny()
    ids, lens = _batch(lengths)
    with torch.no_grad():
        ref = t2.encode(ids, lens)
    packed = Tacotron2Engine(t2, device="cpu", precision="fp32", backend="torch", encoder="packed")
    eng = Tacotron2Engine(t2, device="cpu", precision="fp32", backend="torch", encoder="graph")
    assert eng.encoder == "graph" and packed.encoder == "packed"
    out = eng.encode(ids, lens)
    assert out.shape == ref.shape and out.dtype == torch.float32
    assert _err(out, ref) < 1e-5
    assert _err(out, packed.encode(ids, lens)) < 1e-5
    for b, n in enumerate(lengths):
        assert not out[b, n:].any()          # exactly 0 at padded positions
    # the bucket held more positions (and rows) than the caller's batch: a second call with other
    # inputs in the same bucket gets its own result (static buffers refilled)
    ids2, lens2 = _batch([max(1, n - 3) for n in lengths], t_in=ids.shape[1], seed=1)
    with torch.no_grad():
        ref2 = t2.encode(ids2, lens2)
    assert _err(eng.encode(ids2, lens2), ref2) < 1e-5


def test_bucket_padding_would_change_the_longest_item_without_the_mask():
    """Why the graph encoder zeroes positions past the caller's T_in: the model's convolutions see
    zeros there (their own padding), while padding the ids with id 0 would show them the embedding
    of symbol 0, which reaches the last 6 valid positions of the longest item (3 layers of kernel 5)."""
    t2 = _tiny()
    ids, lens = _batch([45, 20])
    assert 45 % INPUT_MULTIPLE
    with torch.no_grad():
        ref = t2.encode(ids, lens)
        padded = torch.nn.functional.pad(ids, (0, 64 - 45))        # id 0 up to the bucket
        naive = t2.encode(padded, lens)[:, :45]
    assert _err(naive[0, 45 - 6:], ref[0, 45 - 6:]) > 1e-3           # visibly different
    assert _err(naive[1], ref[1]) < 1e-6                              # shorter items: own padding either way
    eng = Tacotron2Engine(t2, device="cpu", precision="fp32", backend="torch", encoder="graph")
    assert _err(eng.encode(ids, lens), ref) < 1e-5


def test_graph_encoder_ngc_size_fp32():
    """NGC sizes (512 channels, 256 hidden per direction), lengths off the bucket multiple."""
    torch.manual_seed(0)
    t2 = Tacotron2(Tacotron2Config()).eval()
    ids, lens = _batch([77, 50, 3])
    with torch.no_grad():
        ref = t2.encode(ids, lens)
    eng = Tacotron2Engine(t2, device="cpu", precision="fp32", backend="torch", encoder="graph")
    assert _err(eng.encode(ids, lens), ref) < 1e-5


def test_encoder_options_resolve():
    t2 = _tiny()
    assert Tacotron2Engine(t2, device="cpu", precision="fp32", backend="torch").encoder == "packed"
    eng = Tacotron2Engine(t2, device="cpu", precision="fp32", backend="torch", encoder="graph")
    assert eng.encoder == "graph"
    assert eng.postnet_mode == "eager"
    for bogus in ("bogus", "cudnn2"):
        with pytest.raises(ValueError):
            Tacotron2Engine(t2, device="cpu", precision="fp32", backend="torch", encoder=bogus)
    with pytest.raises(ValueError):
        Tacotron2Engine(t2, device="cpu", precision="fp32", backend="torch", postnet="bogus")


@pytest.mark.parametrize("batch,frames", [(1, 37), (3, 64), (3, 100), (5, 1)])
def test_postnet_graph_path_equals_eager_fp32(batch, frames):
    t2 = _tiny()
    mel = torch.randn(batch, t2.config.n_mel_channels, frames)
    eng = Tacotron2Engine(t2, device="cpu", precision="fp32", backend="torch", postnet="graph")
    assert eng.postnet_mode == "graph"
    with torch.no_grad():
        ref = t2.postnet_forward(mel)
    out = eng.postnet_forward(mel)
    assert out.shape == ref.shape
    assert _err(out, ref) < 1e-5


def test_engine_infer_with_graph_encoder_and_postnet_equals_eager():
    t2 = _tiny()
    ids, lens = _batch([21, 9, 14])
    eng = Tacotron2Engine(t2, device="cpu", precision="fp32", backend="torch", steps_per_replay=4,
                          encoder="graph", postnet="graph")
    ref = t2.infer(ids, lens, max_decoder_steps=18, prenet_dropout=0.0, early_stopping=False)
    out = eng.infer(ids, lens, max_decoder_steps=18, prenet_dropout=0.0, early_stopping=False)
    assert _err(out.encoder_outputs, ref.encoder_outputs) < 1e-5
    assert _err(out.mel_postnet, ref.mel_postnet) < 1e-4


# ----------------------------------------------------------------------------- GPU

@pytest.mark.gpu
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_graph_encoder_cuda(precision):
    torch.manual_seed(0)
    t2 = Tacotron2(Tacotron2Config()).eval()
    dev = torch.device("cuda")
    t2c = t2.to(dev)
    eng = Tacotron2Engine(t2c, device=dev, precision=precision)
    assert eng.use_graphs and eng.encoder == "graph" and eng.postnet_mode == "graph"     # the CUDA defaults
    tol = 1e-5 if precision == "fp32" else 3e-2      # fp32: IEEE (the engine turns TF32 off); CPU encoder tolerance
    for lengths, seed in (([128], 0), ([100, 37, 128], 1), ([97, 12, 64], 2), ([45], 3)):
        ids, lens = _batch(lengths, seed=seed)
        ids, lens = ids.to(dev), lens.to(dev)
        with torch.no_grad():
            ref = t2c.encode(ids, lens)
        out = eng.encode(ids, lens)
        assert out.dtype == eng.dtype and out.shape == ref.shape
        assert _err(out, ref) < tol, (lengths, _err(out, ref))
        for b, n in enumerate(lengths):
            assert not out[b, n:].any()
    mel = torch.randn(3, 80, 301, device=dev)
    with torch.no_grad():
        ref = t2c.postnet_forward(mel)
    err = _err(eng.postnet_forward(mel), ref)
    if precision == "fp32":
        assert err <= 1e-3                                   # the CPU mel tolerance, IEEE fp32 (no TF32)
    else:
        assert err / float(ref.abs().max()) < 1e-2
