#!/usr/bin/env bash
# Runs on the GPU machine after tools/device/stage.sh (or stage.sh --kernels_only): the kernels' GPU tests (every
# element against the CPU reference), then the tracker over every staged *_benchmark (benchmarks/track.py:
# repetitions, medians, comparison with benchmarks/baselines/h100.json, SVG chart of fraction of copy bandwidth),
# then PyTorch eager / torch.compile on the same shapes (benchmarks/kernels_pytorch.py).
# Results go to ${OUT:-.device/out}: gpu_tests.log, track.json, frac_of_copy.svg, pytorch.log / .json (and h100.json).
# Options (environment): REPETITIONS (3), MIN_TIME (0.1 s per repetition), PYTORCH=0 to skip the PyTorch peers,
# UPDATE_BASELINE=1 to write this run as the new baseline (then copy it back and commit it).
set -uo pipefail
OUT="${OUT:-.device/out}"
# DEVICE_DIR: where stage.sh put bin/ and lib/ (default .device).
mkdir -p "$OUT"
T=/opt/torch/.venv/lib/python3.12/site-packages
export LD_LIBRARY_PATH="$PWD/${DEVICE_DIR:-.device}/lib:$T/torch/lib:$T/nvidia/cudnn/lib:$T/nvidia/nccl/lib:$T/nvidia/cu13/lib:/usr/local/cuda/lib64"
status=0
DEV="${DEVICE_DIR:-.device}"
for t in "$DEV"/bin/*_gpu_test "$DEV"/bin/axpy_test; do
  [[ -x "$t" ]] || continue
  "$t" > /tmp/gpu_test.log 2>&1 || status=1
  cat /tmp/gpu_test.log >> "$OUT/gpu_tests.log"
  echo "$(basename "$t"): $(grep -E '^\[  (PASSED|FAILED)' /tmp/gpu_test.log | tr '\n' ' ')"
done
PY=/opt/torch/.venv/bin/python
[[ -x "$PY" ]] || PY=python3
baseline_flag=()
[[ "${UPDATE_BASELINE:-0}" == 1 ]] && baseline_flag=(--update_baseline --baseline="$OUT/h100.json")
"$PY" benchmarks/track.py "$DEV"/bin --repetitions="${REPETITIONS:-3}" --min_time="${MIN_TIME:-0.1}" \
  --out="$OUT/track.json" --chart="$OUT/frac_of_copy.svg" --no_fail --commit="$(cat "$DEV"/commit 2>/dev/null)" \
  "${baseline_flag[@]}" 2>&1 | grep -v '^running' 
if [[ "${PYTORCH:-1}" == 1 ]]; then
  timeout "${PYTORCH_TIMEOUT:-200}" "$PY" benchmarks/kernels_pytorch.py "$OUT/pytorch.json" \
    2>&1 | grep -v Warning | tee "$OUT/pytorch.log"
fi
exit $status
