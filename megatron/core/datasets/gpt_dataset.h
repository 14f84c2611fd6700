// GPT pretraining samples from an IndexedDataset, reproducing megatron-core's GPTDataset (gpt_dataset.py,
// helpers.cpp: build_sample_idx, blended_megatron_dataset_builder.py) sample for sample: for the same .bin/.idx,
// split string, seed, sequence length and sample counts, sample i here holds exactly the tokens of sample i in
// Megatron-LM. That includes the shuffles: numpy's legacy RandomState(seed).shuffle is MT19937 (the same
// generator and seeding as std::mt19937) plus masked rejection sampling, which NumpyRandomState re-implements
// bit for bit (tests compare against indices dumped from megatron-core).
//
// How a split is built (one IndexedDataset "document" here is one *sequence*, as in Megatron's GPT):
//  1. Split: "969,30,1" is normalized to fractions; split k covers sequences [round(lo*N), round(hi*N)) with
//     Python's round-half-to-even (Megatron's get_split_indices / _build_megatron_dataset_splits).
//  2. Epochs: with num_samples unset, one epoch; else the fewest epochs holding num_samples*seq_length + 1
//     tokens. If the last epoch contributes fewer than 80% of an epoch's samples it is shuffled separately
//     (separate_final_epoch), so the partial epoch is not spread thinly over the whole run.
//  3. Document index: the split's sequence ids repeated once per epoch, shuffled.
//  4. Sample index: the shuffled documents read as one token stream cut into windows; sample k is the
//     seq_length + 1 tokens starting at stream token k*seq_length (consecutive samples overlap by one token,
//     the label of the last position). Stored as (document-index position, token offset) per sample boundary.
//  5. Shuffle index: a permutation of the samples (the final epoch's samples permuted among themselves when
//     separated). size() counts every sample of every epoch built, which can exceed num_samples, as in Megatron.
//
// Batches follow GPTDataset.__getitem__: tokens = sample[:-1], labels = sample[1:], position_ids 0..s-1
// (restarting after every EOD with reset_position_ids), loss_mask 1 except, with eod_mask_loss, where the
// *input token* is EOD (Megatron masks `tokens == eod`: the prediction of the next document's first token from
// an EOD is never trained) and where the label is padding. Padding appears only in the last validation sample
// when drop_last_partial_validation_sequence is false; padded tokens and labels read as 0.
//
// Not implemented (yet): Megatron's on-disk .npy index cache (the indices are rebuilt in memory at every start),
// reset_attention_mask / attention_mask (the model builds its causal mask), blending several datasets.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "ATen/core/Tensor.h"
#include "absl/status/statusor.h"
#include "megatron/core/datasets/indexed_dataset.h"

namespace megatron::datasets {

enum class Split { kTrain = 0, kValid = 1, kTest = 2 };
const char* SplitName(Split split);

// [begin, end) fractions per split; nullopt where a split gets weight 0.
using SplitMatrix = std::array<std::optional<std::pair<double, double>>, 3>;

// Megatron's parse_and_normalize_split + convert_split_vector_to_split_matrix: "969,30,1" or "98,2" (missing
// weights are 0). Errors on negative, non-numeric or all-zero weights.
absl::StatusOr<SplitMatrix> ParseSplit(std::string_view split);

// The sequences [begin, end) of `num_sequences` that a split's bookends select (int(round(x * N))).
std::pair<int64_t, int64_t> SplitRange(std::pair<double, double> bookends, int64_t num_sequences);

// numpy.random.RandomState(seed) restricted to what Megatron uses: shuffle().
class NumpyRandomState {
 public:
  explicit NumpyRandomState(uint32_t seed) : mt_(seed) {}
  // numpy's random_interval: uniform in [0, max] by masked rejection sampling.
  uint64_t RandomInterval(uint64_t max);
  // numpy's RandomState.shuffle on a 1-D array (Fisher-Yates from the back).
  template <typename T>
  void Shuffle(std::vector<T>* values) {
    for (size_t i = values->size(); i-- > 1;) std::swap((*values)[i], (*values)[RandomInterval(i)]);
  }

 private:
  std::mt19937 mt_;
};

// helpers.cpp build_sample_idx, flattened [num_samples + 1, 2]: (position in document_index, token offset).
std::vector<int64_t> BuildSampleIndex(const std::vector<int32_t>& sequence_lengths,
                                      const std::vector<int32_t>& document_index, int32_t sequence_length,
                                      int32_t num_epochs, int64_t tokens_per_epoch, bool drop_last_partial_sequence,
                                      bool add_extra_token_to_sequence);

struct GPTDatasetConfig {
  int32_t sequence_length = 0;  // tokens the model sees per sample (Megatron's --seq-length)
  uint32_t random_seed = 1234;  // Megatron's --seed
  std::string split = "969,30,1";
  // Minimum samples per split (train, valid, test); nullopt builds one epoch.
  std::array<std::optional<int64_t>, 3> num_samples;
  int32_t eod_token = -1;  // required by eod_mask_loss / reset_position_ids
  int32_t pad_token = -1;  // -1: the tokenizer has none (Megatron's default); must differ from eod_token
  bool eod_mask_loss = false;
  bool reset_position_ids = false;
  bool add_extra_token_to_sequence = true;  // samples of seq_length + 1 tokens, so labels need no padding
  bool drop_last_partial_validation_sequence = true;
};

// One batch, all [batch, seq_length]: tokens, labels, position_ids int64; loss_mask float32.
struct GPTBatch {
  at::Tensor tokens;
  at::Tensor labels;
  at::Tensor loss_mask;
  at::Tensor position_ids;
};

class GPTDataset {
 public:
  static absl::StatusOr<GPTDataset> Build(std::shared_ptr<const IndexedDataset> dataset,
                                          const GPTDatasetConfig& config, Split split);
  // All three splits; nullopt for a split of weight 0.
  static absl::StatusOr<std::array<std::optional<GPTDataset>, 3>> BuildSplits(
      std::shared_ptr<const IndexedDataset> dataset, const GPTDatasetConfig& config);

  Split split() const { return split_; }
  const GPTDatasetConfig& config() const { return config_; }
  int64_t size() const { return static_cast<int64_t>(shuffle_index_.size()); }
  // Tokens per sample: sequence_length + add_extra_token_to_sequence.
  int64_t sample_length() const;
  std::pair<int64_t, int64_t> sequences() const { return sequences_; }  // this split's [begin, end)
  int64_t num_epochs() const { return num_epochs_; }
  int64_t tokens_per_epoch() const { return tokens_per_epoch_; }
  bool separate_final_epoch() const { return separate_final_epoch_; }
  const std::vector<int32_t>& document_index() const { return document_index_; }
  const std::vector<int64_t>& sample_index() const { return sample_index_; }
  const std::vector<int64_t>& shuffle_index() const { return shuffle_index_; }

  // The sample_length() tokens of shuffled sample i (pad_token fills a partial last validation sample).
  // i outside [0, size()) throws std::out_of_range.
  std::vector<int64_t> Get(int64_t i) const;
  // Megatron's __getitem__ for each id, stacked.
  GPTBatch GetBatch(const std::vector<int64_t>& sample_ids) const;

 private:
  GPTDataset() = default;

  std::shared_ptr<const IndexedDataset> dataset_;
  GPTDatasetConfig config_;
  Split split_ = Split::kTrain;
  std::pair<int64_t, int64_t> sequences_;
  int64_t num_epochs_ = 0;
  int64_t tokens_per_epoch_ = 0;
  bool separate_final_epoch_ = false;
  std::vector<int32_t> document_index_;
  std::vector<int64_t> sample_index_;
  std::vector<int64_t> shuffle_index_;
};

}  // namespace megatron::datasets
