// The reference cross-entropy: plain ATen in float64, written from the formulas of cross_entropy.h
// (log_softmax, gather, mean). It is the CPU implementation and the oracle of the CUDA kernels' tests; speed is
// not a goal.
#include <ATen/TensorOperators.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/arange.h>
#include <ATen/ops/exp.h>
#include <ATen/ops/full.h>
#include <ATen/ops/logsumexp.h>
#include <ATen/ops/stack.h>
#include <ATen/ops/scalar_tensor.h>
#include <ATen/ops/where.h>
#include <ATen/ops/zeros.h>

#include <limits>
#include <utility>

#include "megatron/core/fusions/cross_entropy/cross_entropy.h"

namespace megatron::fusions {
namespace {

bool IsKernelDtype(at::ScalarType t) { return t == at::kFloat || t == at::kBFloat16 || t == at::kHalf; }

// loss and lse are float32, or float64 when the logits are (reference only; see cross_entropy.h).
at::ScalarType StatsDtype(const at::Tensor& logits) {
  return logits.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
}

// Reads the targets (host copy) and throws on one outside [0, K) that is not ignore_index.
void CheckTargetValues(const at::Tensor& target, int64_t classes, int64_t ignore_index, const char* op) {
  const at::Tensor t = target.to(at::kCPU).contiguous();
  const int64_t* tp = t.data_ptr<int64_t>();
  for (int64_t i = 0; i < t.numel(); ++i) {
    TORCH_CHECK(tp[i] == ignore_index || (tp[i] >= 0 && tp[i] < classes), op, ": target[", i, "] = ", tp[i],
                " is outside [0, ", classes, ") (the valid vocabulary) and is not ignore_index (", ignore_index,
                ")");
  }
}

struct Rows64 {
  at::Tensor x;        // [n, K] float64, the valid columns
  at::Tensor valid;    // [n] bool, target != ignore_index
  at::Tensor safe_t;   // [n, 1] int64, target with ignored rows mapped to class 0
  at::Tensor x_t;      // [n] float64, logit of the target (of class 0 on ignored rows)
};

Rows64 Prepare(const at::Tensor& logits, const at::Tensor& target, const CrossEntropyParams& params) {
  const int64_t classes = EffectiveValidVocab(params, logits.size(1));
  Rows64 r;
  r.x = logits.narrow(1, 0, classes).to(at::kDouble);
  r.valid = target.ne(params.ignore_index);
  r.safe_t = at::where(r.valid, target, at::zeros({}, target.options())).unsqueeze(1);
  r.x_t = r.x.gather(1, r.safe_t).squeeze(1);
  return r;
}

}  // namespace

void CheckCrossEntropyForwardInputs(const at::Tensor& logits, const at::Tensor& target,
                                    const CrossEntropyParams& params, bool allow_float64) {
  TORCH_CHECK(logits.defined() && logits.dim() == 2, "CrossEntropyForward: logits must be [n, V], got ",
              logits.defined() ? logits.sizes() : at::IntArrayRef{});
  CheckCrossEntropyShardInputs(logits, target, WholeVocab(logits.size(1)), params, allow_float64);
}

void CheckCrossEntropyShardInputs(const at::Tensor& logits, const at::Tensor& target, const VocabShard& shard,
                                  const CrossEntropyParams& params, bool allow_float64) {
  TORCH_CHECK(logits.defined() && target.defined(), "CrossEntropyForward: logits and target must be defined");
  TORCH_CHECK(logits.dim() == 2, "CrossEntropyForward: logits must be [n, V], got shape ", logits.sizes(),
              " (flatten the leading dimensions first)");
  const int64_t vocab = logits.size(1);
  TORCH_CHECK(vocab >= 1, "CrossEntropyForward: V (logits.size(1)) must be at least 1, got shape ", logits.sizes());
  const bool float64_ok = allow_float64 && logits.scalar_type() == at::kDouble;
  TORCH_CHECK(IsKernelDtype(logits.scalar_type()) || float64_ok,
              "CrossEntropyForward: logits must be float32, bfloat16 or float16, got ", logits.scalar_type());
  TORCH_CHECK(logits.is_contiguous(), "CrossEntropyForward: logits must be contiguous (call .contiguous()), got ",
              "shape ", logits.sizes(), " strides ", logits.strides());
  TORCH_CHECK(target.dim() == 1 && target.size(0) == logits.size(0), "CrossEntropyForward: target must be [",
              logits.size(0), "] (the rows of logits ", logits.sizes(), "), got ", target.sizes());
  TORCH_CHECK(target.scalar_type() == at::kLong, "CrossEntropyForward: target must be int64, got ",
              target.scalar_type());
  TORCH_CHECK(target.is_contiguous(), "CrossEntropyForward: target must be contiguous");
  TORCH_CHECK(target.device() == logits.device(), "CrossEntropyForward: target is on ", target.device(),
              ", logits on ", logits.device());
  TORCH_CHECK(shard.start >= 0 && shard.full_vocab >= shard.start + vocab,
              "CrossEntropyForward: the shard [", shard.start, ", ", shard.start + vocab,
              ") (start, plus the logits' V) must lie in the full vocabulary [0, ", shard.full_vocab, ")");
  TORCH_CHECK(params.valid_vocab >= 0 && params.valid_vocab <= shard.full_vocab,
              "CrossEntropyForward: params.valid_vocab must be 0 (all columns) or in [1, V = ", shard.full_vocab,
              "], got ", params.valid_vocab);
  TORCH_CHECK(params.label_smoothing >= 0.0 && params.label_smoothing <= 1.0,
              "CrossEntropyForward: params.label_smoothing must be in [0, 1], got ", params.label_smoothing);
}

void CheckCrossEntropyBackwardInputs(const at::Tensor& grad_loss, const at::Tensor& logits,
                                     const at::Tensor& target, const at::Tensor& lse,
                                     const CrossEntropyParams& params, bool allow_float64) {
  TORCH_CHECK(logits.defined() && logits.dim() == 2, "CrossEntropyBackward: logits must be [n, V], got ",
              logits.defined() ? logits.sizes() : at::IntArrayRef{});
  CheckCrossEntropyShardBackwardInputs(grad_loss, logits, target, lse, WholeVocab(logits.size(1)), params,
                                       allow_float64);
}

void CheckCrossEntropyShardBackwardInputs(const at::Tensor& grad_loss, const at::Tensor& logits,
                                          const at::Tensor& target, const at::Tensor& lse, const VocabShard& shard,
                                          const CrossEntropyParams& params, bool allow_float64) {
  CheckCrossEntropyShardInputs(logits, target, shard, params, allow_float64);
  const at::ScalarType stats = StatsDtype(logits);
  const int64_t n = logits.size(0);
  for (const auto& [name, t] : {std::pair<const char*, const at::Tensor&>{"grad_loss", grad_loss}, {"lse", lse}}) {
    TORCH_CHECK(t.defined(), "CrossEntropyBackward: ", name, " must be defined");
    TORCH_CHECK(t.dim() == 1 && t.size(0) == n && t.scalar_type() == stats && t.is_contiguous() &&
                    t.device() == logits.device(),
                "CrossEntropyBackward: ", name, " must be contiguous ", stats, " [", n, "] on ", logits.device(),
                " (logits ", logits.sizes(), " ", logits.scalar_type(), "), got ", t.sizes(), " ", t.scalar_type(),
                " on ", t.device());
  }
}

CrossEntropyForwardResult CrossEntropyForwardReference(const at::Tensor& logits, const at::Tensor& target,
                                                       const CrossEntropyParams& params) {
  CheckCrossEntropyForwardInputs(logits, target, params, /*allow_float64=*/true);
  const int64_t classes = EffectiveValidVocab(params, logits.size(1));
  CheckTargetValues(target, classes, params.ignore_index, "CrossEntropyForward");
  const Rows64 r = Prepare(logits, target, params);
  const double eps = params.label_smoothing;
  const at::Tensor lse = at::logsumexp(r.x, {1});
  // (1 - eps) * (lse - x_t) + eps * (lse - mean_j x_j), i.e. PyTorch's smoothed loss written with lse.
  at::Tensor loss = (lse - r.x_t) * (1.0 - eps);
  // Only when smoothing: with a -inf logit the mean term is inf, and 0 * inf would make an unsmoothed loss NaN.
  if (eps > 0.0) loss = loss + (lse - r.x.mean({1})) * eps;
  const at::Tensor zero = at::zeros({}, loss.options());
  CrossEntropyForwardResult out;
  out.loss = at::where(r.valid, loss, zero).to(StatsDtype(logits));
  out.lse = lse.to(StatsDtype(logits));
  return out;
}

at::Tensor CrossEntropyBackwardReference(const at::Tensor& grad_loss, const at::Tensor& logits,
                                         const at::Tensor& target, const at::Tensor& lse,
                                         const CrossEntropyParams& params, GradLogitsBuffer buffer) {
  CheckCrossEntropyBackwardInputs(grad_loss, logits, target, lse, params, /*allow_float64=*/true);
  return CrossEntropyShardBackwardReference(grad_loss, logits, target, lse, WholeVocab(logits.size(1)), params,
                                            buffer);
}

at::Tensor CrossEntropyShardPartialsReference(const at::Tensor& logits, const at::Tensor& target,
                                              const VocabShard& shard, const CrossEntropyParams& params) {
  CheckCrossEntropyShardInputs(logits, target, shard, params, /*allow_float64=*/true);
  CheckTargetValues(target, EffectiveValidVocab(params, shard.full_vocab), params.ignore_index,
                    "CrossEntropyShardPartials");
  const int64_t n = logits.size(0);
  const int64_t local = ShardValidColumns(params, shard, logits.size(1));
  const at::Tensor x = logits.narrow(1, 0, local).to(at::kDouble);  // may have no columns (a padding-only shard)
  const at::TensorOptions f64 = x.options();
  const at::Tensor lse = local > 0 ? at::logsumexp(x, {1})
                                   : at::full({n}, -std::numeric_limits<double>::infinity(), f64);
  const at::Tensor local_t = target - shard.start;
  const at::Tensor in_shard = local_t.ge(0).logical_and(local_t.lt(local));
  at::Tensor x_t = at::zeros({n}, f64);
  if (local > 0) {
    const at::Tensor safe = at::where(in_shard, local_t, at::zeros({}, local_t.options())).unsqueeze(1);
    x_t = at::where(in_shard, x.gather(1, safe).squeeze(1), at::zeros({}, f64));
  }
  return at::stack({lse, x_t, x.sum({1})}).to(StatsDtype(logits)).contiguous();
}

at::Tensor CrossEntropyLossFromStats(const at::Tensor& lse, const at::Tensor& target_logit,
                                     const at::Tensor& sum_logits, const at::Tensor& target, int64_t full_vocab,
                                     const CrossEntropyParams& params) {
  TORCH_CHECK(lse.defined() && target_logit.defined() && sum_logits.defined() && target.defined(),
              "CrossEntropyLossFromStats: every input must be defined");
  TORCH_CHECK(lse.dim() == 1 && target_logit.sizes() == lse.sizes() && sum_logits.sizes() == lse.sizes() &&
                  target.sizes() == lse.sizes(),
              "CrossEntropyLossFromStats: lse ", lse.sizes(), ", target_logit ", target_logit.sizes(),
              ", sum_logits ", sum_logits.sizes(), " and target ", target.sizes(), " must all be [n]");
  const int64_t classes = EffectiveValidVocab(params, full_vocab);
  const double eps = params.label_smoothing;
  at::Tensor loss = (lse - target_logit) * (1.0 - eps);
  // Only when smoothing: with a -inf logit the mean term is inf, and 0 * inf would make an unsmoothed loss NaN.
  if (eps > 0.0) loss = loss + (lse - sum_logits / static_cast<double>(classes)) * eps;
  const at::Tensor in_range = target.ge(0).logical_and(target.lt(classes));
  loss = at::where(in_range, loss, at::full({}, std::numeric_limits<double>::quiet_NaN(), loss.options()));
  return at::where(target.ne(params.ignore_index), loss, at::zeros({}, loss.options()));
}

at::Tensor CrossEntropyShardBackwardReference(const at::Tensor& grad_loss, const at::Tensor& logits,
                                              const at::Tensor& target, const at::Tensor& lse,
                                              const VocabShard& shard, const CrossEntropyParams& params,
                                              GradLogitsBuffer buffer) {
  CheckCrossEntropyShardBackwardInputs(grad_loss, logits, target, lse, shard, params, /*allow_float64=*/true);
  const int64_t vocab = logits.size(1);
  const int64_t classes = EffectiveValidVocab(params, shard.full_vocab);
  const int64_t local = ShardValidColumns(params, shard, vocab);
  CheckTargetValues(target, classes, params.ignore_index, "CrossEntropyBackward");
  const double eps = params.label_smoothing;
  const at::Tensor x = logits.narrow(1, 0, local).to(at::kDouble);
  const at::Tensor valid = target.ne(params.ignore_index);
  // The target's column in the shard, or -1 where it is ignored or lies in another shard (no one-hot term here).
  const at::Tensor local_t = target - shard.start;
  const at::Tensor hit = valid.logical_and(local_t.ge(0)).logical_and(local_t.lt(local));
  const at::Tensor column = at::where(hit, local_t, at::full({}, -1, local_t.options())).unsqueeze(1);
  const at::Tensor p = at::exp(x - lse.to(at::kDouble).unsqueeze(1));
  const at::Tensor onehot = at::arange(local, column.options()).unsqueeze(0).eq(column).to(at::kDouble);
  const at::Tensor scale = at::where(valid, grad_loss.to(at::kDouble), at::zeros({}, p.options())).unsqueeze(1);
  const at::Tensor grad_valid = (p - onehot * (1.0 - eps) - eps / static_cast<double>(classes)) * scale;

  // Padding columns stay 0; computed into float64 first, so in place never reads what it has written.
  at::Tensor grad64 = at::zeros({logits.size(0), vocab}, p.options());
  grad64.narrow(1, 0, local).copy_(grad_valid);
  if (buffer == GradLogitsBuffer::kOverwriteLogits) {
    at::Tensor out = logits;  // shares storage: the contract returns an alias of logits
    out.copy_(grad64);
    return out;
  }
  return grad64.to(logits.scalar_type());
}

}  // namespace megatron::fusions
