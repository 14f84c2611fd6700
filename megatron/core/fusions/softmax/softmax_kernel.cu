// CUDA scaled masked softmax, forward and backward, for sm_90 (semantics: softmax.h; launchers: softmax_kernel.h).
//
// Algorithm. Memory-bound (one exp per score), so each score is read once from DRAM per direction with 16-byte
// loads and every sum stays in float32. One "row group" owns one row of sk scores: a warp for sk <= 1024 (4 rows
// per 128-thread block, shuffles only), else 128 threads (4 warps merging through shared memory).
// Forward: each thread keeps an online softmax over its strided packs (running max m and s = sum exp(z - m),
// rescaled once per pack when the pack raises the max: kVec + 1 exps per pack, not 2 per element), the row
// group merges the (m, s) pairs, and writes exp(z - m) / s. Rows of up to 32 elements per thread (sk <= 1024 for a
// warp, <= 4096 for 128 threads) keep their scores in registers between the two passes (kCachePacks), issuing all
// of a thread's loads at once; longer rows re-read the row in the second pass (from L1/L2: at most 32 KB). Causal rows read only the packs up to the diagonal (j <= i, about half the matrix) and
// write zeros beyond it without reading, which is why the causal form moves fewer bytes than the others. The
// explicit mask is read as kVec-byte packs beside the scores (it is broadcast over heads, so mostly from L2).
// Backward: dx = scale * y * (dy - sum(dy * y)): one row sum, then the second pass from registers (or L1/L2 for
// long rows) again.
// Scalar path: kVec = 1 when sk is not a multiple of the pack or a base pointer is not 16-byte aligned.
// Measured: see benchmarks/RESULTS.md (softmax_benchmark on the H100).
#include <cuda_runtime.h>

#include <climits>
#include <cmath>
#include <cstdint>

#include "megatron/core/fusions/common/device_utils.cuh"
#include "megatron/core/fusions/softmax/softmax_kernel.h"

namespace megatron::fusions {
namespace {

using device::Aligned16;
using device::CeilDiv;
using device::FromFloat;
using device::LoadPack;
using device::Pack;
using device::StorePack;
using device::WarpSum;

// Rows up to this many keys get one warp: <= 32 floats per lane for bf16, where block-wide reductions would cost
// more than they save.
constexpr int64_t kMaxWarpRowKeys = 1024;
// Threads per block in both configurations: 4 warp-rows, or one 4-warp row (16384 bf16 keys = 16 packs a thread).
constexpr int kBlockThreads = 128;
// Floats of scores (or of dy and y each) a thread keeps in registers between the passes: 32 (4 bf16 or 8 fp32
// packs) fits the 255-register budget of a 128-thread block with the backward's two arrays.
constexpr int kCachedFloats = 32;

struct MaxSum {
  float m;  // running max (-inf: nothing seen yet)
  float s;  // sum of exp(z - m)
};

__device__ __forceinline__ float Rescale(const MaxSum& a, float m) {
  return a.m == -INFINITY ? 0.f : a.s * __expf(a.m - m);
}

__device__ __forceinline__ MaxSum Merge(const MaxSum& a, const MaxSum& b) {
  const float m = fmaxf(a.m, b.m);
  return {m, Rescale(a, m) + Rescale(b, m)};
}

__device__ __forceinline__ MaxSum WarpMerge(MaxSum v) {
#pragma unroll
  for (int offset = 16; offset > 0; offset /= 2) {
    v = Merge(v, MaxSum{__shfl_xor_sync(0xffffffffu, v.m, offset), __shfl_xor_sync(0xffffffffu, v.s, offset)});
  }
  return v;
}

// Merges over the row group (threadIdx.x in [0, kThreadsPerRow)); every thread gets the result. Block-wide groups
// have blockDim.y == 1, so the __syncthreads are uniform.
template <int kThreadsPerRow>
__device__ __forceinline__ MaxSum RowMerge(MaxSum v) {
  v = WarpMerge(v);
  if constexpr (kThreadsPerRow == 32) {
    return v;
  } else {
    constexpr int kWarps = kThreadsPerRow / 32;
    __shared__ MaxSum smem[kWarps];
    const int lane = threadIdx.x % 32;
    if (lane == 0) smem[threadIdx.x / 32] = v;
    __syncthreads();
    return WarpMerge(lane < kWarps ? smem[lane] : MaxSum{-INFINITY, 0.f});
  }
}

template <int kThreadsPerRow>
__device__ __forceinline__ float RowSum(float v) {
  v = WarpSum(v);
  if constexpr (kThreadsPerRow == 32) {
    return v;
  } else {
    constexpr int kWarps = kThreadsPerRow / 32;
    __shared__ float smem[kWarps];
    const int lane = threadIdx.x % 32;
    if (lane == 0) smem[threadIdx.x / 32] = v;
    __syncthreads();
    return WarpSum(lane < kWarps ? smem[lane] : 0.f);
  }
}

// Scores of one pack after scale and mask; excluded (causal, beyond the diagonal) columns get -inf.
template <typename T, int kVec, SoftmaxMask kMask>
__device__ __forceinline__ void LoadScores(const T* xr, const uint8_t* mr, int p, int valid, float scale,
                                           float (&z)[kVec]) {
  LoadPack<T, kVec>(xr + p * kVec, z);
  uint8_t masked[kVec] = {};
  if constexpr (kMask == SoftmaxMask::kExplicit) {
    const Pack<uint8_t, kVec> mp = *reinterpret_cast<const Pack<uint8_t, kVec>*>(mr + p * kVec);
#pragma unroll
    for (int k = 0; k < kVec; ++k) masked[k] = mp.v[k];
  }
#pragma unroll
  for (int k = 0; k < kVec; ++k) {
    z[k] *= scale;
    if constexpr (kMask == SoftmaxMask::kExplicit) {
      if (masked[k]) z[k] = kMaskedScore;
    }
    if constexpr (kMask == SoftmaxMask::kCausal) {
      if (p * kVec + k >= valid) z[k] = -INFINITY;
    }
  }
}

// kCache > 0: the row has at most kCache packs per thread and they stay in registers (see the header).
template <typename T, int kVec, int kThreadsPerRow, SoftmaxMask kMask, int kCache>
__global__ void __launch_bounds__(kBlockThreads)
    SoftmaxForwardKernel(const T* __restrict__ x, const uint8_t* __restrict__ mask, T* __restrict__ y,
                         int64_t rows, int sq, int sk, int64_t heads, int64_t mask_batches, float scale) {
  const int64_t row = static_cast<int64_t>(blockIdx.x) * blockDim.y + threadIdx.y;
  if (row >= rows) return;  // whole row groups only (block-wide groups have exactly `rows` blocks)
  const T* xr = x + row * sk;
  T* yr = y + row * sk;
  const uint8_t* mr = nullptr;
  if constexpr (kMask == SoftmaxMask::kExplicit) {
    const int64_t batch = row / (heads * sq);
    mr = mask + ((mask_batches == 1 ? 0 : batch) * sq + row % sq) * sk;
  }
  const int valid = kMask == SoftmaxMask::kCausal ? static_cast<int>(row % sq) + 1 : sk;
  const int valid_packs = (valid + kVec - 1) / kVec;
  const int packs = sk / kVec;

  MaxSum st{-INFINITY, 0.f};
  // Folds one pack into the running state; every valid pack has column p * kVec < valid, so m stays finite.
  auto fold = [&st](const float (&z)[kVec]) {
    float pm = z[0];
#pragma unroll
    for (int k = 1; k < kVec; ++k) pm = fmaxf(pm, z[k]);
    const float m = fmaxf(st.m, pm);
    float s = Rescale(st, m);
#pragma unroll
    for (int k = 0; k < kVec; ++k) s += __expf(z[k] - m);  // exp(-inf) = 0 for excluded columns
    st = {m, s};
  };
  if constexpr (kCache > 0) {
    float z[kCache][kVec];
#pragma unroll
    for (int c = 0; c < kCache; ++c) {
      const int p = threadIdx.x + c * kThreadsPerRow;
      if (p < valid_packs) LoadScores<T, kVec, kMask>(xr, mr, p, valid, scale, z[c]);
    }
#pragma unroll
    for (int c = 0; c < kCache; ++c) {
      if (threadIdx.x + c * kThreadsPerRow < valid_packs) fold(z[c]);
    }
    st = RowMerge<kThreadsPerRow>(st);
    const float inv_sum = 1.f / st.s;
#pragma unroll
    for (int c = 0; c < kCache; ++c) {
      const int p = threadIdx.x + c * kThreadsPerRow;
      if (p >= packs) break;
      float out[kVec];
#pragma unroll
      for (int k = 0; k < kVec; ++k) out[k] = p < valid_packs ? __expf(z[c][k] - st.m) * inv_sum : 0.f;
      StorePack<T, kVec>(yr + p * kVec, out);
    }
    return;
  }
  for (int p = threadIdx.x; p < valid_packs; p += kThreadsPerRow) {
    float z[kVec];
    LoadScores<T, kVec, kMask>(xr, mr, p, valid, scale, z);
    fold(z);
  }
  st = RowMerge<kThreadsPerRow>(st);
  const float inv_sum = 1.f / st.s;
  for (int p = threadIdx.x; p < packs; p += kThreadsPerRow) {
    float out[kVec];
    if (p < valid_packs) {
      LoadScores<T, kVec, kMask>(xr, mr, p, valid, scale, out);
#pragma unroll
      for (int k = 0; k < kVec; ++k) out[k] = __expf(out[k] - st.m) * inv_sum;
    } else {
#pragma unroll
      for (int k = 0; k < kVec; ++k) out[k] = 0.f;
    }
    StorePack<T, kVec>(yr + p * kVec, out);
  }
}

template <typename T, int kVec, int kThreadsPerRow, bool kCausal, int kCache>
__global__ void __launch_bounds__(kBlockThreads)
    SoftmaxBackwardKernel(const T* __restrict__ dy, const T* __restrict__ y, T* __restrict__ dx, int64_t rows,
                          int sq, int sk, float scale) {
  const int64_t row = static_cast<int64_t>(blockIdx.x) * blockDim.y + threadIdx.y;
  if (row >= rows) return;
  const T* dyr = dy + row * sk;
  const T* yr = y + row * sk;
  T* dxr = dx + row * sk;
  // Causal: y is 0 beyond the diagonal, so dx is too; those packs are written without being read.
  const int valid_packs = kCausal ? (static_cast<int>(row % sq) + kVec) / kVec : sk / kVec;
  const int packs = sk / kVec;
  float dot = 0.f;
  if constexpr (kCache > 0) {
    float a[kCache][kVec];
    float b[kCache][kVec];
#pragma unroll
    for (int c = 0; c < kCache; ++c) {
      const int p = threadIdx.x + c * kThreadsPerRow;
      if (p < valid_packs) {
        LoadPack<T, kVec>(dyr + p * kVec, a[c]);
        LoadPack<T, kVec>(yr + p * kVec, b[c]);
      }
    }
#pragma unroll
    for (int c = 0; c < kCache; ++c) {
      if (threadIdx.x + c * kThreadsPerRow < valid_packs) {
#pragma unroll
        for (int k = 0; k < kVec; ++k) dot += a[c][k] * b[c][k];
      }
    }
    dot = RowSum<kThreadsPerRow>(dot);
#pragma unroll
    for (int c = 0; c < kCache; ++c) {
      const int p = threadIdx.x + c * kThreadsPerRow;
      if (p >= packs) break;
      float out[kVec];
#pragma unroll
      for (int k = 0; k < kVec; ++k) out[k] = p < valid_packs ? scale * b[c][k] * (a[c][k] - dot) : 0.f;
      StorePack<T, kVec>(dxr + p * kVec, out);
    }
    return;
  }
  for (int p = threadIdx.x; p < valid_packs; p += kThreadsPerRow) {
    float a[kVec];
    float b[kVec];
    LoadPack<T, kVec>(dyr + p * kVec, a);
    LoadPack<T, kVec>(yr + p * kVec, b);
#pragma unroll
    for (int k = 0; k < kVec; ++k) dot += a[k] * b[k];
  }
  dot = RowSum<kThreadsPerRow>(dot);
  for (int p = threadIdx.x; p < packs; p += kThreadsPerRow) {
    float out[kVec];
    if (p < valid_packs) {
      float b[kVec];
      LoadPack<T, kVec>(dyr + p * kVec, out);
      LoadPack<T, kVec>(yr + p * kVec, b);
#pragma unroll
      for (int k = 0; k < kVec; ++k) out[k] = scale * b[k] * (out[k] - dot);
    } else {
#pragma unroll
      for (int k = 0; k < kVec; ++k) out[k] = 0.f;
    }
    StorePack<T, kVec>(dxr + p * kVec, out);
  }
}

template <int kThreadsPerRow>
dim3 Grid(int64_t rows) {
  return dim3(static_cast<unsigned>(CeilDiv(rows, kBlockThreads / kThreadsPerRow)));
}

template <int kThreadsPerRow>
dim3 Block() {
  return dim3(kThreadsPerRow, kBlockThreads / kThreadsPerRow);
}

template <typename T, int kVec, int kThreadsPerRow, int kCache>
cudaError_t ForwardConfig(const SoftmaxForwardArgs& a, const SoftmaxParams& p, cudaStream_t stream) {
  const auto* x = static_cast<const T*>(a.x);
  auto* y = static_cast<T*>(a.y);
  const int sq = static_cast<int>(a.sq);
  const int sk = static_cast<int>(a.sk);
  const dim3 grid = Grid<kThreadsPerRow>(a.rows);
  const dim3 block = Block<kThreadsPerRow>();
  switch (p.mask) {
    case SoftmaxMask::kCausal:
      SoftmaxForwardKernel<T, kVec, kThreadsPerRow, SoftmaxMask::kCausal, kCache>
          <<<grid, block, 0, stream>>>(x, nullptr, y, a.rows, sq, sk, a.heads, a.mask_batches, p.scale);
      break;
    case SoftmaxMask::kExplicit:
      SoftmaxForwardKernel<T, kVec, kThreadsPerRow, SoftmaxMask::kExplicit, kCache>
          <<<grid, block, 0, stream>>>(x, a.mask, y, a.rows, sq, sk, a.heads, a.mask_batches, p.scale);
      break;
    case SoftmaxMask::kNone:
      SoftmaxForwardKernel<T, kVec, kThreadsPerRow, SoftmaxMask::kNone, kCache>
          <<<grid, block, 0, stream>>>(x, nullptr, y, a.rows, sq, sk, a.heads, a.mask_batches, p.scale);
      break;
  }
  return cudaGetLastError();
}

template <typename T, int kVec, int kThreadsPerRow, int kCache>
cudaError_t BackwardConfig(const SoftmaxBackwardArgs& a, const SoftmaxParams& p, cudaStream_t stream) {
  const auto* dy = static_cast<const T*>(a.dy);
  const auto* y = static_cast<const T*>(a.y);
  auto* dx = static_cast<T*>(a.dx);
  const int sq = static_cast<int>(a.sq);
  const int sk = static_cast<int>(a.sk);
  if (p.mask == SoftmaxMask::kCausal) {
    SoftmaxBackwardKernel<T, kVec, kThreadsPerRow, true, kCache>
        <<<Grid<kThreadsPerRow>(a.rows), Block<kThreadsPerRow>(), 0, stream>>>(dy, y, dx, a.rows, sq, sk, p.scale);
  } else {
    SoftmaxBackwardKernel<T, kVec, kThreadsPerRow, false, kCache>
        <<<Grid<kThreadsPerRow>(a.rows), Block<kThreadsPerRow>(), 0, stream>>>(dy, y, dx, a.rows, sq, sk, p.scale);
  }
  return cudaGetLastError();
}

template <typename T>
cudaError_t ForwardTyped(const SoftmaxForwardArgs& a, const SoftmaxParams& p, cudaStream_t stream) {
  constexpr int kVec = device::kPack16<T>;
  const bool packed = a.sk % kVec == 0 && Aligned16(a.x) && Aligned16(a.y) &&
                      (p.mask != SoftmaxMask::kExplicit || Aligned16(a.mask));
  const bool warp = a.sk <= kMaxWarpRowKeys;
  if (packed) {
    constexpr int kCache = kCachedFloats / kVec;
    if (warp) return ForwardConfig<T, kVec, 32, kCache>(a, p, stream);  // sk <= 1024 always fits
    return a.sk <= int64_t{128} * kCachedFloats ? ForwardConfig<T, kVec, 128, kCache>(a, p, stream)
                                                : ForwardConfig<T, kVec, 128, 0>(a, p, stream);
  }
  return warp ? ForwardConfig<T, 1, 32, 0>(a, p, stream) : ForwardConfig<T, 1, 128, 0>(a, p, stream);
}

template <typename T>
cudaError_t BackwardTyped(const SoftmaxBackwardArgs& a, const SoftmaxParams& p, cudaStream_t stream) {
  constexpr int kVec = device::kPack16<T>;
  const bool packed = a.sk % kVec == 0 && Aligned16(a.dy) && Aligned16(a.y) && Aligned16(a.dx);
  const bool warp = a.sk <= kMaxWarpRowKeys;
  if (packed) {
    constexpr int kCache = kCachedFloats / kVec;
    if (warp) return BackwardConfig<T, kVec, 32, kCache>(a, p, stream);
    return a.sk <= int64_t{128} * kCachedFloats ? BackwardConfig<T, kVec, 128, kCache>(a, p, stream)
                                                : BackwardConfig<T, kVec, 128, 0>(a, p, stream);
  }
  return warp ? BackwardConfig<T, 1, 32, 0>(a, p, stream) : BackwardConfig<T, 1, 128, 0>(a, p, stream);
}

bool BadShape(int64_t rows, int64_t sq, int64_t sk) {
  return rows < 0 || sk < 1 || sk > INT_MAX || sq < 1 || sq > INT_MAX ||
         CeilDiv(rows, kBlockThreads / 32) > INT_MAX;
}

}  // namespace

cudaError_t LaunchSoftmaxForward(const SoftmaxForwardArgs& args, const SoftmaxParams& params, cudaStream_t stream) {
  if (BadShape(args.rows, args.sq, args.sk)) return cudaErrorInvalidValue;
  if (args.rows == 0) return cudaSuccess;
  switch (args.dtype) {
    case SoftmaxDtype::kFloat32:
      return ForwardTyped<float>(args, params, stream);
    case SoftmaxDtype::kBFloat16:
      return ForwardTyped<__nv_bfloat16>(args, params, stream);
    case SoftmaxDtype::kFloat16:
      return ForwardTyped<__half>(args, params, stream);
  }
  return cudaErrorInvalidValue;
}

cudaError_t LaunchSoftmaxBackward(const SoftmaxBackwardArgs& args, const SoftmaxParams& params,
                                  cudaStream_t stream) {
  if (BadShape(args.rows, args.sq, args.sk)) return cudaErrorInvalidValue;
  if (args.rows == 0) return cudaSuccess;
  switch (args.dtype) {
    case SoftmaxDtype::kFloat32:
      return BackwardTyped<float>(args, params, stream);
    case SoftmaxDtype::kBFloat16:
      return BackwardTyped<__nv_bfloat16>(args, params, stream);
    case SoftmaxDtype::kFloat16:
      return BackwardTyped<__half>(args, params, stream);
  }
  return cudaErrorInvalidValue;
}

}  // namespace megatron::fusions
