#include "megatron/core/datasets/t5_dataset.h"

#include <cmath>
#include <stdexcept>

#include <ATen/ops/from_blob.h>
#include <ATen/ops/stack.h>

#include "absl/strings/str_cat.h"

namespace megatron::datasets {
namespace {

at::Tensor Row(const std::vector<int64_t>& values) {
  return at::from_blob(const_cast<int64_t*>(values.data()), {static_cast<int64_t>(values.size())}, at::kLong).clone();
}

// The most tokens a sample can mask (CreateMaskedLmPredictions' budget at the full target length).
int64_t MaxMaskings(const T5DatasetConfig& c) {
  double n = std::floor(c.masking.masking_probability * (c.sequence_length - 2));
  if (c.masking.max_predictions > 0) n = std::min(n, static_cast<double>(c.masking.max_predictions));
  return std::max<int64_t>(1, static_cast<int64_t>(n));
}

}  // namespace

absl::StatusOr<T5Dataset> T5Dataset::Build(std::shared_ptr<const IndexedDataset> dataset,
                                           const T5DatasetConfig& config, Split split) {
  const std::pair<const char*, int64_t> ids[] = {
      {"bos_id", config.bos_id}, {"eos_id", config.eos_id}, {"pad_id", config.pad_id}, {"mask_id", config.mask_id}};
  for (const auto& [name, id] : ids) {
    if (id < 0) return absl::InvalidArgumentError(absl::StrCat("T5DatasetConfig.", name, " must be set"));
  }
  if (config.sequence_length < 4) {
    return absl::InvalidArgumentError(absl::StrCat("T5DatasetConfig.sequence_length must be >= 4, got ",
                                                   config.sequence_length));
  }
  if (!(config.masking.masking_probability > 0 && config.masking.masking_probability < 1) ||
      config.masking.masking_max_ngram < 1) {
    return absl::InvalidArgumentError(
        "T5DatasetConfig.masking: masking_probability must be in (0, 1) and masking_max_ngram >= 1");
  }
  const int64_t max_maskings = MaxMaskings(config);
  if (static_cast<int64_t>(config.sentinel_ids.size()) < max_maskings) {
    return absl::InvalidArgumentError(absl::StrCat("T5DatasetConfig.sentinel_ids: ", config.sentinel_ids.size(),
                                                   " sentinels, but a sample can have up to ", max_maskings,
                                                   " spans; add sentinels or lower masking_probability"));
  }
  // BOS, then per span its sentinel and tokens: at most 1 + 2 * max_maskings.
  if (config.decoder_sequence_length < 1 + 2 * max_maskings) {
    return absl::InvalidArgumentError(absl::StrCat("T5DatasetConfig.decoder_sequence_length: ",
                                                   config.decoder_sequence_length, " cannot hold up to ",
                                                   1 + 2 * max_maskings, " decoder tokens; raise it to at least that"));
  }
  absl::StatusOr<SplitMatrix> matrix = ParseSplit(config.split);
  if (!matrix.ok()) return absl::InvalidArgumentError(absl::StrCat("T5DatasetConfig.split: ", matrix.status().message()));
  const auto& bookends = (*matrix)[static_cast<int>(split)];
  T5Dataset out;
  out.dataset_ = std::move(dataset);
  out.config_ = config;
  if (!bookends) return out;
  const auto [begin, end] = SplitRange(*bookends, out.dataset_->num_documents());
  // Room for BOS and EOS, as Megatron's sequence_length - 2.
  out.samples_ = BuildMaskedSampleIndex(*out.dataset_, begin, end, config.sequence_length - 2,
                                        config.masking.short_sequence_probability, 1,
                                        config.random_seed + static_cast<uint32_t>(split));
  return out;
}

T5Sample T5Dataset::Get(int64_t i) const {
  if (i < 0 || i >= size()) throw std::out_of_range(absl::StrCat("T5Dataset: sample ", i, " of ", size()));
  const MaskedSample& s = samples_[i];
  SampleRandom rng(config_.random_seed + static_cast<uint32_t>(i));
  std::vector<int64_t> tokens;
  for (int64_t k = s.begin; k < s.end; ++k) dataset_->AppendTo(k, 0, -1, &tokens);
  T5Sample out;
  if (static_cast<int64_t>(tokens.size()) > s.target_length) {
    out.truncated = 1;
    tokens.resize(s.target_length);
  }
  const auto no_special = [](int64_t) { return false; };
  const auto starts_word = [&](int64_t id) {
    return config_.starts_word.empty() || id < 0 || id >= static_cast<int64_t>(config_.starts_word.size()) ||
           config_.starts_word[id];
  };
  const auto token_mask = [&](SampleRandom&) -> std::optional<int64_t> { return config_.mask_id; };
  MaskedLmPredictions m =
      CreateMaskedLmPredictions(tokens, s.target_length, config_.masking, no_special, starts_word, token_mask, rng);
  std::vector<int64_t> decoder_output;
  out.decoder_input = {config_.bos_id};
  int64_t next = 0;
  for (size_t k = 0; k < m.spans.size(); ++k) {
    const MaskedSpan& span = m.spans[k];
    const int64_t sentinel = config_.sentinel_ids.at(k);
    out.encoder_input.insert(out.encoder_input.end(), m.tokens.begin() + next, m.tokens.begin() + span.positions[0]);
    out.encoder_input.push_back(sentinel);
    out.decoder_input.push_back(sentinel);
    out.decoder_input.insert(out.decoder_input.end(), span.labels.begin(), span.labels.end());
    decoder_output.push_back(sentinel);
    decoder_output.insert(decoder_output.end(), span.labels.begin(), span.labels.end());
    next = span.positions.back() + 1;
  }
  out.encoder_input.insert(out.encoder_input.end(), m.tokens.begin() + next, m.tokens.end());
  decoder_output.push_back(config_.eos_id);
  const size_t enc_len = out.encoder_input.size(), dec_len = out.decoder_input.size();
  const size_t enc_seq = config_.sequence_length, dec_seq = config_.decoder_sequence_length;
  TORCH_CHECK(enc_len <= enc_seq && dec_len <= dec_seq, "T5Dataset: sample ", i, " needs ", enc_len, "/", dec_len,
              " encoder/decoder tokens, more than ", enc_seq, "/", dec_seq);
  out.encoder_input.resize(enc_seq, config_.pad_id);
  out.encoder_mask.assign(enc_seq, 0);
  std::fill(out.encoder_mask.begin(), out.encoder_mask.begin() + enc_len, 1);
  out.decoder_input.resize(dec_seq, config_.pad_id);
  out.decoder_mask.assign(dec_seq, 0);
  std::fill(out.decoder_mask.begin(), out.decoder_mask.begin() + dec_len, 1);
  out.labels = std::move(decoder_output);
  out.labels.resize(dec_seq, -1);
  out.loss_mask = out.decoder_mask;
  return out;
}

T5Batch T5Dataset::GetBatch(const std::vector<int64_t>& ids) const {
  std::vector<at::Tensor> enc, enc_mask, dec, dec_mask, labels, loss;
  for (int64_t id : ids) {
    T5Sample s = Get(id);
    enc.push_back(Row(s.encoder_input));
    enc_mask.push_back(Row(s.encoder_mask));
    dec.push_back(Row(s.decoder_input));
    dec_mask.push_back(Row(s.decoder_mask));
    labels.push_back(Row(s.labels));
    loss.push_back(Row(s.loss_mask));
  }
  T5Batch batch;
  batch.encoder_input = at::stack(enc);
  batch.encoder_mask = at::stack(enc_mask);
  batch.decoder_input = at::stack(dec);
  batch.decoder_mask = at::stack(dec_mask);
  batch.labels = at::stack(labels);
  batch.loss_mask = at::stack(loss).to(at::kFloat);
  return batch;
}

}  // namespace megatron::datasets
