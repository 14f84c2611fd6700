#!/usr/bin/env bash
# Legacy versus core on the GPU, in two halves:
#   tools/device/legacy_vs_core.sh stage   CPU machine: build --config=cuda, stage into .device/legacy/ (git-ignored)
#   tools/device/legacy_vs_core.sh run     GPU machine, repo root: the GPU equivalence test, then the comparison
#                                          tables (GPT, BERT and T5, GPT-2-small shape, fp32 and bf16) into
#                                          .device/legacy/results.txt
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
case "${1:-}" in
  stage)
    bazel build --config=cuda //tests/legacy_vs_core:legacy_vs_core_gpu_test //experiments/compare:legacy_vs_core
    rm -rf .device/legacy && mkdir -p .device/legacy/bin .device/legacy/lib
    cp -L bazel-bin/tests/legacy_vs_core/legacy_vs_core_gpu_test bazel-bin/experiments/compare/legacy_vs_core \
      .device/legacy/bin/
    # The GPU machine lacks Debian's abseil/gtest builds that the binaries link.
    ldd .device/legacy/bin/* | awk '/=>/ {print $3}' | grep -E 'libabsl|libprotobuf|libgtest|libgmock' | sort -u |
      xargs -r -I{} cp -L {} .device/legacy/lib/
    git rev-parse HEAD > .device/legacy/commit
    du -sh .device/legacy
    ;;
  run)
    T=/opt/torch/.venv/lib/python3.12/site-packages
    export LD_LIBRARY_PATH="$PWD/.device/legacy/lib:$T/torch/lib:$T/nvidia/cudnn/lib:$T/nvidia/nccl/lib:$T/nvidia/cu13/lib:/usr/local/cuda/lib64"
    out=.device/legacy/results.txt
    : > "$out"
    .device/legacy/bin/legacy_vs_core_gpu_test 2>&1 | tail -20 | tee -a "$out"
    shape=(--layers=12 --hidden=768 --heads=12 --vocab=50304 --seq=1024 --batch=8 --steps=30)
    for model in gpt bert t5; do
      for precision in "" --bf16; do
        .device/legacy/bin/legacy_vs_core --model="$model" --device=cuda "${shape[@]}" $precision 2>&1 | tee -a "$out"
      done
    done
    ;;
  *)
    echo "usage: $0 stage|run" >&2
    exit 2
    ;;
esac
