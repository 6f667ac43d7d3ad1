#!/usr/bin/env bash
# Set-up on a fresh Debian machine (CPU): the package with the server and test extras,
# the CPU build of PyTorch (torch==2.13.0), and nginx for the test that puts two
# server replicas behind nginx's grpc_pass. On a GPU machine see README "GPU install".
set -euo pipefail
cd "$(dirname "$0")"
if ! command -v nginx >/dev/null 2>&1; then
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq && $SUDO apt-get install -y -qq nginx >/dev/null
fi
# The CPU wheel first: with only the extras' pin, pip's resolver downloads the newest
# torch (539 MB, measured with torch 2.15.0 on PyPI) before it backtracks to 2.13.0.
python3 -m pip install "torch==2.13.0"
python3 -m pip install -e ".[cpu,server,dev]"
