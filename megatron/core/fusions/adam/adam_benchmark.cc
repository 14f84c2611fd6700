// Benchmarks of the multi-tensor AdamW kernel against, in the same binary: ATen's own fused AdamW
// (at::_fused_adamw_, what torch.optim.AdamW(fused=True) launches; two calls, decayed and undecayed groups), the
// per-tensor ATen loop of optimizer::AdamW (fused = false: what the trainer ran before), and a device-to-device copy
// of the same bytes.
//
// Lists: the GPT-2 124M parameters (148 tensors, 124.4M elements; a huge embedding, many 768-element biases) and
// 3000 tiny tensors of 1..4096 elements (6M elements: launch-bound for per-tensor code). Grads float32 (our
// trainer: fp32 params, autocast) or bfloat16 with a bfloat16 model copy (Megatron's mixed-precision optimizer).
// bytes = minimum traffic per element: read p, g, m, v and write p, m, v (and the copy): 28 B in both precisions. The 124M list moves 3.5 GB a step, the tiny one 170 MB: both far beyond L2 (50 MB), so one
// buffer set is cold on every iteration without rotation.
// Validated once: a step of the kernel on the list's first tensors against the float64 reference.
//
// Run on the GPU machine: adam_benchmark (built with --config=cuda).
#include <ATen/TensorOperators.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/_fused_adamw.h>
#include <ATen/ops/full.h>
#include <ATen/ops/rand.h>
#include <ATen/ops/randn.h>
#include <ATen/ops/zeros.h>
#include <benchmark/benchmark.h>

#include <algorithm>
#include <cstdint>
#include <functional>
#include <memory>
#include <random>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "benchmarks/common/gpu_harness.h"
#include "megatron/core/fusions/adam/adam.h"
#include "megatron/core/optimizer/optimizer.h"

namespace megatron::fusions {
namespace {

const at::Device kCuda(at::kCUDA, 0);

enum class Impl { kFused, kAtenFused, kAtenPerTensor };
enum class Precision { kFp32Grads, kBf16GradsAndCopy };

std::vector<std::vector<int64_t>> Gpt2Shapes() {
  std::vector<std::vector<int64_t>> s = {{50257, 768}, {1024, 768}};
  for (int layer = 0; layer < 12; ++layer) {
    for (const std::vector<int64_t>& shape : std::vector<std::vector<int64_t>>{
             {768}, {768}, {2304, 768}, {2304}, {768, 768}, {768}, {768}, {768}, {3072, 768}, {3072}, {768, 3072},
             {768}}) {
      s.push_back(shape);
    }
  }
  s.push_back({768});
  s.push_back({768});
  return s;
}

std::vector<std::vector<int64_t>> TinyShapes() {
  std::mt19937 rng(7);
  std::uniform_int_distribution<int64_t> size(1, 4096);
  std::vector<std::vector<int64_t>> s;
  for (int i = 0; i < 3000; ++i) s.push_back({size(rng)});
  return s;
}

int64_t Elements(const std::vector<std::vector<int64_t>>& shapes) {
  int64_t n = 0;
  for (const auto& s : shapes) {
    int64_t e = 1;
    for (int64_t d : s) e *= d;
    n += e;
  }
  return n;
}

// fp32 grads: 16 read + 12 written; bf16 grads with a bf16 copy: 14 read + 14 written.
constexpr int64_t kBytesPerElement = 28;

AdamWTensorLists MakeLists(const std::vector<std::vector<int64_t>>& shapes, Precision precision) {
  AdamWTensorLists l;
  const auto f32 = at::TensorOptions().dtype(at::kFloat).device(kCuda);
  const at::ScalarType grad_dtype = precision == Precision::kFp32Grads ? at::kFloat : at::kBFloat16;
  for (const auto& s : shapes) {
    l.params.push_back(at::randn(s, f32));
    l.grads.push_back(at::randn(s, f32).to(grad_dtype));
    l.exp_avgs.push_back(at::randn(s, f32) * 0.1);
    l.exp_avg_sqs.push_back(at::rand(s, f32) * 0.01);
    if (precision == Precision::kBf16GradsAndCopy) l.model_copies.push_back(at::zeros(s, f32.dtype(at::kBFloat16)));
    l.decay.push_back(s.size() > 1 ? 1 : 0);
  }
  return l;
}

bool Validate(const AdamWTensorLists& l, std::string* why) {
  AdamWTensorLists gpu, cpu;
  for (size_t i = 0; i < std::min<size_t>(l.params.size(), 4); ++i) {
    for (auto [from, to_gpu, to_cpu] :
         {std::tuple{&l.params, &gpu.params, &cpu.params}, std::tuple{&l.grads, &gpu.grads, &cpu.grads},
          std::tuple{&l.exp_avgs, &gpu.exp_avgs, &cpu.exp_avgs},
          std::tuple{&l.exp_avg_sqs, &gpu.exp_avg_sqs, &cpu.exp_avg_sqs}}) {
      to_gpu->push_back((*from)[i].clone());
      to_cpu->push_back((*from)[i].cpu());
    }
    gpu.decay.push_back(l.decay[i]);
    cpu.decay.push_back(l.decay[i]);
  }
  const AdamWStepParams params{1e-3, 0.9, 0.95, 1e-8, 0.1, 10};
  MultiTensorAdamW(gpu, params);
  MultiTensorAdamW(cpu, params);
  for (size_t i = 0; i < gpu.params.size(); ++i) {
    if (!benchmarks::Close(gpu.params[i].cpu(), cpu.params[i], 2e-6, 2e-6, why)) return false;
  }
  return true;
}

void BM_AdamW(benchmark::State& state, Impl impl, Precision precision, std::vector<std::vector<int64_t>> shapes) {
  const int64_t bytes = Elements(shapes) * kBytesPerElement;
  AdamWTensorLists l = MakeLists(shapes, precision);
  std::function<void(int)> launch;
  std::unique_ptr<optimizer::AdamW> per_tensor;
  std::vector<at::Tensor> steps;
  if (impl == Impl::kFused) {
    std::string why;
    if (!Validate(l, &why)) {
      state.SkipWithError(("validation failed: " + why).c_str());
      return;
    }
    launch = [&](int) { MultiTensorAdamW(l, AdamWStepParams{1e-3, 0.9, 0.95, 1e-8, 0.1, 10}); };
  } else if (impl == Impl::kAtenFused) {
    // Split into the decayed and undecayed groups, as torch.optim would with two param groups.
    std::vector<at::Tensor> p[2], g[2], m[2], v[2], t[2];
    for (size_t i = 0; i < l.params.size(); ++i) {
      const int k = l.decay[i];
      p[k].push_back(l.params[i]);
      g[k].push_back(l.grads[i]);
      m[k].push_back(l.exp_avgs[i]);
      v[k].push_back(l.exp_avg_sqs[i]);
      t[k].push_back(at::full({}, 10.0, at::TensorOptions().dtype(at::kFloat).device(kCuda)));
    }
    launch = [p, g, m, v, t](int) {
      for (int k = 0; k < 2; ++k) {
        if (p[k].empty()) continue;
        at::_fused_adamw_(p[k], g[k], m[k], v[k], {}, t[k], 1e-3, 0.9, 0.95, k == 1 ? 0.1 : 0.0, 1e-8,
                          /*amsgrad=*/false, /*maximize=*/false);
      }
    };
  } else {
    std::vector<std::pair<std::string, at::Tensor>> named;
    for (size_t i = 0; i < l.params.size(); ++i) {
      named.emplace_back("p" + std::to_string(i), l.params[i]);
      named.back().second.mutable_grad() = l.grads[i];
    }
    per_tensor = std::make_unique<optimizer::AdamW>(named, optimizer::AdamWConfig{0.9, 0.95, 1e-8, 0.1});
    launch = [&](int) { per_tensor->Step(1e-3); };
  }
  benchmarks::TimeLoop(state, launch, bytes, /*warmup=*/3);
  state.counters["tensors"] = static_cast<double>(shapes.size());
}

void BM_Copy(benchmark::State& state, int64_t bytes) { benchmarks::BM_D2DCopy(state, bytes); }

void RegisterAll() {
  const std::vector<std::pair<std::string, std::vector<std::vector<int64_t>>>> lists = {
      {"gpt2_124m", Gpt2Shapes()}, {"tiny3000", TinyShapes()}};
  for (const auto& [list_name, shapes] : lists) {
    for (Precision precision : {Precision::kFp32Grads, Precision::kBf16GradsAndCopy}) {
      const std::string suffix =
          list_name + (precision == Precision::kFp32Grads ? "/fp32_grads" : "/bf16_grads_bf16_copy");
      const auto reg = [&](const std::string& name, Impl impl) {
        benchmark::RegisterBenchmark((name + "/" + suffix).c_str(), BM_AdamW, impl, precision, shapes)
            ->UseManualTime()
            ->Unit(benchmark::kMicrosecond);
      };
      reg("fused", Impl::kFused);
      // ATen's fused AdamW and the per-tensor loop take grads of the params' dtype (fp32) only.
      if (precision == Precision::kFp32Grads) {
        reg("aten_fused_adamw", Impl::kAtenFused);
        reg("aten_per_tensor", Impl::kAtenPerTensor);
      }
      benchmark::RegisterBenchmark(("d2d_copy_same_bytes/" + suffix).c_str(), BM_Copy,
                                   Elements(shapes) * kBytesPerElement)
          ->UseManualTime()
          ->Unit(benchmark::kMicrosecond);
    }
  }
}

}  // namespace
}  // namespace megatron::fusions

int main(int argc, char** argv) {
  return megatron::benchmarks::BenchmarkMain(argc, argv, "adam_benchmark", megatron::fusions::RegisterAll);
}
