#!/usr/bin/env bash
# Downloads the wheels benchmarks/gpu_check.py needs on the device machine into .whl/ (run in
# the repository root; .whl/ must be ignored: `echo /.whl/ >> .git/info/exclude`).
#
# The device image has torch 2.11 and no diffusers. diffusers 0.42.1 is pure Python; what it
# imports at module import time (filelock, huggingface-hub >= 1.32, numpy, regex, requests,
# safetensors >= 0.8, Pillow; importlib_metadata only below Python 3.8) is on the image
# (.library/device/KINDS.md: huggingface_hub 1.33.0, safetensors 0.8.0), so it travels alone,
# with --no-deps. Then, on the device, before the script:
#   python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
#       --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site:$PWD
set -euo pipefail
PYTHON=${PYTHON:-python3}
mkdir -p .whl
"$PYTHON" -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 -d .whl diffusers==0.42.1
ls -l .whl
du -sh .whl
