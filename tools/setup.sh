#!/usr/bin/env bash
# Sets up a fresh machine for megatron-cpp: Debian packages and libtorch 2.11.0 (from the PyPI torch wheel).
# Idempotent: a second run checks and returns in seconds. Downloads happen here only, never during a build.
#
#   tools/setup.sh            install what is missing
#   LIBTORCH_PATH=/x tools/setup.sh   use an existing libtorch (a directory with include/ and lib/) instead
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TORCH_VERSION="2.11.0"
CACHE="${XDG_CACHE_HOME:-$HOME/.cache}/megatron_cpp"

APT_PACKAGES=(
  bazel-bootstrap            # Bazel 4.2.3; the WORKSPACE overrides every repository it would download
  g++ unzip python3 python3-pip
  libabsl-dev                # flags, status, strings
  protobuf-compiler libprotobuf-dev   # recipes, TensorBoard event records
  libgtest-dev libgmock-dev  # tests
  libbenchmark-dev libbenchmark-tools # benchmarks and compare.py
  nlohmann-json3-dev         # config.json, safetensors headers
  libstb-dev                 # image decode (JPEG/PNG) and PNG encode for multimodal data
  fortunes                   # the embedded default corpus (about 2.8 MB of English text)
)

say() { printf 'setup: %s\n' "$*" >&2; }
die() { say "ERROR: $*"; exit 1; }

missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  [[ "$pkg" == \#* ]] && continue
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
  SUDO=""
  if [[ "$(id -u)" != 0 ]]; then
    command -v sudo >/dev/null || die "need root or sudo to install: ${missing[*]}"
    SUDO="sudo"
  fi
  say "installing Debian packages: ${missing[*]}"
  $SUDO apt-get update -qq || die "apt-get update failed (is a Debian mirror reachable?)"
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null ||
    die "apt-get install failed for: ${missing[*]}"
else
  say "Debian packages: all present"
fi

# libtorch: the include/ and lib/ of the torch wheel (the same version as the GPU machine's PyTorch).
if [[ -n "${LIBTORCH_PATH:-}" ]]; then
  [[ -d "$LIBTORCH_PATH/include/ATen" && -d "$LIBTORCH_PATH/lib" ]] ||
    die "LIBTORCH_PATH=$LIBTORCH_PATH has no include/ATen or lib/"
  say "libtorch: using LIBTORCH_PATH=$LIBTORCH_PATH"
else
  DEST="$ROOT/.deps/libtorch"
  MARKER="$DEST/torch/.complete-$TORCH_VERSION"
  if [[ -f "$MARKER" ]]; then
    say "libtorch $TORCH_VERSION: present in .deps/libtorch"
  else
    mkdir -p "$CACHE/wheels"
    wheel="$(ls "$CACHE"/wheels/torch-"$TORCH_VERSION"-*.whl 2>/dev/null | head -n 1 || true)"
    if [[ -z "$wheel" ]]; then
      say "downloading torch==$TORCH_VERSION from PyPI (about 530 MB, once; cached in $CACHE/wheels)"
      python3 -m pip download --quiet --no-deps --only-binary=:all: "torch==$TORCH_VERSION" -d "$CACHE/wheels" ||
        die "pip could not download torch==$TORCH_VERSION (is PyPI reachable?)"
      wheel="$(ls "$CACHE"/wheels/torch-"$TORCH_VERSION"-*.whl | head -n 1)"
    fi
    say "unpacking libtorch from $(basename "$wheel")"
    tmp="$DEST.tmp.$$"
    rm -rf "$tmp" && mkdir -p "$tmp"
    # Headers and the C++ libraries only: no Python extension, no bundled protobuf headers (they would shadow
    # Debian's protobuf; third_party/libtorch/repo.bzl hides them too).
    unzip -q "$wheel" 'torch/include/*' 'torch/share/*' \
      'torch/lib/libc10.so' 'torch/lib/libtorch_cpu.so' 'torch/lib/libtorch.so' 'torch/lib/libgomp.so.1' \
      'torch/lib/libc10_cuda.so' 'torch/lib/libtorch_cuda.so' 'torch/lib/libtorch_global_deps.so' \
      'torch/lib/libshm.so' 'torch/lib/libtorch_cuda_linalg.so' 'torch/lib/libtorch_nvshmem.so' \
      'torch/lib/libcaffe2_nvrtc.so' -x 'torch/include/google/*' -d "$tmp"
    touch "$tmp/torch/.complete-$TORCH_VERSION"
    rm -rf "$DEST"
    mv "$tmp" "$DEST"
    say "libtorch $TORCH_VERSION: unpacked into .deps/libtorch/torch"
  fi
fi

[[ -x /usr/local/cuda/bin/nvcc ]] || say "warning: /usr/local/cuda not found: --config=cuda builds will fail (CPU builds are fine)"
ldconfig -p 2>/dev/null | grep -q 'libcudart.so.13' ||
  say "warning: libcudart.so.13 is not on the loader path; libtorch_cpu.so links it (install CUDA 13.0)"
say "ready. Next: bazel run //experiments/gpt:pretrain   or   bazel test //..."
