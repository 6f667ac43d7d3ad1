"""A Voice: text frontend + acoustic model + vocoder + denoiser + sample rate.

A voice is assembled either from checkpoint files given one by one (the way
users bring NVIDIA's checkpoints) or from a folder holding a ``voice.json``
manifest::

    {
      "name": "my-voice",
      "sample_rate": 22050,
      "acoustic": {"kind": "tacotron2", "checkpoint": "tacotron2.pt"},
      "vocoder": {"kind": "waveglow", "checkpoint": "waveglow.pt"},
      "defaults": {"sigma": 0.6, "denoiser_strength": 0.01}
    }

``acoustic.kind`` may be ``fastspeech`` with an optional ``config`` (an
hparams YAML). ``vocoder.kind`` may be ``hifigan`` (a DLE/NGC HiFi-GAN
generator checkpoint; its denoiser is DLE's HiFi-GAN one, off by default as in
DLE's inference.py) or ``griffinlim`` (no checkpoint; optional
``n_iter``, ``power`` and STFT settings, see ``tts.models.griffinlim``): its
denoiser passes audio through. Paths are relative to the manifest's folder
(``../other/file.pt`` shares a file with a sibling voice). ``defaults`` takes
any field of ``tts.options.SynthesisOptions``; ``text_normalizer`` is ``full``
unless the ``defaults`` say ``dle`` (NVIDIA's cleaners exactly). Optional ``frontend``:
``tacotron2`` or ``fastspeech`` (default: the acoustic model's own).
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from tts.errors import InvalidInputError, TTSError, VoiceError
from tts.options import REFERENCE_DEFAULTS, SynthesisOptions
from tts.text.lexicon import Lexicon, as_lexicon

logger = logging.getLogger(__name__)

MANIFEST = "voice.json"

#: The text frontend each acoustic model was trained with in NVIDIA's code.
FRONTEND_OF = {"tacotron2": "tacotron2", "fastspeech": "fastspeech"}

#: Defaults where a model family's reference scripts differ from inference.py
#: (FastSpeech's generate.py vocodes with sigma 0.6).
FAMILY_DEFAULTS = {
    "tacotron2": REFERENCE_DEFAULTS,
    "fastspeech": SynthesisOptions(sigma=0.6).merged_over(REFERENCE_DEFAULTS),
}

#: What a HiFi-GAN voice's unset options fall back to before the model family's defaults:
#: DLE's HiFiGAN inference.py denoises only when asked (``--denoising-strength`` 0).
HIFIGAN_DEFAULTS = SynthesisOptions(denoiser_strength=0.0)

#: What a voice manifest's ``defaults`` fall back to before the model family's defaults.
MANIFEST_DEFAULTS = SynthesisOptions(text_normalizer="full")

#: Where voices shipped inside the package live (one folder per voice).
BUNDLED_DIR = Path(__file__).parent / "voices"


@dataclass
class Voice:
    """Everything needed to turn text into audio with one speaker; models on CPU in float32."""

    #: Name the voice is addressed by (gRPC ``voice`` field, ``--voice``).
    name: str
    #: Output sample rate in Hz (22050 for NVIDIA's LJSpeech models).
    sample_rate: int
    #: ``"tacotron2"`` or ``"fastspeech"``.
    acoustic_kind: str
    #: The acoustic model (``Tacotron2`` or ``FastSpeech``), eval mode.
    acoustic: torch.nn.Module
    #: The vocoder: WaveGlow or HiFiGAN (weight norm removed) or ``GriffinLim``; eval mode.
    vocoder: torch.nn.Module
    #: Text frontend name (see ``tts.text.FRONTENDS``).
    frontend: str
    #: Complete defaults (no ``None``) for every per-call option.
    defaults: SynthesisOptions = field(default_factory=lambda: REFERENCE_DEFAULTS)
    #: Where each model came from, for reports.
    sources: dict[str, str] = field(default_factory=dict)
    #: Pronunciations its texts are read with (``tts.text.lexicon``); None = none.
    lexicon: Lexicon | None = None
    _denoiser: torch.nn.Module | None = field(default=None, repr=False)

    @property
    def n_mel(self) -> int:
        return int(self.vocoder.n_mel_channels)

    @property
    def vocoder_kind(self) -> str:
        """``"waveglow"``, ``"hifigan"`` or ``"griffinlim"``."""
        return vocoder_kind(self.vocoder)

    @property
    def denoiser(self) -> torch.nn.Module:
        """The STFT denoiser built on this voice's WaveGlow or HiFi-GAN (built on first use); a
        pass-through for a Griffin-Lim voice."""
        if self._denoiser is None and self.vocoder_kind == "griffinlim":
            from tts.models.griffinlim import PassThroughDenoiser
            self._denoiser = PassThroughDenoiser().eval()
        if self._denoiser is None and self.vocoder_kind == "hifigan":
            from tts.models.hifigan import HiFiGANDenoiser
            with torch.inference_mode():
                self._denoiser = HiFiGANDenoiser(self.vocoder).eval()
        if self._denoiser is None:
            from tts.models.denoiser import Denoiser
            with torch.inference_mode():
                self._denoiser = Denoiser(self.vocoder).eval()
        return self._denoiser

    def describe(self) -> dict[str, Any]:
        """A JSON-able summary for reports and ListVoices."""
        return {
            "name": self.name, "sample_rate": self.sample_rate, "acoustic": self.acoustic_kind,
            "vocoder": self.vocoder_kind, "frontend": self.frontend, "n_mel": self.n_mel,
            "sources": dict(self.sources), "defaults": self.defaults.as_dict(),
        }

    @classmethod
    def from_checkpoints(cls, *, waveglow: str | os.PathLike[str] | None = None,
                         tacotron2: str | os.PathLike[str] | None = None,
                         fastspeech: str | os.PathLike[str] | None = None,
                         fastspeech_config: Any = None, name: str = "default",
                         sample_rate: int = 22050,
                         defaults: SynthesisOptions | None = None,
                         griffinlim: dict[str, Any] | None = None,
                         hifigan: str | os.PathLike[str] | None = None) -> Voice:
        """Assemble a voice from checkpoint files; exactly one acoustic model must be given, and
        exactly one vocoder: a WaveGlow or HiFi-GAN checkpoint or ``griffinlim`` settings (``{}``
        for the defaults)."""
        from tts import checkpoints

        if (tacotron2 is None) == (fastspeech is None):
            raise VoiceError("give exactly one acoustic model: a Tacotron2 or a FastSpeech checkpoint")
        if fastspeech_config is not None and fastspeech is None:
            raise VoiceError("a FastSpeech config was given without a FastSpeech checkpoint")
        if sum(v is not None for v in (waveglow, hifigan, griffinlim)) != 1:
            raise VoiceError("give exactly one vocoder: a WaveGlow or HiFi-GAN checkpoint or Griffin-Lim settings")
        if sample_rate <= 0:
            raise VoiceError(f"sample rate must be positive, got {sample_rate}")
        if tacotron2 is not None:
            kind, acoustic, src = "tacotron2", checkpoints.load_tacotron2(tacotron2), str(tacotron2)
        else:
            kind, src = "fastspeech", str(fastspeech)
            acoustic = checkpoints.load_fastspeech(fastspeech, config=fastspeech_config)
        if waveglow is not None:
            vocoder, vocoder_src, vkind = checkpoints.load_waveglow(waveglow), str(waveglow), "waveglow"
        elif hifigan is not None:
            vocoder, vocoder_src, vkind = checkpoints.load_hifigan(hifigan), str(hifigan), "hifigan"
        else:
            from tts.models.griffinlim import GriffinLim
            try:
                vocoder = GriffinLim.from_config(dict(griffinlim or {}))
            except InvalidInputError as exc:
                raise VoiceError(f"bad Griffin-Lim settings: {exc}") from exc
            vocoder_src = vkind = "griffinlim"
            if vocoder.sampling_rate != sample_rate:
                raise VoiceError(f"the Griffin-Lim vocoder runs at {vocoder.sampling_rate} Hz but the voice "
                                 f"says {sample_rate} Hz")
        n_mel_acoustic = _acoustic_n_mel(acoustic)
        n_mel_vocoder = int(vocoder.n_mel_channels)
        if n_mel_acoustic != n_mel_vocoder:
            raise VoiceError(f"the {kind} model makes {n_mel_acoustic}-channel mels but the vocoder "
                             f"({vocoder_src}) expects {n_mel_vocoder}: these models do not belong together")
        family = FAMILY_DEFAULTS[kind]
        if vkind == "hifigan":
            family = HIFIGAN_DEFAULTS.merged_over(family)
        full = (defaults or SynthesisOptions()).merged_over(family)
        if kind == "tacotron2" and defaults is None:
            # The checkpoint's own inference settings, where it states them.
            cfg = acoustic.config
            full = SynthesisOptions(max_decoder_steps=cfg.max_decoder_steps,
                                    gate_threshold=cfg.gate_threshold).merged_over(full)
        return cls(name=name, sample_rate=sample_rate, acoustic_kind=kind, acoustic=acoustic,
                   vocoder=vocoder, frontend=FRONTEND_OF[kind], defaults=full,
                   sources={kind: src, vkind: vocoder_src})

    @classmethod
    def from_dir(cls, path: str | os.PathLike[str]) -> Voice:
        """Load a voice folder described by its ``voice.json`` manifest."""
        folder = Path(path)
        manifest = folder / MANIFEST
        if not manifest.is_file():
            raise VoiceError(f"{folder}: not a voice folder (no {MANIFEST})")
        try:
            spec = json.loads(manifest.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise VoiceError(f"{manifest}: cannot read the manifest ({exc})") from exc
        if not isinstance(spec, dict):
            raise VoiceError(f"{manifest}: the manifest must be a JSON object")

        def need(d: Any, key: str, where: str) -> Any:
            if not isinstance(d, dict) or key not in d:
                raise VoiceError(f"{manifest}: missing {where}{key!r}")
            return d[key]

        acoustic = need(spec, "acoustic", "")
        kind = need(acoustic, "kind", "acoustic.")
        if kind not in FRONTEND_OF:
            raise VoiceError(f"{manifest}: acoustic.kind must be 'tacotron2' or 'fastspeech', got {kind!r}")
        vocoder = need(spec, "vocoder", "")
        vkind = need(vocoder, "kind", "vocoder.")
        if vkind not in ("waveglow", "hifigan", "griffinlim"):
            raise VoiceError(f"{manifest}: vocoder.kind must be 'hifigan', 'waveglow' or 'griffinlim', "
                             f"got {vkind!r}")
        if vkind == "griffinlim":
            from tts.models.griffinlim import GriffinLim
            try:
                GriffinLim.from_config(dict(vocoder))
            except InvalidInputError as exc:
                raise VoiceError(f"{manifest}: bad vocoder settings: {exc}") from exc
        try:
            defaults = SynthesisOptions(**spec.get("defaults", {})).merged_over(MANIFEST_DEFAULTS)
        except TypeError as exc:
            raise VoiceError(f"{manifest}: bad 'defaults' ({exc})") from exc
        except InvalidInputError as exc:
            raise VoiceError(f"{manifest}: bad 'defaults': {exc}") from exc
        ckpt = folder / need(acoustic, "checkpoint", "acoustic.")
        cfg = acoustic.get("config")
        voice = cls.from_checkpoints(
            waveglow=folder / need(vocoder, "checkpoint", "vocoder.") if vkind == "waveglow" else None,
            hifigan=folder / need(vocoder, "checkpoint", "vocoder.") if vkind == "hifigan" else None,
            griffinlim=dict(vocoder) if vkind == "griffinlim" else None,
            tacotron2=ckpt if kind == "tacotron2" else None,
            fastspeech=ckpt if kind == "fastspeech" else None,
            fastspeech_config=(folder / cfg) if cfg else None,
            name=str(spec.get("name", folder.name)),
            sample_rate=int(spec.get("sample_rate", 22050)),
            defaults=defaults)
        frontend = spec.get("frontend")
        if frontend is not None:
            from tts.text import FRONTENDS
            if frontend not in FRONTENDS:
                raise VoiceError(f"{manifest}: frontend must be one of {list(FRONTENDS)}, got {frontend!r}")
            voice.frontend = frontend
        return voice


def vocoder_kind(vocoder: torch.nn.Module) -> str:
    """A vocoder module's kind: ``"waveglow"``, ``"hifigan"`` or ``"griffinlim"``."""
    from tts.models.griffinlim import GriffinLim
    from tts.models.hifigan import HiFiGAN
    if isinstance(vocoder, HiFiGAN):
        return "hifigan"
    return "griffinlim" if isinstance(vocoder, GriffinLim) else "waveglow"


def bundled_voices() -> list[str]:
    """Names of the voices shipped inside the package."""
    if not BUNDLED_DIR.is_dir():
        return []
    return sorted(p.name for p in BUNDLED_DIR.iterdir() if (p / MANIFEST).is_file())


def load_voice(name_or_dir: str, *, lexicon: Lexicon | str | os.PathLike[str] | None = None) -> Voice:
    """``--voice NAME|DIR``: a folder with a manifest, or the name of a bundled voice. ``lexicon``: its
    pronunciations (a ``Lexicon`` or a lexicon file, see ``tts.text.lexicon``)."""
    voice = Voice.from_dir(_voice_dir(name_or_dir))
    voice.lexicon = as_lexicon(lexicon)
    return voice


def _voice_dir(name_or_dir: str) -> Path:
    p = Path(name_or_dir)
    if p.is_dir():
        return p
    if name_or_dir in bundled_voices():
        return BUNDLED_DIR / name_or_dir
    have = ", ".join(bundled_voices()) or "none"
    raise VoiceError(f"unknown voice {name_or_dir!r}: not a voice folder, and not a bundled voice "
                     f"(bundled: {have})")


def voice_text_settings(name_or_dir: str) -> tuple[str, str]:
    """``(frontend, text_normalizer)`` of a voice folder or bundled voice, read from its manifest
    alone (no model is loaded): what ``tts-normalize --voice`` needs."""
    manifest = _voice_dir(name_or_dir) / MANIFEST
    try:
        spec = json.loads(manifest.read_text(encoding="utf-8"))
        kind = spec["acoustic"]["kind"]
        frontend = spec.get("frontend") or FRONTEND_OF[kind]
        defaults = SynthesisOptions(**spec.get("defaults", {})).merged_over(MANIFEST_DEFAULTS)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, AttributeError,
            InvalidInputError) as exc:
        raise VoiceError(f"{manifest}: cannot read the voice's text settings ({exc})") from exc
    from tts.text import FRONTENDS
    if frontend not in FRONTENDS:
        raise VoiceError(f"{manifest}: frontend must be one of {list(FRONTENDS)}, got {frontend!r}")
    return frontend, defaults.text_normalizer


def _acoustic_n_mel(model: torch.nn.Module) -> int:
    cfg = getattr(model, "config", None)
    for attr in ("n_mel_channels", "n_mels"):
        if cfg is not None and hasattr(cfg, attr):
            return int(getattr(cfg, attr))
    raise TTSError(f"cannot tell how many mel channels {type(model).__name__} makes")
