#include "megatron/core/datasets/gpt_dataset.h"

#include <cmath>
#include <cstdlib>
#include <limits>
#include <stdexcept>

#include "ATen/ops/empty.h"
#include "absl/strings/str_cat.h"

namespace megatron::datasets {

const char* SplitName(Split split) {
  switch (split) {
    case Split::kTrain: return "train";
    case Split::kValid: return "valid";
    case Split::kTest: return "test";
  }
  return "?";
}

absl::StatusOr<SplitMatrix> ParseSplit(std::string_view split_view) {
  const std::string split(split_view);  // Debian's absl::StrCat takes no std::string_view
  // Megatron: re.findall(r"[.0-9]+", split) -- every other character separates.
  std::vector<double> weights;
  size_t i = 0;
  while (i < split.size()) {
    auto is_num = [](char c) { return c == '.' || (c >= '0' && c <= '9'); };
    if (!is_num(split[i])) {
      ++i;
      continue;
    }
    size_t j = i;
    while (j < split.size() && is_num(split[j])) ++j;
    const std::string token(split.substr(i, j - i));
    char* end = nullptr;
    const double w = std::strtod(token.c_str(), &end);
    if (end != token.c_str() + token.size()) {
      return absl::InvalidArgumentError(absl::StrCat("split \"", split, "\": \"", token, "\" is not a number"));
    }
    weights.push_back(w);
    i = j;
  }
  if (weights.size() > 3) {
    return absl::InvalidArgumentError(absl::StrCat("split \"", split, "\": more than 3 weights (train,valid,test)"));
  }
  weights.resize(3, 0.0);
  const double sum = weights[0] + weights[1] + weights[2];  // numpy.sum of 3 elements: left to right
  if (!(sum > 0.0) || std::isinf(sum)) {
    return absl::InvalidArgumentError(absl::StrCat("split \"", split, "\": weights must be finite, sum > 0"));
  }
  SplitMatrix matrix;
  double begin = 0.0;
  for (int k = 0; k < 3; ++k) {
    const double end = begin + weights[k] / sum;
    if (end > begin) matrix[k] = std::make_pair(begin, end);
    begin = end;
  }
  return matrix;
}

std::pair<int64_t, int64_t> SplitRange(std::pair<double, double> bookends, int64_t num_sequences) {
  // Python's round() rounds half to even, as nearbyint does in the default rounding mode.
  const double n = static_cast<double>(num_sequences);
  return {static_cast<int64_t>(std::nearbyint(bookends.first * n)),
          static_cast<int64_t>(std::nearbyint(bookends.second * n))};
}

uint64_t NumpyRandomState::RandomInterval(uint64_t max) {
  if (max == 0) return 0;
  uint64_t mask = max;
  mask |= mask >> 1;
  mask |= mask >> 2;
  mask |= mask >> 4;
  mask |= mask >> 8;
  mask |= mask >> 16;
  mask |= mask >> 32;
  uint64_t value;
  if (max <= 0xffffffffULL) {
    while ((value = (static_cast<uint64_t>(mt_()) & mask)) > max) {
    }
  } else {
    // numpy's mt19937 next_uint64: the first 32-bit draw is the high half.
    auto next64 = [this] {
      const uint64_t hi = mt_();
      return (hi << 32) | static_cast<uint64_t>(mt_());
    };
    while ((value = (next64() & mask)) > max) {
    }
  }
  return value;
}

std::vector<int64_t> BuildSampleIndex(const std::vector<int32_t>& sizes, const std::vector<int32_t>& document_idx,
                                      int32_t seq_length, int32_t num_epochs, int64_t tokens_per_epoch,
                                      bool drop_last_partial_sequence, bool add_extra_token_to_sequence) {
  // A line-by-line port of helpers.cpp so the boundaries match Megatron's exactly.
  const int32_t extra = add_extra_token_to_sequence ? 1 : 0;
  int64_t num_samples;
  if (drop_last_partial_sequence) {
    num_samples = (num_epochs * tokens_per_epoch - extra) / seq_length;
  } else {
    // Megatron computes this in float32; keep that (it only matters beyond 2^24 tokens).
    num_samples = static_cast<int64_t>(
        std::ceil(static_cast<float>(num_epochs * tokens_per_epoch - extra) / static_cast<float>(seq_length)));
  }
  std::vector<int64_t> sample_idx(2 * (num_samples + 1));
  int64_t sample_idx_index = 0;
  int64_t document_idx_index = 0;
  int64_t doc_offset = 0;
  sample_idx[0] = document_idx_index;
  sample_idx[1] = doc_offset;
  ++sample_idx_index;
  const int64_t last = static_cast<int64_t>(document_idx.size()) - 1;
  while (sample_idx_index <= num_samples) {
    int64_t remaining_seq_length = seq_length + extra;
    while (remaining_seq_length != 0) {
      const int64_t document_length = sizes[document_idx[document_idx_index]] - doc_offset;
      remaining_seq_length -= document_length;
      if (remaining_seq_length <= 0) {
        doc_offset += remaining_seq_length + document_length - extra;
        remaining_seq_length = 0;
      } else {
        if (document_idx_index == last) {
          // The stream ran out: a partial last sample (only without drop_last_partial_sequence).
          doc_offset = sizes[document_idx[document_idx_index]] - extra;
          break;
        }
        ++document_idx_index;
        doc_offset = 0;
      }
    }
    sample_idx[2 * sample_idx_index] = document_idx_index;
    sample_idx[2 * sample_idx_index + 1] = doc_offset;
    ++sample_idx_index;
  }
  return sample_idx;
}

namespace {

// gpt_dataset.py _build_document_index.
std::vector<int32_t> BuildDocumentIndex(std::pair<int64_t, int64_t> documents, int64_t num_epochs,
                                        NumpyRandomState* rng, bool separate_final_epoch) {
  if (!separate_final_epoch || num_epochs == 1) {
    std::vector<int32_t> index;
    index.reserve((documents.second - documents.first) * num_epochs);
    for (int64_t e = 0; e < num_epochs; ++e) {
      for (int64_t d = documents.first; d < documents.second; ++d) index.push_back(static_cast<int32_t>(d));
    }
    rng->Shuffle(&index);
    return index;
  }
  std::vector<int32_t> first = BuildDocumentIndex(documents, num_epochs - 1, rng, false);
  std::vector<int32_t> last = BuildDocumentIndex(documents, 1, rng, false);
  first.insert(first.end(), last.begin(), last.end());
  return first;
}

// gpt_dataset.py _build_shuffle_index.
std::vector<int64_t> BuildShuffleIndex(int64_t num_samples, int64_t total_size, NumpyRandomState* rng) {
  std::vector<int64_t> first(num_samples);
  for (int64_t i = 0; i < num_samples; ++i) first[i] = i;
  rng->Shuffle(&first);
  if (num_samples == total_size) return first;
  std::vector<int64_t> last(total_size - num_samples);
  for (int64_t i = num_samples; i < total_size; ++i) last[i - num_samples] = i;
  rng->Shuffle(&last);
  first.insert(first.end(), last.begin(), last.end());
  return first;
}

}  // namespace

absl::StatusOr<GPTDataset> GPTDataset::Build(std::shared_ptr<const IndexedDataset> dataset,
                                             const GPTDatasetConfig& config, Split split) {
  const std::string where = absl::StrCat(dataset->prefix(), " (", SplitName(split), " split)");
  if (config.sequence_length < 1) {
    return absl::InvalidArgumentError(absl::StrCat(where, ": sequence_length must be >= 1, got ",
                                                   config.sequence_length));
  }
  if ((config.eod_mask_loss || config.reset_position_ids) && config.eod_token < 0) {
    return absl::InvalidArgumentError(absl::StrCat(where, ": eod_mask_loss/reset_position_ids need eod_token"));
  }
  if (config.pad_token >= 0 && config.pad_token == config.eod_token) {
    return absl::InvalidArgumentError(absl::StrCat(where, ": pad_token ", config.pad_token,
                                                   " equals eod_token; padding would mask every EOD"));
  }
  absl::StatusOr<SplitMatrix> matrix = ParseSplit(config.split);
  if (!matrix.ok()) return matrix.status();
  const auto& bookends = (*matrix)[static_cast<int>(split)];
  if (!bookends) {
    return absl::InvalidArgumentError(absl::StrCat(where, ": split \"", config.split, "\" gives it weight 0"));
  }
  const std::optional<int64_t> num_samples = config.num_samples[static_cast<int>(split)];
  if (num_samples && *num_samples < 0) {
    return absl::InvalidArgumentError(absl::StrCat(where, ": num_samples ", *num_samples, " < 0"));
  }

  GPTDataset ds;
  ds.dataset_ = std::move(dataset);
  ds.config_ = config;
  ds.split_ = split;
  ds.sequences_ = SplitRange(*bookends, ds.dataset_->size());
  const auto [begin, end] = ds.sequences_;
  if (begin >= end) {
    // Megatron would loop forever here; say why instead.
    return absl::FailedPreconditionError(absl::StrCat(where, ": split \"", config.split, "\" leaves it 0 of the ",
                                                      ds.dataset_->size(), " sequences; add data or change the split"));
  }
  std::vector<int32_t> lengths = ds.dataset_->sequence_lengths().ToVector();
  int64_t tokens_per_epoch = 0;
  for (int64_t d = begin; d < end; ++d) tokens_per_epoch += lengths[d];
  const int64_t extra = config.add_extra_token_to_sequence ? 1 : 0;
  if (tokens_per_epoch <= extra) {
    return absl::FailedPreconditionError(absl::StrCat(where, ": sequences [", begin, ", ", end, ") hold only ",
                                                      tokens_per_epoch, " tokens"));
  }
  ds.tokens_per_epoch_ = tokens_per_epoch;

  // _get_num_epochs.
  int64_t num_epochs = 1;
  if (num_samples) {
    const int64_t requested = *num_samples * config.sequence_length + extra;
    for (int64_t tokens = tokens_per_epoch; tokens < requested; tokens += tokens_per_epoch) ++num_epochs;
  }
  if (num_epochs > std::numeric_limits<int32_t>::max() ||
      num_epochs * (end - begin) > std::numeric_limits<int32_t>::max()) {
    return absl::InvalidArgumentError(absl::StrCat(where, ": ", num_epochs, " epochs of ", end - begin,
                                                   " sequences overflow Megatron's int32 document index"));
  }
  ds.num_epochs_ = num_epochs;

  int64_t num_samples_sans_final_epoch = 0;
  if (num_epochs > 1) {
    num_samples_sans_final_epoch = ((num_epochs - 1) * tokens_per_epoch - extra) / config.sequence_length;
    const int64_t num_samples_from_final_epoch = *num_samples - num_samples_sans_final_epoch;
    const int64_t num_samples_per_epoch = (tokens_per_epoch - extra) / config.sequence_length;
    if (num_samples_from_final_epoch < 0 || num_samples_from_final_epoch > num_samples_per_epoch + 1) {
      return absl::InternalError(absl::StrCat(where, ": inconsistent epoch arithmetic (", num_samples_from_final_epoch,
                                              " samples from the final epoch)"));
    }
    // Megatron's threshold: int(0.80 * num_samples_per_epoch).
    ds.separate_final_epoch_ =
        num_samples_from_final_epoch < static_cast<int64_t>(0.80 * static_cast<double>(num_samples_per_epoch));
  }

  NumpyRandomState rng(config.random_seed);
  ds.document_index_ = BuildDocumentIndex(ds.sequences_, num_epochs, &rng, ds.separate_final_epoch_);
  const bool drop_last = split == Split::kValid ? config.drop_last_partial_validation_sequence : true;
  ds.sample_index_ = BuildSampleIndex(lengths, ds.document_index_, config.sequence_length,
                                      static_cast<int32_t>(num_epochs), tokens_per_epoch, drop_last,
                                      config.add_extra_token_to_sequence);
  const int64_t total = static_cast<int64_t>(ds.sample_index_.size() / 2) - 1;
  ds.shuffle_index_ =
      BuildShuffleIndex(ds.separate_final_epoch_ ? num_samples_sans_final_epoch : total, total, &rng);
  return ds;
}

absl::StatusOr<std::array<std::optional<GPTDataset>, 3>> GPTDataset::BuildSplits(
    std::shared_ptr<const IndexedDataset> dataset, const GPTDatasetConfig& config) {
  absl::StatusOr<SplitMatrix> matrix = ParseSplit(config.split);
  if (!matrix.ok()) return matrix.status();
  std::array<std::optional<GPTDataset>, 3> out;
  for (Split split : {Split::kTrain, Split::kValid, Split::kTest}) {
    if (!(*matrix)[static_cast<int>(split)]) continue;
    absl::StatusOr<GPTDataset> ds = Build(dataset, config, split);
    if (!ds.ok()) return ds.status();
    out[static_cast<int>(split)] = std::move(*ds);
  }
  return out;
}

int64_t GPTDataset::sample_length() const {
  return config_.sequence_length + (config_.add_extra_token_to_sequence ? 1 : 0);
}

std::vector<int64_t> GPTDataset::Get(int64_t i) const {
  if (i < 0 || i >= size()) {
    throw std::out_of_range(absl::StrCat(dataset_->prefix(), " (", SplitName(split_), " split): sample ", i,
                                         " out of range [0, ", size(), ")"));
  }
  // _query_document_sample_shuffle_indices.
  const int64_t extra = config_.add_extra_token_to_sequence ? 1 : 0;
  const int64_t idx = shuffle_index_[i];
  const int64_t doc_beg = sample_index_[2 * idx], offset_beg = sample_index_[2 * idx + 1];
  const int64_t doc_end = sample_index_[2 * idx + 2], offset_end = sample_index_[2 * idx + 3];
  std::vector<int64_t> text;
  text.reserve(sample_length());
  if (doc_beg == doc_end) {
    dataset_->AppendTo(document_index_[doc_beg], offset_beg, offset_end - offset_beg + extra, &text);
  } else {
    for (int64_t d = doc_beg; d <= doc_end; ++d) {
      const int64_t offset = d > doc_beg ? 0 : offset_beg;
      const int64_t length = d < doc_end ? -1 : offset_end + extra;
      dataset_->AppendTo(document_index_[d], offset, length, &text);
    }
  }
  text.resize(sample_length(), config_.pad_token);
  return text;
}

GPTBatch GPTDataset::GetBatch(const std::vector<int64_t>& sample_ids) const {
  const int64_t b = static_cast<int64_t>(sample_ids.size());
  const int64_t s = config_.sequence_length;
  const auto long_options = at::TensorOptions().dtype(at::kLong);
  GPTBatch batch;
  batch.tokens = at::empty({b, s}, long_options);
  batch.labels = at::empty({b, s}, long_options);
  batch.position_ids = at::empty({b, s}, long_options);
  batch.loss_mask = at::empty({b, s}, at::TensorOptions().dtype(at::kFloat));
  const int64_t eod = config_.eod_token, pad = config_.pad_token;
  for (int64_t r = 0; r < b; ++r) {
    const std::vector<int64_t> text = Get(sample_ids[r]);
    int64_t* tokens = batch.tokens.data_ptr<int64_t>() + r * s;
    int64_t* labels = batch.labels.data_ptr<int64_t>() + r * s;
    int64_t* positions = batch.position_ids.data_ptr<int64_t>() + r * s;
    float* loss_mask = batch.loss_mask.data_ptr<float>() + r * s;
    for (int64_t t = 0; t < s; ++t) {
      tokens[t] = text[t];
      // Without the extra token the last label is unknown: Megatron rolls and pads it.
      labels[t] = config_.add_extra_token_to_sequence ? text[t + 1] : (t + 1 < s ? text[t + 1] : pad);
    }
    int64_t position = 0;
    for (int64_t t = 0; t < s; ++t) {
      positions[t] = position++;
      if (config_.reset_position_ids && tokens[t] == eod) position = 0;
      loss_mask[t] = (config_.eod_mask_loss && tokens[t] == eod) || labels[t] == pad ? 0.0f : 1.0f;
    }
    for (int64_t t = 0; t < s; ++t) {
      if (tokens[t] == pad) tokens[t] = 0;
      if (labels[t] == pad) labels[t] = 0;
    }
  }
  return batch;
}

}  // namespace megatron::datasets
