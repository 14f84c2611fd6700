// Masked-language-model samples from an IndexedDataset: what Megatron core's masked_dataset.py,
// bert_dataset.py and t5_dataset.py (with helpers.cpp build_mapping) do, for BERT and T5 pretraining.
//
// Structure (as Megatron's):
//  * Samples are runs of consecutive *sequences* ("sentences") of one document. BuildMaskedSampleIndex walks the
//    split's documents, accumulating sentences until the target length is reached (with
//    short_sequence_probability the target is drawn uniformly from [2, max]), and keeps runs with at least
//    min_sentences sentences (2 for BERT's binary head, which needs two segments). The samples are then shuffled.
//  * Each sample draws from its own generator seeded with (seed + sample index), so a sample is the same
//    whatever order or process reads it.
//  * CreateMaskedLmPredictions is _create_masked_lm_predictions: candidates are words (with whole-word masking:
//    a token that does not start a word joins the previous candidate; [CLS]/[SEP] are never candidates); the
//    number of masked tokens is min(p * target_length, max(1, round(p * length))), capped by max_predictions;
//    candidates are shuffled and each takes an N-gram of N in [1, masking_max_ngram] drawn with P(N) ~ 1/N
//    (or ~N with masking_use_longer_ngrams, or SpanBERT's geometric(0.2)), shrunk until it fits the budget;
//    overlapping N-grams are skipped. Each masked token is replaced by what `token_mask` returns.
//
// The generator is std::mt19937 (fully specified by the C++ standard, so samples are identical on every
// platform) with numpy's double and bounded-integer constructions; the draws are not numpy's sequence, so the
// samples are Megatron's in distribution, not bit for bit. Not implemented: masking_do_permutation, the .npy
// index cache, blending.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <random>
#include <utility>
#include <vector>

#include "megatron/core/datasets/indexed_dataset.h"

namespace megatron::datasets {

// The per-sample random source.
class SampleRandom {
 public:
  explicit SampleRandom(uint32_t seed) : mt_(seed) {}
  double Uniform();                               // [0, 1), 53 random bits (numpy's random_sample)
  int64_t UniformInt(int64_t low, int64_t high);  // [low, high), masked rejection (unbiased)
  int64_t Geometric(double p);                    // trials until the first success, >= 1
  template <typename T>
  void Shuffle(std::vector<T>* values) {  // Fisher-Yates from the back, as numpy's shuffle
    for (size_t i = values->size(); i-- > 1;) std::swap((*values)[i], (*values)[UniformInt(0, i + 1)]);
  }

 private:
  std::mt19937 mt_;
};

struct MaskingConfig {
  double masking_probability = 0.15;
  int masking_max_ngram = 3;
  bool masking_do_full_word = true;
  bool masking_use_longer_ngrams = false;
  bool masking_use_geometric_distribution = false;
  int max_predictions = 0;  // a cap on masked tokens per sample (legacy max_predictions_per_seq); 0 = none
  double short_sequence_probability = 0.1;
};

struct MaskedSpan {
  std::vector<int64_t> positions;  // consecutive candidate tokens, ascending
  std::vector<int64_t> labels;     // the original tokens there
};

struct MaskedLmPredictions {
  std::vector<int64_t> tokens;     // the input with masked tokens replaced
  std::vector<int64_t> positions;  // masked positions, ascending
  std::vector<int64_t> labels;     // the original tokens at `positions`
  std::vector<MaskedSpan> spans;   // the masked N-grams, by first position
};

// `is_special(id)`: never masked ([CLS], [SEP]); `starts_word(id)`: the token begins a word (WordPiece: no "##";
// byte-level BPE: a leading space); `token_mask(rng)`: the replacement for a masked token (nullopt keeps it).
MaskedLmPredictions CreateMaskedLmPredictions(const std::vector<int64_t>& tokens, int64_t target_sequence_length,
                                              const MaskingConfig& config,
                                              const std::function<bool(int64_t)>& is_special,
                                              const std::function<bool(int64_t)>& starts_word,
                                              const std::function<std::optional<int64_t>(SampleRandom&)>& token_mask,
                                              SampleRandom& rng);

// One sample: sentences [begin, end) of the dataset and the length it was built for.
struct MaskedSample {
  int64_t begin = 0;
  int64_t end = 0;
  int32_t target_length = 0;
};

// build_mapping over documents [doc_begin, doc_end) of `dataset` (one epoch), shuffled with `seed`.
std::vector<MaskedSample> BuildMaskedSampleIndex(const IndexedDataset& dataset, int64_t doc_begin, int64_t doc_end,
                                                 int32_t max_length, double short_sequence_probability,
                                                 int min_sentences, uint32_t seed);

}  // namespace megatron::datasets
