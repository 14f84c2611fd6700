// The timing harness shared by the CUDA kernel benchmarks (Google Benchmark, manual time), so every suite measures
// the same way (STYLE.md): validate once, warm up, keep L2 cold by rotating through enough buffer sets, time each
// iteration with CUDA events on the current stream, report bytes/s and the fraction of a device-to-device copy of
// the same bytes measured in the same binary ("frac_of_d2d"), which the tracker (//benchmarks:track) charts.
// Device 0 only. Needs libtorch's CUDA half (the buffers come from ATen's caching allocator).
#pragma once

#include <ATen/core/Tensor.h>
#include <benchmark/benchmark.h>
#include <cuda_runtime_api.h>

#include <cstdint>
#include <functional>
#include <string>

namespace megatron::benchmarks {

// Aborts with file:line and the CUDA error: a benchmark cannot recover from a failed launch.
void CheckCuda(cudaError_t err, const char* expr, const char* file, int line);
#define MEGATRON_CUDA_OK(expr) ::megatron::benchmarks::CheckCuda((expr), #expr, __FILE__, __LINE__)

// The current CUDA stream of device 0 (where ATen ops run, and where the events are recorded).
cudaStream_t Stream();

// Buffer sets to rotate through so that more than 3x the L2 cache streams between two uses of the same set (at
// least 2).
int NumBufferSets(int64_t bytes_per_set);

// Median seconds of `launch(r)` for r in [0, reps), each timed alone with CUDA events.
double MedianSeconds(const std::function<void(int)>& launch, int reps);

// Bytes/s (read + written) of cudaMemcpyAsync D2D moving `bytes` in total (bytes / 2 copied), cold L2, median of
// 50; cached per size.
double CopyBandwidth(int64_t bytes);

// Runs `warmup` launches, then times one launch per benchmark iteration with CUDA events (manual time); sets
// bytes_per_second from `bytes` per launch and counters["frac_of_d2d"] = that bandwidth / CopyBandwidth(bytes).
void TimeLoop(benchmark::State& state, const std::function<void(int)>& launch, int64_t bytes, int warmup = 10);

// The copy itself as a benchmark row: D2D of `bytes` in total (read + written), rotating buffers.
void BM_D2DCopy(benchmark::State& state, int64_t bytes);

// Every element |got - want| <= atol + rtol |want| and got finite; else false and the first offender in *why.
bool Close(const at::Tensor& got, const at::Tensor& want, double rtol, double atol, std::string* why);

// main() of a suite: exits 1 without a CUDA device, else registers (after benchmark::Initialize, so flags such
// as --benchmark_filter apply) and runs.
int BenchmarkMain(int argc, char** argv, const char* name, const std::function<void()>& register_all);

}  // namespace megatron::benchmarks
