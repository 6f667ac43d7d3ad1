#!/usr/bin/env bash
# Set-up on a fresh Debian machine (CPU): the CPU build of PyTorch, the package with the server
# and test extras, and nginx for the test that puts two server replicas behind nginx's grpc_pass.
# On a GPU machine see README "GPU install".
set -euo pipefail
cd "$(dirname "$0")"
SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"

# Debian's own python3 is "externally managed": pip refuses to install into it. Say the one line
# that makes (and enters) a virtual environment instead of failing with pip's long message.
if python3 - <<'EOF'
import os, sys, sysconfig
managed = os.path.exists(os.path.join(sysconfig.get_path("stdlib"), "EXTERNALLY-MANAGED"))
sys.exit(0 if managed and sys.prefix == sys.base_prefix else 1)
EOF
then
  echo "install.sh: $(command -v python3) is managed by Debian (pip will not install into it)." >&2
  echo "Make and enter a virtual environment, then run install.sh again:" >&2
  echo "  ${SUDO:+$SUDO }apt-get install -y python3-venv && python3 -m venv .venv && . .venv/bin/activate" >&2
  exit 1
fi

if ! command -v nginx >/dev/null 2>&1; then
  $SUDO apt-get update -qq && $SUDO apt-get install -y -qq nginx >/dev/null
fi

# PyTorch first, the CPU build: PyPI's Linux torch is the CUDA build (several GB of CUDA wheels).
# A torch that is installed already is kept (a CUDA build on a GPU machine, say).
if python3 -c "import torch" 2>/dev/null; then
  echo "install.sh: keeping the installed torch $(python3 -c 'import torch; print(torch.__version__)')"
elif ! python3 -m pip install "torch==2.13.0+cpu" 2>/dev/null; then    # a CPU wheel pip already sees (--find-links)
  python3 -m pip install "torch==2.13.0" --index-url https://download.pytorch.org/whl/cpu
fi
python3 -m pip install -e ".[server,dev]"
# The quality gate's MOS predictor: its declared torchaudio/transformers/librosa are not used here
# (tts.quality hands it tensors), and no torchaudio matches every torch build, so: no dependencies.
python3 -m pip install --no-deps "distillmos==0.9.1" "xls-r-sqa==0.1.0"
