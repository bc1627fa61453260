#!/bin/bash
# The one-GPU check (bench/gpu_check.py): a random 1B-class Llama, preflight, stock TRL vs adadpo padded vs packed
# (tokens/s, MFU, peak memory), one JSON + table. For a GPU machine with torch and transformers but not TRL, datasets,
# accelerate, peft (and no internet): put their wheels (and their missing dependencies) in .whl/ (README, "GPU check")
# and they are installed into /tmp/adadpo-site first.
#
#   bash bench/gpu_check.sh [--out DIR]     # on the GPU
#   bash bench/gpu_check.sh --toy           # the same pipeline on a tiny model on the CPU (tested in CI)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-python3}
WHEELS=${WHEELS:-.whl}
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
if ! "$PY" -c "import trl, datasets, accelerate, peft" 2>/dev/null; then
    if ! compgen -G "$WHEELS/*.whl" >/dev/null; then
        echo "trl, datasets, accelerate or peft is missing and there are no wheels in $WHEELS/: see bench/gpu_check.sh" >&2
        exit 2
    fi
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/adadpo-site \
        "$WHEELS"/*.whl
    export PYTHONPATH=/tmp/adadpo-site${PYTHONPATH:+:$PYTHONPATH}
fi
if ! "$PY" -c "import adadpo" 2>/dev/null; then  # not installed: run from the checkout
    export PYTHONPATH=$PWD/src${PYTHONPATH:+:$PYTHONPATH}
fi
exec "$PY" bench/gpu_check.py "$@"
