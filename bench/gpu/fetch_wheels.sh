#!/usr/bin/env bash
# Download, here (with PyPI access), the wheels bench/gpu/run.sh needs on the GPU machine, which has
# Python 3.12, torch (CUDA), sentence-transformers, transformers, accelerate, pluggy, onnxruntime,
# numpy and pytest but no package registry. They go into the git-ignored .whl/ folder at the repository
# root, which travels with the working tree (64 MiB in all); run.sh installs them with
# `pip install --no-index --no-deps --target /tmp/site`.
#
# What is needed, and why (found by running run.sh --smoke --install with a Python 3.12 holding only the
# GPU machine's packages; 57.6 MB in all, of which pyarrow is 43 MB):
#   datasets + pyarrow, pandas, dill, multiprocess, xxhash   sentence-transformers' trainer takes a
#       datasets.Dataset (parts 2, 3, 4). datasets 4.8.5 because it accepts pyarrow 21 (42.8 MB);
#       datasets 5 needs pyarrow >= 24 (48.9 MB; 26 is 55 MB), which would not fit
#   python-dateutil                                          pandas imports it
#   requests, urllib3, charset-normalizer                   datasets imports requests (transformers 5
#       and huggingface-hub 1 use httpx, so the machine lacks it)
#   setuptools, wheel                                        to build embtune itself from the tree, offline
# Not shipped: any FAISS build (faiss-cpu would not fit beside pyarrow; part 1 compares torch search with
# an exact numpy reference instead), langchain-core, openai, pypdf (embtune imports them only where they
# are used, and the script's paths never do), matplotlib (evaluate writes no HTML report there).
#
# usage: bash bench/gpu/fetch_wheels.sh        (then `du -sh .whl` says the carry size)
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
PY="${PYTHON:-python3}"
cd "$ROOT"
mkdir -p .whl
# Pinned to versions known to work together with sentence-transformers 6 / transformers 5.
WHEELS=(
  "datasets==4.8.5" "pyarrow==21.0.0" "pandas==3.1.1" "dill==0.4.1" "multiprocess==0.70.19" "xxhash==4.1.0"
  "python-dateutil==4.0.0" "requests==2.34.2" "urllib3==2.8.0" "charset-normalizer==3.5.3"
  "setuptools==84.2.1" "wheel==0.46.3"
)
for spec in "${WHEELS[@]}"; do
  "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d .whl "$spec"
done
du -sh .whl
