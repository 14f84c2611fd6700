#!/usr/bin/env bash
# Builds the vision-encoder benchmark with CUDA on this (CPU) machine and stages it, with the Debian libraries
# the GPU machine lacks and the LLaVA presets, into .device/vision/ (git-ignored).
# Then, on the GPU machine: tools/device/vision_encoder_benchmark.sh
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
bazel build --config=cuda //megatron/core/models/vision:vision_encoder_benchmark
rm -rf .device/vision
mkdir -p .device/vision/bin .device/vision/lib .device/vision/presets
cp -L bazel-bin/megatron/core/models/vision/vision_encoder_benchmark .device/vision/bin/
cp experiments/llava/presets/*.textproto .device/vision/presets/
ldd .device/vision/bin/vision_encoder_benchmark | awk '/=>/ {print $3}' | grep -E 'libabsl|libprotobuf' |
  sort -u | xargs -r -I{} cp -L {} .device/vision/lib/
du -sh .device/vision
