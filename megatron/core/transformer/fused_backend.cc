#include "megatron/core/transformer/fused_backend.h"

#include <ATen/ops/ones.h>
#include <ATen/ops/zeros.h>
#include <ATen/ops/zeros_like.h>
#include <torch/csrc/autograd/custom_function.h>

#include "megatron/core/fusions/activation/activation.h"
#include "megatron/core/fusions/attention/attention.h"
#include "megatron/core/fusions/attention/attention_autograd.h"
#include "megatron/core/fusions/cross_entropy/cross_entropy.h"
#include "megatron/core/fusions/norm/norm.h"
#include "megatron/core/fusions/rope/rope.h"
#include "megatron/core/tensor_parallel/cross_entropy.h"

namespace megatron::transformer {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// Autograd wrappers: forward saves x and the statistics; backward is the fused backward kernel. Two functions
// because autograd's apply() cannot take an undefined tensor argument (RMSNorm has no beta).
fusions::NormParams Params(bool rms, double eps) {
  return fusions::NormParams{rms ? fusions::NormKind::kRMSNorm : fusions::NormKind::kLayerNorm, eps,
                             /*zero_centered_gamma=*/false};
}

struct FusedLayerNormFunction : public torch::autograd::Function<FusedLayerNormFunction> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, const at::Tensor& gamma,
                            const at::Tensor& beta, double eps) {
    const at::Tensor xc = x.contiguous();
    fusions::NormForwardResult out = fusions::NormForward(xc, gamma, beta, Params(false, eps));
    ctx->save_for_backward({xc, gamma, out.mean, out.rstd});
    ctx->saved_data["eps"] = eps;
    return out.y;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_outputs) {
    const auto s = ctx->get_saved_variables();
    fusions::NormBackwardResult g = fusions::NormBackward(grad_outputs[0].contiguous(), s[0], s[1], s[2], s[3],
                                                          Params(false, ctx->saved_data["eps"].toDouble()));
    return {g.dx, g.dgamma, g.dbeta, at::Tensor()};
  }
};

struct FusedRMSNormFunction : public torch::autograd::Function<FusedRMSNormFunction> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, const at::Tensor& gamma, double eps) {
    const at::Tensor xc = x.contiguous();
    fusions::NormForwardResult out = fusions::NormForward(xc, gamma, at::Tensor(), Params(true, eps));
    ctx->save_for_backward({xc, gamma, out.rstd});
    ctx->saved_data["eps"] = eps;
    return out.y;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_outputs) {
    const auto s = ctx->get_saved_variables();
    fusions::NormBackwardResult g = fusions::NormBackward(grad_outputs[0].contiguous(), s[0], s[1], at::Tensor(),
                                                          s[2], Params(true, ctx->saved_data["eps"].toDouble()));
    return {g.dx, g.dgamma, at::Tensor()};
  }
};

// Residual add + norm (fusions/norm's ResidualAddNormForward): outputs y = norm(x + residual) and h = x + residual;
// the backward gets dy and dh (h's gradient from the next residual add; undefined if h had no other use) and
// returns dx = dresidual = norm backward + dh from one kernel.
at::Tensor DefinedOrZeros(const at::Tensor& grad, const at::Tensor& like) {
  return grad.defined() ? grad.contiguous() : at::zeros_like(like);
}

struct FusedResidualAddLayerNormFunction : public torch::autograd::Function<FusedResidualAddLayerNormFunction> {
  static variable_list forward(AutogradContext* ctx, const at::Tensor& x, const at::Tensor& residual,
                               const at::Tensor& gamma, const at::Tensor& beta, double eps) {
    fusions::NormForwardResult out =
        fusions::ResidualAddNormForward(x.contiguous(), residual.contiguous(), gamma, beta, Params(false, eps));
    ctx->save_for_backward({out.h, gamma, out.mean, out.rstd});
    ctx->saved_data["eps"] = eps;
    return {out.y, out.h};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_outputs) {
    const auto s = ctx->get_saved_variables();
    const at::Tensor dh = grad_outputs[1].defined() ? grad_outputs[1].contiguous() : at::Tensor();
    fusions::NormBackwardResult g =
        fusions::ResidualAddNormBackward(DefinedOrZeros(grad_outputs[0], s[0]), dh, s[0], s[1], s[2], s[3],
                                         Params(false, ctx->saved_data["eps"].toDouble()));
    return {g.dx, g.dx, g.dgamma, g.dbeta, at::Tensor()};
  }
};

struct FusedResidualAddRMSNormFunction : public torch::autograd::Function<FusedResidualAddRMSNormFunction> {
  static variable_list forward(AutogradContext* ctx, const at::Tensor& x, const at::Tensor& residual,
                               const at::Tensor& gamma, double eps) {
    fusions::NormForwardResult out = fusions::ResidualAddNormForward(x.contiguous(), residual.contiguous(), gamma,
                                                                     at::Tensor(), Params(true, eps));
    ctx->save_for_backward({out.h, gamma, out.rstd});
    ctx->saved_data["eps"] = eps;
    return {out.y, out.h};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_outputs) {
    const auto s = ctx->get_saved_variables();
    const at::Tensor dh = grad_outputs[1].defined() ? grad_outputs[1].contiguous() : at::Tensor();
    fusions::NormBackwardResult g =
        fusions::ResidualAddNormBackward(DefinedOrZeros(grad_outputs[0], s[0]), dh, s[0], s[1], at::Tensor(), s[2],
                                         Params(true, ctx->saved_data["eps"].toDouble()));
    return {g.dx, g.dx, g.dgamma, at::Tensor()};
  }
};

// Cross entropy straight from the compute-dtype logits (no fp32 copy of [n, V]); the backward recomputes the
// softmax from the saved log-sum-exp. The gradient goes to a fresh buffer: the logits stay valid for anyone else.
struct FusedCrossEntropyFunction : public torch::autograd::Function<FusedCrossEntropyFunction> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& logits, const at::Tensor& labels) {
    const at::Tensor lc = logits.contiguous();
    fusions::CrossEntropyForwardResult out = fusions::CrossEntropyForward(lc, labels, fusions::CrossEntropyParams{});
    ctx->save_for_backward({lc, labels, out.lse});
    return out.loss;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_outputs) {
    const auto s = ctx->get_saved_variables();
    at::Tensor grad = fusions::CrossEntropyBackward(grad_outputs[0].contiguous(), s[0], s[1], s[2],
                                                    fusions::CrossEntropyParams{},
                                                    fusions::GradLogitsBuffer::kAllocate);
    return {grad, at::Tensor()};
  }
};

// The MLP activation from fusions/activation (no bias here: linear_fc1 has already added it). Saves the input;
// the backward recomputes the activation's derivative from it.
struct FusedActivationFunction : public torch::autograd::Function<FusedActivationFunction> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, int64_t kind) {
    const at::Tensor xc = x.contiguous();
    ctx->save_for_backward({xc});
    ctx->saved_data["kind"] = kind;
    return fusions::BiasActivationForward(xc, at::Tensor(), static_cast<fusions::ActivationKind>(kind));
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_outputs) {
    const auto s = ctx->get_saved_variables();
    const auto kind = static_cast<fusions::ActivationKind>(ctx->saved_data["kind"].toInt());
    return {fusions::BiasActivationBackward(grad_outputs[0].contiguous(), s[0], at::Tensor(), kind).dx,
            at::Tensor()};
  }
};

// RoPE on q or k straight from their strided QKV views (no copy); the backward is the transposed rotation, so only
// the angles are saved.
struct FusedRopeFunction : public torch::autograd::Function<FusedRopeFunction> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& t, const at::Tensor& freqs) {
    const at::Tensor f = freqs.contiguous();
    ctx->save_for_backward({f});
    const at::Tensor tl = t.stride(-1) == 1 ? t : t.contiguous();
    return fusions::RopeForward(tl, f, fusions::RopeParams{});
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_outputs) {
    const auto s = ctx->get_saved_variables();
    const at::Tensor& dy = grad_outputs[0];
    return {fusions::RopeBackward(dy.stride(-1) == 1 ? dy : dy.contiguous(), s[0], fusions::RopeParams{}),
            at::Tensor()};
  }
};

// weight [hidden] (+ bias [hidden] for LayerNorm): the same names and initial values as the local norms.
class FusedNorm : public Norm {
 public:
  FusedNorm(int64_t hidden, double eps, bool rms) : eps_(eps), rms_(rms) {
    weight_ = RegisterParameter("weight", at::ones({hidden}));
    if (!rms) bias_ = RegisterParameter("bias", at::zeros({hidden}));
  }

  at::Tensor Forward(const at::Tensor& x) const override {
    return rms_ ? FusedRMSNormFunction::apply(x, weight_, eps_)
                : FusedLayerNormFunction::apply(x, weight_, bias_, eps_);
  }

  // One kernel for the residual add and the norm when both addends agree in shape and dtype (the kernel's
  // contract); otherwise (e.g. a float32 residual stream under a bf16 branch) the unfused default.
  ResidualAddResult ResidualAddForward(const at::Tensor& x, const at::Tensor& residual) const override {
    if (x.sizes() != residual.sizes() || x.scalar_type() != residual.scalar_type()) {
      return Norm::ResidualAddForward(x, residual);
    }
    const variable_list out = rms_ ? FusedResidualAddRMSNormFunction::apply(x, residual, weight_, eps_)
                                   : FusedResidualAddLayerNormFunction::apply(x, residual, weight_, bias_, eps_);
    return {out[0], out[1]};
  }

 private:
  double eps_;
  bool rms_;
  at::Tensor weight_;
  at::Tensor bias_;
};

// Core attention through fusions/attention (cuDNN or flash via ATen, GQA groups unexpanded, bottom-right causal:
// the local path's semantics, layers.h) where it applies: CUDA tensors with the CUDA path linked, bfloat16 or
// float16, no padding mask, no bias, no attention dropout, a supported head dim. Everything else (CPU, float32,
// padding masks, T5's bias, dropout > 0) takes the local path unchanged.
class FusedCoreAttention : public CoreAttention {
 public:
  explicit FusedCoreAttention(const TransformerConfig& config)
      : scale_(config.attention_scale()), local_(LocalBackend()->MakeCoreAttention(config)) {}

  at::Tensor Forward(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, AttnMask mask, double dropout_p,
                     const at::Tensor& attention_mask, const at::Tensor& attention_bias) const override {
    if (!Applies(q, k, v, mask, dropout_p, attention_mask, attention_bias)) {
      return local_->Forward(q, k, v, mask, dropout_p, attention_mask, attention_bias);
    }
    const fusions::AttentionParams params{
        scale_, mask == AttnMask::kCausal ? fusions::AttentionMask::kCausal : fusions::AttentionMask::kNone,
        fusions::AttentionImpl::kAuto};
    return fusions::FusedAttention(q, k, v, params);
  }

 private:
  static bool Applies(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, AttnMask mask, double dropout_p,
                      const at::Tensor& attention_mask, const at::Tensor& attention_bias) {
    const at::ScalarType t = q.scalar_type();
    const int64_t d = q.size(-1);
    return q.is_cuda() && fusions::HasCudaAttentionImpl() && (t == at::kBFloat16 || t == at::kHalf) &&
           k.scalar_type() == t && v.scalar_type() == t && (mask == AttnMask::kCausal || mask == AttnMask::kNone) &&
           !attention_mask.defined() && !attention_bias.defined() && dropout_p == 0.0 &&
           d % fusions::kAttentionHeadDimMultiple == 0 && d <= fusions::kAttentionMaxHeadDim &&
           q.stride(-1) == 1 && k.stride(-1) == 1 && v.stride(-1) == 1 && k.size(2) >= q.size(2);
  }

  double scale_;
  std::unique_ptr<CoreAttention> local_;
};

class Fused : public BackendProvider {
 public:
  std::unique_ptr<Norm> MakeNorm(const TransformerConfig& config, int64_t hidden) const override {
    return std::make_unique<FusedNorm>(hidden, config.layernorm_epsilon,
                                       config.normalization == Normalization::kRMSNorm);
  }
  std::unique_ptr<CoreAttention> MakeCoreAttention(const TransformerConfig& config) const override {
    return std::make_unique<FusedCoreAttention>(config);
  }
  at::Tensor Activation(const TransformerConfig& config, const at::Tensor& x) const override {
    switch (config.activation) {
      case transformer::Activation::kGelu:
        return FusedActivationFunction::apply(x, static_cast<int64_t>(fusions::ActivationKind::kGeluErf));
      case transformer::Activation::kGeluTanh:
        return FusedActivationFunction::apply(x, static_cast<int64_t>(fusions::ActivationKind::kGeluTanh));
      case transformer::Activation::kSwiGLU:
        return FusedActivationFunction::apply(x, static_cast<int64_t>(fusions::ActivationKind::kSwiGLU));
      default:  // ReLU, quick GeLU: no fused kernel (ATen's are single elementwise kernels already)
        return LocalBackend()->Activation(config, x);
    }
  }
  at::Tensor ApplyRotaryPosEmb(const at::Tensor& t, const at::Tensor& freqs) const override {
    return FusedRopeFunction::apply(t, freqs);
  }
  at::Tensor CrossEntropy(const at::Tensor& logits, const at::Tensor& labels) const override {
    return FusedCrossEntropyFunction::apply(logits, labels);
  }
  // The fused kernels' per-shard pass, two small all-reduces, and the shard backward (tensor_parallel/
  // cross_entropy.h): no fp32 copy of the [n, V/tp] logits. Default CrossEntropyParams, as CrossEntropy above.
  at::Tensor VocabParallelCrossEntropy(const at::Tensor& logits_shard, const at::Tensor& labels,
                                       distributed::Group* tp) const override {
    return tensor_parallel::FusedVocabParallelCrossEntropy(logits_shard, labels, tp);
  }
};

const bool kRegistered = [] {
  RegisterBackend(Backend::kFused, FusedBackend);
  return true;
}();

}  // namespace

std::shared_ptr<const BackendProvider> FusedBackend() {
  static const std::shared_ptr<const BackendProvider> backend = std::make_shared<Fused>();
  return backend;
}

}  // namespace megatron::transformer
