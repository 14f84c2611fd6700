// Benchmarks of the CUDA norm kernels against a device-to-device copy and ATen's eager kernels, bf16, shapes
// 16384 x 4096 and 4096 x 1024, forward and backward, RMSNorm and LayerNorm.
//
// Method: each kernel is validated once against the float64 reference (first 64 rows; the whole tensor for the
// small shape) before it is timed; then warm-up iterations; every timed iteration uses the next of several input
// buffer sets, enough that the sets together exceed 3x the L2 cache, so inputs come from DRAM as in training;
// time is measured with CUDA events around the launch (manual time). "bytes" is the minimum traffic of the op
// (forward: read x, write y; backward: read dy and x, write dx; plus statistics and gamma/beta), so bytes/s is
// the effective bandwidth, and frac_of_d2d divides it by the bandwidth of a cudaMemcpyAsync D2D that moves the
// same number of bytes (reads + writes), measured in this binary on the same device.
//
// Run on the GPU machine: bazel-bin/megatron/core/fusions/norm/norm_benchmark (built with --config=cuda).
#include <ATen/TensorOperators.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/_fused_rms_norm.h>
#include <ATen/ops/_fused_rms_norm_backward.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/layer_norm.h>
#include <ATen/ops/native_layer_norm.h>
#include <ATen/ops/native_layer_norm_backward.h>
#include <ATen/ops/randn.h>
#include <ATen/ops/rms_norm.h>
#include <benchmark/benchmark.h>
#include <c10/cuda/CUDAStream.h>
#include <cuda_runtime_api.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <functional>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "megatron/core/fusions/norm/norm.h"

namespace megatron::fusions {
namespace {

constexpr double kEps = 1e-5;
constexpr int kWarmupIterations = 10;
constexpr int kValidateRows = 64;

#define CUDA_OK(expr)                                                                                  \
  do {                                                                                                 \
    const cudaError_t err_ = (expr);                                                                   \
    if (err_ != cudaSuccess) {                                                                         \
      std::fprintf(stderr, "%s:%d: %s: %s\n", __FILE__, __LINE__, #expr, cudaGetErrorString(err_));    \
      std::abort();                                                                                    \
    }                                                                                                  \
  } while (0)

enum class Direction { kForward, kBackward };
enum class Impl { kFused, kAten };

struct Shape {
  int64_t rows;
  int64_t hidden;
};

const at::Device kCuda(at::kCUDA, 0);

cudaStream_t Stream() { return c10::cuda::getCurrentCUDAStream(0).stream(); }

int64_t L2Bytes() {
  int bytes = 0;
  CUDA_OK(cudaDeviceGetAttribute(&bytes, cudaDevAttrL2CacheSize, 0));
  return bytes;
}

// Minimum bytes an op must move (bf16 activations, float32 statistics, bf16 gamma/beta).
int64_t OpBytes(NormKind kind, Direction dir, Shape s) {
  const int64_t act = s.rows * s.hidden * 2;
  const int64_t stats = s.rows * 4 * (kind == NormKind::kLayerNorm ? 2 : 1);
  const int64_t weights = s.hidden * 2 * (kind == NormKind::kLayerNorm ? 2 : 1);
  return dir == Direction::kForward ? 2 * act + stats + weights : 3 * act + stats + 2 * weights;
}

// Enough buffer sets that cycling through them streams more than 3x L2 between reuses.
int NumBufferSets(int64_t bytes_per_set) {
  return static_cast<int>(std::max<int64_t>(2, (3 * L2Bytes() + bytes_per_set - 1) / bytes_per_set));
}

// Times `launch(i)` (i = iteration) with CUDA events; returns seconds per call via state.SetIterationTime.
void TimeLoop(benchmark::State& state, const std::function<void(int)>& launch, int64_t bytes, double copy_bw) {
  for (int i = 0; i < kWarmupIterations; ++i) launch(i);
  CUDA_OK(cudaStreamSynchronize(Stream()));
  cudaEvent_t start;
  cudaEvent_t stop;
  CUDA_OK(cudaEventCreate(&start));
  CUDA_OK(cudaEventCreate(&stop));
  int i = 0;
  double total_s = 0;
  for (auto _ : state) {
    CUDA_OK(cudaEventRecord(start, Stream()));
    launch(i++);
    CUDA_OK(cudaEventRecord(stop, Stream()));
    CUDA_OK(cudaEventSynchronize(stop));
    float ms = 0;
    CUDA_OK(cudaEventElapsedTime(&ms, start, stop));
    state.SetIterationTime(ms * 1e-3);
    total_s += ms * 1e-3;
  }
  CUDA_OK(cudaEventDestroy(start));
  CUDA_OK(cudaEventDestroy(stop));
  state.SetBytesProcessed(state.iterations() * bytes);
  if (total_s > 0 && copy_bw > 0) {
    state.counters["frac_of_d2d"] = (static_cast<double>(bytes) * state.iterations() / total_s) / copy_bw;
  }
}

// Bandwidth (bytes read + written per second) of a D2D cudaMemcpyAsync moving `bytes` in total, cached per size.
double CopyBandwidth(int64_t bytes) {
  static std::map<int64_t, double> cache;
  auto it = cache.find(bytes);
  if (it != cache.end()) return it->second;
  const int64_t copy_bytes = bytes / 2;  // a copy of N bytes reads N and writes N
  const int sets = NumBufferSets(bytes);
  std::vector<at::Tensor> src;
  std::vector<at::Tensor> dst;
  for (int s = 0; s < sets; ++s) {
    src.push_back(at::empty({copy_bytes}, at::TensorOptions().dtype(at::kByte).device(kCuda)));
    dst.push_back(at::empty({copy_bytes}, at::TensorOptions().dtype(at::kByte).device(kCuda)));
  }
  auto copy = [&](int i) {
    CUDA_OK(cudaMemcpyAsync(dst[i % sets].data_ptr(), src[i % sets].data_ptr(), copy_bytes,
                            cudaMemcpyDeviceToDevice, Stream()));
  };
  for (int i = 0; i < kWarmupIterations; ++i) copy(i);
  cudaEvent_t start;
  cudaEvent_t stop;
  CUDA_OK(cudaEventCreate(&start));
  CUDA_OK(cudaEventCreate(&stop));
  constexpr int kReps = 50;
  std::vector<float> ms(kReps);
  for (int r = 0; r < kReps; ++r) {
    CUDA_OK(cudaEventRecord(start, Stream()));
    copy(r);
    CUDA_OK(cudaEventRecord(stop, Stream()));
    CUDA_OK(cudaEventSynchronize(stop));
    CUDA_OK(cudaEventElapsedTime(&ms[r], start, stop));
  }
  CUDA_OK(cudaEventDestroy(start));
  CUDA_OK(cudaEventDestroy(stop));
  std::sort(ms.begin(), ms.end());
  const double bw = static_cast<double>(2 * copy_bytes) / (ms[kReps / 2] * 1e-3);  // median
  cache[bytes] = bw;
  return bw;
}

void BM_D2DCopy(benchmark::State& state, NormKind kind, Direction dir, Shape shape) {
  const int64_t bytes = OpBytes(kind, dir, shape);
  const int64_t copy_bytes = bytes / 2;
  const int sets = NumBufferSets(bytes);
  std::vector<at::Tensor> src;
  std::vector<at::Tensor> dst;
  for (int s = 0; s < sets; ++s) {
    src.push_back(at::empty({copy_bytes}, at::TensorOptions().dtype(at::kByte).device(kCuda)));
    dst.push_back(at::empty({copy_bytes}, at::TensorOptions().dtype(at::kByte).device(kCuda)));
  }
  TimeLoop(
      state,
      [&](int i) {
        CUDA_OK(cudaMemcpyAsync(dst[i % sets].data_ptr(), src[i % sets].data_ptr(), copy_bytes,
                                cudaMemcpyDeviceToDevice, Stream()));
      },
      2 * copy_bytes, CopyBandwidth(bytes));
}

struct BufferSet {
  at::Tensor x, dy, gamma, beta;  // inputs
  at::Tensor mean, rstd;          // forward statistics (from our kernel, or ATen's for the ATen backward)
};

// Validates out against the reference on the first rows (dx/y) and the whole tensor for small shapes; false and
// a message if any element is outside bf16 tolerance (rtol = atol = 2e-2).
bool Close(const at::Tensor& got, const at::Tensor& want, std::string* why) {
  const at::Tensor g = got.to(at::kCPU).to(at::kDouble);
  const at::Tensor w = want.to(at::kCPU).to(at::kDouble);
  const double* gp = g.data_ptr<double>();
  const double* wp = w.data_ptr<double>();
  for (int64_t i = 0; i < g.numel(); ++i) {
    if (!std::isfinite(gp[i]) || !(std::abs(gp[i] - wp[i]) <= 2e-2 + 2e-2 * std::abs(wp[i]))) {
      *why = "element " + std::to_string(i) + ": got " + std::to_string(gp[i]) + " expected " + std::to_string(wp[i]);
      return false;
    }
  }
  return true;
}

void BM_Norm(benchmark::State& state, NormKind kind, Direction dir, Impl impl, Shape shape) {
  const bool layer_norm = kind == NormKind::kLayerNorm;
  const NormParams params{kind, kEps, false};
  const int64_t bytes = OpBytes(kind, dir, shape);
  const int sets = NumBufferSets(bytes);
  const at::TensorOptions bf16 = at::TensorOptions().dtype(at::kBFloat16).device(kCuda);
  std::vector<BufferSet> buffers(sets);
  for (BufferSet& b : buffers) {
    b.x = at::randn({shape.rows, shape.hidden}, bf16);
    b.dy = at::randn({shape.rows, shape.hidden}, bf16);
    b.gamma = at::randn({shape.hidden}, bf16);
    if (layer_norm) b.beta = at::randn({shape.hidden}, bf16);
    if (impl == Impl::kFused) {
      const NormForwardResult f = NormForward(b.x, b.gamma, b.beta, params);
      b.mean = f.mean;
      b.rstd = f.rstd;
    } else if (layer_norm) {
      auto [y, mean, rstd] = at::native_layer_norm(b.x, {shape.hidden}, b.gamma, b.beta, kEps);
      b.mean = mean;
      b.rstd = rstd;
    } else {
      try {
        b.rstd = std::get<1>(at::_fused_rms_norm(b.x, {shape.hidden}, b.gamma, kEps));
      } catch (const c10::Error& e) {
        state.SkipWithError(("at::_fused_rms_norm unavailable: " + std::string(e.what_without_backtrace())).c_str());
        return;
      }
    }
  }

  std::function<void(int)> launch;
  if (impl == Impl::kFused && dir == Direction::kForward) {
    launch = [&](int i) {
      const BufferSet& b = buffers[i % sets];
      benchmark::DoNotOptimize(NormForward(b.x, b.gamma, b.beta, params).y.data_ptr());
    };
  } else if (impl == Impl::kFused) {
    launch = [&](int i) {
      const BufferSet& b = buffers[i % sets];
      benchmark::DoNotOptimize(NormBackward(b.dy, b.x, b.gamma, b.mean, b.rstd, params).dx.data_ptr());
    };
  } else if (dir == Direction::kForward) {
    launch = [&](int i) {
      const BufferSet& b = buffers[i % sets];
      const at::Tensor y = layer_norm ? at::layer_norm(b.x, {shape.hidden}, b.gamma, b.beta, kEps)
                                      : at::rms_norm(b.x, {shape.hidden}, b.gamma, kEps);
      benchmark::DoNotOptimize(y.data_ptr());
    };
  } else {
    launch = [&](int i) {
      const BufferSet& b = buffers[i % sets];
      if (layer_norm) {
        auto grads = at::native_layer_norm_backward(b.dy, b.x, {shape.hidden}, b.mean, b.rstd, b.gamma, b.beta,
                                                    {true, true, true});
        benchmark::DoNotOptimize(std::get<0>(grads).data_ptr());
      } else {
        auto grads = at::_fused_rms_norm_backward(b.dy, b.x, {shape.hidden}, b.rstd, b.gamma, {true, true});
        benchmark::DoNotOptimize(std::get<0>(grads).data_ptr());
      }
    };
  }

  // Validate once (the fused kernels only; ATen is the baseline): rows [0, kValidateRows) of y or dx, and for the
  // small shape every element of every output.
  if (impl == Impl::kFused) {
    const BufferSet& b = buffers[0];
    const bool whole = shape.rows * shape.hidden <= (int64_t{1} << 22);
    const int64_t rows = whole ? shape.rows : kValidateRows;
    const at::Tensor x = b.x.narrow(0, 0, rows).to(at::kCPU);
    const at::Tensor gamma = b.gamma.to(at::kCPU);
    const at::Tensor beta = b.beta.defined() ? b.beta.to(at::kCPU) : at::Tensor();
    std::string why;
    bool ok;
    if (dir == Direction::kForward) {
      const NormForwardResult got = NormForward(b.x, b.gamma, b.beta, params);
      ok = Close(got.y.narrow(0, 0, rows), NormForwardReference(x, gamma, beta, params).y, &why);
    } else {
      const NormBackwardResult got = NormBackward(b.dy, b.x, b.gamma, b.mean, b.rstd, params);
      const at::Tensor mean = b.mean.defined() ? b.mean.narrow(0, 0, rows).to(at::kCPU) : at::Tensor();
      const NormBackwardResult want = NormBackwardReference(b.dy.narrow(0, 0, rows).to(at::kCPU), x, gamma, mean,
                                                            b.rstd.narrow(0, 0, rows).to(at::kCPU), params);
      ok = Close(got.dx.narrow(0, 0, rows), want.dx, &why);
      if (ok && whole) ok = Close(got.dgamma, want.dgamma, &why);
    }
    if (!ok) {
      state.SkipWithError(("validation failed: " + why).c_str());
      return;
    }
  }

  TimeLoop(state, launch, bytes, CopyBandwidth(bytes));
}

void RegisterAll() {
  const std::vector<Shape> shapes = {{16384, 4096}, {4096, 1024}};
  for (const Shape& s : shapes) {
    for (NormKind kind : {NormKind::kRMSNorm, NormKind::kLayerNorm}) {
      for (Direction dir : {Direction::kForward, Direction::kBackward}) {
        const std::string suffix = std::string(kind == NormKind::kRMSNorm ? "RMSNorm" : "LayerNorm") + "/" +
                                   (dir == Direction::kForward ? "forward" : "backward") + "/bf16/" +
                                   std::to_string(s.rows) + "x" + std::to_string(s.hidden);
        benchmark::RegisterBenchmark(("fused/" + suffix).c_str(), BM_Norm, kind, dir, Impl::kFused, s)
            ->UseManualTime()
            ->Unit(benchmark::kMicrosecond);
        benchmark::RegisterBenchmark(("aten/" + suffix).c_str(), BM_Norm, kind, dir, Impl::kAten, s)
            ->UseManualTime()
            ->Unit(benchmark::kMicrosecond);
        benchmark::RegisterBenchmark(("d2d_copy_same_bytes/" + suffix).c_str(), BM_D2DCopy, kind, dir, s)
            ->UseManualTime()
            ->Unit(benchmark::kMicrosecond);
      }
    }
  }
}

}  // namespace
}  // namespace megatron::fusions

int main(int argc, char** argv) {
  int devices = 0;
  if (cudaGetDeviceCount(&devices) != cudaSuccess || devices == 0) {
    std::fprintf(stderr, "norm_benchmark: no CUDA device\n");
    return 1;
  }
  benchmark::Initialize(&argc, argv);
  megatron::fusions::RegisterAll();
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
