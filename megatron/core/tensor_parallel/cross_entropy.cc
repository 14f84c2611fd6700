#include "megatron/core/tensor_parallel/cross_entropy.h"

#include <ATen/TensorOperators.h>
#include <ATen/ops/exp.h>
#include <ATen/ops/stack.h>
#include <torch/csrc/autograd/custom_function.h>

#include <cstdint>
#include <vector>

#include "megatron/core/fusions/cross_entropy/cross_entropy.h"
#include "megatron/core/tensor_parallel/mappings.h"

namespace megatron::tensor_parallel {
namespace {

using distributed::Group;
using distributed::ReduceOp;

constexpr const char* kWhat = "vocab_parallel_cross_entropy";

struct VocabParallelCrossEntropyFunction : public torch::autograd::Function<VocabParallelCrossEntropyFunction> {
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& logits_shard,
                            const at::Tensor& target, Group* group, double label_smoothing) {
    const bool parallel = IsParallel(group);
    const int tp = parallel ? group->size() : 1;
    const int rank = parallel ? group->rank() : 0;
    const at::ScalarType compute =
        logits_shard.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;  // Megatron: .float()

    // 1. Global max, subtracted. A fresh contiguous tensor: it becomes exp(logits) and then the softmax.
    at::Tensor logits = logits_shard.to(compute).clone(at::MemoryFormat::Contiguous);
    at::Tensor logits_max = std::get<0>(logits.max(-1)).contiguous();
    if (parallel) AllReduceInPlace(logits_max, *group, ReduceOp::kMax, kWhat);
    logits.sub_(logits_max.unsqueeze(-1));

    // 2. The target's logit on the owning slice, 0 elsewhere.
    const int64_t partition = logits.size(-1);
    const int64_t vocab_start = rank * partition;
    const at::Tensor outside = (target < vocab_start).logical_or(target >= vocab_start + partition);
    const at::Tensor local_target = (target - vocab_start).masked_fill(outside, 0).unsqueeze(-1);
    const at::Tensor predicted = logits.gather(-1, local_target).squeeze(-1).masked_fill(outside, 0.0);

    // 3. Σ exp and the predicted logit, summed over the slices. log p for smoothing is taken before the exp.
    const int64_t vocab = partition * tp;
    at::Tensor sum_log_probs_shifted;  // Σ_local (logit − max), for smoothing
    if (label_smoothing > 0) sum_log_probs_shifted = logits.sum(-1);
    logits.exp_();
    at::Tensor sums = at::stack({predicted, logits.sum(-1)}).contiguous();
    if (parallel) AllReduceInPlace(sums, *group, ReduceOp::kSum, kWhat);
    const at::Tensor predicted_all = sums[0];
    const at::Tensor sum_exp = sums[1];

    // 4. loss = log Σexp − predicted; the exp becomes the softmax, kept for backward.
    const at::Tensor log_sum_exp = sum_exp.log();
    at::Tensor loss = log_sum_exp - predicted_all;
    logits.div_(sum_exp.unsqueeze(-1));
    double smoothing = 0.0;
    if (label_smoothing > 0) {
      smoothing = label_smoothing * static_cast<double>(vocab) / static_cast<double>(vocab - 1);
      at::Tensor sum_log_probs = sum_log_probs_shifted.contiguous();
      if (parallel) AllReduceInPlace(sum_log_probs, *group, ReduceOp::kSum, kWhat);
      // mean log p = (Σ (logit − max)) / V − log Σexp
      const at::Tensor mean_log_probs = sum_log_probs / static_cast<double>(vocab) - log_sum_exp;
      loss = loss * (1.0 - smoothing) - mean_log_probs * smoothing;
    }

    ctx->save_for_backward({logits, outside, local_target});
    ctx->saved_data["smoothing"] = smoothing;
    ctx->saved_data["vocab"] = vocab;
    ctx->saved_data["input_dtype"] = static_cast<int64_t>(logits_shard.scalar_type());
    return loss;
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const torch::autograd::variable_list saved = ctx->get_saved_variables();
    const at::Tensor& softmax = saved[0];
    const at::Tensor& outside = saved[1];
    const at::Tensor& local_target = saved[2];
    const double smoothing = ctx->saved_data["smoothing"].toDouble();
    const int64_t vocab = ctx->saved_data["vocab"].toInt();
    const auto input_dtype = static_cast<at::ScalarType>(ctx->saved_data["input_dtype"].toInt());

    // softmax − (1 − smoothing)·onehot(target, on its slice) − smoothing/V
    at::Tensor grad = softmax.clone();
    const at::Tensor hit = outside.logical_not().to(grad.scalar_type()).mul(-(1.0 - smoothing)).unsqueeze(-1);
    grad.scatter_add_(-1, local_target, hit);
    if (smoothing > 0) grad.sub_(smoothing / static_cast<double>(vocab));
    grad.mul_(grads[0].to(grad.scalar_type()).unsqueeze(-1));
    return {grad.to(input_dtype), at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

constexpr const char* kFusedWhat = "fused_vocab_parallel_cross_entropy";

struct FusedVocabParallelCrossEntropyFunction
    : public torch::autograd::Function<FusedVocabParallelCrossEntropyFunction> {
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& logits_shard,
                            const at::Tensor& target, Group* group, int64_t ignore_index, double label_smoothing,
                            int64_t valid_vocab) {
    const bool parallel = IsParallel(group);
    const int64_t tp = parallel ? group->size() : 1;
    const int64_t rank = parallel ? group->rank() : 0;
    const int64_t width = logits_shard.size(-1);
    const at::Tensor logits = logits_shard.reshape({-1, width}).contiguous();
    const at::Tensor flat_target = target.reshape({-1}).contiguous();
    const fusions::VocabShard shard{rank * width, width * tp};
    const fusions::CrossEntropyParams params{ignore_index, label_smoothing, valid_vocab};

    // 1. The local pass: [3, n] = shard lse, target logit (0 off this slice), sum of logits.
    const at::Tensor partials = fusions::CrossEntropyShardPartials(logits, flat_target, shard, params);
    at::Tensor lse = partials[0];
    at::Tensor target_logit = partials[1];
    at::Tensor sum_logits = partials[2];
    if (parallel) {
      // 2. lse = M + log Σ_r exp(lse_r − M). A slice of only padding has lse_r = −inf and adds exp(−inf) = 0.
      at::Tensor max_lse = partials[0].clone();
      AllReduceInPlace(max_lse, *group, ReduceOp::kMax, kFusedWhat);
      at::Tensor sums = at::stack({at::exp(partials[0] - max_lse), partials[1], partials[2]}).contiguous();
      AllReduceInPlace(sums, *group, ReduceOp::kSum, kFusedWhat);
      lse = max_lse + sums[0].log();
      target_logit = sums[1];
      sum_logits = sums[2];
    }
    // 3. The loss with the full vocabulary's K.
    const at::Tensor loss =
        fusions::CrossEntropyLossFromStats(lse, target_logit, sum_logits, flat_target, shard.full_vocab, params);

    ctx->save_for_backward({logits, flat_target, lse.contiguous()});
    ctx->saved_data["shard_start"] = shard.start;
    ctx->saved_data["full_vocab"] = shard.full_vocab;
    ctx->saved_data["ignore_index"] = ignore_index;
    ctx->saved_data["label_smoothing"] = label_smoothing;
    ctx->saved_data["valid_vocab"] = valid_vocab;
    return loss.view(target.sizes());
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const torch::autograd::variable_list saved = ctx->get_saved_variables();
    const at::Tensor& logits = saved[0];
    const at::Tensor& target = saved[1];
    const at::Tensor& lse = saved[2];
    const fusions::VocabShard shard{ctx->saved_data["shard_start"].toInt(), ctx->saved_data["full_vocab"].toInt()};
    const fusions::CrossEntropyParams params{ctx->saved_data["ignore_index"].toInt(),
                                             ctx->saved_data["label_smoothing"].toDouble(),
                                             ctx->saved_data["valid_vocab"].toInt()};
    const at::Tensor grad_loss = grads[0].reshape({-1}).to(lse.scalar_type()).contiguous();
    const at::Tensor grad = fusions::CrossEntropyShardBackward(grad_loss, logits, target, lse, shard, params,
                                                               fusions::GradLogitsBuffer::kAllocate);
    // Shaped like the logits shard ([..., V/tp]); inputs after the first get no gradient.
    std::vector<int64_t> shape(grads[0].sizes().begin(), grads[0].sizes().end());
    shape.push_back(logits.size(1));
    return {grad.view(shape), at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

}  // namespace

at::Tensor VocabParallelCrossEntropy(const at::Tensor& logits_shard, const at::Tensor& target, Group* group,
                                     double label_smoothing) {
  TORCH_CHECK(logits_shard.is_floating_point(), kWhat, ": logits must be floating point, got ",
              logits_shard.scalar_type());
  TORCH_CHECK(target.scalar_type() == at::kLong, kWhat, ": target must be int64, got ", target.scalar_type());
  TORCH_CHECK(logits_shard.dim() == target.dim() + 1 &&
                  logits_shard.sizes().slice(0, target.dim()) == target.sizes(),
              kWhat, ": logits ", logits_shard.sizes(), " must be target ", target.sizes(), " plus a vocab dim");
  TORCH_CHECK(label_smoothing >= 0.0 && label_smoothing < 1.0, kWhat, ": label_smoothing must be in [0, 1), got ",
              label_smoothing);
  return VocabParallelCrossEntropyFunction::apply(logits_shard, target, group, label_smoothing);
}

at::Tensor FusedVocabParallelCrossEntropy(const at::Tensor& logits_shard, const at::Tensor& target, Group* group,
                                          const fusions::CrossEntropyParams& params) {
  TORCH_CHECK(logits_shard.defined() && target.defined(), kFusedWhat, ": logits and target must be defined");
  TORCH_CHECK(target.scalar_type() == at::kLong, kFusedWhat, ": target must be int64, got ", target.scalar_type());
  TORCH_CHECK(logits_shard.dim() == target.dim() + 1 &&
                  logits_shard.sizes().slice(0, target.dim()) == target.sizes(),
              kFusedWhat, ": logits ", logits_shard.sizes(), " must be target ", target.sizes(), " plus a vocab dim");
  return FusedVocabParallelCrossEntropyFunction::apply(logits_shard, target, group, params.ignore_index,
                                                       params.label_smoothing, params.valid_vocab);
}

}  // namespace megatron::tensor_parallel
