#!/usr/bin/env bash
# Packs what bench/bench.py needs on a lent GPU machine into .gpu/ (ignored by git), within the 64 MiB
# that may travel there: the GPU kit (KIT, default ../shared/gpu: env.sh, make_model.py), the wheels
# that machine lacks, the silero_vad package with only the two models used, and the generated
# 10-minute speech file as Ogg Vorbis (PyAV does not fit beside CTranslate2, so it is read with soundfile).
# The command to run there is in bench/RESULTS.md.
set -euo pipefail
cd "$(dirname "$0")/.."
KIT=${KIT:-../shared/gpu}

rm -rf .gpu && mkdir -p .gpu/whl .gpu/py/silero_vad/data
grep -qx '/.gpu/' .git/info/exclude 2>/dev/null || echo /.gpu/ >> .git/info/exclude
cp -r "$KIT"/* .gpu/
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  -d .gpu/whl $(grep -E '^(ctranslate2|faster-whisper|opencc|soundfile)==' requirements.txt) \
  $(python3 -m pip freeze | grep -E '^(cffi|pycparser)==')  # what soundfile needs there

silero=$(python3 -c 'import os, silero_vad; print(os.path.dirname(silero_vad.__file__))')
cp "$silero"/*.py .gpu/py/silero_vad/
cp "$silero"/data/__init__.py "$silero"/data/silero_vad.jit "$silero"/data/silero_vad_16k_sequence.onnx .gpu/py/silero_vad/data/
cp -r "$silero"-*.dist-info .gpu/py/

mkdir -p bench/out && [ -f bench/out/talk-10min.flac ] || python3 -c 'import sys; sys.path[:0] = ["bench"]; import bench; bench.generate_talk(bench.ROOT / "bench/out/talk-10min.flac", 10)'
ffmpeg -loglevel error -y -i bench/out/talk-10min.flac -c:a libvorbis -q:a 2 -ar 16000 -ac 1 .gpu/talk-10min.ogg
du -sh .gpu
