"""Pure torch.nn model definitions: Tacotron2, FastSpeech, WaveGlow, HiFi-GAN, Denoiser, STFT.

No I/O, no device policy, no serving: models take tensors and return tensors.
"""
