#!/usr/bin/env bash
# Runs on a 2-GPU machine (nvidia-h200-x2), from the repository root, after tools/device/stage.sh: the NCCL
# collectives test, NCCL all-reduce bus bandwidth, and the ~1.3B GPT (experiments/gpt/recipes/gpt_1b.textproto)
# on 1 GPU and at DP=2, TP=2, PP=2 with the same binary. Logs under ${OUT:-.device/out}; a table at the end
# (tokens/s per GPU and scaling efficiency = per-GPU tokens/s over the 1-GPU tokens/s).
# Knobs: ITERS (iterations per run), RUN_TIMEOUT (seconds per run), EXTRA (flags added to every run),
# SKIP_GPU1 / SKIP_DP2 / SKIP_TP2 / SKIP_TP2SP / SKIP_PP2.
set -euo pipefail
OUT="${OUT:-.device/out}"
mkdir -p "$OUT"
T=/opt/torch/.venv/lib/python3.12/site-packages
export LD_LIBRARY_PATH="$PWD/.device/lib:$T/torch/lib:$T/nvidia/cudnn/lib:$T/nvidia/nccl/lib:$T/nvidia/cu13/lib:/usr/local/cuda/lib64"
export NCCL_NVLS_ENABLE=0
ITERS="${ITERS:-20}"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$OUT/gpu.txt"
MEGATRON_TEST_NUM_GPUS=2 .device/bin/nccl_collectives_test > "$OUT/nccl_test.log" 2>&1 || true
grep -E "^\[  (PASSED|FAILED)|Failure|rank [0-9].*(error|Error)" "$OUT/nccl_test.log" | head -20
.device/bin/launch --nproc_per_node=2 -- .device/bin/allreduce_bandwidth --json="$OUT/allreduce.json" 2>&1 |
  tee "$OUT/allreduce.log" || true
run() {
  local name=$1 nproc=$2; shift 2
  local cmd=(.device/bin/pretrain --recipe=.device/recipes/gpt_1b.textproto
    --data.tokenizer=.device/data/fortunes_bpe8192_tokenizer.json
    --data.data_prefix=.device/data/fortunes_bpe8192_text_document --training.train_iters="$ITERS" ${EXTRA:-} "$@")
  # Each run is bounded (RUN_TIMEOUT seconds) so that one hung layout cannot eat the others' device time.
  local t=(timeout "${RUN_TIMEOUT:-240}")
  if [[ $nproc == 1 ]]; then "${t[@]}" "${cmd[@]}"; else "${t[@]}" .device/bin/launch --nproc_per_node="$nproc" -- "${cmd[@]}"; fi 2>&1 |
    tr '\r' '\n' | grep -v "^\[rank 1\]" | tee "$OUT/$name.log" | grep -E "model:|parallel:|throughput|Error|error" || true
}
[[ -z "${SKIP_GPU1:-}" ]] && run gpu1 1
[[ -z "${SKIP_DP2:-}" ]] && run dp2 2
# The distributed optimizer (ZeRO-1), and weak scaling: the same micro-batches per GPU as the 1-GPU run (global
# batch 32), i.e. Megatron's usual way of quoting data-parallel efficiency.
[[ -z "${SKIP_DP2:-}" ]] && run dp2_distopt 2 --parallel.use_distributed_optimizer=true
[[ -z "${SKIP_DP2:-}" ]] && run dp2_weak 2 --training.global_batch_size=32
[[ -z "${SKIP_TP2:-}" ]] && run tp2 2 --parallel.tensor_model_parallel_size=2
[[ -z "${SKIP_TP2SP:-}" ]] && run tp2sp 2 --parallel.tensor_model_parallel_size=2 --parallel.sequence_parallel=true
[[ -z "${SKIP_PP2:-}" ]] && run pp2 2 --parallel.pipeline_model_parallel_size=2
echo
echo "| run | GPUs | steady tokens/s | tokens/s per GPU | scaling efficiency |"
echo "| --- | --- | --- | --- | --- |"
base=$(grep -ho "steady state [0-9]*" "$OUT/gpu1.log" 2>/dev/null | awk '{print $3}' || true)
for r in gpu1:1 dp2:2 dp2_distopt:2 dp2_weak:2 tp2:2 tp2sp:2 pp2:2; do
  name=${r%%:*} n=${r##*:}
  tps=$(grep -ho "steady state [0-9]*" "$OUT/$name.log" 2>/dev/null | awk '{print $3}' || true)
  [[ -z "$tps" ]] && { echo "| $name | $n | failed | | |"; continue; }
  awk -v n="$n" -v t="$tps" -v b="$base" -v name="$name" \
    'BEGIN { printf "| %s | %d | %d | %d | %.1f%% |\n", name, n, t, t / n, 100 * t / n / b }'
done
