// The float64 reference of bias + activation (activation.h) and the input checks. The forward is ATen's own
// gelu / silu in float64; the backward is the closed-form derivative (tested against autograd and finite
// differences).
#include <ATen/TensorOperators.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/cat.h>
#include <ATen/ops/erf.h>
#include <ATen/ops/exp.h>
#include <ATen/ops/gelu.h>
#include <ATen/ops/sigmoid.h>
#include <ATen/ops/silu.h>
#include <ATen/ops/sum.h>
#include <ATen/ops/tanh.h>

#include <cmath>
#include <vector>

#include "megatron/core/fusions/activation/activation.h"

namespace megatron::fusions {
namespace {

bool SupportedDtype(at::ScalarType t, bool allow_float64) {
  return t == at::kFloat || t == at::kBFloat16 || t == at::kHalf || (allow_float64 && t == at::kDouble);
}

std::vector<int64_t> OutputSizes(const at::Tensor& x, ActivationKind kind) {
  std::vector<int64_t> sizes(x.sizes().begin(), x.sizes().end());
  if (kind == ActivationKind::kSwiGLU) sizes.back() /= 2;
  return sizes;
}

}  // namespace

void CheckActivationInputs(const at::Tensor& x, const at::Tensor& bias, ActivationKind kind, bool allow_float64) {
  TORCH_CHECK(x.defined() && x.dim() >= 1, "bias activation: x must have at least one dimension");
  TORCH_CHECK(x.is_contiguous(), "bias activation: x ", x.sizes(), " must be contiguous (call .contiguous())");
  TORCH_CHECK(SupportedDtype(x.scalar_type(), allow_float64), "bias activation: x dtype ", x.scalar_type(),
              " is not supported (float32, bfloat16, float16", allow_float64 ? ", float64)" : ")");
  const int64_t c = x.size(-1);
  TORCH_CHECK(c >= 1, "bias activation: the last dimension must be >= 1, got x ", x.sizes());
  if (kind == ActivationKind::kSwiGLU) {
    TORCH_CHECK(c % 2 == 0, "bias SwiGLU: the last dimension holds [gate; up] and must be even, got x ", x.sizes());
  }
  if (bias.defined()) {
    TORCH_CHECK(bias.dim() == 1 && bias.size(0) == c && bias.scalar_type() == x.scalar_type() &&
                    bias.is_contiguous() && bias.device() == x.device(),
                "bias activation: bias must be a contiguous [", c, "] tensor of x's dtype ", x.scalar_type(),
                " on ", x.device(), ", got ", bias.sizes(), " ", bias.scalar_type(), " on ", bias.device());
  }
}

void CheckActivationBackwardInputs(const at::Tensor& dy, const at::Tensor& x, const at::Tensor& bias,
                                   ActivationKind kind, bool allow_float64) {
  CheckActivationInputs(x, bias, kind, allow_float64);
  const std::vector<int64_t> want = OutputSizes(x, kind);
  TORCH_CHECK(dy.defined() && dy.sizes() == at::IntArrayRef(want) && dy.scalar_type() == x.scalar_type() &&
                  dy.is_contiguous() && dy.device() == x.device(),
              "bias activation backward: dy must be a contiguous ", at::IntArrayRef(want), " ", x.scalar_type(),
              " tensor on ", x.device(), ", got ", dy.defined() ? dy.sizes() : at::IntArrayRef{});
}

at::Tensor BiasActivationForwardReference(const at::Tensor& x, const at::Tensor& bias, ActivationKind kind) {
  CheckActivationInputs(x, bias, kind, /*allow_float64=*/true);
  at::Tensor z = x.to(at::kDouble);
  if (bias.defined()) z = z + bias.to(at::kDouble);
  at::Tensor y;
  switch (kind) {
    case ActivationKind::kGeluTanh:
      y = at::gelu(z, "tanh");
      break;
    case ActivationKind::kGeluErf:
      y = at::gelu(z);
      break;
    case ActivationKind::kSwiGLU: {
      const int64_t h = z.size(-1) / 2;
      y = at::silu(z.narrow(-1, 0, h)) * z.narrow(-1, h, h);
      break;
    }
  }
  return y.to(x.scalar_type());
}

ActivationBackwardResult BiasActivationBackwardReference(const at::Tensor& dy, const at::Tensor& x,
                                                         const at::Tensor& bias, ActivationKind kind) {
  CheckActivationBackwardInputs(dy, x, bias, kind, /*allow_float64=*/true);
  at::Tensor z = x.to(at::kDouble);
  if (bias.defined()) z = z + bias.to(at::kDouble);
  const at::Tensor g = dy.to(at::kDouble);
  at::Tensor dz;
  switch (kind) {
    case ActivationKind::kGeluTanh: {
      const double k = std::sqrt(2.0 / M_PI);
      const at::Tensor t = at::tanh(k * (z + 0.044715 * z * z * z));
      dz = g * (0.5 * (1 + t) + 0.5 * z * (1 - t * t) * k * (1 + 3 * 0.044715 * z * z));
      break;
    }
    case ActivationKind::kGeluErf:
      dz = g * (0.5 * (1 + at::erf(z / std::sqrt(2.0))) + z * at::exp(-0.5 * z * z) / std::sqrt(2 * M_PI));
      break;
    case ActivationKind::kSwiGLU: {
      const int64_t h = z.size(-1) / 2;
      const at::Tensor gate = z.narrow(-1, 0, h);
      const at::Tensor up = z.narrow(-1, h, h);
      const at::Tensor s = at::sigmoid(gate);
      const at::Tensor dgate = g * up * s * (1 + gate * (1 - s));
      const at::Tensor dup = g * gate * s;
      dz = at::cat({dgate, dup}, -1);
      break;
    }
  }
  ActivationBackwardResult out;
  out.dx = dz.to(x.scalar_type());
  if (bias.defined()) {
    std::vector<int64_t> dims;
    for (int64_t d = 0; d + 1 < dz.dim(); ++d) dims.push_back(d);
    out.dbias = (dims.empty() ? dz : at::sum(dz, dims)).to(x.scalar_type());
  }
  return out;
}

}  // namespace megatron::fusions
