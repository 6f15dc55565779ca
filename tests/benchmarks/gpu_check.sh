#!/usr/bin/env bash
# On a CUDA machine, from the project's root, where python3 has torch, torchvision and timm: the cuda-marked tests,
# then the `speed` suite's sweep on the GPU in fp32 and bf16+channels_last, up to batches that do not fit, so
# that the sweep steps down to the largest that does. Everything it prints also goes to OUT_DIR (default gpu-out).
#
#     bash tests/benchmarks/gpu_check.sh [OUT_DIR] [SWEEP_SECONDS]
set -uo pipefail
out="${1:-gpu-out}"
mkdir -p "$out"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
nvidia-smi -L | tee "$out/machine.txt"
python3 -c 'import torch, torchvision, timm; print("torch", torch.__version__, "torchvision", torchvision.__version__,
  "timm", timm.__version__, torch.cuda.get_device_name(), torch.cuda.get_device_properties(0).total_memory // 2**20, "MiB")' \
  | tee -a "$out/machine.txt"
python3 -m pytest -q -p no:cacheprovider -m cuda tests/test_cuda.py 2>&1 | tee "$out/cuda-tests.txt"
timeout "${2:-400}" python3 -m bench speed --device cuda --batch-sizes 1 64 512 4096 --modes fp32,bf16+channels_last \
  --out "$out/runs" 2>&1 | tee "$out/speed.txt"
