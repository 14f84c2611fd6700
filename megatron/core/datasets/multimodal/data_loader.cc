#include "megatron/core/datasets/multimodal/data_loader.h"

#include <random>

#include "absl/strings/str_cat.h"
#include "c10/util/Exception.h"

namespace megatron::datasets::multimodal {

absl::StatusOr<MultimodalLoader> MultimodalLoader::Open(const std::string& dir, const std::string& split,
                                                        TaskEncoder encoder, LoaderConfig config) {
  absl::StatusOr<std::vector<MultimodalSample>> samples = ReadShards(dir, split);
  if (!samples.ok()) return samples.status();
  if (config.micro_batch_size <= 0) {
    return absl::InvalidArgumentError(absl::StrCat("micro_batch_size must be positive, got ", config.micro_batch_size));
  }
  return MultimodalLoader(std::move(*samples), std::move(encoder), config);
}

MultimodalLoader::MultimodalLoader(std::vector<MultimodalSample> samples, TaskEncoder encoder, LoaderConfig config)
    : samples_(std::move(samples)), encoder_(std::move(encoder)), config_(config) {
  TORCH_CHECK(!samples_.empty(), "MultimodalLoader: no samples");
  TORCH_CHECK(config_.micro_batch_size > 0, "MultimodalLoader: micro_batch_size must be positive, got ",
              config_.micro_batch_size);
  StartEpoch();
}

void MultimodalLoader::StartEpoch() {
  order_.resize(samples_.size());
  for (size_t i = 0; i < order_.size(); ++i) order_[i] = static_cast<int64_t>(i);
  if (config_.shuffle) {
    std::mt19937 rng(config_.seed + static_cast<uint32_t>(epoch_));
    for (size_t i = order_.size(); i-- > 1;) {
      std::swap(order_[i], order_[std::uniform_int_distribution<size_t>(0, i)(rng)]);
    }
  }
}

void MultimodalLoader::set_state(State s) {
  TORCH_CHECK(s.epoch >= 0 && s.cursor >= 0 && s.cursor <= static_cast<int64_t>(samples_.size()),
              "MultimodalLoader::set_state: bad state (epoch ", s.epoch, ", cursor ", s.cursor, ") for ",
              samples_.size(), " samples");
  epoch_ = s.epoch;
  cursor_ = s.cursor;
  pending_.clear();
  StartEpoch();
}

absl::StatusOr<MultimodalBatch> MultimodalLoader::Next() {
  while (true) {
    if (!pending_.empty()) {
      MultimodalBatch b = std::move(pending_.front());
      pending_.pop_front();
      return b;
    }
    if (cursor_ >= static_cast<int64_t>(order_.size())) {
      ++epoch_;
      cursor_ = 0;
      StartEpoch();
    }
    std::vector<EncodedSample> encoded;
    while (static_cast<int>(encoded.size()) < config_.micro_batch_size &&
           cursor_ < static_cast<int64_t>(order_.size())) {
      const MultimodalSample& s = samples_[order_[cursor_++]];
      absl::StatusOr<EncodedSample> e = encoder_.Encode(s);
      if (e.status().code() == absl::StatusCode::kFailedPrecondition) {
        ++skipped_;
        continue;
      }
      if (!e.ok()) return e.status();
      encoded.push_back(std::move(*e));
    }
    if (encoded.empty()) continue;  // everything in the epoch's tail was skipped
    if (config_.packing_capacity <= 0) return encoder_.Batch(encoded);
    absl::StatusOr<std::vector<MultimodalBatch>> packed =
        PackIntoBatches(encoder_, encoded, config_.packing_capacity);
    if (!packed.ok()) return packed.status();
    for (MultimodalBatch& b : *packed) pending_.push_back(std::move(b));
  }
}

}  // namespace megatron::datasets::multimodal
