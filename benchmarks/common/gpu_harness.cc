#include "benchmarks/common/gpu_harness.h"

#include <ATen/TensorOperators.h>
#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAStream.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <vector>

namespace megatron::benchmarks {
namespace {

const at::Device kCuda(at::kCUDA, 0);

int64_t L2Bytes() {
  int bytes = 0;
  MEGATRON_CUDA_OK(cudaDeviceGetAttribute(&bytes, cudaDevAttrL2CacheSize, 0));
  return bytes;
}

struct CopyBuffers {
  std::vector<at::Tensor> src;
  std::vector<at::Tensor> dst;
  int64_t copy_bytes;
};

CopyBuffers MakeCopyBuffers(int64_t bytes) {
  CopyBuffers b;
  b.copy_bytes = bytes / 2;  // a copy of N bytes reads N and writes N
  const int sets = NumBufferSets(bytes);
  for (int s = 0; s < sets; ++s) {
    b.src.push_back(at::empty({b.copy_bytes}, at::TensorOptions().dtype(at::kByte).device(kCuda)));
    b.dst.push_back(at::empty({b.copy_bytes}, at::TensorOptions().dtype(at::kByte).device(kCuda)));
  }
  return b;
}

void Copy(const CopyBuffers& b, int i) {
  const size_t s = static_cast<size_t>(i) % b.src.size();
  MEGATRON_CUDA_OK(cudaMemcpyAsync(b.dst[s].data_ptr(), b.src[s].data_ptr(), b.copy_bytes, cudaMemcpyDeviceToDevice,
                                   Stream()));
}

}  // namespace

void CheckCuda(cudaError_t err, const char* expr, const char* file, int line) {
  if (err == cudaSuccess) return;
  std::fprintf(stderr, "%s:%d: %s: %s\n", file, line, expr, cudaGetErrorString(err));
  std::abort();
}

cudaStream_t Stream() { return c10::cuda::getCurrentCUDAStream(0).stream(); }

int NumBufferSets(int64_t bytes_per_set) {
  return static_cast<int>(std::max<int64_t>(2, (3 * L2Bytes() + bytes_per_set - 1) / bytes_per_set));
}

double MedianSeconds(const std::function<void(int)>& launch, int reps) {
  cudaEvent_t start;
  cudaEvent_t stop;
  MEGATRON_CUDA_OK(cudaEventCreate(&start));
  MEGATRON_CUDA_OK(cudaEventCreate(&stop));
  std::vector<float> ms(reps);
  for (int r = 0; r < reps; ++r) {
    MEGATRON_CUDA_OK(cudaEventRecord(start, Stream()));
    launch(r);
    MEGATRON_CUDA_OK(cudaEventRecord(stop, Stream()));
    MEGATRON_CUDA_OK(cudaEventSynchronize(stop));
    MEGATRON_CUDA_OK(cudaEventElapsedTime(&ms[r], start, stop));
  }
  MEGATRON_CUDA_OK(cudaEventDestroy(start));
  MEGATRON_CUDA_OK(cudaEventDestroy(stop));
  std::sort(ms.begin(), ms.end());
  return ms[reps / 2] * 1e-3;
}

double CopyBandwidth(int64_t bytes) {
  static std::map<int64_t, double> cache;
  auto it = cache.find(bytes);
  if (it != cache.end()) return it->second;
  const CopyBuffers b = MakeCopyBuffers(bytes);
  for (int i = 0; i < 10; ++i) Copy(b, i);
  const double bw = static_cast<double>(2 * b.copy_bytes) / MedianSeconds([&](int r) { Copy(b, r); }, 50);
  cache[bytes] = bw;
  return bw;
}

void TimeLoop(benchmark::State& state, const std::function<void(int)>& launch, int64_t bytes, int warmup) {
  for (int i = 0; i < warmup; ++i) launch(i);
  MEGATRON_CUDA_OK(cudaStreamSynchronize(Stream()));
  cudaEvent_t start;
  cudaEvent_t stop;
  MEGATRON_CUDA_OK(cudaEventCreate(&start));
  MEGATRON_CUDA_OK(cudaEventCreate(&stop));
  int i = 0;
  double total_s = 0;
  for (auto _ : state) {
    MEGATRON_CUDA_OK(cudaEventRecord(start, Stream()));
    launch(i++);
    MEGATRON_CUDA_OK(cudaEventRecord(stop, Stream()));
    MEGATRON_CUDA_OK(cudaEventSynchronize(stop));
    float ms = 0;
    MEGATRON_CUDA_OK(cudaEventElapsedTime(&ms, start, stop));
    state.SetIterationTime(ms * 1e-3);
    total_s += ms * 1e-3;
  }
  MEGATRON_CUDA_OK(cudaEventDestroy(start));
  MEGATRON_CUDA_OK(cudaEventDestroy(stop));
  state.SetBytesProcessed(state.iterations() * bytes);
  const double copy_bw = CopyBandwidth(bytes);
  if (total_s > 0 && copy_bw > 0) {
    state.counters["frac_of_d2d"] = (static_cast<double>(bytes) * state.iterations() / total_s) / copy_bw;
  }
}

void BM_D2DCopy(benchmark::State& state, int64_t bytes) {
  const CopyBuffers b = MakeCopyBuffers(bytes);
  TimeLoop(state, [&](int i) { Copy(b, i); }, 2 * b.copy_bytes);
}

bool Close(const at::Tensor& got, const at::Tensor& want, double rtol, double atol, std::string* why) {
  const at::Tensor g = got.to(at::kCPU).to(at::kDouble).contiguous();
  const at::Tensor w = want.to(at::kCPU).to(at::kDouble).contiguous();
  if (g.sizes() != w.sizes()) {
    *why = "shape mismatch";
    return false;
  }
  const double* gp = g.data_ptr<double>();
  const double* wp = w.data_ptr<double>();
  for (int64_t i = 0; i < g.numel(); ++i) {
    if (!std::isfinite(gp[i]) || !(std::abs(gp[i] - wp[i]) <= atol + rtol * std::abs(wp[i]))) {
      *why = "element " + std::to_string(i) + ": got " + std::to_string(gp[i]) + " expected " + std::to_string(wp[i]);
      return false;
    }
  }
  return true;
}

int BenchmarkMain(int argc, char** argv, const char* name, const std::function<void()>& register_all) {
  int devices = 0;
  if (cudaGetDeviceCount(&devices) != cudaSuccess || devices == 0) {
    std::fprintf(stderr, "%s: no CUDA device\n", name);
    return 1;
  }
  benchmark::Initialize(&argc, argv);
  register_all();
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}

}  // namespace megatron::benchmarks
