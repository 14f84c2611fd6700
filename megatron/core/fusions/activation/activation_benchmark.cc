// Benchmarks of the CUDA bias + activation kernels against ATen eager and a device-to-device copy, bf16, on the
// GPT-2 124M MLP shape (16 x 1024 tokens, 4 x 768 = 3072 features) and a Llama-7B-like SwiGLU shape (8192 tokens,
// 2 x 11008), forward and backward.
//
// Method (benchmarks/common/gpu_harness.h): validated once against the float64 reference on the first rows, warm
// up, rotate buffer sets to keep L2 cold, CUDA events per iteration. bytes = minimum traffic: forward reads x and
// writes y; backward reads dy and x and writes dx (the bias is [c], negligible). frac_of_d2d = that bandwidth over
// a D2D copy of the same bytes measured in this binary.
// ATen rows: forward = at::gelu(x + bias) / at::silu(gate) * up (what the local backend runs, bias added by the
// linear layer); backward = at::gelu_backward / the two products autograd runs for SwiGLU.
//
// Run on the GPU machine: activation_benchmark (built with --config=cuda).
#include <ATen/TensorOperators.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/cat.h>
#include <ATen/ops/gelu.h>
#include <ATen/ops/gelu_backward.h>
#include <ATen/ops/randn.h>
#include <ATen/ops/sigmoid.h>
#include <ATen/ops/silu.h>
#include <benchmark/benchmark.h>

#include <functional>
#include <string>
#include <vector>

#include "benchmarks/common/gpu_harness.h"
#include "megatron/core/fusions/activation/activation.h"

namespace megatron::fusions {
namespace {

constexpr int64_t kValidateRows = 8;

enum class Direction { kForward, kBackward };
enum class Impl { kFused, kAten };

struct Shape {
  int64_t rows, cols;  // cols = x's last dimension (2h for SwiGLU)
};

const at::Device kCuda(at::kCUDA, 0);

int64_t OpBytes(ActivationKind kind, Direction dir, Shape s) {
  const int64_t x = s.rows * s.cols * 2;
  const int64_t y = kind == ActivationKind::kSwiGLU ? x / 2 : x;
  return dir == Direction::kForward ? x + y : y + 2 * x;
}

const char* KindName(ActivationKind kind) {
  switch (kind) {
    case ActivationKind::kGeluTanh:
      return "bias_gelu_tanh";
    case ActivationKind::kGeluErf:
      return "bias_gelu_erf";
    case ActivationKind::kSwiGLU:
      return "swiglu";
  }
  return "?";
}

struct BufferSet {
  at::Tensor x, bias, dy;
};

void BM_Activation(benchmark::State& state, ActivationKind kind, Direction dir, Impl impl, Shape s) {
  const int64_t bytes = OpBytes(kind, dir, s);
  const int sets = benchmarks::NumBufferSets(bytes);
  const at::TensorOptions bf16 = at::TensorOptions().dtype(at::kBFloat16).device(kCuda);
  const bool swiglu = kind == ActivationKind::kSwiGLU;
  const int64_t h = s.cols / 2;
  std::vector<BufferSet> buffers(sets);
  for (BufferSet& b : buffers) {
    b.x = at::randn({s.rows, s.cols}, bf16) * 2;
    if (!swiglu) b.bias = at::randn({s.cols}, bf16);
    b.dy = at::randn({s.rows, swiglu ? h : s.cols}, bf16);
  }
  std::function<void(int)> launch;
  if (impl == Impl::kFused && dir == Direction::kForward) {
    launch = [&](int i) {
      const BufferSet& b = buffers[i % sets];
      benchmark::DoNotOptimize(BiasActivationForward(b.x, b.bias, kind).data_ptr());
    };
  } else if (impl == Impl::kFused) {
    launch = [&](int i) {
      const BufferSet& b = buffers[i % sets];
      benchmark::DoNotOptimize(BiasActivationBackward(b.dy, b.x, at::Tensor(), kind).dx.data_ptr());
    };
  } else if (dir == Direction::kForward) {
    launch = [&](int i) {
      const BufferSet& b = buffers[i % sets];
      const at::Tensor y = swiglu ? at::silu(b.x.narrow(1, 0, h)) * b.x.narrow(1, h, h)
                                  : at::gelu(b.x + b.bias, kind == ActivationKind::kGeluTanh ? "tanh" : "none");
      benchmark::DoNotOptimize(y.data_ptr());
    };
  } else {
    launch = [&](int i) {
      const BufferSet& b = buffers[i % sets];
      at::Tensor dx;
      if (swiglu) {
        // What autograd runs for silu(gate) * up: d(up) = dy * silu(gate); d(gate) = silu_backward(dy * up).
        const at::Tensor gate = b.x.narrow(1, 0, h);
        const at::Tensor up = b.x.narrow(1, h, h);
        const at::Tensor s_gate = at::sigmoid(gate);
        dx = at::cat({b.dy * up * s_gate * (1 + gate * (1 - s_gate)), b.dy * at::silu(gate)}, 1);
      } else {
        dx = at::gelu_backward(b.dy, b.x, kind == ActivationKind::kGeluTanh ? "tanh" : "none");
      }
      benchmark::DoNotOptimize(dx.data_ptr());
    };
  }
  if (impl == Impl::kFused) {
    const BufferSet& b = buffers[0];
    const at::Tensor x = b.x.narrow(0, 0, kValidateRows).cpu();
    const at::Tensor bias = b.bias.defined() ? b.bias.cpu() : at::Tensor();
    std::string why;
    bool ok;
    if (dir == Direction::kForward) {
      ok = benchmarks::Close(BiasActivationForward(b.x, b.bias, kind).narrow(0, 0, kValidateRows),
                             BiasActivationForwardReference(x, bias, kind), 2e-2, 2e-2, &why);
    } else {
      ok = benchmarks::Close(
          BiasActivationBackward(b.dy, b.x, at::Tensor(), kind).dx.narrow(0, 0, kValidateRows),
          BiasActivationBackwardReference(b.dy.narrow(0, 0, kValidateRows).cpu(), x, at::Tensor(), kind).dx, 2e-2,
          2e-2, &why);
    }
    if (!ok) {
      state.SkipWithError(("validation failed: " + why).c_str());
      return;
    }
  }
  benchmarks::TimeLoop(state, launch, bytes);
}

void BM_Copy(benchmark::State& state, ActivationKind kind, Direction dir, Shape s) {
  benchmarks::BM_D2DCopy(state, OpBytes(kind, dir, s));
}

void RegisterAll() {
  struct Case {
    ActivationKind kind;
    Shape shape;
  };
  const std::vector<Case> cases = {{ActivationKind::kGeluTanh, {16384, 3072}},
                                   {ActivationKind::kGeluErf, {16384, 3072}},
                                   {ActivationKind::kSwiGLU, {8192, 2 * 11008}}};
  for (const Case& c : cases) {
    for (Direction dir : {Direction::kForward, Direction::kBackward}) {
      const std::string suffix = std::string(KindName(c.kind)) + "/" +
                                 (dir == Direction::kForward ? "forward" : "backward") + "/bf16/" +
                                 std::to_string(c.shape.rows) + "x" + std::to_string(c.shape.cols);
      benchmark::RegisterBenchmark(("fused/" + suffix).c_str(), BM_Activation, c.kind, dir, Impl::kFused, c.shape)
          ->UseManualTime()
          ->Unit(benchmark::kMicrosecond);
      benchmark::RegisterBenchmark(("aten/" + suffix).c_str(), BM_Activation, c.kind, dir, Impl::kAten, c.shape)
          ->UseManualTime()
          ->Unit(benchmark::kMicrosecond);
      benchmark::RegisterBenchmark(("d2d_copy_same_bytes/" + suffix).c_str(), BM_Copy, c.kind, dir, c.shape)
          ->UseManualTime()
          ->Unit(benchmark::kMicrosecond);
    }
  }
}

}  // namespace
}  // namespace megatron::fusions

int main(int argc, char** argv) {
  return megatron::benchmarks::BenchmarkMain(argc, argv, "activation_benchmark", megatron::fusions::RegisterAll);
}
