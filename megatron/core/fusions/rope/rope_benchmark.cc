// Benchmarks of the CUDA rotary position embedding against the local backend's ATen version and a device-to-device
// copy: bf16 q of a Llama-7B-like layer, [s, b, n, d] = [4096, 2, 32, 128], forward and backward, rotate-half and
// interleaved layouts, full and half rotary fraction.
//
// Method (benchmarks/common/gpu_harness.h): validated once against the float64 reference on the first positions,
// warm up, rotate buffer sets to keep L2 cold, CUDA events per iteration. bytes = read t + write y (freqs, [s, r]
// float32, are 1/512 of that and not counted). frac_of_d2d = that bandwidth over a D2D copy of the same bytes
// measured in this binary.
// ATen rows: models::ApplyRotaryPosEmb (what LOCAL runs: float32 copy, chunk, cat, cos, sin, multiply-adds, cast
// back); for the backward the same with negated angles, which is the transpose for Megatron's pairwise-equal angles
// and costs what autograd's backward of those ops costs to within a few kernels.
//
// Run on the GPU machine: rope_benchmark (built with --config=cuda).
#include <ATen/TensorOperators.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/randn.h>
#include <benchmark/benchmark.h>

#include <functional>
#include <string>
#include <vector>

#include "benchmarks/common/gpu_harness.h"
#include "megatron/core/fusions/rope/rope.h"
#include "megatron/core/models/common/rotary_pos_embedding.h"

namespace megatron::fusions {
namespace {

constexpr int64_t kS = 4096, kB = 2, kN = 32, kD = 128;
constexpr int64_t kValidatePositions = 4;

enum class Direction { kForward, kBackward };
enum class Impl { kFused, kAten };

const at::Device kCuda(at::kCUDA, 0);

int64_t OpBytes() { return 2 * kS * kB * kN * kD * 2; }

void BM_Rope(benchmark::State& state, RotaryLayout layout, int64_t r, Direction dir, Impl impl) {
  const int64_t bytes = OpBytes();
  const int sets = benchmarks::NumBufferSets(bytes);
  std::vector<at::Tensor> inputs;
  for (int i = 0; i < sets; ++i) {
    inputs.push_back(at::randn({kS, kB, kN, kD}, at::TensorOptions().dtype(at::kBFloat16).device(kCuda)));
  }
  const models::RotaryEmbedding rotary(r, 10000.0);
  at::Tensor freqs = rotary.Forward(kS, 0, kCuda);
  if (layout == RotaryLayout::kInterleaved) {
    freqs = freqs.narrow(-1, 0, r / 2).unsqueeze(-1).expand({kS, 1, 1, r / 2, 2}).reshape({kS, 1, 1, r}).contiguous();
  }
  const at::Tensor neg_freqs = -freqs;
  const RopeParams params{layout};
  std::function<void(int)> launch;
  if (impl == Impl::kFused) {
    launch = [&](int i) {
      const at::Tensor& t = inputs[i % sets];
      benchmark::DoNotOptimize((dir == Direction::kForward ? RopeForward(t, freqs, params)
                                                           : RopeBackward(t, freqs, params))
                                   .data_ptr());
    };
    const at::Tensor head = inputs[0].narrow(0, 0, kValidatePositions);
    const at::Tensor f = freqs.narrow(0, 0, kValidatePositions);
    const at::Tensor got = (dir == Direction::kForward ? RopeForward(inputs[0], freqs, params)
                                                       : RopeBackward(inputs[0], freqs, params))
                               .narrow(0, 0, kValidatePositions);
    const at::Tensor want = dir == Direction::kForward ? RopeForwardReference(head.cpu(), f.cpu(), params)
                                                       : RopeBackwardReference(head.cpu(), f.cpu(), params);
    std::string why;
    if (!benchmarks::Close(got, want, 2e-2, 2e-2, &why)) {
      state.SkipWithError(("validation failed: " + why).c_str());
      return;
    }
  } else {
    launch = [&](int i) {
      const at::Tensor& t = inputs[i % sets];
      // The local backend rotates all of d; a partial rotation would add a narrow + cat on top.
      benchmark::DoNotOptimize(
          models::ApplyRotaryPosEmb(t.narrow(-1, 0, r), dir == Direction::kForward ? freqs : neg_freqs).data_ptr());
    };
  }
  benchmarks::TimeLoop(state, launch, bytes);
}

void BM_Copy(benchmark::State& state) { benchmarks::BM_D2DCopy(state, OpBytes()); }

void RegisterAll() {
  const std::string shape = "/bf16/" + std::to_string(kS) + "x" + std::to_string(kB) + "x" + std::to_string(kN) +
                            "x" + std::to_string(kD);
  struct Case {
    const char* name;
    RotaryLayout layout;
    int64_t r;
    bool aten;  // ATen's rotate-half path exists only for the full rotation
  };
  const std::vector<Case> cases = {{"halves", RotaryLayout::kHalves, kD, true},
                                   {"interleaved", RotaryLayout::kInterleaved, kD, false},
                                   {"halves_fraction_0.5", RotaryLayout::kHalves, kD / 2, false}};
  for (const Case& c : cases) {
    for (Direction dir : {Direction::kForward, Direction::kBackward}) {
      const std::string suffix = std::string(c.name) + "/" + (dir == Direction::kForward ? "forward" : "backward") +
                                 shape;
      benchmark::RegisterBenchmark(("fused/rope/" + suffix).c_str(), BM_Rope, c.layout, c.r, dir, Impl::kFused)
          ->UseManualTime()
          ->Unit(benchmark::kMicrosecond);
      if (c.aten) {
        benchmark::RegisterBenchmark(("aten/rope/" + suffix).c_str(), BM_Rope, c.layout, c.r, dir, Impl::kAten)
            ->UseManualTime()
            ->Unit(benchmark::kMicrosecond);
      }
    }
  }
  benchmark::RegisterBenchmark(("d2d_copy_same_bytes/rope" + shape).c_str(), BM_Copy)
      ->UseManualTime()
      ->Unit(benchmark::kMicrosecond);
}

}  // namespace
}  // namespace megatron::fusions

int main(int argc, char** argv) {
  return megatron::benchmarks::BenchmarkMain(argc, argv, "rope_benchmark", megatron::fusions::RegisterAll);
}
