// Fused attention (attention.h) against the ATen ops it wraps, called directly, so that issue 4's target "within
// 5% of cuDNN's own number for the same shape" reads off one run. Causal, d = 128, bfloat16, forward and
// forward + backward, at b=4 s=2048 h=16 (MHA), b=1 s=8192 h=32 kv=8 (GQA) and b=8 s=1024 h=16 kv=4.
//
// Rows per shape and direction:
//   ours_auto         AttentionForward / AttentionBackward with impl=auto (what the FUSED backend runs)
//   ours_cudnn        the same, impl forced to cuDNN;  ours_flash: forced to flash
//   cudnn_direct      at::_scaled_dot_product_cudnn_attention (+ _backward) called with the same tensors:
//                     "cuDNN's own number" (ATen adds only its op dispatch around cuDNN's graph)
//   flash_direct      at::_scaled_dot_product_flash_attention (+ _backward)
//   sdpa_dispatcher   at::scaled_dot_product_attention(is_causal, enable_gqa) and, for fwd+bwd, autograd's
//                     backward through it (ATen's own backend choice; sq == sk so its top-left causal is ours)
// FLOPs: causal forward = half of 4·b·h·s²·d (two GEMMs of 2·s²·d per head, half the scores are masked); the
// backward is 2.5x the forward (five GEMMs against two), so fwd+bwd = 3.5x. TFLOP/s uses those counts for every
// row; frac_of_gemm = TFLOP/s over a bf16 8192³ at::matmul measured in this binary (the achievable dense peak).
// Method: validated once (ours against flash_direct, an independent kernel), 10 warm-up launches, CUDA events per
// iteration on the current stream (benchmarks/common/gpu_harness). One buffer set: q, k, v, out already exceed
// the 50 MB L2 at every shape, and attention at these sizes is compute-bound (frac_of_d2d says how far).
// After the runs a summary table prints ours_auto / cudnn_direct per shape and direction.
//
// Run on the GPU machine: attention_benchmark [--benchmark_min_time=0.2s] (built with --config=cuda).
#include <ATen/TensorOperators.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/_scaled_dot_product_cudnn_attention.h>
#include <ATen/ops/_scaled_dot_product_cudnn_attention_backward.h>
#include <ATen/ops/_scaled_dot_product_flash_attention.h>
#include <ATen/ops/_scaled_dot_product_flash_attention_backward.h>
#include <ATen/ops/matmul.h>
#include <ATen/ops/randn.h>
#include <ATen/ops/scaled_dot_product_attention.h>
#include <benchmark/benchmark.h>

#include <cmath>
#include <cstdio>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "benchmarks/common/gpu_harness.h"
#include "megatron/core/fusions/attention/attention.h"

namespace megatron::fusions {
namespace {

const at::Device kCuda(at::kCUDA, 0);
constexpr int64_t kHeadDim = 128;

enum class Direction { kForward, kForwardBackward };
enum class Impl { kOursAuto, kOursCudnn, kOursFlash, kCudnnDirect, kFlashDirect, kSdpa };

const char* ImplName(Impl impl) {
  switch (impl) {
    case Impl::kOursAuto:
      return "ours_auto";
    case Impl::kOursCudnn:
      return "ours_cudnn";
    case Impl::kOursFlash:
      return "ours_flash";
    case Impl::kCudnnDirect:
      return "cudnn_direct";
    case Impl::kFlashDirect:
      return "flash_direct";
    case Impl::kSdpa:
      return "sdpa_dispatcher";
  }
  return "?";
}

struct Shape {
  int64_t b, s, hq, hkv;
  std::string Name() const {
    return "b" + std::to_string(b) + "_s" + std::to_string(s) + "_h" + std::to_string(hq) + "_kv" +
           std::to_string(hkv);
  }
};

double CausalForwardFlops(const Shape& s) {
  return 0.5 * 4.0 * static_cast<double>(s.b * s.hq) * static_cast<double>(s.s) * static_cast<double>(s.s) *
         kHeadDim;
}

// FLOP/s of a bf16 8192^3 GEMM, measured once: the peak the frac_of_gemm counter divides by.
double GemmFlopsPerSecond() {
  static const double flops = [] {
    const auto opts = at::TensorOptions().dtype(at::kBFloat16).device(kCuda);
    const int64_t n = 8192;
    const at::Tensor a = at::randn({n, n}, opts), b = at::randn({n, n}, opts);
    for (int i = 0; i < 5; ++i) at::matmul(a, b);
    const double seconds = benchmarks::MedianSeconds([&](int) { at::matmul(a, b); }, 20);
    return 2.0 * n * n * n / seconds;
  }();
  return flops;
}

struct Buffers {
  at::Tensor q, k, v, dout;
};

Buffers MakeBuffers(const Shape& s, bool requires_grad) {
  at::manual_seed(0);
  const auto opts = at::TensorOptions().dtype(at::kBFloat16).device(kCuda);
  Buffers b{at::randn({s.b, s.hq, s.s, kHeadDim}, opts), at::randn({s.b, s.hkv, s.s, kHeadDim}, opts),
            at::randn({s.b, s.hkv, s.s, kHeadDim}, opts), at::randn({s.b, s.hq, s.s, kHeadDim}, opts)};
  if (requires_grad) {
    b.q.requires_grad_(true);
    b.k.requires_grad_(true);
    b.v.requires_grad_(true);
  }
  return b;
}

// One launch of `impl` (forward, or forward then backward); returns the forward output.
at::Tensor Launch(Impl impl, Direction dir, const Buffers& buf, const Shape& s) {
  const double scale = 1.0 / std::sqrt(static_cast<double>(kHeadDim));
  const bool bwd = dir == Direction::kForwardBackward;
  switch (impl) {
    case Impl::kOursAuto:
    case Impl::kOursCudnn:
    case Impl::kOursFlash: {
      const AttentionImpl which = impl == Impl::kOursAuto    ? AttentionImpl::kAuto
                                  : impl == Impl::kOursCudnn ? AttentionImpl::kCudnn
                                                             : AttentionImpl::kFlash;
      const AttentionParams p{scale, AttentionMask::kCausal, which};
      const AttentionForwardResult fwd = AttentionForward(buf.q, buf.k, buf.v, p);
      if (bwd) AttentionBackward(buf.dout, buf.q, buf.k, buf.v, fwd, p);
      return fwd.out;
    }
    case Impl::kCudnnDirect: {
      auto [out, lse, cq, ck, mq, mk, seed, offset, dbg] = at::_scaled_dot_product_cudnn_attention(
          buf.q, buf.k, buf.v, std::nullopt, /*compute_log_sumexp=*/bwd, 0.0, /*is_causal=*/true, false, scale);
      if (bwd) {
        at::_scaled_dot_product_cudnn_attention_backward(buf.dout, buf.q, buf.k, buf.v, out, lse, seed, offset,
                                                         at::Tensor(), at::Tensor(), at::Tensor(), s.s, s.s, 0.0,
                                                         true, scale);
      }
      return out;
    }
    case Impl::kFlashDirect: {
      auto [out, lse, cq, ck, mq, mk, rng, unused, dbg] =
          at::_scaled_dot_product_flash_attention(buf.q, buf.k, buf.v, 0.0, /*is_causal=*/true, false, scale);
      if (bwd) {
        at::_scaled_dot_product_flash_attention_backward(buf.dout, buf.q, buf.k, buf.v, out, lse, cq, ck, s.s, s.s,
                                                         0.0, true, rng, unused, scale);
      }
      return out;
    }
    case Impl::kSdpa: {
      at::Tensor out = at::scaled_dot_product_attention(buf.q, buf.k, buf.v, {}, 0.0, /*is_causal=*/true, scale,
                                                        /*enable_gqa=*/s.hkv != s.hq);
      if (bwd) out.backward(buf.dout);
      return out.detach();
    }
  }
  return {};
}

void BM_Attention(benchmark::State& state, Impl impl, Direction dir, Shape s) {
  const Buffers buf = MakeBuffers(s, impl == Impl::kSdpa && dir == Direction::kForwardBackward);
  {  // validate once against an independent kernel
    const at::Tensor got = Launch(impl, Direction::kForward, buf, s).detach();
    const at::Tensor want = Launch(Impl::kFlashDirect, Direction::kForward, buf, s);
    std::string why;
    if (!benchmarks::Close(got, want, 2e-2, 2e-2, &why)) {
      state.SkipWithError(("output differs from flash_direct: " + why).c_str());
      return;
    }
  }
  const int64_t elem = 2;  // bf16
  const int64_t qo = s.b * s.hq * s.s * kHeadDim * elem, kv = s.b * s.hkv * s.s * kHeadDim * elem;
  // Minimum traffic: forward reads q, k, v and writes out; backward reads q, k, v, out, dout and writes dq, dk, dv.
  const int64_t bytes = dir == Direction::kForward ? 2 * qo + 2 * kv : (2 * qo + 2 * kv) + (3 * qo + 2 * kv + 2 * kv);
  benchmarks::TimeLoop(state, [&](int) { Launch(impl, dir, buf, s); }, bytes);
  const double flops = CausalForwardFlops(s) * (dir == Direction::kForward ? 1.0 : 3.5);
  state.counters["TFLOP/s"] = benchmark::Counter(flops * 1e-12, benchmark::Counter::kIsIterationInvariantRate);
  state.counters["frac_of_gemm"] =
      benchmark::Counter(flops / GemmFlopsPerSecond(), benchmark::Counter::kIsIterationInvariantRate);
}

const std::vector<Shape>& Shapes() {
  static const std::vector<Shape> shapes = {{4, 2048, 16, 16}, {1, 8192, 32, 8}, {8, 1024, 16, 4}};
  return shapes;
}

std::string BenchName(const Shape& s, Direction dir, Impl impl) {
  return "attn_causal_d128_bf16/" + s.Name() + "/" + (dir == Direction::kForward ? "fwd" : "fwd_bwd") + "/" +
         ImplName(impl);
}

void RegisterAll() {
  for (const Shape& s : Shapes()) {
    for (Direction dir : {Direction::kForward, Direction::kForwardBackward}) {
      for (Impl impl : {Impl::kOursAuto, Impl::kOursCudnn, Impl::kOursFlash, Impl::kCudnnDirect, Impl::kFlashDirect,
                        Impl::kSdpa}) {
        benchmark::RegisterBenchmark(BenchName(s, dir, impl).c_str(), BM_Attention, impl, dir, s)
            ->UseManualTime()
            ->Unit(benchmark::kMillisecond);
      }
    }
  }
}

// The console table as usual, plus the TFLOP/s of every run kept for the summary.
class SummaryReporter : public benchmark::ConsoleReporter {
 public:
  void ReportRuns(const std::vector<Run>& runs) override {
    for (const Run& run : runs) {
      auto it = run.counters.find("TFLOP/s");
      // benchmark_name() carries the "/manual_time" suffix of UseManualTime(); the summary looks runs up by
      // BenchName().
      std::string name = run.benchmark_name();
      const std::string suffix = "/manual_time";
      if (name.size() > suffix.size() && name.compare(name.size() - suffix.size(), suffix.size(), suffix) == 0) {
        name.resize(name.size() - suffix.size());
      }
      if (it != run.counters.end() && !run.error_occurred) tflops_[name] = it->second.value;
    }
    ConsoleReporter::ReportRuns(runs);
  }

  void PrintSummary() const {
    std::printf("\nSummary (TFLOP/s, causal d=128 bf16; target: ours_auto >= 0.95 x cudnn_direct)\n");
    std::printf("%-22s %-8s %10s %10s %7s %10s %10s %10s\n", "shape", "dir", "ours_auto", "cudnn_dir", "ratio",
                "flash_dir", "sdpa", "ours_flash");
    for (const Shape& s : Shapes()) {
      for (Direction dir : {Direction::kForward, Direction::kForwardBackward}) {
        auto get = [&](Impl impl) {
          auto it = tflops_.find(BenchName(s, dir, impl));
          return it == tflops_.end() ? std::nan("") : it->second;
        };
        const double ours = get(Impl::kOursAuto), cudnn = get(Impl::kCudnnDirect);
        std::printf("%-22s %-8s %10.1f %10.1f %6.1f%% %10.1f %10.1f %10.1f\n", s.Name().c_str(),
                    dir == Direction::kForward ? "fwd" : "fwd_bwd", ours, cudnn, 100.0 * ours / cudnn,
                    get(Impl::kFlashDirect), get(Impl::kSdpa), get(Impl::kOursFlash));
      }
    }
    std::printf("bf16 GEMM peak measured here: %.1f TFLOP/s\n", GemmFlopsPerSecond() * 1e-12);
  }

 private:
  std::map<std::string, double> tflops_;
};

}  // namespace
}  // namespace megatron::fusions

int main(int argc, char** argv) {
  int devices = 0;
  if (cudaGetDeviceCount(&devices) != cudaSuccess || devices == 0) {
    std::fprintf(stderr, "attention_benchmark: no CUDA device\n");
    return 1;
  }
  benchmark::Initialize(&argc, argv);
  megatron::fusions::RegisterAll();
  megatron::fusions::SummaryReporter reporter;
  benchmark::RunSpecifiedBenchmarks(&reporter);
  reporter.PrintSummary();
  benchmark::Shutdown();
  return 0;
}
