#include "megatron/core/optimizer/distributed_optimizer.h"

#include <algorithm>
#include <cmath>

#include <ATen/TensorOperators.h>
#include <ATen/core/grad_mode.h>
#include <ATen/ops/full.h>
#include <ATen/ops/scalar_tensor.h>
#include <ATen/ops/zeros.h>

#include "absl/strings/str_cat.h"
#include "megatron/core/fusions/adam/adam.h"

namespace megatron::optimizer {
namespace {

bool IsHalf(at::ScalarType t) { return t == at::kBFloat16 || t == at::kHalf; }

}  // namespace

DistributedAdamW::DistributedAdamW(const distributed::DataParallelGrads& grads, AdamWConfig config)
    : grads_(grads), config_(config) {
  const int64_t shard = grads.buffer().numel() / grads.group()->size();
  shard_begin_ = shard * grads.group()->rank();
  shard_end_ = shard_begin_ + shard;
  at::NoGradGuard no_grad;
  const auto& entries = grads.entries();
  for (size_t i = 0; i < entries.size(); ++i) {
    const auto& e = entries[i];
    const int64_t lo = std::max(e.offset, shard_begin_), hi = std::min(e.offset + e.numel, shard_end_);
    if (lo >= hi) continue;
    Segment s;
    s.entry = static_cast<int>(i);
    s.param_begin = lo - e.offset;
    s.buffer_begin = lo;
    s.numel = hi - lo;
    s.decay = e.param.dim() > 1;  // no decay on biases and norm weights, as AdamW
    at::Tensor view = e.param.detach().view(-1).slice(0, s.param_begin, s.param_begin + s.numel);
    const at::ScalarType state_type = IsHalf(e.param.scalar_type()) ? at::kFloat : e.param.scalar_type();
    s.master = IsHalf(e.param.scalar_type()) ? view.to(at::kFloat) : view;
    s.exp_avg = at::zeros({s.numel}, view.options().dtype(state_type));
    s.exp_avg_sq = at::zeros({s.numel}, view.options().dtype(state_type));
    segments_.push_back(std::move(s));
  }
}

int64_t DistributedAdamW::StateBytes() const {
  int64_t bytes = 0;
  for (const Segment& s : segments_) {
    bytes += s.exp_avg.nbytes() + s.exp_avg_sq.nbytes();
    if (IsHalf(grads_.entries()[s.entry].param.scalar_type())) bytes += s.master.nbytes();
  }
  return bytes;
}

absl::StatusOr<double> DistributedAdamW::ClipGradNorm(double max_norm,
                                                      const std::function<bool(const std::string&)>& counted,
                                                      distributed::Group* model_group) {
  at::NoGradGuard no_grad;
  std::vector<at::Tensor> counted_grads, all_grads;
  for (const Segment& s : segments_) {
    at::Tensor g = grads_.buffer().slice(0, s.buffer_begin, s.buffer_begin + s.numel);
    all_grads.push_back(g);
    if (counted(grads_.entries()[s.entry].name)) counted_grads.push_back(g);
  }
  // On the buffer's device (one host synchronisation per step); an empty shard contributes zero.
  at::Tensor total_sq = SquaredNormSum(counted_grads, grads_.buffer().device());
  if (absl::Status st = grads_.group()->AllReduce(total_sq); !st.ok()) return st;
  if (model_group != nullptr && model_group->size() > 1) {
    if (absl::Status st = model_group->AllReduce(total_sq); !st.ok()) return st;
  }
  const double total = std::sqrt(total_sq.item<double>());
  ScaleGradsToNorm(all_grads, total, max_norm);
  return total;
}

absl::Status DistributedAdamW::Step(double lr) {
  at::NoGradGuard no_grad;
  ++step_;
  const auto& entries = grads_.entries();
  if (config_.fused && !segments_.empty()) {
    // One multi-tensor launch over this rank's shard (fusions/adam), writing the bf16/fp16 copies as it goes;
    // it needs one gradient dtype (the buffer's) and one parameter dtype across the shard.
    fusions::AdamWTensorLists lists;
    const at::ScalarType param_type = entries[segments_.front().entry].param.scalar_type();
    bool uniform = true;
    for (const Segment& s : segments_) {
      const at::Tensor& param = entries[s.entry].param;
      uniform = uniform && param.scalar_type() == param_type;
      lists.params.push_back(s.master);
      lists.grads.push_back(grads_.buffer().slice(0, s.buffer_begin, s.buffer_begin + s.numel));
      lists.exp_avgs.push_back(s.exp_avg);
      lists.exp_avg_sqs.push_back(s.exp_avg_sq);
      if (IsHalf(param_type)) {
        lists.model_copies.push_back(param.detach().view(-1).slice(0, s.param_begin, s.param_begin + s.numel));
      }
      lists.decay.push_back(s.decay ? 1 : 0);
    }
    if (uniform) {
      fusions::MultiTensorAdamW(lists, fusions::AdamWStepParams{lr, config_.beta1, config_.beta2, config_.eps,
                                                               config_.weight_decay, step_});
    } else {
      FallbackStep(lr);
    }
  } else {
    FallbackStep(lr);
  }
  return GatherParameters();
}

void DistributedAdamW::FallbackStep(double lr) {
  const auto& entries = grads_.entries();
  for (Segment& s : segments_) {
    const at::Tensor grad = grads_.buffer().slice(0, s.buffer_begin, s.buffer_begin + s.numel);
    AdamWUpdate(s.master, grad, s.exp_avg, s.exp_avg_sq, s.decay, lr, step_, config_);
    if (IsHalf(entries[s.entry].param.scalar_type())) {
      entries[s.entry].param.detach().view(-1).slice(0, s.param_begin, s.param_begin + s.numel).copy_(s.master);
    }
  }
}

absl::Status DistributedAdamW::GatherParameters() {
  const auto& entries = grads_.entries();
  // All-gather: every rank contributes its updated range, laid out like the gradient buffer.
  const at::Tensor& buffer = grads_.buffer();
  at::Tensor shard = at::zeros({shard_numel()}, entries.front().param.options().requires_grad(false));
  for (const Segment& s : segments_) {
    shard.slice(0, s.buffer_begin - shard_begin_, s.buffer_begin - shard_begin_ + s.numel)
        .copy_(entries[s.entry].param.detach().view(-1).slice(0, s.param_begin, s.param_begin + s.numel));
  }
  absl::StatusOr<at::Tensor> full = grads_.group()->AllGatherConcat(shard);
  if (!full.ok()) return full.status();
  TORCH_CHECK(full->numel() == buffer.numel(), "DistributedAdamW: gathered ", full->numel(),
              " elements for a buffer of ", buffer.numel());
  for (const auto& e : entries) {
    e.param.detach().view(-1).copy_(full->slice(0, e.offset, e.offset + e.numel));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::map<std::string, at::Tensor>> DistributedAdamW::StateDict() const {
  at::NoGradGuard no_grad;
  const auto& entries = grads_.entries();
  std::map<std::string, at::Tensor> out;
  for (const bool second : {false, true}) {
    // This rank's range of the state, laid out like the gradient buffer (fp32 state for half parameters).
    const at::ScalarType state_type =
        IsHalf(entries.front().param.scalar_type()) ? at::kFloat : entries.front().param.scalar_type();
    at::Tensor shard = at::zeros({shard_numel()}, entries.front().param.options().dtype(state_type).requires_grad(false));
    for (const Segment& s : segments_) {
      shard.slice(0, s.buffer_begin - shard_begin_, s.buffer_begin - shard_begin_ + s.numel)
          .copy_(second ? s.exp_avg_sq : s.exp_avg);
    }
    absl::StatusOr<at::Tensor> full = grads_.group()->AllGatherConcat(shard);
    if (!full.ok()) return full.status();
    for (const auto& e : entries) {
      out[(second ? "exp_avg_sq." : "exp_avg.") + e.name] =
          full->slice(0, e.offset, e.offset + e.numel).view(e.param.sizes()).clone();
    }
  }
  out["step"] = at::scalar_tensor(step_, at::kLong);
  return out;
}

absl::Status DistributedAdamW::LoadStateDict(const std::map<std::string, at::Tensor>& state) {
  auto step = state.find("step");
  if (step == state.end()) return absl::InvalidArgumentError("optimizer state: missing \"step\"");
  const auto& entries = grads_.entries();
  for (const auto& e : entries) {
    for (const char* kind : {"exp_avg.", "exp_avg_sq."}) {
      auto it = state.find(kind + e.name);
      if (it == state.end()) return absl::InvalidArgumentError(absl::StrCat("optimizer state: missing ", kind, e.name));
      if (it->second.numel() != e.numel) {
        return absl::InvalidArgumentError(absl::StrCat("optimizer state: ", kind, e.name, " has shape ",
                                                       c10::str(it->second.sizes()), ", parameter has ",
                                                       c10::str(e.param.sizes())));
      }
    }
  }
  at::NoGradGuard no_grad;
  for (Segment& s : segments_) {
    const auto& e = entries[s.entry];
    s.exp_avg.copy_(state.at("exp_avg." + e.name).reshape({-1}).slice(0, s.param_begin, s.param_begin + s.numel));
    s.exp_avg_sq.copy_(
        state.at("exp_avg_sq." + e.name).reshape({-1}).slice(0, s.param_begin, s.param_begin + s.numel));
    // Half-precision parameters: the master weights restart from the (loaded) parameters.
    if (IsHalf(e.param.scalar_type())) {
      s.master.copy_(e.param.detach().view(-1).slice(0, s.param_begin, s.param_begin + s.numel));
    }
  }
  step_ = step->second.item<int64_t>();
  return absl::OkStatus();
}

void DistributedAdamW::ZeroGrad() {
  for (const auto& e : grads_.entries()) {
    at::Tensor p = e.param;
    p.mutable_grad().reset();
  }
}

}  // namespace megatron::optimizer
