// An in-memory loader over one split of a shard directory: reads and decodes every sample once, then yields
// micro-batches of encoded samples (TaskEncoder::Batch), or packed rows (PackIntoBatches) when packing is on.
//
// Order: epoch e visits the samples in a permutation drawn by std::mt19937(seed + e) (Fisher-Yates), or in
// file order without shuffling; a micro-batch never spans two epochs (the epoch's last batch may be smaller).
// The position is (epoch, cursor); state() / set_state() resume a run exactly. Samples the task encoder
// rejects as untrainable within the sequence (FailedPrecondition) are skipped and counted in skipped(); any
// other encoding error is returned with the sample key.
//
// Memory: the decoded images of the split (the synthetic default: 3300 x 64 x 64 x 3 bytes, 40 MB).
#pragma once

#include <cstdint>
#include <deque>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "megatron/core/datasets/multimodal/sample.h"
#include "megatron/core/datasets/multimodal/task_encoder.h"

namespace megatron::datasets::multimodal {

struct LoaderConfig {
  int micro_batch_size = 8;      // samples per batch (with packing: samples encoded per packing round)
  uint32_t seed = 1234;
  bool shuffle = true;
  int64_t packing_capacity = 0;  // > 0: packed rows of at most this many combined positions
};

class MultimodalLoader {
 public:
  static absl::StatusOr<MultimodalLoader> Open(const std::string& dir, const std::string& split, TaskEncoder encoder,
                                               LoaderConfig config);
  // From samples already in memory (tests, generated data).
  MultimodalLoader(std::vector<MultimodalSample> samples, TaskEncoder encoder, LoaderConfig config);

  absl::StatusOr<MultimodalBatch> Next();

  struct State {
    int64_t epoch = 0;
    int64_t cursor = 0;  // samples of this epoch already consumed
  };
  State state() const { return {epoch_, cursor_}; }
  void set_state(State s);  // drops pending packed rows

  const std::vector<MultimodalSample>& samples() const { return samples_; }
  const TaskEncoder& encoder() const { return encoder_; }
  int64_t skipped() const { return skipped_; }

 private:
  void StartEpoch();

  std::vector<MultimodalSample> samples_;
  TaskEncoder encoder_;
  LoaderConfig config_;
  std::vector<int64_t> order_;
  int64_t epoch_ = 0, cursor_ = 0, skipped_ = 0;
  std::deque<MultimodalBatch> pending_;  // packed rows not yet returned
};

}  // namespace megatron::datasets::multimodal
