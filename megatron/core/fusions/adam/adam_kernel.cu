// Multi-tensor AdamW (adam.h), one launch for the whole parameter list.
//
// Algorithm: the host flattens the list into a chunk table (adam_kernel.h): one entry per kAdamWChunkElems slice
// of every tensor, so a tensor of one element and a tensor of a billion both map onto whole blocks and thousands of
// tiny tensors cost one launch instead of thousands (the point of apex's multi_tensor_apply). Block b reads entry
// b, then streams its slice: each thread loads 4 consecutive elements of p, g, m, v with 16-byte loads (8-byte
// for bf16/fp16 grads), updates them in float32 registers and stores p, m, v (and the bf16/fp16 copy). Tensors
// whose pointers are not all 16-byte aligned (views at odd offsets) take a scalar loop instead. The optimizer is
// pure streaming (28 bytes per element: fp32 grads, or bf16 grads plus a bf16 copy), so the target is the
// device copy bandwidth; nothing is reused, so no shared memory.
//
// Arithmetic: float32 throughout, with the scalars computed in double on the host (adam_params.h); sqrtf and a
// true division, as ATen's addcdiv/sqrt path does.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <type_traits>

#include "megatron/core/fusions/adam/adam_kernel.h"
#include "megatron/core/fusions/common/device_utils.cuh"

namespace megatron::fusions {
namespace {

using device::FromFloat;
using device::ToFloat;

constexpr int kThreads = 256;
constexpr int kVec = 4;

struct FloatScalars {
  float beta1, one_minus_beta1, beta2, one_minus_beta2, eps, step_size, inv_sqrt_bc2, decay_factor;
};

struct NoCopy {};

__device__ __forceinline__ void Update(const FloatScalars& s, bool decay, float g, float& p, float& m, float& v) {
  m = s.beta1 * m + s.one_minus_beta1 * g;
  v = s.beta2 * v + s.one_minus_beta2 * g * g;
  if (decay) p *= s.decay_factor;
  p -= s.step_size * m / (sqrtf(v) * s.inv_sqrt_bc2 + s.eps);
}

template <typename G, typename C>
__global__ void __launch_bounds__(kThreads) MultiTensorAdamWKernel(const AdamWTensorMeta* __restrict__ tensors,
                                                                    const AdamWChunk* __restrict__ chunks,
                                                                    FloatScalars s) {
  const AdamWChunk c = chunks[blockIdx.x];
  const AdamWTensorMeta t = tensors[c.tensor];
  const int64_t begin = static_cast<int64_t>(c.chunk) * kAdamWChunkElems;
  const int64_t end = min(begin + kAdamWChunkElems, t.numel);
  float* __restrict__ p = t.param;
  const G* __restrict__ g = static_cast<const G*>(t.grad);
  float* __restrict__ m = t.exp_avg;
  float* __restrict__ v = t.exp_avg_sq;
  C* __restrict__ copy = static_cast<C*>(t.model_copy);
  constexpr bool kCopy = !std::is_same_v<C, NoCopy>;
  const bool decay = t.decay != 0;
  int64_t scalar_begin = begin;
  if (t.aligned) {
    // begin is a multiple of kAdamWChunkElems, hence of kVec: every pack below is aligned.
    const int64_t vec_end = begin + (end - begin) / kVec * kVec;
    for (int64_t i = begin + static_cast<int64_t>(threadIdx.x) * kVec; i < vec_end; i += kThreads * kVec) {
      float pr[kVec], gr[kVec], mr[kVec], vr[kVec];
      device::LoadPack<float, kVec>(p + i, pr);
      device::LoadPack<G, kVec>(g + i, gr);
      device::LoadPack<float, kVec>(m + i, mr);
      device::LoadPack<float, kVec>(v + i, vr);
#pragma unroll
      for (int k = 0; k < kVec; ++k) Update(s, decay, gr[k], pr[k], mr[k], vr[k]);
      device::StorePack<float, kVec>(p + i, pr);
      device::StorePack<float, kVec>(m + i, mr);
      device::StorePack<float, kVec>(v + i, vr);
      if constexpr (kCopy) device::StorePack<C, kVec>(copy + i, pr);
    }
    scalar_begin = vec_end;
  }
  for (int64_t i = scalar_begin + threadIdx.x; i < end; i += kThreads) {
    float pi = p[i], mi = m[i], vi = v[i];
    Update(s, decay, ToFloat(g[i]), pi, mi, vi);
    p[i] = pi;
    m[i] = mi;
    v[i] = vi;
    if constexpr (kCopy) copy[i] = FromFloat<C>(pi);
  }
}

template <typename G, typename C>
cudaError_t Launch(const AdamWLaunchArgs& a, const FloatScalars& s, cudaStream_t stream) {
  // One block per chunk; gridDim.x allows 2^31 - 1 blocks (35 trillion elements).
  MultiTensorAdamWKernel<G, C><<<static_cast<unsigned>(a.num_chunks), kThreads, 0, stream>>>(a.tensors, a.chunks, s);
  return cudaGetLastError();
}

template <typename G>
cudaError_t LaunchWithCopy(const AdamWLaunchArgs& a, const FloatScalars& s, cudaStream_t stream) {
  switch (a.copy_dtype) {
    case AdamWDtype::kNone:
      return Launch<G, NoCopy>(a, s, stream);
    case AdamWDtype::kBFloat16:
      return Launch<G, __nv_bfloat16>(a, s, stream);
    case AdamWDtype::kFloat16:
      return Launch<G, __half>(a, s, stream);
    default:
      return cudaErrorInvalidValue;
  }
}

}  // namespace

cudaError_t LaunchMultiTensorAdamW(const AdamWLaunchArgs& a, const AdamWScalars& d, cudaStream_t stream) {
  if (a.num_chunks == 0) return cudaSuccess;
  const FloatScalars s{static_cast<float>(d.beta1),        static_cast<float>(d.one_minus_beta1),
                       static_cast<float>(d.beta2),        static_cast<float>(d.one_minus_beta2),
                       static_cast<float>(d.eps),          static_cast<float>(d.step_size),
                       static_cast<float>(d.inv_sqrt_bc2), static_cast<float>(d.decay_factor)};
  switch (a.grad_dtype) {
    case AdamWDtype::kFloat32:
      return LaunchWithCopy<float>(a, s, stream);
    case AdamWDtype::kBFloat16:
      return LaunchWithCopy<__nv_bfloat16>(a, s, stream);
    case AdamWDtype::kFloat16:
      return LaunchWithCopy<__half>(a, s, stream);
    default:
      return cudaErrorInvalidValue;
  }
}

}  // namespace megatron::fusions
