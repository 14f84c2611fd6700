// RelativePositionEmbedding (Megatron's models/common/embeddings/relative_pos_embedding.py, from T5): a learned
// scalar per attention head and relative-distance bucket, added to the attention scores.
//
// Buckets (T5's _relative_position_bucket): the relative position is key - query. Bidirectional (encoder): half
// the buckets for keys after the query, half for keys at or before it; causal (decoder): only keys at or before
// the query count (later ones fall into bucket 0, masked anyway). Within a direction, the first half of the
// buckets are exact distances 0 .. n/2-1; the rest grow logarithmically up to max_distance, beyond which all
// distances share the last bucket.
//
// Parameter: relative_attention_bias.weight [num_buckets, num_heads].
#pragma once

#include <ATen/core/Tensor.h>

#include "megatron/core/transformer/module.h"

namespace megatron::models {

enum class RelativeDirection { kBidirectional, kCausal };

class RelativePositionEmbedding : public transformer::MegatronModule {
 public:
  RelativePositionEmbedding(RelativeDirection direction, int num_heads, int num_buckets, int max_distance,
                            double init_std);

  // The bias [1, num_heads, query_length, key_length] for queries and keys at positions 0.., on `device`.
  at::Tensor Forward(int64_t query_length, int64_t key_length, const at::Device& device) const;

  // The bucket of every relative position (int64, same shape), exposed for tests.
  static at::Tensor Bucket(const at::Tensor& relative_position, RelativeDirection direction, int num_buckets,
                           int max_distance);

 private:
  class Table : public transformer::MegatronModule {
   public:
    Table(int num_buckets, int num_heads, double init_std);
    const at::Tensor& weight() const { return weight_; }

   private:
    at::Tensor weight_;  // [num_buckets, num_heads]
  };

  RelativeDirection direction_;
  int num_buckets_;
  int max_distance_;
  Table* relative_attention_bias_;
};

}  // namespace megatron::models
