// Rotary position embeddings (RoPE), Megatron's RotaryEmbedding + apply_rotary_pos_emb (non-interleaved,
// "rotate half": the same convention as HuggingFace Llama, so HF weights load without permutation).
//
//   inv_freq[i] = base^(-2i/d),  freqs[p] = p * inv_freq  (d = kv_channels, i < d/2)
//   emb[p] = [freqs[p], freqs[p]]  (length d)
//   rope(t)[p] = t[p] * cos(emb[p]) + rotate_half(t[p]) * sin(emb[p]),  rotate_half([x1, x2]) = [-x2, x1]
#pragma once

#include <ATen/core/Tensor.h>

namespace megatron::models {

class RotaryEmbedding {
 public:
  RotaryEmbedding(int64_t kv_channels, double rotary_base);

  // Angles for positions [offset, offset + seq_len): [seq_len, 1, 1, kv_channels] in fp32 on `device`.
  at::Tensor Forward(int64_t seq_len, int64_t offset, const at::Device& device) const;

 private:
  int64_t dim_;
  double base_;
};

// t: [s, b, heads, d]; freqs: [s, 1, 1, d]. Computed in fp32, returned in t's dtype.
at::Tensor ApplyRotaryPosEmb(const at::Tensor& t, const at::Tensor& freqs);

}  // namespace megatron::models
