"""Training the bundled voice: corpus from a teacher voice, datasets, losses, trainers, export.

Not needed for inference; nothing in ``tts`` outside this package imports it.
See ``recipes/bundled_voice/README.md`` for the command sequence.
"""
