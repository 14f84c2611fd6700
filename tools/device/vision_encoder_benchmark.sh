#!/usr/bin/env bash
# GPU machine, repo root, after tools/device/stage_vision.sh: the image path (encoder + pixel shuffle +
# projector, fwd + bwd) of the LLaVA presets in bf16, with a GPU-vs-CPU fp32 check first. Results: stdout and
# ${OUT:-.device/vision/results}/vision_encoder_benchmark.md
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
T=/opt/torch/.venv/lib/python3.12/site-packages
export LD_LIBRARY_PATH=$PWD/.device/vision/lib:$T/torch/lib:$T/nvidia/cudnn/lib:$T/nvidia/nccl/lib:$T/nvidia/cu13/lib:/usr/local/cuda/lib64
results=${OUT:-.device/vision/results}
mkdir -p "$results"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee "$results/gpu.txt"
for preset in qwen2_0p5b_siglip mistral_7b_clip336; do
  for batch in ${BATCHES:-16 64}; do
    .device/vision/bin/vision_encoder_benchmark --preset=.device/vision/presets/$preset.textproto --device=cuda \
      --precision=bf16 --batch=$batch --warmup=3 --iters=10 | tee -a "$results/vision_encoder_benchmark.md"
  done
done
