#!/usr/bin/env bash
# GPU measurements of embtune in one run: exact torch search vs an exact reference (1M x 768, 10k
# queries), the Matryoshka guide's training workload on a random BERT-base, `embtune train` /
# `embtune evaluate` on cuda with bf16, and a torchrun DDP run of `embtune train`. Every figure (or
# each part's error) goes into one JSON file. What each part does: bench/gpu/gpu_bench.py's docstring.
#
#   bash bench/gpu/run.sh [--smoke] [--install] [--out FILE]
#
# Full mode (the default) is sized for one H200 and stays under 8 minutes (per-part budgets 120 + 150
# + 70 + 90 s, plus installs). On a machine without a registry it first installs the wheels that
# bench/gpu/fetch_wheels.sh put in .whl/ (datasets and what it needs) and embtune itself, from this
# working tree, into /tmp/site, offline. --smoke runs every part on the CPU at tiny sizes (under a
# minute; tests/test_gpu_script.py runs it) in the current environment, installing nothing unless
# --install asks for the offline installs too (a rehearsal of the GPU machine's set-up).
# EMBTUNE_GPU_SITE moves the install folder (default /tmp/site).
# The JSON goes to --out FILE, else "$OUT/gpu.json" when $OUT is set, else bench/results/gpu[-smoke].json.
# PYTHON names the interpreter (default: python3). Exit status 0 when every part succeeded.
set -uo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
PY="${PYTHON:-python3}"
MODE=full
INSTALL=""
OUTFILE=""
SITE="${EMBTUNE_GPU_SITE:-/tmp/site}"
while [ $# -gt 0 ]; do
  case "$1" in
    --smoke) MODE=smoke ;;
    --install) INSTALL=1 ;;
    --out) OUTFILE="$2"; shift ;;
    *) echo "usage: bash bench/gpu/run.sh [--smoke] [--install] [--out FILE]" >&2; exit 2 ;;
  esac
  shift
done
if [ -z "$OUTFILE" ]; then
  if [ -n "${OUT:-}" ]; then OUTFILE="$OUT/gpu.json"
  elif [ "$MODE" = smoke ]; then OUTFILE="$ROOT/bench/results/gpu-smoke.json"
  else OUTFILE="$ROOT/bench/results/gpu.json"; fi
fi
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false \
       EMBTUNE_NO_PROGRESS=1 WANDB_DISABLED=true

if [ "$MODE" = full ] || [ -n "$INSTALL" ]; then
  start=$(date +%s)
  if compgen -G "$ROOT/.whl/*.whl" > /dev/null; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" \
      "$ROOT"/.whl/*.whl || echo "run.sh: installing .whl/ failed; going on with what is installed" >&2
    export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
  fi
  if ! "$PY" -c "import embtune_core, embtune_plugins" 2> /dev/null; then
    # Built from this working tree (setuptools and wheel come from .whl/); --target keeps the
    # machine's own site-packages untouched, and its dist-info carries embtune's plugin entry points.
    "$PY" -m pip install -q --no-index --no-deps --no-build-isolation --no-compile --no-cache-dir --upgrade \
      --target "$SITE" "$ROOT" || echo "run.sh: installing embtune from the tree failed" >&2
    export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
  fi
  echo "run.sh: installs took $(( $(date +%s) - start )) s"
fi
cd "$ROOT" || exit 1
"$PY" "$ROOT/bench/gpu/gpu_bench.py" --mode "$MODE" --out "$OUTFILE"
