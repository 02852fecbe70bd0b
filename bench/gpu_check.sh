#!/usr/bin/env bash
# The GPU checks of the PyTorch trainer, as one command for a machine with an NVIDIA GPU.
#
# On the project's lent GPU machine (Python 3.12 with a CUDA torch, no pydantic), after
# `make gpu-wheels` here:  run(command="bash bench/gpu_check.sh", carry=[".whl"], timeout_s=590)
# Anywhere else with a CUDA torch and the project's requirements:  bash bench/gpu_check.sh
#
# It prints the device, runs the trainer's tests (the CUDA ones included: resident and streamed
# data paths, resume across devices) and the anchor-model benchmark on CUDA with its bf16 /
# torch.compile / batch-16384 variants. Logs land in $OUT (the device tool brings them back)
# or /tmp/refit-gpu-check. Record the figures in bench/README.md.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/refit-gpu-check}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 MLFLOW_CONFIGURE_LOGGING=false
PY=${PYTHON:-python3}

if compgen -G ".whl/*.whl" >/dev/null; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/refit-site .whl/*.whl \
    || { echo "installing the carried wheels failed"; exit 1; }
  export PYTHONPATH="/tmp/refit-site:$PWD${PYTHONPATH:+:$PYTHONPATH}"
else
  export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
fi

{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  "$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name(0))"
} 2>&1 | tee "$OUT/device.txt"
"$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" \
  || { echo "torch sees no CUDA device: nothing to check"; exit 1; }
# Fail in seconds, not after the tests start, if the image lacks what they import.
"$PY" -c "import pydantic, sqlalchemy, yaml, cloudpickle, sklearn, pandas, pytest, ml_tasks.models.network" \
  || { echo "a package the trainer's tests import is missing: add it to GPU_WHEELS in the Makefile"; exit 1; }

status=0
timeout 150 "$PY" -m pytest tests/models/network -q -p no:cacheprovider -o addopts="-ra" 2>&1 \
  | tee "$OUT/test_torch_mlp.txt" || status=1
timeout 400 "$PY" bench/bench_torch.py --device cuda 2>&1 | tee "$OUT/bench_torch_cuda.txt" || status=1
exit $status
