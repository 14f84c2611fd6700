// Building blocks of a transformer layer and the backend that chooses their implementation.
//
// Megatron writes a layer spec once and instantiates it per backend (BackendSpecProvider: local vs Transformer
// Engine). Here the same role is played by `BackendProvider`: model code asks it for norms, the core attention
// and the activation; `LocalBackend` returns plain ATen implementations, and the fused backend (our CUDA
// kernels) plugs in behind the same interface. Parameter names are identical across backends so checkpoints
// map between them.
//
// Linear layers are plain `Linear` here; tensor parallelism adds Column/RowParallelLinear on top of the same
// weights (a sharded dimension plus a collective).
#pragma once

#include <memory>
#include <optional>
#include <string>

#include <ATen/core/Tensor.h>

#include "absl/status/statusor.h"
#include "megatron/core/transformer/init_method.h"
#include "megatron/core/transformer/module.h"
#include "megatron/core/transformer/transformer_config.h"

namespace megatron::distributed {
class Group;
}  // namespace megatron::distributed

namespace megatron::transformer {

// y = x W^T + b.  weight [out_features, in_features], bias [out_features] (optional).
class Linear : public MegatronModule {
 public:
  Linear(int64_t in_features, int64_t out_features, bool bias, InitMethod init);
  at::Tensor Forward(const at::Tensor& x) const;

  const at::Tensor& weight() const { return weight_; }
  const at::Tensor& bias() const { return bias_; }

 private:
  at::Tensor weight_;  // [out, in]
  at::Tensor bias_;    // [out] or undefined
};

// Normalisation over the last dimension. Statistics are computed in fp32 even under bf16 autocast.
class Norm : public MegatronModule {
 public:
  virtual at::Tensor Forward(const at::Tensor& x) const = 0;

  struct ResidualAddResult {
    at::Tensor y;  // Forward(h)
    at::Tensor h;  // residual + x: the next residual
  };
  // The pre-norm layer's residual add followed by this norm: h = residual + x, y = Forward(h). The default is
  // exactly that; the fused backend overrides it with one kernel (fusions/norm's ResidualAddNormForward), which
  // gives the same h and y (the add is rounded once to the dtype either way).
  virtual ResidualAddResult ResidualAddForward(const at::Tensor& x, const at::Tensor& residual) const;
};

// (x - mean) / sqrt(var + eps) * weight + bias.  weight, bias [hidden].
class LayerNorm : public Norm {
 public:
  LayerNorm(int64_t hidden, double eps);
  at::Tensor Forward(const at::Tensor& x) const override;

 private:
  double eps_;
  at::Tensor weight_;  // [hidden]
  at::Tensor bias_;    // [hidden]
};

// x / sqrt(mean(x^2) + eps) * weight.  weight [hidden].
class RMSNorm : public Norm {
 public:
  RMSNorm(int64_t hidden, double eps);
  at::Tensor Forward(const at::Tensor& x) const override;

 private:
  double eps_;
  at::Tensor weight_;  // [hidden]
};

// softmax(q k^T * scale [+ mask]) v with dropout on the probabilities. No parameters.
// q [b, np, sq, hn], k/v [b, ng, sk, hn] with np % ng == 0 (grouped-query attention, not expanded: query head h
// attends with key/value head h / (np / ng); implementations that need equal heads expand inside, those that
// take groups natively, the fused one, do not). With sk > sq the queries are the last sq positions (decoding
// with a KV cache) and the causal mask is offset accordingly (bottom-right).
// kPadding: `attention_mask` is boolean, broadcastable to [b, np, sq, sk], true where a score is masked out
// (Megatron's convention); a row masked everywhere gives zeros, not NaN.
// `attention_bias` (optional, float, broadcastable to [b, np, sq, sk]) is added to the scaled scores before the
// mask: T5's relative position bias. It may require grad (the bias table is a parameter).
class CoreAttention {
 public:
  virtual ~CoreAttention() = default;
  virtual at::Tensor Forward(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, AttnMask mask,
                             double dropout_p, const at::Tensor& attention_mask = {},
                             const at::Tensor& attention_bias = {}) const = 0;
};

class BackendProvider {
 public:
  virtual ~BackendProvider() = default;
  virtual std::unique_ptr<Norm> MakeNorm(const TransformerConfig& config, int64_t hidden) const = 0;
  virtual std::unique_ptr<CoreAttention> MakeCoreAttention(const TransformerConfig& config) const = 0;
  // The MLP activation; for SwiGLU the input holds [gate; up] on the last dimension and the output is half.
  virtual at::Tensor Activation(const TransformerConfig& config, const at::Tensor& x) const = 0;
  // Rotary position embedding of q or k: t [s, b, n, hn] (a strided view is fine), freqs [s, 1, 1, hn] float32;
  // returns t's shape and dtype. Local: models::ApplyRotaryPosEmb (float32 ATen ops).
  virtual at::Tensor ApplyRotaryPosEmb(const at::Tensor& t, const at::Tensor& freqs) const;
  // Per-token cross entropy, fp32 [n], of logits [n, V] (any float dtype) against labels [n] (int64).
  // Local: fp32 logits then ATen's cross entropy (Megatron's non-fused path).
  virtual at::Tensor CrossEntropy(const at::Tensor& logits, const at::Tensor& labels) const;
  // Per-token cross entropy of vocab-parallel logits [..., V/tp] (this rank's slice of the vocabulary) against
  // labels [...] (int64), the same on every rank of `tp`. Local: tensor_parallel::VocabParallelCrossEntropy
  // (Megatron's algorithm, fp32 ATen ops).
  virtual at::Tensor VocabParallelCrossEntropy(const at::Tensor& logits_shard, const at::Tensor& labels,
                                               distributed::Group* tp) const;
};

// The provider for `config.backend`. kFused is available when //megatron/core/transformer:fused_backend is
// linked into the binary (it registers itself); otherwise an error says so.
absl::StatusOr<std::shared_ptr<const BackendProvider>> GetBackend(Backend backend);

// Called by a backend library's static initialiser.
void RegisterBackend(Backend backend, std::shared_ptr<const BackendProvider> (*provider)());

// The plain-ATen provider (always available).
std::shared_ptr<const BackendProvider> LocalBackend();

}  // namespace megatron::transformer
