// BERT pretraining samples (Megatron core's BERTMaskedWordPieceDataset, bert_dataset.py) from an IndexedDataset
// whose documents hold one sequence per sentence. See masked_dataset.h for the sample index and the masking.
//
// Sample i (its own generator, seed + i):
//  * sentences [begin, end) split at a pivot into segments A and B (pivot drawn from [1, n) when n >= 3, else 1);
//    with probability 1/2 A and B are swapped and is_random = 1: Megatron's binary head predicts this sentence
//    order (SOP-style; the classic NSP "random next sentence" is not what Megatron core builds);
//  * the longer segment is trimmed from a random end until |A| + |B| <= target_length (truncated = 1);
//  * tokens = [CLS] A [SEP] B [SEP], types 0 for [CLS] A [SEP] and 1 for B [SEP];
//  * masking (masked_dataset.h) with BERT's replacement: 80% [MASK], 10% a random id in [0, random_token_limit),
//    10% unchanged (draws: u < 0.8 -> mask; else a second u >= 0.5 -> random);
//  * padded to sequence_length with pad_id; labels = the original token at masked positions, -1 elsewhere;
//    loss_mask 1 at masked positions; padding_mask 1 on real tokens.
// Without the classification head, a sample is the single segment [CLS] A [SEP] and is_random = 0.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <ATen/core/Tensor.h>

#include "absl/status/statusor.h"
#include "megatron/core/datasets/gpt_dataset.h"
#include "megatron/core/datasets/indexed_dataset.h"
#include "megatron/core/datasets/masked_dataset.h"

namespace megatron::datasets {

struct BertDatasetConfig {
  int32_t sequence_length = 128;
  uint32_t random_seed = 1234;
  std::string split = "969,30,1";
  MaskingConfig masking;
  bool classification_head = true;
  int64_t cls_id = -1, sep_id = -1, mask_id = -1, pad_id = -1;
  int64_t random_token_limit = 0;  // random replacements are ids in [0, this): the ordinary vocabulary
  std::vector<bool> starts_word;   // by token id; empty: every token starts a word
};

struct BertSample {
  std::vector<int64_t> tokens, types, labels, padding_mask, loss_mask;  // each [sequence_length]
  int64_t is_random = 0;
  int64_t truncated = 0;
};

// [b, s] int64 tensors (loss_mask float32) and is_random [b].
struct BertBatch {
  at::Tensor tokens, types, labels, padding_mask, loss_mask, is_random;
};

class BertDataset {
 public:
  // Errors (InvalidArgument) name the config field: missing special ids, a too short sequence_length, a bad split.
  static absl::StatusOr<BertDataset> Build(std::shared_ptr<const IndexedDataset> dataset,
                                           const BertDatasetConfig& config, Split split);

  int64_t size() const { return static_cast<int64_t>(samples_.size()); }
  const std::vector<MaskedSample>& samples() const { return samples_; }
  BertSample Get(int64_t i) const;  // i in [0, size()); std::out_of_range otherwise
  BertBatch GetBatch(const std::vector<int64_t>& ids) const;

 private:
  BertDataset() = default;
  std::shared_ptr<const IndexedDataset> dataset_;
  BertDatasetConfig config_;
  std::vector<MaskedSample> samples_;
};

}  // namespace megatron::datasets
