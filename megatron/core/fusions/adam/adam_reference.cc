// The float64 reference of multi-tensor AdamW (adam.h), and the input checks shared with the CUDA glue. Every
// tensor is widened to float64, updated with adam_params.h's scalars, and rounded back in place.
#include <ATen/TensorOperators.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/addcdiv.h>
#include <ATen/ops/sqrt.h>

#include "megatron/core/fusions/adam/adam.h"

namespace megatron::fusions {

void CheckAdamWInputs(const AdamWTensorLists& l, bool allow_float64) {
  const size_t n = l.params.size();
  TORCH_CHECK(l.grads.size() == n && l.exp_avgs.size() == n && l.exp_avg_sqs.size() == n && l.decay.size() == n,
              "MultiTensorAdamW: params, grads, exp_avgs, exp_avg_sqs and decay must have one entry per tensor; got ",
              n, ", ", l.grads.size(), ", ", l.exp_avgs.size(), ", ", l.exp_avg_sqs.size(), ", ", l.decay.size());
  TORCH_CHECK(l.model_copies.empty() || l.model_copies.size() == n, "MultiTensorAdamW: model_copies must be empty or "
              "have one entry per tensor (", n, "); got ", l.model_copies.size());
  if (n == 0) return;
  const auto state_ok = [&](at::ScalarType t) { return t == at::kFloat || (allow_float64 && t == at::kDouble); };
  const at::ScalarType grad_dtype = l.grads[0].scalar_type();
  const at::ScalarType copy_dtype = l.model_copies.empty() ? at::kFloat : l.model_copies[0].scalar_type();
  TORCH_CHECK(grad_dtype == at::kFloat || grad_dtype == at::kBFloat16 || grad_dtype == at::kHalf ||
                  (allow_float64 && grad_dtype == at::kDouble),
              "MultiTensorAdamW: grads must be float32, bfloat16 or float16; got ", grad_dtype);
  TORCH_CHECK(l.model_copies.empty() || copy_dtype == at::kBFloat16 || copy_dtype == at::kHalf,
              "MultiTensorAdamW: model copies must be bfloat16 or float16; got ", copy_dtype);
  const at::Device device = l.params[0].device();
  for (size_t i = 0; i < n; ++i) {
    std::vector<const at::Tensor*> all = {&l.params[i], &l.grads[i], &l.exp_avgs[i], &l.exp_avg_sqs[i]};
    if (!l.model_copies.empty()) all.push_back(&l.model_copies[i]);
    for (const at::Tensor* t : all) {
      TORCH_CHECK(t->defined(), "MultiTensorAdamW: tensor ", i, " has an undefined entry (skip parameters without "
                  "a gradient before calling)");
      TORCH_CHECK(t->numel() == l.params[i].numel(), "MultiTensorAdamW: tensor ", i, ": param ",
                  l.params[i].sizes(), " but an entry of shape ", t->sizes());
      TORCH_CHECK(t->is_contiguous(), "MultiTensorAdamW: tensor ", i, " (", t->sizes(), ") must be contiguous");
      TORCH_CHECK(t->device() == device, "MultiTensorAdamW: tensor ", i, " is on ", t->device(), ", tensor 0 on ",
                  device);
    }
    TORCH_CHECK(state_ok(l.params[i].scalar_type()) && state_ok(l.exp_avgs[i].scalar_type()) &&
                    state_ok(l.exp_avg_sqs[i].scalar_type()),
                "MultiTensorAdamW: tensor ", i, ": params and states must be float32 (master weights); got ",
                l.params[i].scalar_type(), ", ", l.exp_avgs[i].scalar_type(), ", ", l.exp_avg_sqs[i].scalar_type());
    TORCH_CHECK(l.grads[i].scalar_type() == grad_dtype, "MultiTensorAdamW: all grads must share one dtype; grad ", i,
                " is ", l.grads[i].scalar_type(), ", grad 0 is ", grad_dtype);
    TORCH_CHECK(l.model_copies.empty() || l.model_copies[i].scalar_type() == copy_dtype,
                "MultiTensorAdamW: all model copies must share one dtype; copy ", i, " is ",
                l.model_copies[i].scalar_type(), ", copy 0 is ", copy_dtype);
  }
}

void MultiTensorAdamWReference(const AdamWTensorLists& l, const AdamWStepParams& params) {
  CheckAdamWInputs(l, /*allow_float64=*/true);
  const AdamWScalars s = MakeAdamWScalars(params);
  for (size_t i = 0; i < l.params.size(); ++i) {
    const at::Tensor g = l.grads[i].to(at::kDouble);
    at::Tensor m = l.exp_avgs[i].to(at::kDouble);
    at::Tensor v = l.exp_avg_sqs[i].to(at::kDouble);
    at::Tensor p = l.params[i].to(at::kDouble);
    m = m * s.beta1 + g * s.one_minus_beta1;
    v = v * s.beta2 + g * g * s.one_minus_beta2;
    if (l.decay[i]) p = p * s.decay_factor;
    p = at::addcdiv(p, m, at::sqrt(v) * s.inv_sqrt_bc2 + s.eps, -s.step_size);
    l.exp_avgs[i].copy_(m);
    l.exp_avg_sqs[i].copy_(v);
    l.params[i].copy_(p);
    if (!l.model_copies.empty()) l.model_copies[i].copy_(l.params[i]);
  }
}

}  // namespace megatron::fusions
