// CUDA LayerNorm / RMSNorm forward and backward for sm_90 (semantics: norm.h; launchers: norm_kernel.h).
//
// Algorithm. Both directions are memory-bound (a few FLOPs per byte), so the design goal is to read and write
// each element of x, y, dy and dx once from DRAM, with wide loads, and keep every sum in float32.
//
// Forward: one "row group" of threads owns one row. Rows of hidden <= 1024 get one warp (4 warps, i.e. 4 rows, per
// 128-thread block): the row's sums are warp shuffles, no shared memory or __syncthreads. Wider rows get a 256-
// thread block per row: 8 warps reduce by shuffle, then through 8 shared-memory slots. LayerNorm is two-pass
// (mean first, then sum of (x - mean)^2): the one-pass E[x^2] - E[x]^2 cancels catastrophically when |mean| >> std,
// which activations with large offsets do have. Each pass re-reads the row from global memory; a row is at most
// a few tens of KB, so the re-reads hit L1/L2 and DRAM sees x once (the first version; caching the row in
// registers/shared memory is the next step if the benchmark shows L1 throughput limiting).
//
// Residual add + norm: with a residual, the forward's first pass over the row reads x and residual, forms
// h = x + residual rounded to T (the unfused add's value, so the backward and the caller see the same h), writes
// h, and accumulates the statistics of the rounded h; the later passes read h back instead of x (the same thread
// wrote those very packs, so no synchronisation) and write y. DRAM traffic is read x and residual, write h and y:
// 4 tensors instead of the unfused 6 (add: 3; norm: 2 + its statistics' re-read of x from L2 or DRAM). The
// backward's dx kernel adds the incoming dh (the gradient of h from its other users) before its one rounding, so
// dx_total = dresidual is written once instead of the norm's dx plus a separate add (3 tensors more).
//
// Backward: dx needs two row sums, sum(dxhat) and sum(dxhat * xhat) (dxhat = dy * gamma, xhat = normalised x),
// computed per row like the forward's statistics from the saved mean/rstd (no recomputation of the statistics),
// then a second pass writes dx. dgamma = sum_rows(dy * xhat) and dbeta = sum_rows(dy) are column sums over all
// rows: a second kernel tiles the [rows, hidden] matrix into 32-column x row-chunk blocks and writes one float32
// partial per (chunk, column), and a third sums the partials over chunks into gamma's dtype. Splitting the rows
// into chunks gives enough blocks to fill the GPU when hidden is small; summing the partials in a fixed order keeps
// the result deterministic (no atomics). This re-reads dy and x (from L2 when the tensors fit, else DRAM) — fusing
// the column partials into the dx kernel is the known next optimisation.
//
// Vectorisation: x, y, dy and dx are accessed as 16-byte packs (8 bf16/fp16 or 4 fp32) when hidden is a multiple
// of the pack and every one of those base pointers is 16-byte aligned (then every row starts aligned). Otherwise
// the same kernels are instantiated with 1-element packs (the scalar path; odd hidden sizes such as 7 or 4097).
// gamma and beta are read element by element (they are [hidden] and L1-resident after the first row).
//
// Measured (H100 80GB HBM3, 2026-11-22, norm_benchmark; bf16, float32 statistics; "of D2D" is effective bandwidth
// over a cudaMemcpyAsync moving the same bytes, ~2.55 TB/s at these sizes; ATen eager 2.11 alongside):
//   16384 x 4096  RMSNorm fwd 102 us (93% of D2D; ATen 140 us)   bwd 285 us (49%; ATen 322 us)
//                 LayerNorm fwd 125 us (76%; ATen 127 us)         bwd 310 us (45%; ATen 334 us)
//    4096 x 1024  RMSNorm fwd 15.3 us (ATen 18.7)  bwd 32.7 us (ATen 36.5)
//                 LayerNorm fwd 21.7 us (ATen 20.1)  bwd 31.8 us (ATen 35.5)
// The backward's gap to D2D is the column kernel's second read of dy and x (5 tensor-sized transfers instead of
// 3); the LayerNorm forward's gap to RMSNorm is its third pass over the row (L1/L2 re-reads).
// Residual add + norm (H100, 2026-11-22, norm_benchmark add_norm/ rows, bf16 16384x4096): RMSNorm fwd 193 us (96% of
// copy) vs 238 us for at::add + our norm and 267 us with ATen's norm; bwd 330 vs 428 vs 463 us; LayerNorm fwd 207 us
// (89%), bwd 348 us. The gain is the tensor transfers of the separate add (benchmarks/RESULTS.md).
#include <cuda_runtime.h>

#include <algorithm>
#include <climits>
#include <cstdint>

#include "megatron/core/fusions/common/device_utils.cuh"
#include "megatron/core/fusions/norm/norm_kernel.h"

namespace megatron::fusions {
namespace {

// Rows up to this width get one warp each: at most 32 elements per lane (4 bf16 16-byte packs), where a block-wide
// reduction's __syncthreads would cost more than the arithmetic.
constexpr int64_t kMaxWarpRowHidden = 1024;
// Warps (rows) per block in the warp-per-row configuration: 128-thread blocks are small enough that a few thousand
// rows already fill 132 SMs, large enough to amortise block scheduling.
constexpr int kWarpRowsPerBlock = 4;
// Threads per row for wider rows: 4096 bf16 = 512 packs = 2 per thread; 8 warps keep enough loads in flight per
// SM (with several resident blocks) and the cross-warp reduction short.
constexpr int kBlockRowThreads = 256;
// Column-sum kernel tile: 32 columns (one warp reads 32 consecutive elements of a row) x 8 row lanes = 256 threads.
constexpr int kColTile = 32;
constexpr int kColRowLanes = 8;
// Blocks per SM the column-sum grid aims for: 8 x 256 threads = 2048, the SM's resident thread limit.
constexpr int kColBlocksPerSm = 8;
// Threads per block of the partial-sum finaliser: one column each, a plain coalesced reduction.
constexpr int kFinalizeThreads = 256;
// gridDim.y limit.
constexpr int64_t kMaxGridY = 65535;

using device::FromFloat;
using device::LoadPack;
using device::StorePack;
using device::ToFloat;
using device::WarpSum;

// Sums (a, b) over the threads of a row group (threadIdx.x in [0, kThreadsPerRow)); every thread gets the total.
// Block-wide groups use one blockDim.y == 1, so __syncthreads is uniform.
template <int kThreadsPerRow>
__device__ __forceinline__ float2 RowSum2(float2 v, float2* smem) {
  v.x = WarpSum(v.x);
  v.y = WarpSum(v.y);
  if constexpr (kThreadsPerRow == 32) {
    return v;
  } else {
    constexpr int kWarps = kThreadsPerRow / 32;
    const int warp = threadIdx.x / 32;
    const int lane = threadIdx.x % 32;
    __syncthreads();  // the previous call's readers are done with smem
    if (lane == 0) smem[warp] = v;
    __syncthreads();
    float2 t = lane < kWarps ? smem[lane] : make_float2(0.f, 0.f);
    t.x = WarpSum(t.x);
    t.y = WarpSum(t.y);
    return t;
  }
}

template <int kThreadsPerRow>
constexpr int BlockThreads() {
  return kThreadsPerRow == 32 ? 32 * kWarpRowsPerBlock : kThreadsPerRow;
}

template <typename T, typename W, int kVec, int kThreadsPerRow, bool kLayerNorm>
__global__ void __launch_bounds__(BlockThreads<kThreadsPerRow>())
    NormForwardKernel(const T* __restrict__ x, const T* __restrict__ residual, const W* __restrict__ gamma,
                      const W* __restrict__ beta, T* __restrict__ y, T* h, float* __restrict__ mean_out,
                      float* __restrict__ rstd_out, int64_t rows, int hidden, float eps, float gamma_offset) {
  __shared__ float2 smem[kThreadsPerRow / 32];
  const int64_t row = static_cast<int64_t>(blockIdx.x) * blockDim.y + threadIdx.y;
  if (row >= rows) return;  // whole row groups only: a block-per-row grid has exactly `rows` blocks
  const T* xr = x + row * hidden;
  T* yr = y + row * hidden;
  const int packs = hidden / kVec;  // the launcher guarantees kVec divides hidden
  const float inv_hidden = 1.f / static_cast<float>(hidden);
  // Residual add + norm: the first pass forms and stores h (see the top comment); the later passes read it back.
  // `residual` is uniform over the grid, so these branches never diverge.
  const T* rr = residual != nullptr ? residual + row * hidden : nullptr;
  T* hr = residual != nullptr ? h + row * hidden : nullptr;
  auto load_first = [&](int p, float (&e)[kVec]) {
    LoadPack<T, kVec>(xr + p * kVec, e);
    if (rr != nullptr) {
      float r[kVec];
      LoadPack<T, kVec>(rr + p * kVec, r);
#pragma unroll
      for (int k = 0; k < kVec; ++k) e[k] = ToFloat(FromFloat<T>(e[k] + r[k]));
      StorePack<T, kVec>(hr + p * kVec, e);  // exact: e already holds values of T
    }
  };
  const T* src = rr != nullptr ? hr : xr;  // what the passes after the first read

  float mean = 0.f;
  if constexpr (kLayerNorm) {
    float sum = 0.f;
    for (int p = threadIdx.x; p < packs; p += kThreadsPerRow) {
      float e[kVec];
      load_first(p, e);
#pragma unroll
      for (int k = 0; k < kVec; ++k) sum += e[k];
    }
    mean = RowSum2<kThreadsPerRow>(make_float2(sum, 0.f), smem).x * inv_hidden;
  }
  float sum_sq = 0.f;
  for (int p = threadIdx.x; p < packs; p += kThreadsPerRow) {
    float e[kVec];
    if constexpr (kLayerNorm) {
      LoadPack<T, kVec>(src + p * kVec, e);
    } else {
      load_first(p, e);
    }
#pragma unroll
    for (int k = 0; k < kVec; ++k) {
      const float d = e[k] - mean;
      sum_sq += d * d;
    }
  }
  const float rstd = rsqrtf(RowSum2<kThreadsPerRow>(make_float2(sum_sq, 0.f), smem).x * inv_hidden + eps);
  if (threadIdx.x == 0) {
    if constexpr (kLayerNorm) mean_out[row] = mean;
    rstd_out[row] = rstd;
  }
  for (int p = threadIdx.x; p < packs; p += kThreadsPerRow) {
    float e[kVec];
    LoadPack<T, kVec>(src + p * kVec, e);
#pragma unroll
    for (int k = 0; k < kVec; ++k) {
      const int c = p * kVec + k;
      float v = (e[k] - mean) * rstd * (ToFloat(gamma[c]) + gamma_offset);
      if constexpr (kLayerNorm) {
        if (beta != nullptr) v += ToFloat(beta[c]);
      }
      e[k] = v;
    }
    StorePack<T, kVec>(yr + p * kVec, e);
  }
}

template <typename T, typename W, int kVec, int kThreadsPerRow, bool kLayerNorm>
__global__ void __launch_bounds__(BlockThreads<kThreadsPerRow>())
    NormBackwardDxKernel(const T* __restrict__ dy, const T* __restrict__ dh, const T* __restrict__ x,
                         const W* __restrict__ gamma, const float* __restrict__ mean,
                         const float* __restrict__ rstd, T* __restrict__ dx, int64_t rows, int hidden,
                         float gamma_offset) {
  __shared__ float2 smem[kThreadsPerRow / 32];
  const int64_t row = static_cast<int64_t>(blockIdx.x) * blockDim.y + threadIdx.y;
  if (row >= rows) return;
  const T* xr = x + row * hidden;
  const T* dyr = dy + row * hidden;
  T* dxr = dx + row * hidden;
  const int packs = hidden / kVec;
  const float inv_hidden = 1.f / static_cast<float>(hidden);
  const float mu = kLayerNorm ? mean[row] : 0.f;
  const float r = rstd[row];

  float sum_dxhat = 0.f;
  float sum_dxhat_xhat = 0.f;
  for (int p = threadIdx.x; p < packs; p += kThreadsPerRow) {
    float xe[kVec];
    float de[kVec];
    LoadPack<T, kVec>(xr + p * kVec, xe);
    LoadPack<T, kVec>(dyr + p * kVec, de);
#pragma unroll
    for (int k = 0; k < kVec; ++k) {
      // __fmul_rn: never contracted into an FMA with the sum below, so both passes see the same rounded dxhat
      // (otherwise dx = rstd * (dxhat - mean(dxhat) ...) keeps a rounding residue, amplified by rstd, where it
      // should cancel exactly, e.g. LayerNorm with hidden 1).
      const float dxhat = __fmul_rn(de[k], ToFloat(gamma[p * kVec + k]) + gamma_offset);
      sum_dxhat += dxhat;
      sum_dxhat_xhat += dxhat * ((xe[k] - mu) * r);
    }
  }
  const float2 sums = RowSum2<kThreadsPerRow>(make_float2(sum_dxhat, sum_dxhat_xhat), smem);
  const float mean_dxhat = kLayerNorm ? sums.x * inv_hidden : 0.f;
  const float mean_dxhat_xhat = sums.y * inv_hidden;
  const T* dhr = dh != nullptr ? dh + row * hidden : nullptr;  // uniform over the grid
  for (int p = threadIdx.x; p < packs; p += kThreadsPerRow) {
    float xe[kVec];
    float de[kVec];
    float he[kVec];
    LoadPack<T, kVec>(xr + p * kVec, xe);
    LoadPack<T, kVec>(dyr + p * kVec, de);
    if (dhr != nullptr) {
      LoadPack<T, kVec>(dhr + p * kVec, he);
    } else {
#pragma unroll
      for (int k = 0; k < kVec; ++k) he[k] = 0.f;
    }
#pragma unroll
    for (int k = 0; k < kVec; ++k) {
      const float dxhat = __fmul_rn(de[k], ToFloat(gamma[p * kVec + k]) + gamma_offset);
      const float xhat = (xe[k] - mu) * r;
      xe[k] = r * (dxhat - mean_dxhat - xhat * mean_dxhat_xhat) + he[k];
    }
    StorePack<T, kVec>(dxr + p * kVec, xe);
  }
}

// Column partial sums of dy * xhat (and dy) over one chunk of rows: block (kColTile, kColRowLanes), grid
// (ceil(hidden / kColTile), chunks). Writes partial_g[chunk * hidden + col] (and partial_b).
template <typename T, bool kLayerNorm>
__global__ void __launch_bounds__(kColTile* kColRowLanes)
    NormBackwardColumnPartialKernel(const T* __restrict__ dy, const T* __restrict__ x,
                                    const float* __restrict__ mean, const float* __restrict__ rstd,
                                    float* __restrict__ partial_g, float* __restrict__ partial_b, int64_t rows,
                                    int hidden, int64_t rows_per_chunk) {
  // +1 column of padding: the final read walks down a column, which would otherwise hit one bank 8 times.
  __shared__ float sg[kColRowLanes][kColTile + 1];
  __shared__ float sb[kColRowLanes][kColTile + 1];
  const int col = blockIdx.x * kColTile + threadIdx.x;
  const int64_t row_begin = static_cast<int64_t>(blockIdx.y) * rows_per_chunk;
  const int64_t row_end = row_begin + rows_per_chunk < rows ? row_begin + rows_per_chunk : rows;
  float g = 0.f;
  float b = 0.f;
  if (col < hidden) {
    for (int64_t row = row_begin + threadIdx.y; row < row_end; row += kColRowLanes) {
      const float d = ToFloat(dy[row * hidden + col]);
      const float mu = kLayerNorm ? mean[row] : 0.f;
      g += d * ((ToFloat(x[row * hidden + col]) - mu) * rstd[row]);
      b += d;
    }
  }
  sg[threadIdx.y][threadIdx.x] = g;
  sb[threadIdx.y][threadIdx.x] = b;
  __syncthreads();
  if (threadIdx.y == 0 && col < hidden) {
    for (int lane = 1; lane < kColRowLanes; ++lane) {
      g += sg[lane][threadIdx.x];
      b += sb[lane][threadIdx.x];
    }
    partial_g[static_cast<int64_t>(blockIdx.y) * hidden + col] = g;
    if constexpr (kLayerNorm) partial_b[static_cast<int64_t>(blockIdx.y) * hidden + col] = b;
  }
}

// Sums the per-chunk partials in chunk order (deterministic) and converts to gamma's dtype.
template <typename W>
__global__ void __launch_bounds__(kFinalizeThreads)
    NormBackwardFinalizeKernel(const float* __restrict__ partial_g, const float* __restrict__ partial_b,
                               W* __restrict__ dgamma, W* __restrict__ dbeta, int chunks, int hidden) {
  const int col = blockIdx.x * kFinalizeThreads + threadIdx.x;
  if (col >= hidden) return;
  float g = 0.f;
  float b = 0.f;
  for (int c = 0; c < chunks; ++c) {
    g += partial_g[static_cast<int64_t>(c) * hidden + col];
    if (dbeta != nullptr) b += partial_b[static_cast<int64_t>(c) * hidden + col];
  }
  dgamma[col] = FromFloat<W>(g);
  if (dbeta != nullptr) dbeta[col] = FromFloat<W>(b);
}

using device::Aligned16;
using device::CeilDiv;

struct ColumnGrid {
  int col_blocks;
  int chunks;
  int64_t rows_per_chunk;
};

ColumnGrid MakeColumnGrid(int64_t rows, int64_t hidden, int num_sms) {
  ColumnGrid grid;
  grid.col_blocks = static_cast<int>(CeilDiv(hidden, kColTile));
  const int64_t target_blocks = static_cast<int64_t>(std::max(num_sms, 1)) * kColBlocksPerSm;
  int64_t chunks = CeilDiv(target_blocks, grid.col_blocks);
  // At least kColRowLanes rows per chunk, so no row lane of a block idles for lack of rows.
  chunks = std::min(chunks, std::max<int64_t>(1, CeilDiv(rows, kColRowLanes)));
  chunks = std::min(chunks, kMaxGridY);
  grid.chunks = static_cast<int>(chunks);
  grid.rows_per_chunk = std::max<int64_t>(1, CeilDiv(rows, chunks));
  return grid;
}

template <int kThreadsPerRow>
dim3 RowGrid(int64_t rows) {
  constexpr int rows_per_block = kThreadsPerRow == 32 ? kWarpRowsPerBlock : 1;
  return dim3(static_cast<unsigned>(CeilDiv(rows, rows_per_block)));
}

template <int kThreadsPerRow>
dim3 RowBlock() {
  return kThreadsPerRow == 32 ? dim3(32, kWarpRowsPerBlock) : dim3(kThreadsPerRow, 1);
}

template <typename T, typename W, int kVec, int kThreadsPerRow>
cudaError_t LaunchForwardConfig(const NormForwardArgs& a, const NormParams& p, cudaStream_t stream) {
  const float gamma_offset = p.zero_centered_gamma ? 1.f : 0.f;
  const int hidden = static_cast<int>(a.hidden);
  const auto* x = static_cast<const T*>(a.x);
  const auto* residual = static_cast<const T*>(a.residual);
  const auto* gamma = static_cast<const W*>(a.gamma);
  const auto* beta = static_cast<const W*>(a.beta);
  auto* y = static_cast<T*>(a.y);
  auto* h = static_cast<T*>(a.h);
  if (p.kind == NormKind::kLayerNorm) {
    NormForwardKernel<T, W, kVec, kThreadsPerRow, true><<<RowGrid<kThreadsPerRow>(a.rows), RowBlock<kThreadsPerRow>(),
                                                          0, stream>>>(x, residual, gamma, beta, y, h, a.mean,
                                                                       a.rstd, a.rows, hidden,
                                                                       static_cast<float>(p.eps), gamma_offset);
  } else {
    NormForwardKernel<T, W, kVec, kThreadsPerRow, false><<<RowGrid<kThreadsPerRow>(a.rows),
                                                           RowBlock<kThreadsPerRow>(), 0, stream>>>(
        x, residual, gamma, nullptr, y, h, nullptr, a.rstd, a.rows, hidden, static_cast<float>(p.eps),
        gamma_offset);
  }
  return cudaGetLastError();
}

template <typename T, typename W, int kVec, int kThreadsPerRow>
cudaError_t LaunchBackwardDxConfig(const NormBackwardArgs& a, const NormParams& p, cudaStream_t stream) {
  const float gamma_offset = p.zero_centered_gamma ? 1.f : 0.f;
  const int hidden = static_cast<int>(a.hidden);
  const auto* dy = static_cast<const T*>(a.dy);
  const auto* dh = static_cast<const T*>(a.dh);
  const auto* x = static_cast<const T*>(a.x);
  const auto* gamma = static_cast<const W*>(a.gamma);
  auto* dx = static_cast<T*>(a.dx);
  if (p.kind == NormKind::kLayerNorm) {
    NormBackwardDxKernel<T, W, kVec, kThreadsPerRow, true><<<RowGrid<kThreadsPerRow>(a.rows),
                                                             RowBlock<kThreadsPerRow>(), 0, stream>>>(
        dy, dh, x, gamma, a.mean, a.rstd, dx, a.rows, hidden, gamma_offset);
  } else {
    NormBackwardDxKernel<T, W, kVec, kThreadsPerRow, false><<<RowGrid<kThreadsPerRow>(a.rows),
                                                              RowBlock<kThreadsPerRow>(), 0, stream>>>(
        dy, dh, x, gamma, nullptr, a.rstd, dx, a.rows, hidden, gamma_offset);
  }
  return cudaGetLastError();
}

template <typename T, typename W>
cudaError_t ForwardTyped(const NormForwardArgs& a, const NormParams& p, cudaStream_t stream) {
  constexpr int kVec = 16 / sizeof(T);
  const bool vectorised = a.hidden % kVec == 0 && Aligned16(a.x) && Aligned16(a.y) &&
                          (a.residual == nullptr || (Aligned16(a.residual) && Aligned16(a.h)));
  const bool warp_rows = a.hidden <= kMaxWarpRowHidden;
  if (vectorised) {
    return warp_rows ? LaunchForwardConfig<T, W, kVec, 32>(a, p, stream)
                     : LaunchForwardConfig<T, W, kVec, kBlockRowThreads>(a, p, stream);
  }
  return warp_rows ? LaunchForwardConfig<T, W, 1, 32>(a, p, stream)
                   : LaunchForwardConfig<T, W, 1, kBlockRowThreads>(a, p, stream);
}

template <typename T, typename W>
cudaError_t BackwardTyped(const NormBackwardArgs& a, const NormParams& p, cudaStream_t stream) {
  const bool layer_norm = p.kind == NormKind::kLayerNorm;
  if (a.rows > 0) {
    constexpr int kVec = 16 / sizeof(T);
    const bool vectorised = a.hidden % kVec == 0 && Aligned16(a.x) && Aligned16(a.dy) && Aligned16(a.dx) &&
                            (a.dh == nullptr || Aligned16(a.dh));
    const bool warp_rows = a.hidden <= kMaxWarpRowHidden;
    cudaError_t err;
    if (vectorised) {
      err = warp_rows ? LaunchBackwardDxConfig<T, W, kVec, 32>(a, p, stream)
                      : LaunchBackwardDxConfig<T, W, kVec, kBlockRowThreads>(a, p, stream);
    } else {
      err = warp_rows ? LaunchBackwardDxConfig<T, W, 1, 32>(a, p, stream)
                      : LaunchBackwardDxConfig<T, W, 1, kBlockRowThreads>(a, p, stream);
    }
    if (err != cudaSuccess) return err;
  }

  // With rows == 0 the partial kernel still runs (one chunk of no rows) and writes zeros, so dgamma/dbeta are 0.
  const ColumnGrid grid = MakeColumnGrid(a.rows, a.hidden, a.num_sms);
  float* partial_g = a.workspace;
  float* partial_b = a.workspace + static_cast<int64_t>(grid.chunks) * a.hidden;
  const int hidden = static_cast<int>(a.hidden);
  const dim3 col_grid(grid.col_blocks, grid.chunks);
  const dim3 col_block(kColTile, kColRowLanes);
  const auto* dy = static_cast<const T*>(a.dy);
  const auto* x = static_cast<const T*>(a.x);
  if (layer_norm) {
    NormBackwardColumnPartialKernel<T, true><<<col_grid, col_block, 0, stream>>>(
        dy, x, a.mean, a.rstd, partial_g, partial_b, a.rows, hidden, grid.rows_per_chunk);
  } else {
    NormBackwardColumnPartialKernel<T, false><<<col_grid, col_block, 0, stream>>>(
        dy, x, nullptr, a.rstd, partial_g, nullptr, a.rows, hidden, grid.rows_per_chunk);
  }
  cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess) return err;

  NormBackwardFinalizeKernel<W><<<static_cast<unsigned>(CeilDiv(a.hidden, kFinalizeThreads)), kFinalizeThreads, 0,
                                  stream>>>(partial_g, layer_norm ? partial_b : nullptr, static_cast<W*>(a.dgamma),
                                            layer_norm ? static_cast<W*>(a.dbeta) : nullptr, grid.chunks, hidden);
  return cudaGetLastError();
}

template <template <typename, typename> class Fn, typename Args>
cudaError_t DispatchDtypes(const Args& a, const NormParams& p, cudaStream_t stream) {
  const bool w_float = a.w_dtype == NormDtype::kFloat32;
  if (!w_float && a.w_dtype != a.x_dtype) return cudaErrorInvalidValue;
  switch (a.x_dtype) {
    case NormDtype::kFloat32:
      return Fn<float, float>::Run(a, p, stream);
    case NormDtype::kBFloat16:
      return w_float ? Fn<__nv_bfloat16, float>::Run(a, p, stream)
                     : Fn<__nv_bfloat16, __nv_bfloat16>::Run(a, p, stream);
    case NormDtype::kFloat16:
      return w_float ? Fn<__half, float>::Run(a, p, stream) : Fn<__half, __half>::Run(a, p, stream);
  }
  return cudaErrorInvalidValue;
}

template <typename T, typename W>
struct ForwardFn {
  static cudaError_t Run(const NormForwardArgs& a, const NormParams& p, cudaStream_t s) {
    return ForwardTyped<T, W>(a, p, s);
  }
};

template <typename T, typename W>
struct BackwardFn {
  static cudaError_t Run(const NormBackwardArgs& a, const NormParams& p, cudaStream_t s) {
    return BackwardTyped<T, W>(a, p, s);
  }
};

}  // namespace

cudaError_t LaunchNormForward(const NormForwardArgs& args, const NormParams& params, cudaStream_t stream) {
  if (args.hidden < 1 || args.hidden > INT_MAX || args.rows < 0) return cudaErrorInvalidValue;
  if ((args.residual == nullptr) != (args.h == nullptr)) return cudaErrorInvalidValue;  // both or neither
  if (args.rows == 0) return cudaSuccess;
  return DispatchDtypes<ForwardFn>(args, params, stream);
}

size_t NormBackwardWorkspaceFloats(int64_t rows, int64_t hidden, int num_sms) {
  const ColumnGrid grid = MakeColumnGrid(rows, hidden, num_sms);
  return 2 * static_cast<size_t>(grid.chunks) * static_cast<size_t>(hidden);  // dgamma and dbeta partials
}

cudaError_t LaunchNormBackward(const NormBackwardArgs& args, const NormParams& params, cudaStream_t stream) {
  if (args.hidden < 1 || args.hidden > INT_MAX || args.rows < 0) return cudaErrorInvalidValue;
  return DispatchDtypes<BackwardFn>(args, params, stream);
}

}  // namespace megatron::fusions
