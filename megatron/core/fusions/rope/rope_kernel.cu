// CUDA rotary position embedding, forward and backward, for sm_90 (semantics: rope.h; launcher: rope_kernel.h).
//
// Algorithm. Elementwise and memory-bound: each thread owns one "unit" of a row (s, b, n) of d features: in the
// packed path a 16-byte pack of the rotating part (kHalves: the pack at j and its partner pack at j + r/2, so one
// unit covers 2 packs; kInterleaved: one pack holding kVec/2 adjacent pairs) or one pack of the pass-through tail
// [r, d). Inputs may be strided views (q and k straight out of the fused QKV projection: no copy first); the
// output is contiguous. The angle comes from freqs [s, r] (float32, L1/L2-resident: shared by all b * n rows of a
// position); sin/cos use a Cody-Waite reduction to [-pi, pi] and the SFU's __sincosf, whose error (~2^-21 after
// reduction) is below the float32 rounding of the angle itself, instead of sincosf's slow path, which would make
// this kernel compute-bound. The backward is the same pass with the transposed rotation (dx = R^T dy), so nothing
// but freqs is saved.
// Scalar path: one pair (or one pass-through element) per unit when the row, the halves, the tail, a stride or a
// base pointer does not allow 16-byte packs.
// Measured: see benchmarks/RESULTS.md (rope_benchmark on the H100).
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>

#include "megatron/core/fusions/common/device_utils.cuh"
#include "megatron/core/fusions/rope/rope_kernel.h"

namespace megatron::fusions {
namespace {

using device::Aligned16;
using device::CeilDiv;
using device::FromFloat;
using device::LoadPack;
using device::StorePack;
using device::ToFloat;

constexpr int kThreads = 256;
constexpr int64_t kMaxBlocks = 132 * 8 * 8;  // grid-stride cap: a few waves of 8 blocks per SM

__device__ __forceinline__ void SinCos(float x, float* s, float* c) {
  const float k = rintf(x * 0.159154943091895336f);  // 1 / (2 pi)
  float y = fmaf(-k, 6.28318548202514648f, x);       // 2 pi rounded to float
  y = fmaf(-k, -1.74845553e-7f, y);                   // minus the rounding error of that constant
  __sincosf(y, s, c);
}

// ya = a ca - b sa, yb = b cb + a sb (forward); dxa = a ca + b sb, dxb = b cb - a sa (backward, the transpose).
template <bool kBackward>
__device__ __forceinline__ void RotatePair(float& a, float& b, float fa, float fb) {
  float sa, ca, sb, cb;
  SinCos(fa, &sa, &ca);
  SinCos(fb, &sb, &cb);
  const float x = a;
  const float y = b;
  if constexpr (kBackward) {
    a = x * ca + y * sb;
    b = y * cb - x * sa;
  } else {
    a = x * ca - y * sa;
    b = y * cb + x * sb;
  }
}

struct Geometry {
  int64_t b, n, d, r;
  int64_t stride_s, stride_b, stride_n;
  int64_t rot_units;   // units of the rotating part per row
  int64_t units;       // all units per row
};

template <typename T, int kVec, RotaryLayout kLayout, bool kBackward>
__global__ void __launch_bounds__(kThreads)
    RopeKernel(const T* __restrict__ in, const float* __restrict__ freqs, T* __restrict__ out, int64_t total,
               Geometry g) {
  for (int64_t i = blockIdx.x * int64_t{kThreads} + threadIdx.x; i < total; i += int64_t{gridDim.x} * kThreads) {
    const int64_t row = i / g.units;
    const int64_t u = i - row * g.units;
    const int64_t si = row / (g.b * g.n);
    const int64_t bi = (row / g.n) % g.b;
    const int64_t ni = row % g.n;
    const T* src = in + si * g.stride_s + bi * g.stride_b + ni * g.stride_n;
    T* dst = out + row * g.d;
    const float* f = freqs + si * g.r;
    if (u >= g.rot_units) {  // pass-through tail
      const int64_t j = g.r + (u - g.rot_units) * kVec;
      float v[kVec];
      LoadPack<T, kVec>(src + j, v);
      StorePack<T, kVec>(dst + j, v);
      continue;
    }
    if constexpr (kLayout == RotaryLayout::kHalves) {
      const int64_t j = u * kVec;
      const int64_t h = g.r / 2;
      float a[kVec];
      float b[kVec];
      LoadPack<T, kVec>(src + j, a);
      LoadPack<T, kVec>(src + j + h, b);
#pragma unroll
      for (int k = 0; k < kVec; ++k) RotatePair<kBackward>(a[k], b[k], f[j + k], f[j + h + k]);
      StorePack<T, kVec>(dst + j, a);
      StorePack<T, kVec>(dst + j + h, b);
    } else if constexpr (kVec == 1) {  // interleaved, scalar: unit u is the pair (2u, 2u + 1)
      const int64_t j = 2 * u;
      float a = ToFloat(src[j]);
      float b = ToFloat(src[j + 1]);
      RotatePair<kBackward>(a, b, f[j], f[j + 1]);
      dst[j] = FromFloat<T>(a);
      dst[j + 1] = FromFloat<T>(b);
    } else {  // interleaved, packed: kVec / 2 pairs
      const int64_t j = u * kVec;
      float v[kVec];
      LoadPack<T, kVec>(src + j, v);
#pragma unroll
      for (int k = 0; k < kVec; k += 2) RotatePair<kBackward>(v[k], v[k + 1], f[j + k], f[j + k + 1]);
      StorePack<T, kVec>(dst + j, v);
    }
  }
}

template <typename T, int kVec, RotaryLayout kLayout>
cudaError_t Run(const RopeArgs& a, cudaStream_t stream) {
  Geometry g{a.b, a.n, a.d, a.r, a.stride_s, a.stride_b, a.stride_n, 0, 0};
  if constexpr (kLayout == RotaryLayout::kHalves) {
    g.rot_units = a.r / 2 / kVec;
  } else {
    g.rot_units = kVec == 1 ? a.r / 2 : a.r / kVec;
  }
  g.units = g.rot_units + (a.d - a.r) / kVec;
  const int64_t total = a.s * a.b * a.n * g.units;
  const unsigned blocks = static_cast<unsigned>(std::min<int64_t>(CeilDiv(total, kThreads), kMaxBlocks));
  const auto* in = static_cast<const T*>(a.in);
  auto* out = static_cast<T*>(a.out);
  if (a.backward) {
    RopeKernel<T, kVec, kLayout, true><<<blocks, kThreads, 0, stream>>>(in, a.freqs, out, total, g);
  } else {
    RopeKernel<T, kVec, kLayout, false><<<blocks, kThreads, 0, stream>>>(in, a.freqs, out, total, g);
  }
  return cudaGetLastError();
}

template <typename T>
cudaError_t Typed(const RopeArgs& a, const RopeParams& p, cudaStream_t stream) {
  constexpr int kVec = device::kPack16<T>;
  // Every pack boundary must fall on 16 bytes: the row strides, the halves (or the pairs), the tail.
  const int64_t rot_granule = p.layout == RotaryLayout::kHalves ? a.r / 2 : a.r;
  const bool packed = a.d % kVec == 0 && rot_granule % kVec == 0 && (a.d - a.r) % kVec == 0 &&
                      a.stride_s % kVec == 0 && a.stride_b % kVec == 0 && a.stride_n % kVec == 0 &&
                      Aligned16(a.in) && Aligned16(a.out);
  if (p.layout == RotaryLayout::kHalves) {
    return packed ? Run<T, kVec, RotaryLayout::kHalves>(a, stream) : Run<T, 1, RotaryLayout::kHalves>(a, stream);
  }
  return packed ? Run<T, kVec, RotaryLayout::kInterleaved>(a, stream)
                : Run<T, 1, RotaryLayout::kInterleaved>(a, stream);
}

}  // namespace

cudaError_t LaunchRope(const RopeArgs& args, const RopeParams& params, cudaStream_t stream) {
  if (args.s < 0 || args.b < 0 || args.n < 0 || args.r < 2 || args.r % 2 != 0 || args.r > args.d) {
    return cudaErrorInvalidValue;
  }
  if (args.s * args.b * args.n == 0) return cudaSuccess;
  switch (args.dtype) {
    case RopeDtype::kFloat32:
      return Typed<float>(args, params, stream);
    case RopeDtype::kBFloat16:
      return Typed<__nv_bfloat16>(args, params, stream);
    case RopeDtype::kFloat16:
      return Typed<__half>(args, params, stream);
  }
  return cudaErrorInvalidValue;
}

}  // namespace megatron::fusions
