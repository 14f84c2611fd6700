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
  //megatron/core/fusions/adam:adam_gpu_test //megatron/core/fusions/adam:adam_benchmark
  //megatron/core/fusions/attention:attention_gpu_test //megatron/core/fusions/attention:attention_benchmark
)
# Multi-GPU (tools/device/scaling_2gpu.sh), LLaVA (tools/device/llava_gpu.sh) and legacy-vs-core runs.
EXPERIMENT_BINARIES=(
  //tools:launch //tests/distributed:nccl_collectives_test //benchmarks/nccl:allreduce_bandwidth
  //experiments/llava:sft //experiments/llava:eval
)
# --kernels_only: just the kernel tests and benchmarks (no pretrain/generate, no data).
KERNELS_ONLY=0
[[ "${1:-}" == "--kernels_only" ]] && KERNELS_ONLY=1
if (( KERNELS_ONLY )); then
  bazel build --config=cuda "${KERNEL_BINARIES[@]}"
else
  bazel build --config=cuda //experiments/gpt:pretrain //experiments/gpt:generate "${KERNEL_BINARIES[@]}" \
    "${EXPERIMENT_BINARIES[@]}"
fi
rm -rf .device/bin .device/lib .device/recipes
mkdir -p .device/bin .device/lib .device/recipes .device/data
(( KERNELS_ONLY )) || cp -L bazel-bin/experiments/gpt/pretrain bazel-bin/experiments/gpt/generate .device/bin/
TARGETS=("${KERNEL_BINARIES[@]}")
(( KERNELS_ONLY )) || TARGETS+=("${EXPERIMENT_BINARIES[@]}")
for target in "${TARGETS[@]}"; do
  path="${target#//}"
  cp -L "bazel-bin/${path/://}" .device/bin/
done
cp experiments/gpt/recipes/*.textproto .device/recipes/
mkdir -p .device/recipes/llava && cp experiments/llava/recipes/*.textproto .device/recipes/llava/
# The GPU machine (Ubuntu 24.04) has libtorch, CUDA, cuDNN and NCCL from its PyTorch install, but not Debian's
# abseil and protobuf builds that our binaries link.
ldd .device/bin/* | awk '/=>/ {print $3}' | grep -E 'libabsl|libprotobuf|libbenchmark|libstb|libgtest|libgmock' |
  sort -u | xargs -r -I{} cp -L {} .device/lib/

# Liger-Kernel (pure Python + Triton) for benchmarks/peers/liger_side_by_side.py; the GPU machine has no internet.
ls .device/wheels/liger_kernel-*.whl > /dev/null 2>&1 || pip download -q liger-kernel --no-deps -d .device/wheels ||
  echo "liger-kernel wheel not downloaded: the side-by-side runs without Liger"

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
