# Source on the device: makes `tts` importable without installing (package-dir mapping by copy).
rm -rf /tmp/pp && mkdir -p /tmp/pp && cp -r tts /tmp/pp/tts && cp -r engines /tmp/pp/tts/engines \
  && cp -r plugins /tmp/pp/tts/plugins && cp -r cli /tmp/pp/tts/cli
export PYTHONPATH=/tmp/pp PYTHONUNBUFFERED=1
