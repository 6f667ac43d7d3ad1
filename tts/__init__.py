"""Text-to-speech inference for Tacotron2, FastSpeech, WaveGlow and the STFT denoiser.

Nothing is imported eagerly here: importing ``tts`` has no side effects and
does not initialise CUDA.
"""

__version__ = "0.1.0"
