#!/usr/bin/env bash
# Runs on the GPU machine after tools/device/stage.sh (or stage.sh --kernels_only): the kernels' GPU tests (every
# element against the CPU reference), then the tracker over every staged *_benchmark (benchmarks/track.py:
# repetitions, medians, comparison with benchmarks/baselines/h100.json, SVG chart of fraction of copy bandwidth),
# then PyTorch eager / torch.compile on the same shapes (benchmarks/kernels_pytorch.py).
# Results go to ${OUT:-.device/out}: *.log, track.json, frac_of_copy.svg, pytorch.json.
# Options (environment): REPETITIONS (3), MIN_TIME (0.1 s per repetition), PYTORCH=0 to skip the PyTorch peers,
# UPDATE_BASELINE=1 to write this run as the new baseline (then copy it back and commit it).
set -uo pipefail
OUT="${OUT:-.device/out}"
mkdir -p "$OUT"
T=/opt/torch/.venv/lib/python3.12/site-packages
export LD_LIBRARY_PATH="$PWD/.device/lib:$T/torch/lib:$T/nvidia/cudnn/lib:$T/nvidia/nccl/lib:$T/nvidia/cu13/lib:/usr/local/cuda/lib64"
status=0
for t in .device/bin/*_gpu_test .device/bin/axpy_test; do
  [[ -x "$t" ]] || continue
  "$t" > "$OUT/$(basename "$t").log" 2>&1 || status=1
  echo "$(basename "$t"): $(grep -E '^\[  (PASSED|FAILED)' "$OUT/$(basename "$t").log" | tr '\n' ' ')"
done
baseline_flag=()
[[ "${UPDATE_BASELINE:-0}" == 1 ]] && baseline_flag=(--update_baseline --baseline="$OUT/h100.json")
python3 benchmarks/track.py .device/bin --repetitions="${REPETITIONS:-3}" --min_time="${MIN_TIME:-0.1}" \
  --out="$OUT/track.json" --chart="$OUT/frac_of_copy.svg" --no_fail --commit="$(cat .device/commit 2>/dev/null)" \
  "${baseline_flag[@]}" 2>&1 | tee "$OUT/track.log" | tail -40
if [[ "${PYTORCH:-1}" == 1 ]]; then
  timeout "${PYTORCH_TIMEOUT:-200}" /opt/torch/.venv/bin/python benchmarks/kernels_pytorch.py "$OUT/pytorch.json" \
    2>&1 | tee "$OUT/pytorch.log" | grep -v Warning
fi
exit $status
