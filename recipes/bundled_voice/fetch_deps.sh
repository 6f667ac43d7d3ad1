#!/usr/bin/env bash
# Run HERE (CPU machine with apt and pip), once, from the repository root:
#   bash recipes/bundled_voice/fetch_deps.sh [festival] [wheels] [hibari] [server]
#   (no argument: the first three)
# Collects what the GPU machine lacks into ignored folders that `run` carries:
#   .debs/   festival: Festival + the SLT HTS voice + its shared libraries (Debian bookworm .deb files)
#   .whl/    wheels: Python wheels the GPU image lacks (for Python 3.12 there), 2.0 MB; WHL=DIR puts
#            them in DIR instead (e.g. .whl_t, apart from the server's wheels in .whl: gpu.sh WHL=.whl_t)
#   .whl/    server: the wheels `tts-server` needs there beyond those (gRPC health and reflection, the
#            HTTP API's fastapi and uvicorn, py-spy for benchmarks/server_overhead.py --profile-load),
#            for tools/gpu/bench_server.py and benchmarks/server_overhead.py, 12 MB
#   .recipe_data/  the LJSpeech transcripts, gzipped (../shared does not travel; gzip keeps the
#                  travelling tree under 64 MiB: 0.5 MB instead of 1.4), and
#   .recipe_data/hibari/  hibari: what `gpu.sh corpus` needs for TEACHER=hibari (the GPU image has
#                  no hibari-tts): the part of the installed hibari package that speaks from phoneme
#                  ids (its model, 7.9 MB, and signal processing) and the G2P of every line of
#                  train.txt, made here (g2p.npz, 0.9 MB): 8.4 MiB in all (tts.train.hibari.pack_runtime)
set -euo pipefail
cd "$(git rev-parse --show-toplevel)"
WHAT=${*:-festival wheels hibari}
PY=${PYTHON:-python3}
# (.gitignore ignores all three folders, so `run` carries them only when named in carry.)
mkdir -p .recipe_data
rm -f .recipe_data/train.txt .recipe_data/val.txt   # plain copies, from before they were gzipped
gzip -9c ../shared/data/ljspeech/train.txt > .recipe_data/train.txt.gz
for what in $WHAT; do
  case $what in
    festival)
      # Festival, its lexicons, the teacher voice, and the shared libraries `ldd festival` names that
      # the GPU image lacks. Not glibc/libstdc++/libgcc (the image has newer ones), nor the libraries
      # every Debian/Ubuntu image has for apt itself (libgcrypt20, libgpg-error0, liblz4-1, liblzma5,
      # libsystemd0, libzstd1): leaving those out keeps the tree that travels under 64 MiB (the corpus
      # stage runs without them).
      PKGS="festival festvox-us-slt-hts festlex-cmu festlex-poslex libestools2.5 libasound2 libasound2-data
        libasyncns0 libbsd0 libcap2 libdbus-1-3 libflac12 libgomp1 libmd0 libmp3lame0 libmpg123-0
        libogg0 libopus0 libpulse0 libsndfile1 libtinfo6 libvorbis0a libvorbisenc2 libx11-6 libx11-xcb1
        libxau6 libxcb1 libxdmcp6"
      mkdir -p .debs
      apt-get update -qq
      (cd .debs && apt-get download $PKGS) ;;
    wheels)
      # Wheels (pure Python, or manylinux for CPython 3.12) of the package's dependencies missing there.
      mkdir -p "${WHL:-.whl}"
      $PY -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
        -d "${WHL:-.whl}" inflect jaraco.functools more-itertools typeguard unidecode soundfile cffi pycparser ;;
    server)
      # grpcio and protobuf too: the image's may be older than the versions the generated code checks
      $PY -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
        --platform manylinux_2_5_x86_64 --platform manylinux1_x86_64 -d "${WHL:-.whl}" \
        grpcio grpcio-health-checking grpcio-reflection protobuf prometheus-client fastapi starlette \
        uvicorn pydantic pydantic-core annotated-types annotated-doc typing-inspection typing-extensions \
        anyio idna click h11 py-spy ;;
    hibari)
      # needs hibari-tts 0.2.1 installed here (the train extra); the G2P runs on this machine (15 s)
      $PY -m tts.train hibari-pack --texts ../shared/data/ljspeech/train.txt --out .recipe_data/hibari \
        | $PY -c "import json, sys; d = json.load(sys.stdin); print('hibari-pack:', d['texts'], 'texts,', d['alignment_errors'], 'alignment errors,', d['bytes'], 'bytes')" ;;
    *) echo "fetch_deps.sh: unknown part '$what' (festival, wheels, hibari, server)" >&2; exit 2 ;;
  esac
done
du -sh .debs "${WHL:-.whl}" .recipe_data 2>/dev/null || true
