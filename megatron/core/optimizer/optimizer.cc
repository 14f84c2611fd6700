#include "megatron/core/optimizer/optimizer.h"

#include <cmath>
#include <map>

#include <ATen/TensorOperators.h>
#include <ATen/core/grad_mode.h>
#include <ATen/ops/_foreach_mul.h>
#include <ATen/ops/_foreach_norm.h>
#include <ATen/ops/scalar_tensor.h>
#include <ATen/ops/sqrt.h>
#include <ATen/ops/stack.h>
#include <ATen/ops/zeros.h>
#include <ATen/ops/zeros_like.h>

#include "absl/strings/str_cat.h"
#include "megatron/core/fusions/adam/adam.h"

namespace megatron::optimizer {

AdamW::AdamW(std::vector<std::pair<std::string, at::Tensor>> named_parameters, AdamWConfig config)
    : config_(config) {
  for (auto& [name, param] : named_parameters) {
    slots_.push_back(Slot{name, param, at::zeros_like(param, at::MemoryFormat::Contiguous),
                          at::zeros_like(param, at::MemoryFormat::Contiguous), param.dim() > 1});
  }
}

void AdamW::Step(double lr) {
  at::NoGradGuard no_grad;
  ++step_;
  if (config_.fused) {
    fusions::AdamWTensorLists lists;
    for (Slot& slot : slots_) {
      if (!slot.param.grad().defined()) continue;
      lists.params.push_back(slot.param);
      lists.grads.push_back(slot.param.grad());
      lists.exp_avgs.push_back(slot.exp_avg);
      lists.exp_avg_sqs.push_back(slot.exp_avg_sq);
      lists.decay.push_back(slot.decay ? 1 : 0);
    }
    fusions::MultiTensorAdamW(lists, fusions::AdamWStepParams{lr, config_.beta1, config_.beta2, config_.eps,
                                                             config_.weight_decay, step_});
    return;
  }
  for (Slot& slot : slots_) {
    const at::Tensor& grad = slot.param.grad();
    if (!grad.defined()) continue;
    AdamWUpdate(slot.param, grad, slot.exp_avg, slot.exp_avg_sq, slot.decay, lr, step_, config_);
  }
}

void AdamWUpdate(at::Tensor& param, const at::Tensor& grad, at::Tensor& exp_avg, at::Tensor& exp_avg_sq, bool decay,
                 double lr, int64_t step, const AdamWConfig& config) {
  at::NoGradGuard no_grad;
  const double bias_correction1 = 1.0 - std::pow(config.beta1, static_cast<double>(step));
  const double bias_correction2 = 1.0 - std::pow(config.beta2, static_cast<double>(step));
  const double step_size = lr / bias_correction1;
  const double inv_sqrt_bc2 = 1.0 / std::sqrt(bias_correction2);
  const at::Tensor g = param.scalar_type() != grad.scalar_type() ? grad.to(param.scalar_type()) : grad;
  exp_avg.mul_(config.beta1).add_(g, 1.0 - config.beta1);
  exp_avg_sq.mul_(config.beta2).addcmul_(g, g, 1.0 - config.beta2);
  // Decoupled decay uses the parameter before this step's Adam update (same as applying it first).
  if (decay && config.weight_decay != 0.0) param.mul_(1.0 - lr * config.weight_decay);
  at::Tensor denom = (exp_avg_sq.sqrt() * inv_sqrt_bc2).add_(config.eps);
  param.addcdiv_(exp_avg, denom, -step_size);
}

void AdamW::ZeroGrad() {
  for (Slot& slot : slots_) slot.param.mutable_grad().reset();
}

std::map<std::string, at::Tensor> AdamW::StateDict() const {
  std::map<std::string, at::Tensor> out;
  for (const Slot& slot : slots_) {
    out["exp_avg." + slot.name] = slot.exp_avg.clone();
    out["exp_avg_sq." + slot.name] = slot.exp_avg_sq.clone();
  }
  out["step"] = at::scalar_tensor(step_, at::kLong);
  return out;
}

absl::Status AdamW::LoadStateDict(const std::map<std::string, at::Tensor>& state) {
  auto step = state.find("step");
  if (step == state.end()) return absl::InvalidArgumentError("optimizer state: missing \"step\"");
  for (const Slot& slot : slots_) {
    for (const char* kind : {"exp_avg.", "exp_avg_sq."}) {
      auto it = state.find(kind + slot.name);
      if (it == state.end()) return absl::InvalidArgumentError(absl::StrCat("optimizer state: missing ", kind,
                                                                            slot.name));
      if (it->second.sizes() != slot.param.sizes()) {
        return absl::InvalidArgumentError(absl::StrCat("optimizer state: ", kind, slot.name, " has shape ",
                                                       c10::str(it->second.sizes()), ", parameter has ",
                                                       c10::str(slot.param.sizes())));
      }
    }
  }
  at::NoGradGuard no_grad;
  for (Slot& slot : slots_) {
    slot.exp_avg.copy_(state.at("exp_avg." + slot.name));
    slot.exp_avg_sq.copy_(state.at("exp_avg_sq." + slot.name));
  }
  step_ = step->second.item<int64_t>();
  return absl::OkStatus();
}

at::Tensor SquaredNormSum(const std::vector<at::Tensor>& grads, const at::Device& device) {
  at::NoGradGuard no_grad;
  std::map<at::ScalarType, std::vector<at::Tensor>> by_dtype;
  for (const at::Tensor& g : grads) {
    if (g.defined()) by_dtype[g.scalar_type()].push_back(g);
  }
  at::Tensor total;
  for (const auto& [dtype, list] : by_dtype) {
    const at::ScalarType acc = dtype == at::kDouble ? at::kDouble : at::kFloat;
    at::Tensor part = at::stack(at::_foreach_norm(list, 2, acc)).to(at::kDouble).square().sum();
    total = total.defined() ? total + part : part;
  }
  if (!total.defined()) return at::zeros({1}, at::TensorOptions().dtype(at::kDouble).device(device));
  return total.reshape({1}).to(device);
}

void ScaleGradsToNorm(const std::vector<at::Tensor>& grads, double total_norm, double max_norm) {
  if (max_norm <= 0.0 || total_norm <= max_norm) return;
  at::NoGradGuard no_grad;
  // Same form as Megatron/PyTorch: multiply by max_norm / (norm + 1e-6).
  const double coeff = max_norm / (total_norm + 1e-6);
  std::vector<at::Tensor> defined;
  for (const at::Tensor& g : grads) {
    if (g.defined()) defined.push_back(g);
  }
  if (!defined.empty()) at::_foreach_mul_(defined, coeff);
}

double ClipGradNorm(const std::vector<at::Tensor>& parameters, double max_norm) {
  std::vector<at::Tensor> grads;
  for (const at::Tensor& p : parameters) grads.push_back(p.grad());
  if (parameters.empty()) return 0.0;
  const double total = std::sqrt(SquaredNormSum(grads, parameters.front().device()).item<double>());
  ScaleGradsToNorm(grads, total, max_norm);
  return total;
}

double LrSchedule::LearningRate(int64_t num_steps) const {
  if (warmup_steps > 0 && num_steps <= warmup_steps) {
    return max_lr * static_cast<double>(num_steps) / static_cast<double>(warmup_steps);
  }
  if (style == LrDecay::kConstant) return max_lr;
  if (num_steps > decay_steps) return min_lr;
  const double span = static_cast<double>(decay_steps - warmup_steps);
  const double ratio = span > 0 ? static_cast<double>(num_steps - warmup_steps) / span : 1.0;
  const double coeff = style == LrDecay::kCosine ? 0.5 * (std::cos(M_PI * ratio) + 1.0) : 1.0 - ratio;
  return min_lr + coeff * (max_lr - min_lr);
}

}  // namespace megatron::optimizer
