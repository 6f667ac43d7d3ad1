"""The shipped Tacotron2 (voice ``slt-tacotron2``), which is also the
file that further training continues from (``gpu.sh cont tacotron2`` falls back to it).

These tests hold it to what the voices and the recipe rely on: it is tracked, ``--init-from`` takes
it at the step it records, and it aligns when it runs free.
"""

from pathlib import Path

import torch

from tts.checkpoints import load_tacotron2
from tts.text.sequence import sequence_to_text, text_to_sequence
from tts.train.tasks import MODEL_CONFIGS, make_task
from tts.train.trainer import _init_from_export

SEED = Path(__file__).resolve().parents[1] / "tts" / "voices" / "slt-tacotron2" / "tacotron2.pt"
#: The step of the file when it shipped (51 991); it is only ever replaced by a later one.
MIN_STEP = 51991
#: The first sentence of val.txt (held out from training).
TEXT = ("The overwhelming majority of people in this country know how to sift the wheat from the "
        "chaff in what they hear and what they read.")


def test_the_seed_is_in_the_checkout_with_the_recipe_architecture():
    assert SEED.is_file(), f"{SEED} is missing: it must be tracked in git"
    ckpt = torch.load(SEED, map_location="cpu", weights_only=True)
    assert int(ckpt["iteration"]) >= MIN_STEP
    assert {k: ckpt["config"][k] for k in MODEL_CONFIGS["tacotron2"]} == MODEL_CONFIGS["tacotron2"]
    assert all(v.dtype == torch.float16 for v in ckpt["state_dict"].values() if v.is_floating_point())


def test_init_from_takes_the_seed_at_its_step():
    task = make_task("tacotron2")
    model = task.build_model()
    step = _init_from_export(task, model, "tacotron2", SEED)
    assert step == int(torch.load(SEED, map_location="cpu", weights_only=True)["iteration"])
    ref = load_tacotron2(SEED)
    for (name, a), (_, b) in zip(model.state_dict().items(), ref.state_dict().items()):
        assert torch.equal(a.float(), b.float()), name


def test_the_seed_aligns_on_a_held_out_sentence():
    model = load_tacotron2(SEED).eval()
    ids = torch.tensor([text_to_sequence(TEXT, "fastspeech")])
    n_in = ids.shape[1]
    out = model.infer(ids, torch.tensor([n_in]), generator=torch.Generator().manual_seed(0))
    frames = int(out.mel_lengths[0])
    # it stops by its gate, long before the decoder's limit, at a plausible speaking rate
    assert frames < model.decoder.max_decoder_steps
    assert 3.0 <= frames / n_in <= 10.0, (frames, n_in)
    assert torch.isfinite(out.mel_postnet).all()
    # attention walks the text monotonically, from its first symbols to its last
    focus = out.alignments[0, :frames].argmax(dim=1)
    assert int(focus[:5].max()) <= 3
    assert int(focus[-1]) >= n_in - 3
    back = (focus[1:] < focus[:-1] - 1).float().mean().item()
    assert back < 0.02, back
    assert int((focus[1:] - focus[:-1]).max()) <= 3   # it never jumps over a word
    # every word is spoken: each gets at least one frame of attention per letter, and the focus
    # lands on it. (Per symbol this does not hold: word spaces and the silent k of "know" get a
    # fraction of a frame, which is right.)
    chars = [sequence_to_text([i]) for i in ids[0].tolist()]
    words, word = [], []
    for k, c in enumerate(chars + [" "]):
        if c != " ":
            word.append(k)
        elif word:
            words.append(word)
            word = []
    assert len(words) == len(TEXT.split())
    mass = out.alignments[0, :frames].sum(dim=0)
    seen = set(focus.tolist())
    for w in words:
        spoken = "".join(chars[k] for k in w)
        assert float(mass[w].sum()) >= len(w), (spoken, float(mass[w].sum()))
        assert seen & set(w), spoken
