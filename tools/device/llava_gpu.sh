#!/usr/bin/env bash
# Runs on the GPU machine (H100), from the repository root, after tools/device/stage.sh: the LLaVA of issue 5 with a
# Qwen2-0.5B-shaped language model and a SigLIP-so400m-shaped encoder (random weights), bf16, SFT-style (encoder
# frozen), on the synthetic shapes data at 448 px tiles (generated there, ~1 s). Prints samples/s and tokens/s.
set -euo pipefail
OUT="${OUT:-.device/out}"
mkdir -p "$OUT"
T=/opt/torch/.venv/lib/python3.12/site-packages
export LD_LIBRARY_PATH="$PWD/.device/lib:$T/torch/lib:$T/nvidia/cudnn/lib:$T/nvidia/nccl/lib:$T/nvidia/cu13/lib:/usr/local/cuda/lib64"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$OUT/gpu.txt"
.device/bin/sft --recipe=.device/recipes/llava/qwen2_0p5b_siglip_gpu.textproto "$@" 2>&1 | tr '\r' '\n' |
  tee "$OUT/llava_gpu.log" | grep -vE "^llava.*\| *[0-9]+/" || true
tail -2 "$OUT/llava_gpu.log"
