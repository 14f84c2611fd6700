#include "megatron/core/models/common/relative_pos_embedding.h"

#include <cmath>
#include <memory>

#include <ATen/TensorOperators.h>
#include <ATen/ops/arange.h>
#include <ATen/ops/embedding.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/full_like.h>
#include <ATen/ops/log.h>
#include <ATen/ops/minimum.h>
#include <ATen/ops/where.h>
#include <ATen/ops/zeros_like.h>

namespace megatron::models {

RelativePositionEmbedding::Table::Table(int num_buckets, int num_heads, double init_std) {
  weight_ = RegisterParameter("weight", at::empty({num_buckets, num_heads}).normal_(0.0, init_std));
}

RelativePositionEmbedding::RelativePositionEmbedding(RelativeDirection direction, int num_heads, int num_buckets,
                                                     int max_distance, double init_std)
    : direction_(direction), num_buckets_(num_buckets), max_distance_(max_distance) {
  TORCH_CHECK(num_buckets >= 4 && max_distance > num_buckets / 2,
              "RelativePositionEmbedding: need num_buckets >= 4 and max_distance > num_buckets / 2, got ",
              num_buckets, " buckets and max_distance ", max_distance);
  relative_attention_bias_ = RegisterModule("relative_attention_bias",
                                            std::make_unique<Table>(num_buckets, num_heads, init_std));
}

at::Tensor RelativePositionEmbedding::Bucket(const at::Tensor& relative_position, RelativeDirection direction,
                                             int num_buckets, int max_distance) {
  // The same sequence of tensor ops as T5's reference implementation, so that the float rounding of the
  // logarithmic buckets (and so every bucket boundary) agrees exactly.
  at::Tensor buckets = at::zeros_like(relative_position);
  at::Tensor distance;
  if (direction == RelativeDirection::kBidirectional) {
    num_buckets /= 2;
    buckets = buckets + (relative_position > 0).to(at::kLong) * num_buckets;
    distance = relative_position.abs();
  } else {
    distance = -at::minimum(relative_position, at::zeros_like(relative_position));
  }
  const int max_exact = num_buckets / 2;
  const at::Tensor is_small = distance < max_exact;
  at::Tensor if_large =
      max_exact + (at::log(distance.to(at::kFloat) / max_exact) / std::log(static_cast<double>(max_distance) / max_exact) *
                   (num_buckets - max_exact))
                      .to(at::kLong);
  if_large = at::minimum(if_large, at::full_like(if_large, num_buckets - 1));
  return buckets + at::where(is_small, distance, if_large);
}

at::Tensor RelativePositionEmbedding::Forward(int64_t query_length, int64_t key_length,
                                              const at::Device& device) const {
  const auto options = at::TensorOptions().dtype(at::kLong).device(device);
  const at::Tensor context = at::arange(query_length, options).unsqueeze(1);  // [q, 1]
  const at::Tensor memory = at::arange(key_length, options).unsqueeze(0);     // [1, k]
  const at::Tensor bucket = Bucket(memory - context, direction_, num_buckets_, max_distance_);  // [q, k]
  const at::Tensor values = at::embedding(relative_attention_bias_->weight(), bucket);          // [q, k, heads]
  return values.permute({2, 0, 1}).unsqueeze(0);
}

}  // namespace megatron::models
