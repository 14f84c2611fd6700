// Device helpers shared by the fused kernels (norm, cross_entropy, softmax, activation, ...): dtype conversion to
// and from float32 (every kernel accumulates in float32), 16-byte packs (one LDG.128 / STG.128 per 8 bf16/fp16 or
// 4 fp32 elements), warp reductions, and the host-side alignment test that picks the packed or the scalar
// instantiation of a kernel. CUDA only (included by .cu files); no libtorch.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

namespace megatron::fusions::device {

__device__ __forceinline__ float ToFloat(float v) { return v; }
__device__ __forceinline__ float ToFloat(__nv_bfloat16 v) { return __bfloat162float(v); }
__device__ __forceinline__ float ToFloat(__half v) { return __half2float(v); }

// Round to nearest even, as ATen's casts do.
template <typename T>
__device__ __forceinline__ T FromFloat(float v);
template <>
__device__ __forceinline__ float FromFloat<float>(float v) { return v; }
template <>
__device__ __forceinline__ __nv_bfloat16 FromFloat<__nv_bfloat16>(float v) { return __float2bfloat16_rn(v); }
template <>
__device__ __forceinline__ __half FromFloat<__half>(float v) { return __float2half_rn(v); }

// Elements of T in one 16-byte pack.
template <typename T>
constexpr int kPack16 = 16 / sizeof(T);

template <typename T, int kVec>
struct alignas(sizeof(T) * kVec) Pack {
  T v[kVec];
};

// Loads kVec consecutive elements (p aligned to sizeof(T) * kVec) converted to float32.
template <typename T, int kVec>
__device__ __forceinline__ void LoadPack(const T* p, float (&out)[kVec]) {
  const Pack<T, kVec> pack = *reinterpret_cast<const Pack<T, kVec>*>(p);
#pragma unroll
  for (int k = 0; k < kVec; ++k) out[k] = ToFloat(pack.v[k]);
}

template <typename T, int kVec>
__device__ __forceinline__ void StorePack(T* p, const float (&in)[kVec]) {
  Pack<T, kVec> pack;
#pragma unroll
  for (int k = 0; k < kVec; ++k) pack.v[k] = FromFloat<T>(in[k]);
  *reinterpret_cast<Pack<T, kVec>*>(p) = pack;
}

// Butterfly reductions: every lane of the (full) warp gets the result.
__device__ __forceinline__ float WarpSum(float v) {
#pragma unroll
  for (int offset = 16; offset > 0; offset /= 2) v += __shfl_xor_sync(0xffffffffu, v, offset);
  return v;
}

__device__ __forceinline__ float WarpMax(float v) {
#pragma unroll
  for (int offset = 16; offset > 0; offset /= 2) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, offset));
  return v;
}

// Host side: packed kernels need every base pointer 16-byte aligned (then each row whose length is a multiple of
// the pack starts aligned too).
inline bool Aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

inline int64_t CeilDiv(int64_t a, int64_t b) { return (a + b - 1) / b; }

}  // namespace megatron::fusions::device
