// Benchmarks of the CUDA norm kernels against a device-to-device copy and ATen's eager kernels, bf16, shapes
// 16384 x 4096 and 4096 x 1024, forward and backward, RMSNorm and LayerNorm; and of the residual add + norm
// ("add_norm/"): fused, against the unfused at::add + our norm ("unfused/") and at::add + ATen's norm
// ("aten_add/"), backward likewise (our or ATen's norm backward, then at::add of dh).
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
#include <ATen/ops/add.h>
#include <ATen/ops/layer_norm.h>
#include <ATen/ops/native_layer_norm.h>
#include <ATen/ops/native_layer_norm_backward.h>
#include <ATen/ops/randn.h>
#include <ATen/ops/rms_norm.h>
#include <benchmark/benchmark.h>
#include <cuda_runtime_api.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "benchmarks/common/gpu_harness.h"
#include "megatron/core/fusions/norm/norm.h"

namespace megatron::fusions {
namespace {

constexpr double kEps = 1e-5;
constexpr int kValidateRows = 64;

enum class Direction { kForward, kBackward };
enum class Impl { kFused, kAten };

struct Shape {
  int64_t rows;
  int64_t hidden;
};

const at::Device kCuda(at::kCUDA, 0);

// Minimum bytes an op must move (bf16 activations, float32 statistics, bf16 gamma/beta).
int64_t OpBytes(NormKind kind, Direction dir, Shape s) {
  const int64_t act = s.rows * s.hidden * 2;
  const int64_t stats = s.rows * 4 * (kind == NormKind::kLayerNorm ? 2 : 1);
  const int64_t weights = s.hidden * 2 * (kind == NormKind::kLayerNorm ? 2 : 1);
  return dir == Direction::kForward ? 2 * act + stats + weights : 3 * act + stats + 2 * weights;
}

void BM_D2DCopy(benchmark::State& state, NormKind kind, Direction dir, Shape shape) {
  benchmarks::BM_D2DCopy(state, OpBytes(kind, dir, shape));
}

struct BufferSet {
  at::Tensor x, dy, gamma, beta;  // inputs
  at::Tensor mean, rstd;          // forward statistics (from our kernel, or ATen's for the ATen backward)
};

// bf16 tolerance (rtol = atol = 2e-2).
bool Close(const at::Tensor& got, const at::Tensor& want, std::string* why) {
  return benchmarks::Close(got, want, 2e-2, 2e-2, why);
}

void BM_Norm(benchmark::State& state, NormKind kind, Direction dir, Impl impl, Shape shape) {
  const bool layer_norm = kind == NormKind::kLayerNorm;
  const NormParams params{kind, kEps, false};
  const int64_t bytes = OpBytes(kind, dir, shape);
  const int sets = benchmarks::NumBufferSets(bytes);
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

  benchmarks::TimeLoop(state, launch, bytes);
}

// ---- Residual add + norm ----

enum class AddImpl { kFused, kUnfused, kAten };

// Minimum bytes of the fused op: forward reads x and residual and writes h and y; backward reads dy, dh and h and
// writes dx (plus statistics and gamma/beta as OpBytes).
int64_t AddNormBytes(NormKind kind, Direction dir, Shape s) {
  return OpBytes(kind, dir, s) + 2 * s.rows * s.hidden * 2;
}

void BM_D2DCopyAddNorm(benchmark::State& state, NormKind kind, Direction dir, Shape shape) {
  benchmarks::BM_D2DCopy(state, AddNormBytes(kind, dir, shape));
}

struct AddBufferSet {
  at::Tensor x, residual, dy, dh, gamma, beta;  // inputs
  at::Tensor h, mean, rstd;                      // forward outputs the backward reads
};

void BM_AddNorm(benchmark::State& state, NormKind kind, Direction dir, AddImpl impl, Shape shape) {
  const bool layer_norm = kind == NormKind::kLayerNorm;
  const NormParams params{kind, kEps, false};
  const int64_t bytes = AddNormBytes(kind, dir, shape);
  const int sets = benchmarks::NumBufferSets(bytes);
  const at::TensorOptions bf16 = at::TensorOptions().dtype(at::kBFloat16).device(kCuda);
  std::vector<AddBufferSet> buffers(sets);
  for (AddBufferSet& b : buffers) {
    b.x = at::randn({shape.rows, shape.hidden}, bf16);
    b.residual = at::randn({shape.rows, shape.hidden}, bf16);
    b.dy = at::randn({shape.rows, shape.hidden}, bf16);
    b.dh = at::randn({shape.rows, shape.hidden}, bf16);
    b.gamma = at::randn({shape.hidden}, bf16);
    if (layer_norm) b.beta = at::randn({shape.hidden}, bf16);
    if (impl != AddImpl::kAten) {
      const NormForwardResult f = ResidualAddNormForward(b.x, b.residual, b.gamma, b.beta, params);
      b.h = f.h;
      b.mean = f.mean;
      b.rstd = f.rstd;
    } else {
      b.h = at::add(b.x, b.residual);
      if (layer_norm) {
        auto [y, mean, rstd] = at::native_layer_norm(b.h, {shape.hidden}, b.gamma, b.beta, kEps);
        b.mean = mean;
        b.rstd = rstd;
      } else {
        try {
          b.rstd = std::get<1>(at::_fused_rms_norm(b.h, {shape.hidden}, b.gamma, kEps));
        } catch (const c10::Error& e) {
          state.SkipWithError(("at::_fused_rms_norm unavailable: " + std::string(e.what_without_backtrace())).c_str());
          return;
        }
      }
    }
  }

  std::function<void(int)> launch;
  if (dir == Direction::kForward) {
    launch = [&](int i) {
      const AddBufferSet& b = buffers[i % sets];
      if (impl == AddImpl::kFused) {
        benchmark::DoNotOptimize(ResidualAddNormForward(b.x, b.residual, b.gamma, b.beta, params).y.data_ptr());
        return;
      }
      const at::Tensor h = at::add(b.x, b.residual);
      at::Tensor y;
      if (impl == AddImpl::kUnfused) {
        y = NormForward(h, b.gamma, b.beta, params).y;
      } else {
        y = layer_norm ? at::layer_norm(h, {shape.hidden}, b.gamma, b.beta, kEps)
                       : at::rms_norm(h, {shape.hidden}, b.gamma, kEps);
      }
      benchmark::DoNotOptimize(y.data_ptr());
    };
  } else {
    launch = [&](int i) {
      const AddBufferSet& b = buffers[i % sets];
      at::Tensor dx;
      if (impl == AddImpl::kFused) {
        dx = ResidualAddNormBackward(b.dy, b.dh, b.h, b.gamma, b.mean, b.rstd, params).dx;
      } else if (impl == AddImpl::kUnfused) {
        dx = at::add(NormBackward(b.dy, b.h, b.gamma, b.mean, b.rstd, params).dx, b.dh);
      } else if (layer_norm) {
        dx = at::add(std::get<0>(at::native_layer_norm_backward(b.dy, b.h, {shape.hidden}, b.mean, b.rstd, b.gamma,
                                                                b.beta, {true, true, true})),
                     b.dh);
      } else {
        dx = at::add(std::get<0>(at::_fused_rms_norm_backward(b.dy, b.h, {shape.hidden}, b.rstd, b.gamma,
                                                              {true, true})),
                     b.dh);
      }
      benchmark::DoNotOptimize(dx.data_ptr());
    };
  }

  // Validate the fused op once against the float64 reference (first kValidateRows rows).
  if (impl == AddImpl::kFused) {
    const AddBufferSet& b = buffers[0];
    const int64_t rows = std::min<int64_t>(shape.rows, kValidateRows);
    auto head = [&](const at::Tensor& t) { return t.narrow(0, 0, rows).to(at::kCPU); };
    const at::Tensor gamma = b.gamma.to(at::kCPU);
    const at::Tensor beta = b.beta.defined() ? b.beta.to(at::kCPU) : at::Tensor();
    std::string why;
    bool ok;
    if (dir == Direction::kForward) {
      const NormForwardResult got = ResidualAddNormForward(b.x, b.residual, b.gamma, b.beta, params);
      const NormForwardResult want = ResidualAddNormForwardReference(head(b.x), head(b.residual), gamma, beta, params);
      ok = Close(head(got.h), want.h, &why) && Close(head(got.y), want.y, &why);
    } else {
      const NormBackwardResult got = ResidualAddNormBackward(b.dy, b.dh, b.h, b.gamma, b.mean, b.rstd, params);
      const NormBackwardResult want =
          ResidualAddNormBackwardReference(head(b.dy), head(b.dh), head(b.h), gamma,
                                           b.mean.defined() ? head(b.mean) : at::Tensor(), head(b.rstd), params);
      ok = Close(head(got.dx), want.dx, &why);
    }
    if (!ok) {
      state.SkipWithError(("validation failed: " + why).c_str());
      return;
    }
  }

  benchmarks::TimeLoop(state, launch, bytes);
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
  for (const Shape& s : shapes) {
    for (NormKind kind : {NormKind::kRMSNorm, NormKind::kLayerNorm}) {
      for (Direction dir : {Direction::kForward, Direction::kBackward}) {
        const std::string suffix = std::string(kind == NormKind::kRMSNorm ? "RMSNorm" : "LayerNorm") + "/" +
                                   (dir == Direction::kForward ? "forward" : "backward") + "/bf16/" +
                                   std::to_string(s.rows) + "x" + std::to_string(s.hidden);
        for (auto [impl, name] : {std::pair{AddImpl::kFused, "add_norm/fused/"},
                                  std::pair{AddImpl::kUnfused, "add_norm/unfused/"},
                                  std::pair{AddImpl::kAten, "add_norm/aten_add/"}}) {
          benchmark::RegisterBenchmark((name + suffix).c_str(), BM_AddNorm, kind, dir, impl, s)
              ->UseManualTime()
              ->Unit(benchmark::kMicrosecond);
        }
        benchmark::RegisterBenchmark(("add_norm/d2d_copy_same_bytes/" + suffix).c_str(), BM_D2DCopyAddNorm, kind,
                                     dir, s)
            ->UseManualTime()
            ->Unit(benchmark::kMicrosecond);
      }
    }
  }
}

}  // namespace
}  // namespace megatron::fusions

int main(int argc, char** argv) {
  return megatron::benchmarks::BenchmarkMain(argc, argv, "norm_benchmark", megatron::fusions::RegisterAll);
}
