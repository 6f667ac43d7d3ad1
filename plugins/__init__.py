"""Custom GPU kernels for the hot loops, each with a pure-PyTorch twin.

- ``tts.plugins.decoder``: the fused Tacotron2 decoder step (Triton).
- ``tts.plugins.encoder``: one step of the Tacotron2 encoder's bidirectional LSTM (Triton).
- ``tts.plugins.waveglow``: WaveGlow's fused gated activation (Triton).

Triton is imported only when a kernel is first launched.
"""
