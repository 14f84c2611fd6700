// The float64 reference of the rotary position embedding (rope.h) and its input checks.
#include <ATen/TensorOperators.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/cat.h>
#include <ATen/ops/cos.h>
#include <ATen/ops/sin.h>
#include <ATen/ops/stack.h>

#include <vector>

#include "megatron/core/fusions/rope/rope.h"

namespace megatron::fusions {
namespace {

// rotate(x) (transpose = false) or rotate^T(x) (transpose = true) over the last dimension r.
at::Tensor Rotate(const at::Tensor& x, RotaryLayout layout, bool transpose) {
  const int64_t r = x.size(-1);
  if (layout == RotaryLayout::kHalves) {
    const at::Tensor x1 = x.narrow(-1, 0, r / 2);
    const at::Tensor x2 = x.narrow(-1, r / 2, r / 2);
    return transpose ? at::cat({x2, -x1}, -1) : at::cat({-x2, x1}, -1);
  }
  std::vector<int64_t> pairs(x.sizes().begin(), x.sizes().end());
  pairs.back() = r / 2;
  pairs.push_back(2);
  const at::Tensor p = x.reshape(pairs);
  const at::Tensor x0 = p.select(-1, 0);
  const at::Tensor x1 = p.select(-1, 1);
  return (transpose ? at::stack({x1, -x0}, -1) : at::stack({-x1, x0}, -1)).reshape(x.sizes());
}

at::Tensor Apply(const at::Tensor& t, const at::Tensor& freqs, const RopeParams& params, bool backward) {
  CheckRopeInputs(t, freqs, /*allow_float64=*/true);
  const int64_t r = freqs.size(-1);
  const int64_t d = t.size(-1);
  const at::Tensor x = t.to(at::kDouble);
  const at::Tensor f = freqs.to(at::kDouble);
  const at::Tensor rot = x.narrow(-1, 0, r);
  const at::Tensor y = backward ? rot * at::cos(f) + Rotate(rot * at::sin(f), params.layout, /*transpose=*/true)
                                : rot * at::cos(f) + Rotate(rot, params.layout, /*transpose=*/false) * at::sin(f);
  const at::Tensor out = r == d ? y : at::cat({y, x.narrow(-1, r, d - r)}, -1);
  return out.to(t.scalar_type()).contiguous();
}

}  // namespace

void CheckRopeInputs(const at::Tensor& t, const at::Tensor& freqs, bool allow_float64) {
  TORCH_CHECK(t.defined() && t.dim() == 4, "rope: t must be [s, b, n, d], got ",
              t.defined() ? t.sizes() : at::IntArrayRef{});
  const at::ScalarType dt = t.scalar_type();
  TORCH_CHECK(dt == at::kFloat || dt == at::kBFloat16 || dt == at::kHalf || (allow_float64 && dt == at::kDouble),
              "rope: t dtype ", dt, " is not supported (float32, bfloat16, float16", allow_float64 ? ", float64)" : ")");
  TORCH_CHECK(t.size(-1) == 0 || t.stride(-1) == 1, "rope: t's last dimension must be contiguous, got strides ",
              t.strides());
  TORCH_CHECK(freqs.defined() && freqs.dim() == 4 && freqs.size(0) == t.size(0) && freqs.size(1) == 1 &&
                  freqs.size(2) == 1 && freqs.size(3) % 2 == 0 && freqs.size(3) <= t.size(3) && freqs.size(3) >= 2,
              "rope: freqs must be [s, 1, 1, r] with r even, 2 <= r <= d, for t ", t.sizes(), "; got ",
              freqs.defined() ? freqs.sizes() : at::IntArrayRef{});
  TORCH_CHECK(freqs.scalar_type() == at::kFloat || (allow_float64 && freqs.scalar_type() == at::kDouble),
              "rope: freqs must be float32, got ", freqs.scalar_type());
  TORCH_CHECK(freqs.is_contiguous(), "rope: freqs must be contiguous");
  TORCH_CHECK(freqs.device() == t.device(), "rope: freqs on ", freqs.device(), ", t on ", t.device());
}

at::Tensor RopeForwardReference(const at::Tensor& t, const at::Tensor& freqs, const RopeParams& params) {
  return Apply(t, freqs, params, /*backward=*/false);
}

at::Tensor RopeBackwardReference(const at::Tensor& dy, const at::Tensor& freqs, const RopeParams& params) {
  return Apply(dy, freqs, params, /*backward=*/true);
}

}  // namespace megatron::fusions
