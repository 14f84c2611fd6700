// The reference norm: plain ATen in float64, written as directly from the formulas in norm.h as possible. It is
// the CPU implementation and the oracle for the CUDA kernels' tests; speed is not a goal.
#include <ATen/TensorOperators.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/mean.h>
#include <ATen/ops/rsqrt.h>
#include <ATen/ops/sum.h>

#include <vector>

#include "megatron/core/fusions/norm/norm.h"

namespace megatron::fusions {
namespace {

bool IsLowPrecisionOrFloat(at::ScalarType t) {
  return t == at::kFloat || t == at::kBFloat16 || t == at::kHalf;
}

std::vector<int64_t> LeadingSizes(const at::Tensor& x) {
  return std::vector<int64_t>(x.sizes().begin(), x.sizes().end() - 1);
}

// Statistics are float32, or float64 when x is (reference only; see norm.h).
at::ScalarType StatsDtype(const at::Tensor& x) { return x.scalar_type() == at::kDouble ? at::kDouble : at::kFloat; }

at::Tensor EffectiveGamma64(const at::Tensor& gamma, const NormParams& params) {
  at::Tensor g = gamma.to(at::kDouble);
  return params.zero_centered_gamma ? g + 1.0 : g;
}

}  // namespace

void CheckNormForwardInputs(const at::Tensor& x, const at::Tensor& gamma, const at::Tensor& beta,
                            const NormParams& params, bool allow_float64) {
  TORCH_CHECK(x.defined() && gamma.defined(), "NormForward: x and gamma must be defined");
  TORCH_CHECK(x.dim() >= 1, "NormForward: x must have at least one dimension (the normalised one), got shape ",
              x.sizes());
  const int64_t hidden = x.size(-1);
  TORCH_CHECK(hidden >= 1, "NormForward: the last dimension of x must be at least 1, got shape ", x.sizes());
  const bool float64_ok = allow_float64 && x.scalar_type() == at::kDouble;
  TORCH_CHECK(IsLowPrecisionOrFloat(x.scalar_type()) || float64_ok,
              "NormForward: x must be float32, bfloat16 or float16, got ", x.scalar_type());
  TORCH_CHECK(x.is_contiguous(), "NormForward: x must be contiguous (call .contiguous()), got shape ", x.sizes(),
              " strides ", x.strides());
  TORCH_CHECK(gamma.dim() == 1 && gamma.size(0) == hidden, "NormForward: gamma must be [", hidden,
              "] (the last dimension of x ", x.sizes(), "), got ", gamma.sizes());
  TORCH_CHECK(gamma.is_contiguous(), "NormForward: gamma must be contiguous");
  TORCH_CHECK(gamma.scalar_type() == at::kFloat || gamma.scalar_type() == x.scalar_type(),
              "NormForward: gamma must be float32 or x's dtype (", x.scalar_type(), "), got ", gamma.scalar_type());
  TORCH_CHECK(gamma.device() == x.device(), "NormForward: gamma is on ", gamma.device(), ", x on ", x.device());
  TORCH_CHECK(params.eps >= 0, "NormForward: eps must be non-negative, got ", params.eps);
  if (beta.defined()) {
    TORCH_CHECK(params.kind == NormKind::kLayerNorm, "NormForward: RMSNorm takes no beta; pass an undefined tensor");
    TORCH_CHECK(beta.sizes() == gamma.sizes() && beta.scalar_type() == gamma.scalar_type(),
                "NormForward: beta must match gamma (", gamma.sizes(), " ", gamma.scalar_type(), "), got ",
                beta.sizes(), " ", beta.scalar_type());
    TORCH_CHECK(beta.is_contiguous(), "NormForward: beta must be contiguous");
    TORCH_CHECK(beta.device() == x.device(), "NormForward: beta is on ", beta.device(), ", x on ", x.device());
  }
}

void CheckNormBackwardInputs(const at::Tensor& dy, const at::Tensor& x, const at::Tensor& gamma,
                             const at::Tensor& mean, const at::Tensor& rstd, const NormParams& params,
                             bool allow_float64) {
  CheckNormForwardInputs(x, gamma, at::Tensor(), params, allow_float64);
  TORCH_CHECK(dy.defined() && rstd.defined(), "NormBackward: dy and rstd must be defined");
  TORCH_CHECK(dy.sizes() == x.sizes() && dy.scalar_type() == x.scalar_type(), "NormBackward: dy (", dy.sizes(),
              " ", dy.scalar_type(), ") must match x (", x.sizes(), " ", x.scalar_type(), ")");
  TORCH_CHECK(dy.is_contiguous(), "NormBackward: dy must be contiguous");
  TORCH_CHECK(dy.device() == x.device(), "NormBackward: dy is on ", dy.device(), ", x on ", x.device());
  const std::vector<int64_t> rows_shape = LeadingSizes(x);
  const at::ScalarType stats = StatsDtype(x);
  TORCH_CHECK(rstd.sizes() == at::IntArrayRef(rows_shape) && rstd.scalar_type() == stats && rstd.is_contiguous() &&
                  rstd.device() == x.device(),
              "NormBackward: rstd must be contiguous ", stats, " of shape ", at::IntArrayRef(rows_shape), " on ",
              x.device(), " (as NormForward returns it), got ", rstd.sizes(), " ", rstd.scalar_type(), " on ",
              rstd.device());
  if (params.kind == NormKind::kLayerNorm) {
    TORCH_CHECK(mean.defined() && mean.sizes() == rstd.sizes() && mean.scalar_type() == stats &&
                    mean.is_contiguous() && mean.device() == x.device(),
                "NormBackward: LayerNorm needs mean as NormForward returns it (contiguous ", stats, " of shape ",
                rstd.sizes(), " on ", x.device(), ")");
  } else {
    TORCH_CHECK(!mean.defined(), "NormBackward: RMSNorm takes no mean; pass an undefined tensor");
  }
}

NormForwardResult NormForwardReference(const at::Tensor& x, const at::Tensor& gamma, const at::Tensor& beta,
                                       const NormParams& params) {
  CheckNormForwardInputs(x, gamma, beta, params, /*allow_float64=*/true);
  const at::Tensor x64 = x.to(at::kDouble);
  const at::Tensor g = EffectiveGamma64(gamma, params);
  NormForwardResult out;
  at::Tensor xhat;
  at::Tensor rstd;
  if (params.kind == NormKind::kLayerNorm) {
    const at::Tensor mean = x64.mean({-1}, /*keepdim=*/true);
    const at::Tensor centred = x64 - mean;
    rstd = at::rsqrt((centred * centred).mean({-1}, /*keepdim=*/true) + params.eps);
    xhat = centred * rstd;
    out.mean = mean.squeeze(-1).to(StatsDtype(x));
  } else {
    rstd = at::rsqrt((x64 * x64).mean({-1}, /*keepdim=*/true) + params.eps);
    xhat = x64 * rstd;
  }
  at::Tensor y = xhat * g;
  if (beta.defined()) y = y + beta.to(at::kDouble);
  out.y = y.to(x.scalar_type()).contiguous();
  out.rstd = rstd.squeeze(-1).to(StatsDtype(x)).contiguous();
  if (out.mean.defined()) out.mean = out.mean.contiguous();
  return out;
}

namespace {

// The backward in float64 with dh (when defined) added to dx before its one rounding to x's dtype.
NormBackwardResult Backward64(const at::Tensor& dy, const at::Tensor& dh, const at::Tensor& x,
                              const at::Tensor& gamma, const at::Tensor& mean, const at::Tensor& rstd,
                              const NormParams& params) {
  const int64_t hidden = x.size(-1);
  const at::Tensor x2 = x.reshape({-1, hidden}).to(at::kDouble);
  const at::Tensor dy2 = dy.reshape({-1, hidden}).to(at::kDouble);
  const at::Tensor r = rstd.reshape({-1, 1}).to(at::kDouble);
  const at::Tensor xhat = params.kind == NormKind::kLayerNorm ? (x2 - mean.reshape({-1, 1}).to(at::kDouble)) * r
                                                              : x2 * r;
  const at::Tensor dxhat = dy2 * EffectiveGamma64(gamma, params);
  at::Tensor inner = dxhat - xhat * (dxhat * xhat).mean({-1}, /*keepdim=*/true);
  if (params.kind == NormKind::kLayerNorm) inner = inner - dxhat.mean({-1}, /*keepdim=*/true);
  at::Tensor dx = inner * r;
  if (dh.defined()) dx = dx + dh.reshape({-1, hidden}).to(at::kDouble);
  NormBackwardResult out;
  out.dx = dx.to(x.scalar_type()).reshape(x.sizes()).contiguous();
  out.dgamma = (dy2 * xhat).sum({0}).to(gamma.scalar_type()).contiguous();
  if (params.kind == NormKind::kLayerNorm) out.dbeta = dy2.sum({0}).to(gamma.scalar_type()).contiguous();
  return out;
}

}  // namespace

NormBackwardResult NormBackwardReference(const at::Tensor& dy, const at::Tensor& x, const at::Tensor& gamma,
                                         const at::Tensor& mean, const at::Tensor& rstd, const NormParams& params) {
  CheckNormBackwardInputs(dy, x, gamma, mean, rstd, params, /*allow_float64=*/true);
  return Backward64(dy, at::Tensor(), x, gamma, mean, rstd, params);
}

void CheckNormResidualInput(const at::Tensor& other, const at::Tensor& x, const char* what) {
  TORCH_CHECK(other.defined(), "ResidualAddNorm: ", what, " must be defined");
  TORCH_CHECK(other.sizes() == x.sizes() && other.scalar_type() == x.scalar_type(), "ResidualAddNorm: ", what, " (",
              other.sizes(), " ", other.scalar_type(), ") must match x (", x.sizes(), " ", x.scalar_type(), ")");
  TORCH_CHECK(other.is_contiguous(), "ResidualAddNorm: ", what, " must be contiguous (call .contiguous())");
  TORCH_CHECK(other.device() == x.device(), "ResidualAddNorm: ", what, " is on ", other.device(), ", x on ",
              x.device());
}

NormForwardResult ResidualAddNormForwardReference(const at::Tensor& x, const at::Tensor& residual,
                                                  const at::Tensor& gamma, const at::Tensor& beta,
                                                  const NormParams& params) {
  CheckNormForwardInputs(x, gamma, beta, params, /*allow_float64=*/true);
  CheckNormResidualInput(residual, x, "residual");
  // The add in float64 is exact for float32/bf16/fp16 operands of similar magnitude, so its one rounding to x's
  // dtype gives the value of the unfused add (ATen's and the kernel's float32 add, rounded to the dtype).
  const at::Tensor h = (x.to(at::kDouble) + residual.to(at::kDouble)).to(x.scalar_type()).contiguous();
  NormForwardResult out = NormForwardReference(h, gamma, beta, params);
  out.h = h;
  return out;
}

NormBackwardResult ResidualAddNormBackwardReference(const at::Tensor& dy, const at::Tensor& dh, const at::Tensor& h,
                                                    const at::Tensor& gamma, const at::Tensor& mean,
                                                    const at::Tensor& rstd, const NormParams& params) {
  CheckNormBackwardInputs(dy, h, gamma, mean, rstd, params, /*allow_float64=*/true);
  if (dh.defined()) CheckNormResidualInput(dh, h, "dh");
  return Backward64(dy, dh, h, gamma, mean, rstd, params);
}

}  // namespace megatron::fusions
