#!/usr/bin/env bash
# Runs on the GPU machine, from the repository root, after tools/device/stage.sh ran on the CPU machine:
# GPT-2 124M pretraining throughput (bf16, sequence 1024) with the same `pretrain` binary as on CPU.
# Writes the log to ${OUT:-.device/out}/gpt2_124m.log and prints a short table last.
set -euo pipefail
OUT="${OUT:-.device/out}"
mkdir -p "$OUT"
T=/opt/torch/.venv/lib/python3.12/site-packages
export LD_LIBRARY_PATH="$PWD/.device/lib:$T/torch/lib:$T/nvidia/cudnn/lib:$T/nvidia/nccl/lib:$T/nvidia/cu13/lib:/usr/local/cuda/lib64"
export NCCL_NVLS_ENABLE=0
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$OUT/gpu.txt"
run() {
  local name=$1; shift
  .device/bin/pretrain --recipe=.device/recipes/gpt2_124m.textproto \
    --data.tokenizer=.device/data/fortunes_bpe8192_tokenizer.json \
    --data.data_prefix=.device/data/fortunes_bpe8192_text_document "$@" 2>&1 | tr '\r' '\n' | tee "$OUT/$name.log"
}
run gpt2_124m "$@"
echo
echo "| run | steady tokens/s | model TFLOP/s |"
echo "| --- | --- | --- |"
grep -h "steady state" "$OUT"/gpt2_124m*.log | sed -E 's/.*steady state ([0-9]+) tokens\/s = ([0-9.]+) model TFLOP\/s.*/| gpt2_124m | \1 | \2 |/'
