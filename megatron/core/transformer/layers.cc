#include "megatron/core/transformer/layers.h"

#include <cmath>
#include <limits>

#include <ATen/TensorOperators.h>
#include <ATen/core/Reduction.h>
#include <ATen/ops/cross_entropy_loss.h>
#include <ATen/ops/dropout.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/gelu.h>
#include <ATen/ops/layer_norm.h>
#include <ATen/ops/linear.h>
#include <ATen/ops/matmul.h>
#include <ATen/ops/ones.h>
#include <ATen/ops/relu.h>
#include <ATen/ops/rsqrt.h>
#include <ATen/ops/scaled_dot_product_attention.h>
#include <ATen/ops/silu.h>
#include <ATen/ops/softmax.h>
#include <ATen/ops/zeros.h>

#include "megatron/core/models/common/rotary_pos_embedding.h"
#include "megatron/core/tensor_parallel/cross_entropy.h"

namespace megatron::transformer {

Linear::Linear(int64_t in_features, int64_t out_features, bool bias, InitMethod init) {
  weight_ = RegisterParameter("weight", at::empty({out_features, in_features}).normal_(0.0, init.std));
  if (bias) bias_ = RegisterParameter("bias", at::zeros({out_features}));
}

at::Tensor Linear::Forward(const at::Tensor& x) const {
  TORCH_CHECK(x.size(-1) == weight_.size(1), "Linear: input has ", x.size(-1), " features, weight expects ",
              weight_.size(1), " (input shape ", x.sizes(), ")");
  return at::linear(x, weight_, bias_.defined() ? std::optional<at::Tensor>(bias_) : std::nullopt);
}

LayerNorm::LayerNorm(int64_t hidden, double eps) : eps_(eps) {
  weight_ = RegisterParameter("weight", at::ones({hidden}));
  bias_ = RegisterParameter("bias", at::zeros({hidden}));
}

at::Tensor LayerNorm::Forward(const at::Tensor& x) const {
  // Under autocast, layer_norm runs in fp32 (it is on autocast's fp32 list).
  return at::layer_norm(x, {x.size(-1)}, weight_, bias_, eps_);
}

RMSNorm::RMSNorm(int64_t hidden, double eps) : eps_(eps) {
  weight_ = RegisterParameter("weight", at::ones({hidden}));
}

at::Tensor RMSNorm::Forward(const at::Tensor& x) const {
  // Statistics in fp32 whatever the input dtype (as Llama and Megatron do); the result goes back to x's dtype.
  const at::Tensor xf = x.to(at::kFloat);
  const at::Tensor normed = xf * at::rsqrt(xf.pow(2).mean(-1, /*keepdim=*/true) + eps_);
  return (normed * weight_).to(x.scalar_type());
}

namespace {

class SdpaAttention : public CoreAttention {
 public:
  explicit SdpaAttention(double scale) : scale_(scale) {}

  at::Tensor Forward(const at::Tensor& q, const at::Tensor& k_groups, const at::Tensor& v_groups, AttnMask mask,
                     double dropout_p, const at::Tensor& attention_mask,
                     const at::Tensor& attention_bias) const override {
    // Each query head h attends with the key/value head of its group h / heads_per_group.
    const int64_t heads = q.size(1), groups = k_groups.size(1);
    TORCH_CHECK(groups >= 1 && heads % groups == 0 && v_groups.size(1) == groups, "CoreAttention: ", heads,
                " query heads over ", groups, " key/value heads (q ", q.sizes(), ", k ", k_groups.sizes(), ", v ",
                v_groups.sizes(), ")");
    const at::Tensor k = heads == groups ? k_groups : k_groups.repeat_interleave(heads / groups, 1);
    const at::Tensor v = heads == groups ? v_groups : v_groups.repeat_interleave(heads / groups, 1);
    const int64_t sq = q.size(2), sk = k.size(2);
    if (attention_bias.defined()) return WithBias(q, k, v, mask, dropout_p, attention_mask, attention_bias);
    if (mask == AttnMask::kPadding) {
      TORCH_CHECK(attention_mask.defined() && attention_mask.scalar_type() == at::kBool,
                  "CoreAttention: a padding mask needs a boolean attention_mask (true = masked out)");
      // SDPA's boolean mask means "may attend"; fully masked rows would give NaN, so they attend to nothing
      // by zeroing their output afterwards.
      const at::Tensor allowed = attention_mask.logical_not();
      const at::Tensor any_allowed = allowed.any(-1, /*keepdim=*/true);  // [.., sq, 1]
      const at::Tensor safe = allowed.logical_or(any_allowed.logical_not());
      at::Tensor out = at::scaled_dot_product_attention(q, k, v, safe, dropout_p, /*is_causal=*/false, scale_);
      return out * any_allowed.to(out.scalar_type());
    }
    TORCH_CHECK(sk >= sq, "CoreAttention: ", sk, " keys for ", sq, " queries");
    if (mask == AttnMask::kNone || sq == 1) {
      return at::scaled_dot_product_attention(q, k, v, {}, dropout_p, /*is_causal=*/false, scale_);
    }
    if (sq == sk) return at::scaled_dot_product_attention(q, k, v, {}, dropout_p, /*is_causal=*/true, scale_);
    // Queries are the last sq of sk positions: query i may see keys j <= i + (sk - sq).
    at::Tensor allowed = at::ones({sq, sk}, q.options().dtype(at::kBool)).tril(sk - sq);
    return at::scaled_dot_product_attention(q, k, v, allowed, dropout_p, /*is_causal=*/false, scale_);
  }


 private:
  // The unfused path (Megatron's local DotProductAttention): explicit scores, so that gradients reach the bias
  // (T5's relative position table) through ordinary autograd ops. Softmax in fp32.
  at::Tensor WithBias(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, AttnMask mask,
                      double dropout_p, const at::Tensor& attention_mask, const at::Tensor& bias) const {
    const int64_t sq = q.size(2), sk = k.size(2);
    at::Tensor allowed;  // boolean, broadcastable to the scores; undefined = everything allowed
    if (mask == AttnMask::kPadding) {
      TORCH_CHECK(attention_mask.defined() && attention_mask.scalar_type() == at::kBool,
                  "CoreAttention: a padding mask needs a boolean attention_mask (true = masked out)");
      allowed = attention_mask.logical_not();
    } else if (mask == AttnMask::kCausal && sq > 1) {
      TORCH_CHECK(sk >= sq, "CoreAttention: ", sk, " keys for ", sq, " queries");
      allowed = at::ones({sq, sk}, q.options().dtype(at::kBool)).tril(sk - sq);
    }
    // Scores and softmax in fp32 (fp64 stays fp64, for reference computations).
    const at::ScalarType acc = q.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
    at::Tensor scores = at::matmul(q, k.transpose(-2, -1)).to(acc) * scale_ + bias.to(acc);
    at::Tensor any_allowed;
    if (allowed.defined()) {
      scores = scores.masked_fill(allowed.logical_not(), -std::numeric_limits<float>::infinity());
      any_allowed = allowed.any(-1, /*keepdim=*/true);
      // A row with nothing allowed would be NaN; give it zeros (see the class comment).
      scores = scores.masked_fill(any_allowed.logical_not(), 0.0);
    }
    at::Tensor probs = at::dropout(at::softmax(scores, -1), dropout_p, dropout_p > 0).to(q.scalar_type());
    at::Tensor out = at::matmul(probs, v);
    return any_allowed.defined() ? out * any_allowed.to(out.scalar_type()) : out;
  }

  double scale_;
};

class Local : public BackendProvider {
 public:
  std::unique_ptr<Norm> MakeNorm(const TransformerConfig& config, int64_t hidden) const override {
    if (config.normalization == Normalization::kRMSNorm) {
      return std::make_unique<RMSNorm>(hidden, config.layernorm_epsilon);
    }
    return std::make_unique<LayerNorm>(hidden, config.layernorm_epsilon);
  }

  std::unique_ptr<CoreAttention> MakeCoreAttention(const TransformerConfig& config) const override {
    return std::make_unique<SdpaAttention>(config.attention_scale());
  }

  at::Tensor Activation(const TransformerConfig& config, const at::Tensor& x) const override {
    switch (config.activation) {
      case Activation::kGelu: return at::gelu(x);
      case Activation::kGeluTanh: return at::gelu(x, "tanh");
      case Activation::kRelu: return at::relu(x);
      case Activation::kQuickGelu: return x * at::sigmoid(x * 1.702);
      case Activation::kSwiGLU: {
        auto halves = x.chunk(2, -1);
        return at::silu(halves[0]) * halves[1];
      }
    }
    TORCH_CHECK(false, "unknown activation");
  }
};

}  // namespace

at::Tensor BackendProvider::ApplyRotaryPosEmb(const at::Tensor& t, const at::Tensor& freqs) const {
  return models::ApplyRotaryPosEmb(t, freqs);
}

at::Tensor BackendProvider::CrossEntropy(const at::Tensor& logits, const at::Tensor& labels) const {
  return at::cross_entropy_loss(logits.to(at::kFloat), labels, /*weight=*/{}, at::Reduction::None);
}

at::Tensor BackendProvider::VocabParallelCrossEntropy(const at::Tensor& logits_shard, const at::Tensor& labels,
                                                      distributed::Group* tp) const {
  return tensor_parallel::VocabParallelCrossEntropy(logits_shard, labels, tp);
}

Norm::ResidualAddResult Norm::ResidualAddForward(const at::Tensor& x, const at::Tensor& residual) const {
  ResidualAddResult out;
  out.h = residual + x;
  out.y = Forward(out.h);
  return out;
}

std::shared_ptr<const BackendProvider> LocalBackend() {
  static const std::shared_ptr<const BackendProvider> backend = std::make_shared<Local>();
  return backend;
}

namespace {
std::shared_ptr<const BackendProvider> (*g_fused_provider)() = nullptr;
}  // namespace

void RegisterBackend(Backend backend, std::shared_ptr<const BackendProvider> (*provider)()) {
  if (backend == Backend::kFused) g_fused_provider = provider;
}

absl::StatusOr<std::shared_ptr<const BackendProvider>> GetBackend(Backend backend) {
  if (backend == Backend::kLocal) return LocalBackend();
  if (g_fused_provider != nullptr) return g_fused_provider();
  return absl::UnimplementedError(
      "model.backend: FUSED is not linked into this binary (depend on //megatron/core/transformer:fused_backend); "
      "use LOCAL");
}

}  // namespace megatron::transformer
