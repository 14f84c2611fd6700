// Scaled masked softmax over the last dimension of attention scores, forward and backward (the kernels of
// Megatron's legacy FusedScaleMaskSoftmax), plus that module's availability rule and its unfused fallback.
//
// Semantics (params in softmax_params.h), x viewed as rows of sk scores; z = scale * x:
//   kNone:     y = softmax(z)
//   kExplicit: y = softmax(where(mask, kMaskedScore, z)), mask bool [mb, 1, sq, sk] with mb = 1 or b
//   kCausal:   y_ij = exp(z_ij) / sum_{j' <= i} exp(z_ij') for j <= i, 0 for j > i (i = query index in [0, sq))
//   backward:  dx = scale * y * (dy - sum_j(dy * y))   (from the saved output y, for all three forms)
//
// Shapes: kExplicit and kNone take x [b, np, sq, sk]; kCausal takes [attn_batches, sq, sk] or [b, np, sq, sk]
//   with sq == sk. dy and y have x's shape. All contiguous. sk >= 1; zero rows are allowed.
// Dtypes: x in float32, bfloat16 or float16; every sum in float32 on CUDA (float64 in the reference); y and dx in
//   x's dtype. The reference also accepts float64 (finite differences). The mask is bool.
// Aliasing: outputs are fresh tensors; inputs are never written.
// Devices and streams: CUDA tensors run softmax_kernel.cu on the current stream when
//   //megatron/core/fusions/softmax:softmax_cuda is linked, CPU tensors run the float64 reference; a CUDA tensor in
//   a binary without the kernels fails with a message saying so.
// Not differentiable by autograd: callers wire Forward/Backward into their own autograd function.
#pragma once

#include <ATen/core/Tensor.h>
#include <absl/status/status.h>

#include <cstdint>
#include <optional>

#include "megatron/core/fusions/softmax/softmax_params.h"

namespace megatron::fusions {

at::Tensor ScaledMaskedSoftmaxForward(const at::Tensor& x, const at::Tensor& mask, const SoftmaxParams& params);
at::Tensor ScaledMaskedSoftmaxBackward(const at::Tensor& dy, const at::Tensor& y, const SoftmaxParams& params);

// ---- FusedScaleMaskSoftmax's decisions (legacy fused_softmax.py), as pure functions ----

// The longest key length the fused kernels take: 16384 in the legacy module, 4096 in megatron-core's copy.
constexpr int64_t kLegacyMaxFusedSoftmaxKeys = 16384;
constexpr int64_t kCoreMaxFusedSoftmaxKeys = 4096;

// The module's constructor arguments that decide the path.
struct FusedSoftmaxConfig {
  bool input_in_fp16 = false;
  bool input_in_bf16 = false;
  SoftmaxMask mask = SoftmaxMask::kCausal;  // the attn_mask_type (causal) or padding (kExplicit)
  bool scaled_masked_softmax_fusion = true;
  bool softmax_in_fp32 = true;
  std::optional<double> scale;  // None in Python
  int64_t max_fused_keys = kLegacyMaxFusedSoftmaxKeys;
};

// The constructor's assertions: not both fp16 and bf16; a scale only with softmax_in_fp32. The message names the
// field.
absl::Status ValidateFusedSoftmaxConfig(const FusedSoftmaxConfig& config);

// get_batch_per_block(sq, sk, b, np) of the CUDA header: rows one 128-thread block of the legacy kernel handles.
int64_t SoftmaxBatchPerBlock(int64_t sq, int64_t sk, int64_t b, int64_t np);

// is_kernel_available(mask, b, np, sq, sk): fusion on, half-precision input, 16 < sk <= max_fused_keys, sq and sk
// and b*np divisible by 4, and the batch-per-block divisibility of the chosen kernel.
bool IsFusedSoftmaxAvailable(const FusedSoftmaxConfig& config, int64_t b, int64_t np, int64_t sq, int64_t sk);

// FusedScaleMaskSoftmax.forward without the kernels: optional cast to float32 (softmax_in_fp32 with half input),
// scale, masked_fill(mask, -10000), softmax, cast back. For kCausal an undefined mask means the default causal
// mask (megatron-core's get_default_causal_mask); x is [b, np, sq, sk]. Differentiable by autograd (plain ATen).
at::Tensor FusedScaleMaskSoftmaxFallback(const at::Tensor& x, const at::Tensor& mask,
                                         const FusedSoftmaxConfig& config);

// FusedScaleMaskSoftmax.forward: the fused forward when IsFusedSoftmaxAvailable and x is a CUDA tensor with the
// kernels linked (mask ignored for kCausal, as the legacy module does), else the fallback. Forward only (the
// fused branch is not differentiable by autograd; see above).
at::Tensor FusedScaleMaskSoftmax(const at::Tensor& x, const at::Tensor& mask, const FusedSoftmaxConfig& config);

// ---- Building blocks (tests, the CUDA glue) ----

// float64 ATen on any device. Same contract as above.
at::Tensor ScaledMaskedSoftmaxForwardReference(const at::Tensor& x, const at::Tensor& mask,
                                               const SoftmaxParams& params);
at::Tensor ScaledMaskedSoftmaxBackwardReference(const at::Tensor& dy, const at::Tensor& y,
                                                const SoftmaxParams& params);

// Input checks shared by every implementation (c10::Error naming shapes and dtypes).
void CheckSoftmaxForwardInputs(const at::Tensor& x, const at::Tensor& mask, const SoftmaxParams& params,
                               bool allow_float64);
void CheckSoftmaxBackwardInputs(const at::Tensor& dy, const at::Tensor& y, const SoftmaxParams& params,
                                bool allow_float64);

// The CUDA implementation registers itself from a static initialiser in softmax_cuda.cc.
using SoftmaxForwardFn = at::Tensor (*)(const at::Tensor&, const at::Tensor&, const SoftmaxParams&);
using SoftmaxBackwardFn = at::Tensor (*)(const at::Tensor&, const at::Tensor&, const SoftmaxParams&);
void RegisterCudaSoftmaxImpl(SoftmaxForwardFn forward, SoftmaxBackwardFn backward);
bool HasCudaSoftmaxImpl();

}  // namespace megatron::fusions
