// FusedScaleMaskSoftmax (megatron/legacy/model/fused_softmax.py): scale + mask + softmax over attention scores,
// through Megatron's fused CUDA kernels when the availability rule allows, else the unfused fp32 path.
//
//   Forward(x [b, np, sq, sk], mask) -> probabilities [b, np, sq, sk]
// mask: boolean, broadcastable [b or 1, 1, sq, sk], true = masked out (attention_mask_func fills -10000, so a row
// masked everywhere comes out uniform, as in Megatron); undefined = none (for kCausal: the causal mask).
//
// The path (ChoosePath) is Megatron's is_kernel_available (megatron/core/fusions/softmax: fusion on, fp16/bf16
// by the constructor flags, 16 < sk <= 16384, sq, sk and b*np divisible by 4, the batch-per-block rule) plus two
// conditions of this build: x is a CUDA tensor and //megatron/core/fusions/softmax:softmax_cuda is linked.
// The fused path is differentiable: an autograd function whose backward is the kernel's (from the saved output).
// RunKernelPath runs that autograd function whatever the rule says; on CPU it uses the float64 reference kernel
// (tests use it to check the wiring without a GPU).
#pragma once

#include <optional>

#include <ATen/core/Tensor.h>

#include "absl/status/statusor.h"

namespace megatron::legacy {

// Legacy AttnMaskType (padding = 1, causal = 2).
enum class AttnMaskType { kPadding = 1, kCausal = 2 };
enum class SoftmaxPath { kFused, kFallback };

struct FusedScaleMaskSoftmaxOptions {
  bool input_in_fp16 = false;
  bool input_in_bf16 = false;
  AttnMaskType attn_mask_type = AttnMaskType::kCausal;
  bool scaled_masked_softmax_fusion = true;
  bool softmax_in_fp32 = true;
  std::optional<double> scale;  // None: 1 (only allowed with softmax_in_fp32, as Megatron asserts)
};

class FusedScaleMaskSoftmax {
 public:
  // Megatron's constructor assertions, as InvalidArgument naming the option.
  static absl::StatusOr<FusedScaleMaskSoftmax> Create(const FusedScaleMaskSoftmaxOptions& options);

  at::Tensor Forward(const at::Tensor& x, const at::Tensor& mask) const;
  SoftmaxPath ChoosePath(const at::Tensor& x) const;
  at::Tensor RunKernelPath(const at::Tensor& x, const at::Tensor& mask) const;
  at::Tensor RunFallbackPath(const at::Tensor& x, const at::Tensor& mask) const;

  const FusedScaleMaskSoftmaxOptions& options() const { return options_; }

 private:
  explicit FusedScaleMaskSoftmax(const FusedScaleMaskSoftmaxOptions& options) : options_(options) {}
  FusedScaleMaskSoftmaxOptions options_;
};

}  // namespace megatron::legacy
