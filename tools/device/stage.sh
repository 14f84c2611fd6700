#!/usr/bin/env bash
# Builds the CUDA binaries on this (CPU) machine and stages everything a GPU run needs into .device/
# (git-ignored): binaries, the shared libraries the GPU machine lacks, recipes, and prepared data.
# Then, on the GPU machine: tools/device/gpt2_124m_baseline.sh  (see README "Running on a GPU").
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."

KERNEL_BINARIES=(
  //tools/build_defs/cuda_check:axpy_test
  //megatron/core/fusions/norm:norm_gpu_test //megatron/core/fusions/norm:norm_benchmark
  //megatron/core/fusions/cross_entropy:cross_entropy_gpu_test //megatron/core/fusions/cross_entropy:cross_entropy_benchmark
  //megatron/core/fusions/softmax:softmax_gpu_test //megatron/core/fusions/softmax:softmax_benchmark
  //megatron/core/fusions/activation:activation_gpu_test //megatron/core/fusions/activation:activation_benchmark
  //megatron/core/fusions/rope:rope_gpu_test //megatron/core/fusions/rope:rope_benchmark
)
# --kernels_only: just the kernel tests and benchmarks (no pretrain/generate, no data).
KERNELS_ONLY=0
[[ "${1:-}" == "--kernels_only" ]] && KERNELS_ONLY=1
if (( KERNELS_ONLY )); then
  bazel build --config=cuda "${KERNEL_BINARIES[@]}"
else
  bazel build --config=cuda //experiments/gpt:pretrain //experiments/gpt:generate "${KERNEL_BINARIES[@]}"
fi
rm -rf .device/bin .device/lib .device/recipes
mkdir -p .device/bin .device/lib .device/recipes .device/data
(( KERNELS_ONLY )) || cp -L bazel-bin/experiments/gpt/pretrain bazel-bin/experiments/gpt/generate .device/bin/
for target in "${KERNEL_BINARIES[@]}"; do
  path="${target#//}"
  cp -L "bazel-bin/${path/://}" .device/bin/
done
cp experiments/gpt/recipes/*.textproto .device/recipes/
# The GPU machine (Ubuntu 24.04) has libtorch, CUDA, cuDNN and NCCL from its PyTorch install, but not Debian's
# abseil and protobuf builds that our binaries link.
ldd .device/bin/*_benchmark $( (( KERNELS_ONLY )) || echo .device/bin/pretrain) | awk '/=>/ {print $3}' | grep -E 'libabsl|libprotobuf|libbenchmark' |
  sort -u | xargs -r -I{} cp -L {} .device/lib/

# Data for the GPT-2 124M baseline: tokenizer + indexed dataset, prepared here (no corpus over there).
if (( KERNELS_ONLY )); then git rev-parse HEAD > .device/commit; du -sh .device; exit 0; fi
if [[ ! -f runs/data/fortunes_bpe8192_text_document.idx ]]; then
  bazel build //experiments/gpt:pretrain  # the CPU build prepares data
  bazel-bin/experiments/gpt/pretrain --recipe=experiments/gpt/recipes/gpt2_124m.textproto \
    --training.device=cpu --training.train_iters=0 --training.eval_iters=0
fi
cp runs/data/fortunes_bpe8192_tokenizer.json runs/data/fortunes_bpe8192_text_document.{bin,idx} .device/data/
git rev-parse HEAD > .device/commit
du -sh .device
