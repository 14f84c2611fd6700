// CUDA bias + GeLU (tanh, erf) and bias + SwiGLU, forward and backward, for sm_90 (semantics: activation.h;
// launchers: activation_kernel.h).
//
// Algorithm. Elementwise and memory-bound: every thread owns one 16-byte pack of outputs (8 bf16/fp16 or 4 fp32),
// loads the matching inputs as packs, computes in float32 and stores once; a grid-stride loop covers any size.
// GeLU forward reads x (and the L1/L2-resident bias) and writes y; backward reads dy and x and writes dx, i.e.
// recomputes gelu'(x + bias) instead of saving anything (Megatron's bias_gelu_back does the same). SwiGLU reads
// the gate and up halves of a row (two packs c and h + c of [gate; up]) per output pack; its backward writes both
// halves of dx. tanhf / erff / __expf in float32 are far below bf16/fp16 rounding. dbias (a column sum of dx) is
// ATen's reduction in activation_cuda.cc, not fused here.
// Scalar path: 1-element packs when the row length (h for SwiGLU) is not a multiple of the pack or a pointer is
// not 16-byte aligned.
// Measured: see benchmarks/RESULTS.md (activation_benchmark on the H100).
#include <cuda_runtime.h>

#include <cstdint>

#include "megatron/core/fusions/activation/activation_kernel.h"
#include "megatron/core/fusions/common/device_utils.cuh"

namespace megatron::fusions {
namespace {

using device::Aligned16;
using device::CeilDiv;
using device::LoadPack;
using device::StorePack;

// 256 threads: a plain elementwise block; 8 resident blocks fill an SM's 2048 threads.
constexpr int kThreads = 256;
// Grid cap for the grid-stride loop: 132 SMs x 8 blocks x a few waves is plenty to saturate HBM.
constexpr int64_t kMaxBlocks = 132 * 8 * 8;

__device__ __forceinline__ float GeluTanh(float z) {
  const float t = tanhf(kGeluTanhSqrt2OverPi * z * (1.f + kGeluTanhCubic * z * z));
  return 0.5f * z * (1.f + t);
}

__device__ __forceinline__ float GeluTanhGrad(float z) {
  const float t = tanhf(kGeluTanhSqrt2OverPi * z * (1.f + kGeluTanhCubic * z * z));
  return 0.5f * z * ((1.f - t * t) * (kGeluTanhSqrt2OverPi + kGeluTanhDerivCubic * z * z)) + 0.5f * (1.f + t);
}

__device__ __forceinline__ float GeluErf(float z) { return 0.5f * z * (1.f + erff(z * 0.70710678118654752f)); }

__device__ __forceinline__ float GeluErfGrad(float z) {
  // 0.3989422804 = 1 / sqrt(2 pi)
  return 0.5f * (1.f + erff(z * 0.70710678118654752f)) + z * 0.39894228040143268f * __expf(-0.5f * z * z);
}

__device__ __forceinline__ float Sigmoid(float z) { return 1.f / (1.f + __expf(-z)); }

template <typename T, int kVec>
__device__ __forceinline__ void AddBias(const T* bias, int64_t col, float (&v)[kVec]) {
  if (bias == nullptr) return;
  float b[kVec];
  LoadPack<T, kVec>(bias + col, b);
#pragma unroll
  for (int k = 0; k < kVec; ++k) v[k] += b[k];
}

template <typename T, int kVec, bool kTanh>
__global__ void __launch_bounds__(kThreads)
    GeluForwardKernel(const T* __restrict__ x, const T* __restrict__ bias, T* __restrict__ y, int64_t packs,
                      int64_t cols) {
  for (int64_t p = blockIdx.x * int64_t{kThreads} + threadIdx.x; p < packs; p += int64_t{gridDim.x} * kThreads) {
    const int64_t i = p * kVec;
    float v[kVec];
    LoadPack<T, kVec>(x + i, v);
    AddBias<T, kVec>(bias, i % cols, v);
#pragma unroll
    for (int k = 0; k < kVec; ++k) v[k] = kTanh ? GeluTanh(v[k]) : GeluErf(v[k]);
    StorePack<T, kVec>(y + i, v);
  }
}

template <typename T, int kVec, bool kTanh>
__global__ void __launch_bounds__(kThreads)
    GeluBackwardKernel(const T* __restrict__ dy, const T* __restrict__ x, const T* __restrict__ bias,
                       T* __restrict__ dx, int64_t packs, int64_t cols) {
  for (int64_t p = blockIdx.x * int64_t{kThreads} + threadIdx.x; p < packs; p += int64_t{gridDim.x} * kThreads) {
    const int64_t i = p * kVec;
    float v[kVec];
    float g[kVec];
    LoadPack<T, kVec>(x + i, v);
    LoadPack<T, kVec>(dy + i, g);
    AddBias<T, kVec>(bias, i % cols, v);
#pragma unroll
    for (int k = 0; k < kVec; ++k) v[k] = g[k] * (kTanh ? GeluTanhGrad(v[k]) : GeluErfGrad(v[k]));
    StorePack<T, kVec>(dx + i, v);
  }
}

// packs = rows * h / kVec output packs; x rows are [gate (h); up (h)].
template <typename T, int kVec>
__global__ void __launch_bounds__(kThreads)
    SwigluForwardKernel(const T* __restrict__ x, const T* __restrict__ bias, T* __restrict__ y, int64_t packs,
                        int64_t h) {
  for (int64_t p = blockIdx.x * int64_t{kThreads} + threadIdx.x; p < packs; p += int64_t{gridDim.x} * kThreads) {
    const int64_t o = p * kVec;
    const int64_t row = o / h;
    const int64_t c = o - row * h;
    float gate[kVec];
    float up[kVec];
    LoadPack<T, kVec>(x + row * 2 * h + c, gate);
    LoadPack<T, kVec>(x + row * 2 * h + h + c, up);
    AddBias<T, kVec>(bias, c, gate);
    AddBias<T, kVec>(bias, h + c, up);
#pragma unroll
    for (int k = 0; k < kVec; ++k) gate[k] = gate[k] * Sigmoid(gate[k]) * up[k];
    StorePack<T, kVec>(y + o, gate);
  }
}

template <typename T, int kVec>
__global__ void __launch_bounds__(kThreads)
    SwigluBackwardKernel(const T* __restrict__ dy, const T* __restrict__ x, const T* __restrict__ bias,
                         T* __restrict__ dx, int64_t packs, int64_t h) {
  for (int64_t p = blockIdx.x * int64_t{kThreads} + threadIdx.x; p < packs; p += int64_t{gridDim.x} * kThreads) {
    const int64_t o = p * kVec;
    const int64_t row = o / h;
    const int64_t c = o - row * h;
    float gate[kVec];
    float up[kVec];
    float g[kVec];
    LoadPack<T, kVec>(x + row * 2 * h + c, gate);
    LoadPack<T, kVec>(x + row * 2 * h + h + c, up);
    LoadPack<T, kVec>(dy + o, g);
    AddBias<T, kVec>(bias, c, gate);
    AddBias<T, kVec>(bias, h + c, up);
    float dgate[kVec];
    float dup[kVec];
#pragma unroll
    for (int k = 0; k < kVec; ++k) {
      const float s = Sigmoid(gate[k]);
      dgate[k] = g[k] * up[k] * s * (1.f + gate[k] * (1.f - s));
      dup[k] = g[k] * gate[k] * s;
    }
    StorePack<T, kVec>(dx + row * 2 * h + c, dgate);
    StorePack<T, kVec>(dx + row * 2 * h + h + c, dup);
  }
}

unsigned Blocks(int64_t packs) {
  const int64_t blocks = CeilDiv(packs, kThreads);
  return static_cast<unsigned>(blocks < kMaxBlocks ? blocks : kMaxBlocks);
}

template <typename T, int kVec>
cudaError_t ForwardPacked(const ActivationArgs& a, ActivationKind kind, cudaStream_t stream) {
  const auto* x = static_cast<const T*>(a.x);
  const auto* bias = static_cast<const T*>(a.bias);
  auto* y = static_cast<T*>(a.out);
  if (kind == ActivationKind::kSwiGLU) {
    const int64_t packs = a.rows * (a.cols / 2) / kVec;
    SwigluForwardKernel<T, kVec><<<Blocks(packs), kThreads, 0, stream>>>(x, bias, y, packs, a.cols / 2);
  } else {
    const int64_t packs = a.rows * a.cols / kVec;
    if (kind == ActivationKind::kGeluTanh) {
      GeluForwardKernel<T, kVec, true><<<Blocks(packs), kThreads, 0, stream>>>(x, bias, y, packs, a.cols);
    } else {
      GeluForwardKernel<T, kVec, false><<<Blocks(packs), kThreads, 0, stream>>>(x, bias, y, packs, a.cols);
    }
  }
  return cudaGetLastError();
}

template <typename T, int kVec>
cudaError_t BackwardPacked(const ActivationArgs& a, ActivationKind kind, cudaStream_t stream) {
  const auto* x = static_cast<const T*>(a.x);
  const auto* bias = static_cast<const T*>(a.bias);
  const auto* dy = static_cast<const T*>(a.dy);
  auto* dx = static_cast<T*>(a.out);
  if (kind == ActivationKind::kSwiGLU) {
    const int64_t packs = a.rows * (a.cols / 2) / kVec;
    SwigluBackwardKernel<T, kVec><<<Blocks(packs), kThreads, 0, stream>>>(dy, x, bias, dx, packs, a.cols / 2);
  } else {
    const int64_t packs = a.rows * a.cols / kVec;
    if (kind == ActivationKind::kGeluTanh) {
      GeluBackwardKernel<T, kVec, true><<<Blocks(packs), kThreads, 0, stream>>>(dy, x, bias, dx, packs, a.cols);
    } else {
      GeluBackwardKernel<T, kVec, false><<<Blocks(packs), kThreads, 0, stream>>>(dy, x, bias, dx, packs, a.cols);
    }
  }
  return cudaGetLastError();
}

template <typename T>
bool CanPack(const ActivationArgs& a, ActivationKind kind) {
  constexpr int kVec = device::kPack16<T>;
  const int64_t row_len = kind == ActivationKind::kSwiGLU ? a.cols / 2 : a.cols;
  return row_len % kVec == 0 && Aligned16(a.x) && Aligned16(a.out) && (a.bias == nullptr || Aligned16(a.bias)) &&
         (a.dy == nullptr || Aligned16(a.dy));
}

template <typename T>
cudaError_t Typed(const ActivationArgs& a, ActivationKind kind, bool backward, cudaStream_t stream) {
  constexpr int kVec = device::kPack16<T>;
  if (CanPack<T>(a, kind)) {
    return backward ? BackwardPacked<T, kVec>(a, kind, stream) : ForwardPacked<T, kVec>(a, kind, stream);
  }
  return backward ? BackwardPacked<T, 1>(a, kind, stream) : ForwardPacked<T, 1>(a, kind, stream);
}

cudaError_t Launch(const ActivationArgs& a, ActivationKind kind, bool backward, cudaStream_t stream) {
  if (a.rows < 0 || a.cols < 1 || (kind == ActivationKind::kSwiGLU && a.cols % 2 != 0)) {
    return cudaErrorInvalidValue;
  }
  if (a.rows == 0) return cudaSuccess;
  switch (a.dtype) {
    case ActivationDtype::kFloat32:
      return Typed<float>(a, kind, backward, stream);
    case ActivationDtype::kBFloat16:
      return Typed<__nv_bfloat16>(a, kind, backward, stream);
    case ActivationDtype::kFloat16:
      return Typed<__half>(a, kind, backward, stream);
  }
  return cudaErrorInvalidValue;
}

}  // namespace

cudaError_t LaunchActivationForward(const ActivationArgs& args, ActivationKind kind, cudaStream_t stream) {
  return Launch(args, kind, /*backward=*/false, stream);
}

cudaError_t LaunchActivationBackward(const ActivationArgs& args, ActivationKind kind, cudaStream_t stream) {
  return Launch(args, kind, /*backward=*/true, stream);
}

}  // namespace megatron::fusions
