// Throughput of a LLaVA preset's image path: vision encoder -> (class token dropped) -> pixel shuffle ->
// projector, forward and backward, random weights and images, on CPU or a GPU, fp32 or bf16 autocast.
//
//   bazel run //megatron/core/models/vision:vision_encoder_benchmark -- --device=cuda --precision=bf16 --batch=32
//       [--preset=experiments/llava/presets/qwen2_0p5b_siglip.textproto]
//
// Before timing it checks the device against the CPU: one image through the same weights in fp32 on both
// (the relative difference is printed; TF32 convolutions make it ~1e-3 on GPUs, so the bound is 1e-2).
// Timing: `--warmup` untimed iterations, then `--iters` timed ones, each ending in a host read of the loss
// (which waits for the device). Prints images/s and the image tokens/s handed to the language model.
#include <chrono>
#include <cstdio>
#include <iostream>
#include <string>

#include <ATen/Context.h>
#include <ATen/TensorOperators.h>
#include <ATen/core/grad_mode.h>
#include <ATen/ops/randn.h>
#include <google/protobuf/text_format.h>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "megatron/core/models/vision/clip_vit_model.h"
#include "megatron/core/models/vision/multimodal_projector.h"
#include "megatron/core/models/vision/pixel_shuffle.h"
#include "megatron/core/models/vision/vision_proto.h"
#include "megatron/core/proto/multimodal.pb.h"
#include "megatron/core/training/autocast.h"
#include "megatron/core/utils/file_io.h"

namespace megatron::models::vision {
namespace {

struct Flags {
  std::string preset = "experiments/llava/presets/qwen2_0p5b_siglip.textproto";
  std::string device = "cpu";
  std::string precision = "fp32";
  int batch = 4;
  int warmup = 2;
  int iters = 5;
  bool check = true;
};

int Usage(const std::string& why) {
  std::cerr << why << "\nflags: --preset=FILE --device=cpu|cuda --precision=fp32|bf16 --batch=N --warmup=N "
               "--iters=N --check=true|false\n";
  return 2;
}

at::Tensor ImagePath(const CLIPViTModel& vit, const MultimodalProjector& proj, const LlavaConfigs& c,
                     const at::Tensor& images) {
  at::Tensor x = vit.Forward(images);  // [b, seq, h]
  const VisionConfig& v = c.vision;
  if (v.add_class_token && c.drop_vision_class_token) x = x.slice(1, v.class_token_len);
  if (c.pixel_shuffle) x = PixelShuffle(x);
  return proj.Forward(x);  // [b, img_seq_len, lm hidden]
}

int Run(const Flags& f) {
  absl::StatusOr<std::string> text = utils::ReadFile(f.preset);
  if (!text.ok()) return Usage(std::string(text.status().message()));
  proto::LlavaModelConfig p;
  if (!google::protobuf::TextFormat::ParseFromString(*text, &p)) return Usage(f.preset + ": not a LlavaModelConfig");
  LlavaConfigs c;
  if (absl::Status s = LlavaConfigsFromProto(p, 0, &c); !s.ok()) return Usage(f.preset + ": " + std::string(s.message()));
  at::manual_seed(1234);
  auto vit = CLIPViTModel::Create(c.vision);
  auto proj = MultimodalProjector::Create(c.projector);
  if (!vit.ok() || !proj.ok()) return Usage("model construction failed");
  const at::Device device(f.device);
  const VisionConfig& v = c.vision;
  const at::Tensor probe_image = at::randn({1, 3, v.img_h, v.img_w});
  at::Tensor cpu_out;
  if (f.check && device.type() != at::kCPU) {
    at::NoGradGuard no_grad;
    cpu_out = ImagePath(**vit, **proj, c, probe_image);
  }
  (*vit)->ToDevice(device);
  (*proj)->ToDevice(device);
  if (cpu_out.defined()) {
    at::NoGradGuard no_grad;
    const at::Tensor dev_out = ImagePath(**vit, **proj, c, probe_image.to(device)).cpu();
    const double rel = ((dev_out - cpu_out).abs().max() / cpu_out.abs().max()).item<double>();
    std::printf("check: %s fp32 vs CPU fp32, one image: relative difference %.2e\n", f.device.c_str(), rel);
    if (!(rel <= 1e-2)) {
      std::cerr << "device output differs from the CPU's\n";
      return 1;
    }
  }
  const auto precision = f.precision == "bf16" ? training::Precision::kBf16 : training::Precision::kFp32;
  const at::Tensor images = at::randn({f.batch, 3, v.img_h, v.img_w}, at::TensorOptions().device(device));
  const at::Tensor probe =
      at::randn({f.batch, c.img_seq_len, c.projector.hidden_size}, at::TensorOptions().device(device));
  double seconds = 0;
  for (int i = 0; i < f.warmup + f.iters; ++i) {
    const auto start = std::chrono::steady_clock::now();
    at::Tensor loss;
    {
      training::AutocastGuard autocast(device.type(), precision);
      loss = (ImagePath(**vit, **proj, c, images).to(at::kFloat) * probe).sum();
    }
    loss.backward();
    (void)loss.item<double>();  // waits for the device
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    if (i >= f.warmup) seconds += s;
  }
  const double per_iter = seconds / f.iters;
  std::printf("\n| preset | device | precision | batch | encoder params | projector params | tokens/image | "
              "ms/iter (fwd+bwd) | images/s | image tokens/s |\n|---|---|---|---|---|---|---|---|---|---|\n");
  std::printf("| %s | %s | %s | %d | %lld | %lld | %d | %.1f | %.1f | %.0f |\n", f.preset.c_str(), f.device.c_str(),
              f.precision.c_str(), f.batch, static_cast<long long>((*vit)->NumParameters()),
              static_cast<long long>((*proj)->NumParameters()), c.img_seq_len, per_iter * 1e3, f.batch / per_iter,
              f.batch * c.img_seq_len / per_iter);
  return 0;
}

}  // namespace
}  // namespace megatron::models::vision

int main(int argc, char** argv) {
  megatron::models::vision::Flags f;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    const size_t eq = arg.find('=');
    if (!absl::StartsWith(arg, "--") || eq == std::string::npos) {
      return megatron::models::vision::Usage("bad argument " + arg);
    }
    const std::string name = arg.substr(2, eq - 2), value = arg.substr(eq + 1);
    bool ok = true;
    if (name == "preset") {
      f.preset = value;
    } else if (name == "device") {
      f.device = value;
    } else if (name == "precision") {
      ok = value == "fp32" || value == "bf16";
      f.precision = value;
    } else if (name == "batch") {
      ok = absl::SimpleAtoi(value, &f.batch) && f.batch > 0;
    } else if (name == "warmup") {
      ok = absl::SimpleAtoi(value, &f.warmup) && f.warmup >= 0;
    } else if (name == "iters") {
      ok = absl::SimpleAtoi(value, &f.iters) && f.iters > 0;
    } else if (name == "check") {
      ok = value == "true" || value == "false";
      f.check = value == "true";
    } else {
      ok = false;
    }
    if (!ok) return megatron::models::vision::Usage("bad flag " + arg);
  }
  return megatron::models::vision::Run(f);
}
