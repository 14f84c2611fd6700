// T5 span-corruption samples (Megatron core's T5MaskedWordPieceDataset, t5_dataset.py) from an IndexedDataset.
// See masked_dataset.h for the sample index and how spans are chosen.
//
// Sample i (its own generator, seed + i): the sample's sentences are concatenated and cut to target_length;
// masked N-grams become spans; span k is replaced in the encoder input by sentinel k, and the decoder learns
// to write every span after its sentinel:
//   tokens            a b c d e f g          spans {b c}, {f}
//   encoder_input     a <S0> d e <S1> g
//   decoder_input     <BOS> <S0> b c <S1> f
//   labels            <S0> b c <S1> f <EOS>
// Padded with pad_id (encoder to sequence_length, decoder to decoder_sequence_length); labels -1 past the
// end; loss_mask 1 on the decoder's real positions; encoder_mask / decoder_mask 1 on real tokens.
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

struct T5DatasetConfig {
  int32_t sequence_length = 128;          // encoder
  int32_t decoder_sequence_length = 64;   // must hold BOS + every sentinel and masked token
  uint32_t random_seed = 1234;
  std::string split = "969,30,1";
  MaskingConfig masking;
  int64_t bos_id = -1, eos_id = -1, pad_id = -1, mask_id = -1;
  std::vector<int64_t> sentinel_ids;  // at least as many as spans a sample can have
  std::vector<bool> starts_word;      // by token id; empty: every token starts a word
};

struct T5Sample {
  std::vector<int64_t> encoder_input, encoder_mask;                         // [sequence_length]
  std::vector<int64_t> decoder_input, decoder_mask, labels, loss_mask;      // [decoder_sequence_length]
  int64_t truncated = 0;
};

// [b, s] int64 tensors (loss_mask float32).
struct T5Batch {
  at::Tensor encoder_input, encoder_mask, decoder_input, decoder_mask, labels, loss_mask;
};

class T5Dataset {
 public:
  // Errors name the config field: missing special ids, too few sentinels or a decoder too short for the
  // masking budget, a bad split.
  static absl::StatusOr<T5Dataset> Build(std::shared_ptr<const IndexedDataset> dataset,
                                         const T5DatasetConfig& config, Split split);

  int64_t size() const { return static_cast<int64_t>(samples_.size()); }
  const std::vector<MaskedSample>& samples() const { return samples_; }
  T5Sample Get(int64_t i) const;  // i in [0, size()); std::out_of_range otherwise
  T5Batch GetBatch(const std::vector<int64_t>& ids) const;

 private:
  T5Dataset() = default;
  std::shared_ptr<const IndexedDataset> dataset_;
  T5DatasetConfig config_;
  std::vector<MaskedSample> samples_;
};

}  // namespace megatron::datasets
