// CUDA softmax cross-entropy forward and backward for sm_90 (semantics: cross_entropy.h; launchers:
// cross_entropy_kernel.h).
//
// Algorithm. Both directions are memory-bound: a few FLOPs and one exp per logit, so the goal is to read the
// logits once per direction from DRAM with 16-byte loads, write the gradient once, keep every sum in float32 and
// never create a float32 copy of a [n, V] tensor (ATen's path upcasts bf16 logits to float32, writes log_softmax,
// and allocates a float32 gradient before casting back: 3 extra [n, V] float32 tensors).
//
// Forward: one 256-thread block per row. Each thread walks its strided share of the row in packs of 16 bytes (8
// bf16/fp16 or 4 fp32) and keeps an online softmax (Milakov & Gimelshein 2018): a running max m and a running
// sum s = sum exp(x - m), rescaled by exp(m_old - m_new) when a pack raises the max, so the row is read once
// instead of twice (max pass, then sum pass). It also sums x (for label smoothing's mean over classes). The
// per-thread (m, s, sum_x) triples are merged by warp shuffles, then across the 8 warps through shared memory,
// with the same rescaling rule (a thread that saw no valid column has m = -inf and contributes 0, not NaN).
// Thread 0 then writes lse = m + log(s) and the loss, reading the target's logit with one scalar load.
// Columns >= valid_vocab (vocabulary padding) are skipped by a per-element column compare; packs lying wholly in
// the padding are never loaded. Logits equal to -inf contribute 0 (masking with -inf is common).
//
// Vocabulary shards (tensor parallelism; cross_entropy.h, CrossEntropyShardPartials): the same forward kernel on
// one rank's columns [start, start + V_local) of the full vocabulary; valid columns are those below the full
// vocabulary's K (a shard may hold only padding: it reports lse = -inf and sum 0). Instead of the loss, thread 0
// writes the row's partial statistics: the shard's lse, the target's logit when the target falls in the shard
// (else 0) and the shard's sum of logits; the caller all-reduces them (max and sum) and forms the loss with the
// full vocabulary's K. The backward kernel takes the global lse and the shard offset: the target's column is
// t - start (if it lies in the shard) and label smoothing's eps / K uses the full K, so the shards' gradients are
// exactly the columns of the unsharded gradient.
//
// Backward: one 256-thread block per row; each element is read once, p = exp(x - lse) recomputed from the saved
// lse (no second reduction), the gradient formed in float32 and stored in the logits' dtype, optionally into the
// logits' own buffer: every element is read and then written by the same thread in the same iteration, so in
// place is race-free (and the pointers are deliberately not __restrict__). Ignored rows and padding packs are
// written as zeros without being read.
//
// Vectorisation: 16-byte packs when V is a multiple of the pack and the base pointers (logits, and the gradient
// in the backward) are 16-byte aligned, so every row starts aligned; otherwise the same kernels with 1-element
// packs (the scalar path: odd V such as 50257, or a misaligned view). exp is __expf (ex2.approx: ~2 ulp, far
// below the bf16/fp16 rounding of the outputs and within the float32 test tolerance of 1e-5 relative).
//
// Launch bounds: 256 threads. For V = 50304 bf16 a row is 6288 packs, ~25 per thread: the loops are unrolled by
// 4 so each thread keeps several independent loads in flight, and 8 resident blocks per SM (2048 threads) keep
// the SM's load queues full while the cross-warp reduction stays 8 slots short. That needs <= 32 registers per
// thread (65536 / 2048); ptxas (CUDA 13) reports 23-32 and no spills. For small V most threads idle, but such
// rows are cheap anyway; one block per row keeps the grid at n blocks (16K tokens >> 132 SMs).
//
// Measured (H100 80GB HBM3, 2026-11-22, cross_entropy_benchmark; 16384 x 50304 bf16, cold L2; "of D2D" is
// effective bandwidth over a cudaMemcpyAsync moving the same bytes, 2.74 TB/s; extra = allocator peak above the
// inputs during one forward + backward):
//   fused forward + backward in place      1.81 ms  (91% of D2D)  extra 0.1 MiB
//   fused forward + backward out of place  1.80 ms  (91%)         extra 1572 MiB (the bf16 gradient)
//   ATen cross_entropy_loss(logits.float()) + autograd backward  13.98 ms (12%)  extra 9432 MiB
//   fused forward alone 0.65 ms (84%), backward in place alone 1.16 ms (95%).
// The forward's gap to D2D is the per-row reduction tail (one block per row, 6288 packs); untuned beyond the
// design above.
#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>

#include "megatron/core/fusions/common/device_utils.cuh"
#include "megatron/core/fusions/cross_entropy/cross_entropy_kernel.h"

namespace megatron::fusions {
namespace {

// Threads per block (one block per row); see "Launch bounds" above.
constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;

using device::FromFloat;
using device::LoadPack;
using device::StorePack;
using device::ToFloat;

// Online-softmax state of part of a row: m = max, s = sum exp(x - m), sum_x = sum x.
struct SoftmaxState {
  float m;
  float s;
  float sum_x;
};

// s rescaled to a new max; a state that has seen nothing (m = -inf) contributes 0 instead of 0 * exp(nan).
__device__ __forceinline__ float Rescaled(const SoftmaxState& a, float m) {
  return a.m == -INFINITY ? 0.f : a.s * __expf(a.m - m);
}

__device__ __forceinline__ SoftmaxState Merge(const SoftmaxState& a, const SoftmaxState& b) {
  const float m = fmaxf(a.m, b.m);
  return {m, Rescaled(a, m) + Rescaled(b, m), a.sum_x + b.sum_x};
}

__device__ __forceinline__ SoftmaxState WarpMerge(SoftmaxState v) {
#pragma unroll
  for (int offset = 16; offset > 0; offset /= 2) {
    const SoftmaxState o{__shfl_xor_sync(0xffffffffu, v.m, offset), __shfl_xor_sync(0xffffffffu, v.s, offset),
                         __shfl_xor_sync(0xffffffffu, v.sum_x, offset)};
    v = Merge(v, o);
  }
  return v;
}

// Merges the block's states; the result is valid in thread 0.
__device__ __forceinline__ SoftmaxState BlockMerge(SoftmaxState v) {
  __shared__ SoftmaxState smem[kWarps];
  const int warp = threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  v = WarpMerge(v);
  if (lane == 0) smem[warp] = v;
  __syncthreads();
  if (warp == 0) {
    v = lane < kWarps ? smem[lane] : SoftmaxState{-INFINITY, 0.f, 0.f};
    v = WarpMerge(v);
  }
  return v;
}

template <typename T, int kVec>
__global__ void __launch_bounds__(kThreads)
    CrossEntropyForwardKernel(const T* __restrict__ logits, const int64_t* __restrict__ target,
                              float* __restrict__ loss, float* __restrict__ lse, float* __restrict__ partials,
                              int64_t n, int vocab, int classes, int64_t vocab_start, int64_t ignore_index,
                              float smoothing) {
  const int64_t row = blockIdx.x;
  const T* xr = logits + row * vocab;
  // Packs holding at least one valid column; kVec divides vocab, so none crosses the row's end.
  const int packs = (classes + kVec - 1) / kVec;
  SoftmaxState st{-INFINITY, 0.f, 0.f};
  // Unrolled so each thread has several independent 16-byte loads in flight before the first one's exp chain.
#pragma unroll 4
  for (int p = threadIdx.x; p < packs; p += kThreads) {
    float e[kVec];
    LoadPack<T, kVec>(xr + p * kVec, e);
    float pack_max = -INFINITY;
#pragma unroll
    for (int k = 0; k < kVec; ++k) {
      if (p * kVec + k < classes) pack_max = fmaxf(pack_max, e[k]);
    }
    if (pack_max > st.m) {
      st.s = Rescaled(st, pack_max);
      st.m = pack_max;
    }
#pragma unroll
    for (int k = 0; k < kVec; ++k) {
      if (p * kVec + k < classes) {
        st.s += e[k] == -INFINITY ? 0.f : __expf(e[k] - st.m);
        st.sum_x += e[k];
      }
    }
  }
  st = BlockMerge(st);
  if (threadIdx.x == 0 && partials != nullptr) {  // a shard: its partial statistics (no valid column: lse -inf)
    const int64_t local_t = target[row] - vocab_start;
    partials[row] = st.m + logf(st.s);
    partials[n + row] = local_t >= 0 && local_t < classes ? ToFloat(xr[local_t]) : 0.f;
    partials[2 * n + row] = st.sum_x;
  } else if (threadIdx.x == 0) {
    const float row_lse = st.m + logf(st.s);
    lse[row] = row_lse;
    const int64_t t = target[row];
    float row_loss;
    if (t == ignore_index) {
      row_loss = 0.f;
    } else if (t < 0 || t >= classes) {
      row_loss = NAN;  // out-of-range target: surfaces in the loss (cross_entropy.h), never read out of bounds
    } else {
      const float x_t = ToFloat(xr[t]);
      row_loss = (1.f - smoothing) * (row_lse - x_t);
      // Only when smoothing: with a -inf logit the mean term is inf, and 0 * inf would make an unsmoothed loss NaN.
      if (smoothing > 0.f) row_loss += smoothing * (row_lse - st.sum_x / static_cast<float>(classes));
    }
    loss[row] = row_loss;
  }
}

// logits and grad may be the same buffer (in place): no __restrict__ on them.
template <typename T, int kVec>
__global__ void __launch_bounds__(kThreads)
    CrossEntropyBackwardKernel(const float* __restrict__ grad_loss, const T* logits,
                               const int64_t* __restrict__ target, const float* __restrict__ lse, T* grad,
                               int vocab, int classes, int64_t vocab_start, int64_t full_classes,
                               int64_t ignore_index, float smoothing) {
  const int64_t row = blockIdx.x;
  const T* xr = logits + row * vocab;
  T* gr = grad + row * vocab;
  const int packs = vocab / kVec;
  const int64_t t = target[row];
  float zeros[kVec];
#pragma unroll
  for (int k = 0; k < kVec; ++k) zeros[k] = 0.f;
  if (t == ignore_index) {
    for (int p = threadIdx.x; p < packs; p += kThreads) StorePack<T, kVec>(gr + p * kVec, zeros);
    return;
  }
  // An out-of-range target makes the row NaN (cross_entropy.h). classes: the shard's valid columns; full_classes:
  // K of the full vocabulary (equal for a whole vocabulary); local_t: the target's column in the shard, if any.
  const float g = (t < 0 || t >= full_classes) ? NAN : grad_loss[row];
  const int64_t local_t = t - vocab_start;
  const float row_lse = lse[row];
  const float on_target = g * (1.f - smoothing);
  const float uniform = g * smoothing / static_cast<float>(full_classes);
#pragma unroll 4
  for (int p = threadIdx.x; p < packs; p += kThreads) {
    if (p * kVec >= classes) {  // wholly padding: write zeros, skip the load
      StorePack<T, kVec>(gr + p * kVec, zeros);
      continue;
    }
    float e[kVec];
    LoadPack<T, kVec>(xr + p * kVec, e);
#pragma unroll
    for (int k = 0; k < kVec; ++k) {
      const int c = p * kVec + k;
      float v = g * __expf(e[k] - row_lse) - uniform;
      if (c == local_t) v -= on_target;
      e[k] = c < classes ? v : 0.f;
    }
    StorePack<T, kVec>(gr + p * kVec, e);
  }
}

using device::Aligned16;
template <typename T>
cudaError_t ForwardTyped(const CrossEntropyForwardArgs& a, const CrossEntropyParams& p, cudaStream_t stream) {
  constexpr int kVec = 16 / sizeof(T);
  const auto* logits = static_cast<const T*>(a.logits);
  const int vocab = static_cast<int>(a.vocab);
  const int classes = static_cast<int>(ShardValidColumns(p, a.shard, a.vocab));
  const auto smoothing = static_cast<float>(p.label_smoothing);
  const dim3 grid(static_cast<unsigned>(a.n));
  if (a.vocab % kVec == 0 && Aligned16(a.logits)) {
    CrossEntropyForwardKernel<T, kVec><<<grid, kThreads, 0, stream>>>(
        logits, a.target, a.loss, a.lse, a.partials, a.n, vocab, classes, a.shard.start, p.ignore_index, smoothing);
  } else {
    CrossEntropyForwardKernel<T, 1><<<grid, kThreads, 0, stream>>>(logits, a.target, a.loss, a.lse, a.partials, a.n,
                                                                   vocab, classes, a.shard.start, p.ignore_index,
                                                                   smoothing);
  }
  return cudaGetLastError();
}

template <typename T>
cudaError_t BackwardTyped(const CrossEntropyBackwardArgs& a, const CrossEntropyParams& p, cudaStream_t stream) {
  constexpr int kVec = 16 / sizeof(T);
  const auto* logits = static_cast<const T*>(a.logits);
  auto* grad = static_cast<T*>(a.grad_logits);
  const int vocab = static_cast<int>(a.vocab);
  const int classes = static_cast<int>(ShardValidColumns(p, a.shard, a.vocab));
  const int64_t full_classes = EffectiveValidVocab(p, a.shard.full_vocab);
  const auto smoothing = static_cast<float>(p.label_smoothing);
  const dim3 grid(static_cast<unsigned>(a.n));
  if (a.vocab % kVec == 0 && Aligned16(a.logits) && Aligned16(a.grad_logits)) {
    CrossEntropyBackwardKernel<T, kVec><<<grid, kThreads, 0, stream>>>(a.grad_loss, logits, a.target, a.lse, grad,
                                                                       vocab, classes, a.shard.start, full_classes,
                                                                       p.ignore_index, smoothing);
  } else {
    CrossEntropyBackwardKernel<T, 1><<<grid, kThreads, 0, stream>>>(a.grad_loss, logits, a.target, a.lse, grad,
                                                                    vocab, classes, a.shard.start, full_classes,
                                                                    p.ignore_index, smoothing);
  }
  return cudaGetLastError();
}

}  // namespace

cudaError_t LaunchCrossEntropyForward(const CrossEntropyForwardArgs& args, const CrossEntropyParams& params,
                                      cudaStream_t stream) {
  if (args.n == 0) return cudaSuccess;
  // A whole vocabulary writes loss and lse; only a shard's partials may come from a strict part of it.
  const bool whole = args.shard.start == 0 && args.shard.full_vocab == args.vocab;
  if (args.partials == nullptr && !whole) return cudaErrorInvalidValue;
  switch (args.dtype) {
    case CrossEntropyDtype::kFloat32:
      return ForwardTyped<float>(args, params, stream);
    case CrossEntropyDtype::kBFloat16:
      return ForwardTyped<__nv_bfloat16>(args, params, stream);
    case CrossEntropyDtype::kFloat16:
      return ForwardTyped<__half>(args, params, stream);
  }
  return cudaErrorInvalidValue;
}

cudaError_t LaunchCrossEntropyBackward(const CrossEntropyBackwardArgs& args, const CrossEntropyParams& params,
                                       cudaStream_t stream) {
  if (args.n == 0) return cudaSuccess;
  switch (args.dtype) {
    case CrossEntropyDtype::kFloat32:
      return BackwardTyped<float>(args, params, stream);
    case CrossEntropyDtype::kBFloat16:
      return BackwardTyped<__nv_bfloat16>(args, params, stream);
    case CrossEntropyDtype::kFloat16:
      return BackwardTyped<__half>(args, params, stream);
  }
  return cudaErrorInvalidValue;
}

}  // namespace megatron::fusions
