#include "megatron/core/models/common/rotary_pos_embedding.h"

#include <ATen/TensorOperators.h>
#include <ATen/ops/arange.h>
#include <ATen/ops/cat.h>
#include <ATen/ops/cos.h>
#include <ATen/ops/outer.h>
#include <ATen/ops/pow.h>
#include <ATen/ops/sin.h>

namespace megatron::models {

RotaryEmbedding::RotaryEmbedding(int64_t kv_channels, double rotary_base) : dim_(kv_channels), base_(rotary_base) {
  TORCH_CHECK(dim_ % 2 == 0, "RotaryEmbedding: kv_channels must be even, got ", dim_);
}

at::Tensor RotaryEmbedding::Forward(int64_t seq_len, int64_t offset, const at::Device& device) const {
  // Computed in float64 then rounded, so positions in the thousands keep accurate angles.
  const auto opts = at::TensorOptions().dtype(at::kDouble).device(device);
  at::Tensor inv_freq = 1.0 / at::pow(base_, at::arange(0, dim_, 2, opts) / static_cast<double>(dim_));
  at::Tensor positions = at::arange(offset, offset + seq_len, opts);
  at::Tensor freqs = at::outer(positions, inv_freq);  // [s, d/2]
  return at::cat({freqs, freqs}, -1).to(at::kFloat).view({seq_len, 1, 1, dim_});
}

at::Tensor ApplyRotaryPosEmb(const at::Tensor& t, const at::Tensor& freqs) {
  TORCH_CHECK(t.dim() == 4 && freqs.dim() == 4 && t.size(0) == freqs.size(0) && t.size(-1) == freqs.size(-1),
              "ApplyRotaryPosEmb: t ", t.sizes(), " and freqs ", freqs.sizes(), " must be [s,b,n,d] and [s,1,1,d]");
  const at::Tensor tf = t.to(at::kFloat);
  auto halves = tf.chunk(2, -1);
  const at::Tensor rotated = at::cat({-halves[1], halves[0]}, -1);
  return (tf * at::cos(freqs) + rotated * at::sin(freqs)).to(t.scalar_type());
}

}  // namespace megatron::models
