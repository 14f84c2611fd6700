// The float64 reference of the scaled masked softmax (softmax.h), the input checks, FusedScaleMaskSoftmax's
// availability rule and its unfused fallback.
#include <ATen/TensorOperators.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/_softmax.h>
#include <ATen/ops/ones.h>
#include <ATen/ops/softmax.h>
#include <ATen/ops/sum.h>
#include <ATen/ops/triu.h>
#include <ATen/ops/where.h>
#include <absl/strings/str_cat.h>

#include <limits>

#include "megatron/core/fusions/softmax/softmax.h"

namespace megatron::fusions {
namespace {

bool SupportedDtype(at::ScalarType t, bool allow_float64) {
  return t == at::kFloat || t == at::kBFloat16 || t == at::kHalf || (allow_float64 && t == at::kDouble);
}

// Query index of every row of x viewed as [rows, sk]: rows run over [..., sq].
at::Tensor CausalExcluded(int64_t sq, int64_t sk, const at::TensorOptions& options) {
  return at::triu(at::ones({sq, sk}, options.dtype(at::kBool)), /*diagonal=*/1);
}

}  // namespace

void CheckSoftmaxForwardInputs(const at::Tensor& x, const at::Tensor& mask, const SoftmaxParams& params,
                               bool allow_float64) {
  TORCH_CHECK(x.defined() && x.dim() >= 2, "scaled masked softmax: x must have at least [sq, sk], got ",
              x.defined() ? x.sizes() : at::IntArrayRef{});
  TORCH_CHECK(x.is_contiguous(), "scaled masked softmax: x ", x.sizes(), " must be contiguous (call .contiguous())");
  TORCH_CHECK(SupportedDtype(x.scalar_type(), allow_float64), "scaled masked softmax: x dtype ", x.scalar_type(),
              " is not supported (float32, bfloat16, float16", allow_float64 ? ", float64)" : ")");
  const int64_t sq = x.size(-2);
  const int64_t sk = x.size(-1);
  TORCH_CHECK(sk >= 1, "scaled masked softmax: sk must be >= 1, got x ", x.sizes());
  switch (params.mask) {
    case SoftmaxMask::kCausal:
      TORCH_CHECK(sq == sk, "scaled masked softmax (causal): needs sq == sk, got x ", x.sizes());
      TORCH_CHECK(!mask.defined(), "scaled masked softmax (causal): the mask is implied; pass an undefined mask");
      break;
    case SoftmaxMask::kNone:
      TORCH_CHECK(!mask.defined(), "scaled masked softmax (unmasked): pass an undefined mask, got ", mask.sizes());
      break;
    case SoftmaxMask::kExplicit: {
      TORCH_CHECK(x.dim() == 4, "scaled masked softmax (explicit mask): x must be [b, np, sq, sk], got ", x.sizes());
      TORCH_CHECK(mask.defined() && mask.scalar_type() == at::kBool && mask.dim() == 4,
                  "scaled masked softmax: the mask must be a bool [b or 1, 1, sq, sk] tensor, got ",
                  mask.defined() ? mask.sizes() : at::IntArrayRef{}, mask.defined() ? " " : "",
                  mask.defined() ? c10::toString(mask.scalar_type()) : "undefined");
      const int64_t mb = mask.size(0);
      TORCH_CHECK((mb == 1 || mb == x.size(0)) && mask.size(1) == 1 && mask.size(2) == sq && mask.size(3) == sk,
                  "scaled masked softmax: mask ", mask.sizes(), " does not broadcast as [b or 1, 1, sq, sk] to x ",
                  x.sizes());
      TORCH_CHECK(mask.is_contiguous(), "scaled masked softmax: the mask must be contiguous");
      TORCH_CHECK(mask.device() == x.device(), "scaled masked softmax: mask on ", mask.device(), ", x on ",
                  x.device());
      break;
    }
  }
}

void CheckSoftmaxBackwardInputs(const at::Tensor& dy, const at::Tensor& y, const SoftmaxParams& params,
                                bool allow_float64) {
  CheckSoftmaxForwardInputs(y, at::Tensor(), SoftmaxParams{params.mask == SoftmaxMask::kCausal
                                                               ? SoftmaxMask::kCausal
                                                               : SoftmaxMask::kNone,
                                                           params.scale},
                            allow_float64);
  TORCH_CHECK(dy.defined() && dy.sizes() == y.sizes() && dy.scalar_type() == y.scalar_type() && dy.is_contiguous(),
              "scaled masked softmax backward: dy must be a contiguous tensor of y's shape ", y.sizes(), " and dtype ",
              y.scalar_type(), ", got ", dy.defined() ? dy.sizes() : at::IntArrayRef{});
  TORCH_CHECK(dy.device() == y.device(), "scaled masked softmax backward: dy on ", dy.device(), ", y on ",
              y.device());
}

at::Tensor ScaledMaskedSoftmaxForwardReference(const at::Tensor& x, const at::Tensor& mask,
                                               const SoftmaxParams& params) {
  CheckSoftmaxForwardInputs(x, mask, params, /*allow_float64=*/true);
  at::Tensor z = x.to(at::kDouble) * static_cast<double>(params.scale);
  if (params.mask == SoftmaxMask::kExplicit) {
    z = z.masked_fill(mask, static_cast<double>(kMaskedScore));
  } else if (params.mask == SoftmaxMask::kCausal) {
    // Excluded, not filled: -inf gives probability exactly 0 (and the diagonal keeps every row non-empty).
    z = z.masked_fill(CausalExcluded(x.size(-2), x.size(-1), z.options()),
                      -std::numeric_limits<double>::infinity());
  }
  return at::softmax(z, -1).to(x.scalar_type());
}

at::Tensor ScaledMaskedSoftmaxBackwardReference(const at::Tensor& dy, const at::Tensor& y,
                                                const SoftmaxParams& params) {
  CheckSoftmaxBackwardInputs(dy, y, params, /*allow_float64=*/true);
  const at::Tensor y64 = y.to(at::kDouble);
  const at::Tensor dy64 = dy.to(at::kDouble);
  const at::Tensor dot = at::sum(dy64 * y64, {-1}, /*keepdim=*/true);
  return (y64 * (dy64 - dot) * static_cast<double>(params.scale)).to(y.scalar_type());
}

absl::Status ValidateFusedSoftmaxConfig(const FusedSoftmaxConfig& config) {
  if (config.input_in_fp16 && config.input_in_bf16) {
    return absl::InvalidArgumentError(
        "FusedScaleMaskSoftmax: input_in_fp16 and input_in_bf16 cannot both be true");
  }
  if (config.scale.has_value() && !config.softmax_in_fp32) {
    return absl::InvalidArgumentError(
        "FusedScaleMaskSoftmax: scale is set but softmax_in_fp32 is false; softmax should be in fp32 when scaled");
  }
  if (config.mask == SoftmaxMask::kNone) {
    return absl::InvalidArgumentError(
        "FusedScaleMaskSoftmax: mask must be kCausal or kExplicit (the module's attn_mask_type); an unmasked call "
        "passes kExplicit with no mask");
  }
  return absl::OkStatus();
}

int64_t SoftmaxBatchPerBlock(int64_t sq, int64_t sk, int64_t b, int64_t np) {
  (void)sq;
  (void)b;
  (void)np;
  // The legacy kernels give each warp 1 or 2 rows of next_pow2(sk) elements and use 128-thread blocks.
  int64_t pow2 = 1;
  while (pow2 < sk) pow2 *= 2;
  const int64_t warp_size = pow2 < 32 ? pow2 : 32;
  const int64_t batches_per_warp = pow2 <= 128 ? 2 : 1;
  const int64_t warps_per_block = 128 / warp_size;
  return warps_per_block * batches_per_warp;
}

bool IsFusedSoftmaxAvailable(const FusedSoftmaxConfig& config, int64_t b, int64_t np, int64_t sq, int64_t sk) {
  const int64_t attn_batches = b * np;
  if (!config.scaled_masked_softmax_fusion) return false;
  if (!(config.input_in_fp16 || config.input_in_bf16)) return false;
  if (!(16 < sk && sk <= config.max_fused_keys)) return false;
  if (sq % 4 != 0 || sk % 4 != 0 || attn_batches % 4 != 0) return false;
  const int64_t batch_per_block = SoftmaxBatchPerBlock(sq, sk, b, np);
  if (config.mask == SoftmaxMask::kCausal) return attn_batches % batch_per_block == 0;
  return sq % batch_per_block == 0;
}

at::Tensor FusedScaleMaskSoftmaxFallback(const at::Tensor& x, const at::Tensor& mask,
                                         const FusedSoftmaxConfig& config) {
  TORCH_CHECK(x.dim() == 4, "FusedScaleMaskSoftmax: x must be [b, np, sq, sk], got ", x.sizes());
  const bool half = config.input_in_fp16 || config.input_in_bf16;
  at::Tensor z = half && config.softmax_in_fp32 ? x.to(at::kFloat) : x;
  if (config.scale.has_value()) z = z * *config.scale;
  at::Tensor m = mask;
  if (config.mask == SoftmaxMask::kCausal && !m.defined() && x.size(2) > 1) {
    TORCH_CHECK(x.size(2) == x.size(3), "FusedScaleMaskSoftmax (causal, no mask): needs sq == sk, got x ",
                x.sizes());
    m = CausalExcluded(x.size(2), x.size(3), x.options()).view({1, 1, x.size(2), x.size(3)});
  }
  if (m.defined()) z = z.masked_fill(m, static_cast<double>(kMaskedScore));
  at::Tensor y = at::softmax(z, -1);
  // By the flags, as the module does (probs.half() / probs.bfloat16()), not by x's dtype.
  if (half && config.softmax_in_fp32) y = y.to(config.input_in_fp16 ? at::kHalf : at::kBFloat16);
  return y;
}

at::Tensor FusedScaleMaskSoftmax(const at::Tensor& x, const at::Tensor& mask, const FusedSoftmaxConfig& config) {
  TORCH_CHECK(x.dim() == 4, "FusedScaleMaskSoftmax: x must be [b, np, sq, sk], got ", x.sizes());
  const int64_t b = x.size(0), np = x.size(1), sq = x.size(2), sk = x.size(3);
  if (x.is_cuda() && HasCudaSoftmaxImpl() && IsFusedSoftmaxAvailable(config, b, np, sq, sk)) {
    SoftmaxParams params;
    params.scale = config.scale.has_value() ? static_cast<float>(*config.scale) : 1.f;
    const at::Tensor xc = x.contiguous();
    if (config.mask == SoftmaxMask::kCausal) {
      params.mask = SoftmaxMask::kCausal;
      return ScaledMaskedSoftmaxForward(xc, at::Tensor(), params);
    }
    params.mask = mask.defined() ? SoftmaxMask::kExplicit : SoftmaxMask::kNone;
    return ScaledMaskedSoftmaxForward(xc, mask.defined() ? mask.contiguous() : mask, params);
  }
  return FusedScaleMaskSoftmaxFallback(x, mask, config);
}

}  // namespace megatron::fusions
