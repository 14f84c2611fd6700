// NCCL all-reduce bandwidth through our process groups (the numbers nccl-tests reports):
//   tools/launch --nproc_per_node=2 -- benchmarks/nccl/allreduce_bandwidth [--dtype=bf16] [--iters=20]
// For each message size: time per all-reduce (CUDA events around `iters` back-to-back calls after warm-up),
// algorithm bandwidth = bytes / time and bus bandwidth = algbw * 2 (n - 1) / n, the figure comparable with the
// link's peak (NVLink 4 on H100/H200: 450 GB/s per direction). Rank 0 prints a table and, with --json=PATH,
// writes it as JSON.
#include <c10/cuda/CUDAFunctions.h>
#include <c10/cuda/CUDAStream.h>
#include <cuda_runtime_api.h>

#include <cstdio>
#include <fstream>
#include <string>
#include <vector>

#include <ATen/ops/ones.h>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_format.h"
#include "megatron/core/distributed/launch_env.h"
#include "megatron/core/distributed/process_group.h"

int main(int argc, char** argv) {
  int iters = 20;
  std::string dtype_name = "bf16", json_path;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (absl::StartsWith(arg, "--iters=") && absl::SimpleAtoi(arg.substr(8), &iters) && iters > 0) continue;
    if (absl::StartsWith(arg, "--dtype=")) { dtype_name = arg.substr(8); continue; }
    if (absl::StartsWith(arg, "--json=")) { json_path = arg.substr(7); continue; }
    std::fprintf(stderr, "allreduce_bandwidth: unknown or bad flag %s\n", arg.c_str());
    return 2;
  }
  const at::ScalarType dtype = dtype_name == "fp32" ? at::kFloat : dtype_name == "fp16" ? at::kHalf : at::kBFloat16;
  auto env = megatron::distributed::LaunchEnv::FromEnvironment();
  if (!env.ok()) {
    std::fprintf(stderr, "allreduce_bandwidth: %s\n", std::string(env.status().message()).c_str());
    return 2;
  }
  c10::cuda::set_device(static_cast<c10::DeviceIndex>(env->local_rank));
  auto ctx = megatron::distributed::InitDistributed(*env, megatron::distributed::Backend::kNccl, absl::Minutes(5));
  if (!ctx.ok()) {
    std::fprintf(stderr, "allreduce_bandwidth: %s\n", std::string(ctx.status().message()).c_str());
    return 1;
  }
  const int n = (*ctx)->world_size();
  const bool rank0 = (*ctx)->rank() == 0;
  const auto opts = at::TensorOptions().dtype(dtype).device(at::kCUDA, env->local_rank);
  const int64_t element = at::elementSize(dtype);
  std::string json = "[";
  if (rank0) {
    std::printf("NCCL all-reduce, %d ranks, %s, %d iterations per size\n", n, dtype_name.c_str(), iters);
    std::printf("%12s %12s %14s %14s\n", "bytes", "time (us)", "algbw (GB/s)", "busbw (GB/s)");
  }
  for (int64_t bytes = 1 << 20; bytes <= (int64_t{1} << 30); bytes *= 4) {
    at::Tensor t = at::ones({bytes / element}, opts);
    for (int w = 0; w < 5; ++w) {
      if (absl::Status s = (*ctx)->world().AllReduce(t); !s.ok()) {
        std::fprintf(stderr, "allreduce_bandwidth: %s\n", std::string(s.message()).c_str());
        return 1;
      }
    }
    cudaEvent_t start, stop;
    cudaEventCreate(&start);
    cudaEventCreate(&stop);
    cudaStream_t stream = c10::cuda::getCurrentCUDAStream().stream();
    cudaEventRecord(start, stream);
    for (int it = 0; it < iters; ++it) (void)(*ctx)->world().AllReduce(t);
    cudaEventRecord(stop, stream);
    cudaEventSynchronize(stop);
    float ms = 0;
    cudaEventElapsedTime(&ms, start, stop);
    cudaEventDestroy(start);
    cudaEventDestroy(stop);
    const double seconds = ms / 1e3 / iters;
    const double algbw = bytes / seconds / 1e9;
    const double busbw = algbw * 2.0 * (n - 1) / n;
    if (rank0) {
      std::printf("%12lld %12.1f %14.1f %14.1f\n", static_cast<long long>(bytes), seconds * 1e6, algbw, busbw);
      json += absl::StrFormat("%s{\"bytes\": %d, \"us\": %.2f, \"algbw_gbps\": %.2f, \"busbw_gbps\": %.2f}",
                              json.size() > 1 ? ", " : "", bytes, seconds * 1e6, algbw, busbw);
    }
  }
  if (rank0 && !json_path.empty()) std::ofstream(json_path) << json << "]\n";
  return 0;
}
