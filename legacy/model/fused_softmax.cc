#include "legacy/model/fused_softmax.h"

#include <ATen/ops/empty.h>
#include <torch/csrc/autograd/custom_function.h>

#include "megatron/core/fusions/softmax/softmax.h"

namespace megatron::legacy {
namespace {

fusions::FusedSoftmaxConfig ToFusionsConfig(const FusedScaleMaskSoftmaxOptions& o) {
  fusions::FusedSoftmaxConfig c;
  c.input_in_fp16 = o.input_in_fp16;
  c.input_in_bf16 = o.input_in_bf16;
  c.mask = o.attn_mask_type == AttnMaskType::kCausal ? fusions::SoftmaxMask::kCausal
                                                      : fusions::SoftmaxMask::kExplicit;
  c.scaled_masked_softmax_fusion = o.scaled_masked_softmax_fusion;
  c.softmax_in_fp32 = o.softmax_in_fp32;
  c.scale = o.scale;
  c.max_fused_keys = fusions::kLegacyMaxFusedSoftmaxKeys;
  return c;
}

// The kernels are not differentiable by themselves; their backward (dx = scale * y * (dy - sum(dy * y))) needs
// only the saved output, as in Megatron's ScaledMaskedSoftmax autograd functions.
class FusedSoftmaxFunction : public torch::autograd::Function<FusedSoftmaxFunction> {
 public:
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& x, const at::Tensor& mask,
                            int64_t kind, double scale) {
    fusions::SoftmaxParams params;
    params.mask = static_cast<fusions::SoftmaxMask>(kind);
    params.scale = static_cast<float>(scale);
    // Autograd functions take defined tensors only: an empty mask stands for "none".
    const at::Tensor m = params.mask == fusions::SoftmaxMask::kExplicit ? mask : at::Tensor();
    at::Tensor y = fusions::ScaledMaskedSoftmaxForward(x.contiguous(), m, params);
    ctx->save_for_backward({y});
    ctx->saved_data["kind"] = kind;
    ctx->saved_data["scale"] = scale;
    return y;
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grad) {
    fusions::SoftmaxParams params;
    params.mask = static_cast<fusions::SoftmaxMask>(ctx->saved_data["kind"].toInt());
    params.scale = static_cast<float>(ctx->saved_data["scale"].toDouble());
    const at::Tensor y = ctx->get_saved_variables()[0];
    at::Tensor dx = fusions::ScaledMaskedSoftmaxBackward(grad[0].contiguous(), y, params);
    return {dx, at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

}  // namespace

absl::StatusOr<FusedScaleMaskSoftmax> FusedScaleMaskSoftmax::Create(const FusedScaleMaskSoftmaxOptions& options) {
  if (absl::Status s = fusions::ValidateFusedSoftmaxConfig(ToFusionsConfig(options)); !s.ok()) return s;
  return FusedScaleMaskSoftmax(options);
}

SoftmaxPath FusedScaleMaskSoftmax::ChoosePath(const at::Tensor& x) const {
  TORCH_CHECK(x.dim() == 4, "FusedScaleMaskSoftmax: x must be [b, np, sq, sk], got ", x.sizes());
  const bool available = fusions::IsFusedSoftmaxAvailable(ToFusionsConfig(options_), x.size(0), x.size(1),
                                                          x.size(2), x.size(3));
  return available && x.is_cuda() && fusions::HasCudaSoftmaxImpl() ? SoftmaxPath::kFused : SoftmaxPath::kFallback;
}

at::Tensor FusedScaleMaskSoftmax::Forward(const at::Tensor& x, const at::Tensor& mask) const {
  return ChoosePath(x) == SoftmaxPath::kFused ? RunKernelPath(x, mask) : RunFallbackPath(x, mask);
}

at::Tensor FusedScaleMaskSoftmax::RunKernelPath(const at::Tensor& x, const at::Tensor& mask) const {
  TORCH_CHECK(x.dim() == 4, "FusedScaleMaskSoftmax: x must be [b, np, sq, sk], got ", x.sizes());
  // Megatron's forward_fused_softmax: causal ignores the mask (upper-triangular kernel); otherwise the masked
  // kernel with a mask, the plain one without.
  fusions::SoftmaxMask kind = fusions::SoftmaxMask::kNone;
  at::Tensor m = at::empty({0}, x.options().dtype(at::kBool));
  if (options_.attn_mask_type == AttnMaskType::kCausal) {
    kind = fusions::SoftmaxMask::kCausal;
  } else if (mask.defined()) {
    kind = fusions::SoftmaxMask::kExplicit;
    m = mask.contiguous();
  }
  const double scale = options_.scale.value_or(1.0);
  return FusedSoftmaxFunction::apply(x, m, static_cast<int64_t>(kind), scale);
}

at::Tensor FusedScaleMaskSoftmax::RunFallbackPath(const at::Tensor& x, const at::Tensor& mask) const {
  return fusions::FusedScaleMaskSoftmaxFallback(x, mask, ToFusionsConfig(options_));
}

}  // namespace megatron::legacy
