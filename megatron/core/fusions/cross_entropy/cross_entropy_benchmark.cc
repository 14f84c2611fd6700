// Benchmarks of the CUDA cross-entropy kernels against ATen's eager cross_entropy_loss and a device-to-device
// copy: 16384 tokens x 50304 vocabulary (GPT-2's vocabulary padded by Megatron to a multiple of 128), bf16
// logits, forward + backward, as in one GPT-2 micro-batch of 16 x 1024 tokens.
//
// Implementations, each timed as forward + backward (the pair a training step runs):
//   fused/in_place      CrossEntropyForward + CrossEntropyBackward(kOverwriteLogits): no [n, V] allocation.
//   fused/out_of_place  the same with kAllocate: one bf16 [n, V] gradient.
//   aten                what PyTorch's GPT model does: at::cross_entropy_loss(logits.float(), target,
//                       reduction none) and autograd backward to the bf16 logits (float32 copy, log_softmax,
//                       float32 gradient, cast back).
//   fused/forward, fused/backward_in_place  each direction alone.
// Method: the fused kernels are validated once before timing (loss of every row against ATen's float32 loss;
// loss, lse and gradient of the first rows against the float64 reference); then warm-up iterations; iterations
// alternate between two logits buffers of 1.6 GB each, 30x the 50 MB L2, so every pass streams from DRAM; time is
// CUDA events around each iteration (manual time). bytes = the minimum traffic of forward + backward (read the
// logits twice, write the gradient once: 3 * n * V * 2 bytes, plus the [n] vectors), so bytes/s is effective
// bandwidth and frac_of_d2d divides it by a cudaMemcpyAsync D2D moving the same bytes, measured in this binary.
// extra_peak_MiB is the caching allocator's peak of allocated bytes during one iteration minus what was allocated
// before it (the inputs), i.e. the op's own transient memory.
//
// Run on the GPU machine: cross_entropy_benchmark (built with --config=cuda).
#include <ATen/TensorOperators.h>
#include <ATen/core/Reduction.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/cross_entropy_loss.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/full.h>
#include <ATen/ops/randint.h>
#include <ATen/ops/randn.h>
#include <benchmark/benchmark.h>
#include <c10/cuda/CUDACachingAllocator.h>
#include <c10/cuda/CUDAStream.h>
#include <cuda_runtime_api.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <functional>
#include <string>
#include <vector>

#include "benchmarks/common/gpu_harness.h"
#include "megatron/core/fusions/cross_entropy/cross_entropy.h"

namespace megatron::fusions {
namespace {

constexpr int64_t kTokens = 16384;
constexpr int64_t kVocab = 50304;
constexpr int kWarmupIterations = 3;
constexpr int kBufferSets = 2;  // 2 x 1.6 GB: far beyond L2, so alternating keeps every pass cold
constexpr int kValidateRows = 8;

enum class Impl { kFusedInPlace, kFusedOutOfPlace, kAten, kFusedForward, kFusedBackwardInPlace };

const at::Device kCuda(at::kCUDA, 0);

int64_t LogitBytes() { return kTokens * kVocab * 2; }

// Minimum traffic: forward reads the logits; backward reads them and writes the gradient; plus target (8 B),
// loss, lse and grad_loss (4 B each) per row.
int64_t OpBytes(Impl impl) {
  const int64_t rows = kTokens * (8 + 4 + 4 + 4);
  switch (impl) {
    case Impl::kFusedForward:
      return LogitBytes() + rows;
    case Impl::kFusedBackwardInPlace:
      return 2 * LogitBytes() + rows;
    default:
      return 3 * LogitBytes() + rows;
  }
}

int64_t AllocatedNow() {
  return c10::cuda::CUDACachingAllocator::getDeviceStats(0)
      .allocated_bytes[static_cast<size_t>(c10::CachingAllocator::StatType::AGGREGATE)]
      .current;
}

int64_t AllocatedPeak() {
  return c10::cuda::CUDACachingAllocator::getDeviceStats(0)
      .allocated_bytes[static_cast<size_t>(c10::CachingAllocator::StatType::AGGREGATE)]
      .peak;
}

struct Inputs {
  std::vector<at::Tensor> logits;  // kBufferSets x [n, V] bf16
  at::Tensor target;               // [n] int64
  at::Tensor grad_loss;            // [n] float32
};

Inputs MakeInputs() {
  Inputs in;
  for (int s = 0; s < kBufferSets; ++s) {
    in.logits.push_back(at::randn({kTokens, kVocab}, at::TensorOptions().dtype(at::kBFloat16).device(kCuda)) * 2);
  }
  in.target = at::randint(kVocab, {kTokens}, at::TensorOptions().dtype(at::kLong).device(kCuda));
  in.grad_loss = at::full({kTokens}, 1.0 / kTokens, at::TensorOptions().dtype(at::kFloat).device(kCuda));
  return in;
}

using benchmarks::Close;

// The fused kernels on buffer 0 against ATen (every row's loss) and the float64 reference (first rows: loss,
// lse, gradient). Leaves the inputs untouched (out of place).
bool Validate(const Inputs& in, std::string* why) {
  const CrossEntropyParams params;
  const at::Tensor& x = in.logits[0];
  const CrossEntropyForwardResult got = CrossEntropyForward(x, in.target, params);
  const at::Tensor aten_loss = at::cross_entropy_loss(x.to(at::kFloat), in.target, {}, at::Reduction::None);
  if (!Close(got.loss, aten_loss, 1e-5, 1e-4, why)) return false;
  const at::Tensor grad =
      CrossEntropyBackward(in.grad_loss, x, in.target, got.lse, params, GradLogitsBuffer::kAllocate);
  const at::Tensor x_head = x.narrow(0, 0, kValidateRows).to(at::kCPU);
  const at::Tensor t_head = in.target.narrow(0, 0, kValidateRows).to(at::kCPU);
  const CrossEntropyForwardResult want = CrossEntropyForwardReference(x_head, t_head, params);
  if (!Close(got.lse.narrow(0, 0, kValidateRows), want.lse, 1e-5, 1e-4, why)) return false;
  const at::Tensor want_grad =
      CrossEntropyBackwardReference(in.grad_loss.narrow(0, 0, kValidateRows).to(at::kCPU), x_head, t_head, want.lse,
                                    params, GradLogitsBuffer::kAllocate);
  // bf16 gradient of magnitude <= 1/n: tolerance relative to that scale.
  return Close(grad.narrow(0, 0, kValidateRows), want_grad, 2e-2, 2e-2 / kTokens, why);
}

void BM_CrossEntropy(benchmark::State& state, Impl impl) {
  static Inputs* inputs = nullptr;  // shared by the benchmarks: 3.3 GB of logits made once
  if (inputs == nullptr) inputs = new Inputs(MakeInputs());
  Inputs& in = *inputs;
  const CrossEntropyParams params;
  static bool validated = false;
  if (!validated) {
    std::string why;
    if (!Validate(in, &why)) {
      state.SkipWithError(("validation failed: " + why).c_str());
      return;
    }
    validated = true;
  }
  std::vector<at::Tensor> lse(kBufferSets);
  for (int s = 0; s < kBufferSets; ++s) lse[s] = CrossEntropyForward(in.logits[s], in.target, params).lse;

  std::function<void(int)> launch;
  switch (impl) {
    case Impl::kFusedInPlace:
    case Impl::kFusedOutOfPlace:
      launch = [&, impl](int i) {
        const at::Tensor& x = in.logits[i % kBufferSets];
        const CrossEntropyForwardResult f = CrossEntropyForward(x, in.target, params);
        const at::Tensor g = CrossEntropyBackward(
            in.grad_loss, x, in.target, f.lse, params,
            impl == Impl::kFusedInPlace ? GradLogitsBuffer::kOverwriteLogits : GradLogitsBuffer::kAllocate);
        benchmark::DoNotOptimize(g.data_ptr());
      };
      break;
    case Impl::kFusedForward:
      launch = [&](int i) {
        benchmark::DoNotOptimize(CrossEntropyForward(in.logits[i % kBufferSets], in.target, params).loss.data_ptr());
      };
      break;
    case Impl::kFusedBackwardInPlace:
      launch = [&](int i) {
        const at::Tensor g = CrossEntropyBackward(in.grad_loss, in.logits[i % kBufferSets], in.target,
                                                  lse[i % kBufferSets], params, GradLogitsBuffer::kOverwriteLogits);
        benchmark::DoNotOptimize(g.data_ptr());
      };
      break;
    case Impl::kAten:
      launch = [&](int i) {
        at::Tensor leaf = in.logits[i % kBufferSets].detach().set_requires_grad(true);
        const at::Tensor loss =
            at::cross_entropy_loss(leaf.to(at::kFloat), in.target, {}, at::Reduction::None);
        loss.backward(in.grad_loss);
        benchmark::DoNotOptimize(leaf.grad().data_ptr());
      };
      break;
  }
  // The in-place variants overwrite the logits with gradients (|g| <= 1/n) and then run on those: the traffic and
  // the arithmetic are the same, only the values differ.
  for (int i = 0; i < kWarmupIterations; ++i) launch(i);
  MEGATRON_CUDA_OK(cudaDeviceSynchronize());

  // Transient memory of one iteration.
  const int64_t before = AllocatedNow();
  c10::cuda::CUDACachingAllocator::resetPeakStats(0);
  launch(0);
  MEGATRON_CUDA_OK(cudaDeviceSynchronize());
  const double extra_mib = static_cast<double>(AllocatedPeak() - before) / (1 << 20);

  state.counters["extra_peak_MiB"] = extra_mib;
  benchmarks::TimeLoop(state, launch, OpBytes(impl), /*warmup=*/0);
}

void BM_D2DCopy(benchmark::State& state) { benchmarks::BM_D2DCopy(state, OpBytes(Impl::kFusedInPlace)); }

void RegisterAll() {
  const std::string shape = "/bf16/" + std::to_string(kTokens) + "x" + std::to_string(kVocab);
  const std::vector<std::pair<std::string, Impl>> impls = {
      {"fused/in_place/fwd+bwd", Impl::kFusedInPlace},
      {"fused/out_of_place/fwd+bwd", Impl::kFusedOutOfPlace},
      {"aten/cross_entropy_loss_float/fwd+bwd", Impl::kAten},
      {"fused/forward", Impl::kFusedForward},
      {"fused/backward_in_place", Impl::kFusedBackwardInPlace},
  };
  for (const auto& [name, impl] : impls) {
    benchmark::RegisterBenchmark((name + shape).c_str(), BM_CrossEntropy, impl)
        ->UseManualTime()
        ->Unit(benchmark::kMicrosecond);
  }
  benchmark::RegisterBenchmark(("d2d_copy_same_bytes_as_fwd+bwd" + shape).c_str(), BM_D2DCopy)
      ->UseManualTime()
      ->Unit(benchmark::kMicrosecond);
}

}  // namespace
}  // namespace megatron::fusions

int main(int argc, char** argv) {
  return megatron::benchmarks::BenchmarkMain(argc, argv, "cross_entropy_benchmark", megatron::fusions::RegisterAll);
}
