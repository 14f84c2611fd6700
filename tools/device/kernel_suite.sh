#!/usr/bin/env bash
# Runs on the GPU machine after tools/device/stage.sh: the kernels' GPU tests (every element against the CPU
# reference) and their Google Benchmarks (CUDA events, cold L2, copy bandwidth measured in the same binary).
# Results go to ${OUT:-.device/out}/*.json and *.log.
set -euo pipefail
OUT="${OUT:-.device/out}"
mkdir -p "$OUT"
T=/opt/torch/.venv/lib/python3.12/site-packages
export LD_LIBRARY_PATH="$PWD/.device/lib:$T/torch/lib:$T/nvidia/cudnn/lib:$T/nvidia/nccl/lib:$T/nvidia/cu13/lib:/usr/local/cuda/lib64"
for t in axpy_test norm_gpu_test cross_entropy_gpu_test; do
  .device/bin/$t 2>&1 | tee "$OUT/$t.log" | tail -1
done
for b in norm_benchmark cross_entropy_benchmark; do
  .device/bin/$b --benchmark_out="$OUT/$b.json" --benchmark_out_format=json 2>&1 | tee "$OUT/$b.log" | tail -12
done
