#!/usr/bin/env bash
# Download the pure-Python wheels the GPU check installs there (no network on the GPU machines): diffusers and what
# it needs beyond torch/timm (regex is a small binary wheel, for CPython 3.12 x86-64). Into benchmarks/wheels/
# (git-ignored; about 8 MB); gpu_check.sh installs only those whose module is missing there; pass it to the device run with carry: ["benchmarks/wheels"].
set -eu
cd "$(dirname "$0")"
mkdir -p wheels
pip download --no-deps --only-binary=:all: --python-version 3.12 --platform manylinux2014_x86_64 \
    --platform manylinux_2_17_x86_64 -d wheels diffusers==0.42.1 regex importlib_metadata zipp requests urllib3 idna certifi charset-normalizer
ls -la wheels
