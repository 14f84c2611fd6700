// Benchmarks of the CUDA scaled masked softmax against ATen eager and a device-to-device copy, bf16 attention
// scores [b, np, sq, sk] = [4, 16, 1024, 1024] (warp-per-row kernels) and [1, 16, 4096, 4096] (block-per-row),
// all three forms, forward and backward.
//
// Method (benchmarks/common/gpu_harness.h): validated once against the float64 reference on the first rows, warm
// up, rotate through enough buffer sets to keep L2 cold, CUDA events per iteration. bytes = the op's minimum
// traffic: forward reads x (for causal only the lower triangle, (sk + 1) / 2 of each row on average) and the mask
// once (broadcast over heads), writes y; backward reads dy and y (causal: the lower triangle), writes dx.
// frac_of_d2d = that bandwidth over a D2D copy of the same bytes measured in this binary.
// ATen rows: forward = FusedScaleMaskSoftmax's unfused path (x.float() * scale, masked_fill(-10000) or the causal
// mask, softmax, .bfloat16(): what Megatron runs when the kernel is unavailable); backward =
// at::_softmax_backward_data on bf16 (autograd's kernel for softmax) times the scale.
//
// Run on the GPU machine: softmax_benchmark (built with --config=cuda).
#include <ATen/TensorOperators.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/_softmax_backward_data.h>
#include <ATen/ops/randn.h>
#include <benchmark/benchmark.h>

#include <functional>
#include <string>
#include <vector>

#include "benchmarks/common/gpu_harness.h"
#include "megatron/core/fusions/softmax/softmax.h"

namespace megatron::fusions {
namespace {

constexpr float kScale = 0.125f;  // 1 / sqrt(64)
constexpr int64_t kValidateRows = 16;

enum class Direction { kForward, kBackward };
enum class Impl { kFused, kAten };

struct Shape {
  int64_t b, np, sq, sk;
  int64_t numel() const { return b * np * sq * sk; }
};

const at::Device kCuda(at::kCUDA, 0);

int64_t OpBytes(SoftmaxMask form, Direction dir, Shape s) {
  const int64_t full = s.numel() * 2;
  const int64_t read = form == SoftmaxMask::kCausal ? s.b * s.np * (s.sq * (s.sq + 1) / 2) * 2 : full;
  const int64_t mask = form == SoftmaxMask::kExplicit ? s.b * s.sq * s.sk : 0;
  return dir == Direction::kForward ? read + mask + full : 2 * read + full;
}

const char* FormName(SoftmaxMask form) {
  switch (form) {
    case SoftmaxMask::kCausal:
      return "causal";
    case SoftmaxMask::kExplicit:
      return "explicit_mask";
    case SoftmaxMask::kNone:
      return "unmasked";
  }
  return "?";
}

struct BufferSet {
  at::Tensor x, mask, dy, y;
};

void BM_Softmax(benchmark::State& state, SoftmaxMask form, Direction dir, Impl impl, Shape s) {
  const SoftmaxParams params{form, kScale};
  FusedSoftmaxConfig config;
  config.input_in_bf16 = true;
  config.scale = kScale;
  config.mask = form == SoftmaxMask::kCausal ? SoftmaxMask::kCausal : SoftmaxMask::kExplicit;
  const int64_t bytes = OpBytes(form, dir, s);
  const int sets = benchmarks::NumBufferSets(bytes);
  const at::TensorOptions bf16 = at::TensorOptions().dtype(at::kBFloat16).device(kCuda);
  std::vector<BufferSet> buffers(sets);
  for (BufferSet& b : buffers) {
    b.x = at::randn({s.b, s.np, s.sq, s.sk}, bf16) * 4;
    if (form == SoftmaxMask::kExplicit) b.mask = at::randn({s.b, 1, s.sq, s.sk}, bf16) > 1.0;
    if (dir == Direction::kBackward) {
      b.dy = at::randn({s.b, s.np, s.sq, s.sk}, bf16);
      b.y = ScaledMaskedSoftmaxForward(b.x, b.mask, params);
    }
  }
  std::function<void(int)> launch;
  if (impl == Impl::kFused && dir == Direction::kForward) {
    launch = [&](int i) {
      const BufferSet& b = buffers[i % sets];
      benchmark::DoNotOptimize(ScaledMaskedSoftmaxForward(b.x, b.mask, params).data_ptr());
    };
  } else if (impl == Impl::kFused) {
    launch = [&](int i) {
      const BufferSet& b = buffers[i % sets];
      benchmark::DoNotOptimize(ScaledMaskedSoftmaxBackward(b.dy, b.y, params).data_ptr());
    };
  } else if (dir == Direction::kForward) {
    launch = [&](int i) {
      const BufferSet& b = buffers[i % sets];
      benchmark::DoNotOptimize(FusedScaleMaskSoftmaxFallback(b.x, b.mask, config).data_ptr());
    };
  } else {
    launch = [&](int i) {
      const BufferSet& b = buffers[i % sets];
      const at::Tensor dx = at::_softmax_backward_data(b.dy, b.y, -1, at::kBFloat16) * kScale;
      benchmark::DoNotOptimize(dx.data_ptr());
    };
  }
  if (impl == Impl::kFused) {
    const BufferSet& b = buffers[0];
    const int64_t rows = kValidateRows;
    std::string why;
    bool ok;
    // The first rows of the first head: x[0, 0, :rows] (and the matching mask rows).
    const at::Tensor x = b.x.narrow(0, 0, 1).narrow(1, 0, 1).narrow(2, 0, rows).cpu().contiguous();
    if (dir == Direction::kForward) {
      const at::Tensor got = ScaledMaskedSoftmaxForward(b.x, b.mask, params).narrow(0, 0, 1).narrow(1, 0, 1).narrow(2, 0, rows);
      if (form == SoftmaxMask::kCausal) {
        // The reference needs a square causal block: rows x rows of the first rows, plus zeros to the right.
        const at::Tensor want = ScaledMaskedSoftmaxForwardReference(x.narrow(3, 0, rows).contiguous(), at::Tensor(), params);
        ok = benchmarks::Close(got.narrow(3, 0, rows), want, 2e-2, 2e-2, &why);
      } else {
        const at::Tensor m = b.mask.defined() ? b.mask.narrow(0, 0, 1).narrow(2, 0, rows).cpu().contiguous() : at::Tensor();
        ok = benchmarks::Close(got, ScaledMaskedSoftmaxForwardReference(x, m, params), 2e-2, 2e-2, &why);
      }
    } else {
      const at::Tensor got = ScaledMaskedSoftmaxBackward(b.dy, b.y, params).narrow(2, 0, rows);
      const at::Tensor want = ScaledMaskedSoftmaxBackwardReference(b.dy.narrow(2, 0, rows).cpu().contiguous(),
                                                                   b.y.narrow(2, 0, rows).cpu().contiguous(),
                                                                   SoftmaxParams{SoftmaxMask::kNone, kScale});
      ok = benchmarks::Close(got, want, 2e-2, 2e-2, &why);
    }
    if (!ok) {
      state.SkipWithError(("validation failed: " + why).c_str());
      return;
    }
  }
  benchmarks::TimeLoop(state, launch, bytes);
}

void BM_Copy(benchmark::State& state, SoftmaxMask form, Direction dir, Shape s) {
  benchmarks::BM_D2DCopy(state, OpBytes(form, dir, s));
}

void RegisterAll() {
  const std::vector<Shape> shapes = {{4, 16, 1024, 1024}, {1, 16, 4096, 4096}};
  for (const Shape& s : shapes) {
    for (SoftmaxMask form : {SoftmaxMask::kCausal, SoftmaxMask::kExplicit, SoftmaxMask::kNone}) {
      for (Direction dir : {Direction::kForward, Direction::kBackward}) {
        const std::string suffix = std::string(FormName(form)) + "/" +
                                   (dir == Direction::kForward ? "forward" : "backward") + "/bf16/" +
                                   std::to_string(s.b) + "x" + std::to_string(s.np) + "x" + std::to_string(s.sq) +
                                   "x" + std::to_string(s.sk);
        benchmark::RegisterBenchmark(("fused/" + suffix).c_str(), BM_Softmax, form, dir, Impl::kFused, s)
            ->UseManualTime()
            ->Unit(benchmark::kMicrosecond);
        benchmark::RegisterBenchmark(("aten/" + suffix).c_str(), BM_Softmax, form, dir, Impl::kAten, s)
            ->UseManualTime()
            ->Unit(benchmark::kMicrosecond);
        benchmark::RegisterBenchmark(("d2d_copy_same_bytes/" + suffix).c_str(), BM_Copy, form, dir, s)
            ->UseManualTime()
            ->Unit(benchmark::kMicrosecond);
      }
    }
  }
}

}  // namespace
}  // namespace megatron::fusions

int main(int argc, char** argv) {
  return megatron::benchmarks::BenchmarkMain(argc, argv, "softmax_benchmark", megatron::fusions::RegisterAll);
}
