#!/bin/bash
# The GPU-marked tests on the device machine, from the repository root, with the wheels in .whl
# (carry [".whl"]): the modules whose GPU paths change most often first, so that a time limit
# (TEST_S, default 540 s) cuts the kernel-by-kernel checks last. JUnit XML into $OUT/gpu.xml.
#
#   bash tools/gpu/gpu_tests.sh                 # all GPU tests
#   TEST_S=300 bash tools/gpu/gpu_tests.sh tests/test_stop_rule.py   # these modules only
#
# The device image lacks fastapi, openai and nvidia-riva-client: modules that need them are not
# collected there (their GPU-free tests run on the CPU).
python3 -m pip install -q --no-index --no-deps --no-compile --upgrade --target /tmp/site .whl/*.whl 2>&1 | tail -1
export PYTHONPATH=/tmp/site
python3 -m pip install -q --no-index --no-deps --no-build-isolation -e . 2>&1 | tail -1
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
FILES=${*:-tests/test_stop_rule.py tests/test_word_timings.py tests/test_hifigan.py tests/test_engines_gpu.py
  tests/test_slot_decoder.py tests/test_decoder_pdl.py tests/test_fastspeech.py tests/test_encoder_engine.py
  tests/test_denoiser.py tests/test_waveglow.py tests/test_engine_device.py tests/test_waveglow_cpu_engine.py
  tests/test_plugins_waveglow.py tests/test_plugins_decoder.py tests/test_bench_wn_tiles.py}
timeout ${TEST_S:-540} python3 -m pytest -q -m gpu $FILES -p no:cacheprovider -rfE -W ignore::DeprecationWarning \
  --durations=8 --junitxml=${OUT:-.}/gpu.xml 2>&1 | tail -45
