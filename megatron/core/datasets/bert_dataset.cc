#include "megatron/core/datasets/bert_dataset.h"

#include <stdexcept>

#include <ATen/ops/from_blob.h>
#include <ATen/ops/stack.h>

#include "absl/strings/str_cat.h"

namespace megatron::datasets {
namespace {

at::Tensor Row(const std::vector<int64_t>& values) {
  return at::from_blob(const_cast<int64_t*>(values.data()), {static_cast<int64_t>(values.size())}, at::kLong).clone();
}

}  // namespace

absl::StatusOr<BertDataset> BertDataset::Build(std::shared_ptr<const IndexedDataset> dataset,
                                               const BertDatasetConfig& config, Split split) {
  const std::pair<const char*, int64_t> ids[] = {
      {"cls_id", config.cls_id}, {"sep_id", config.sep_id}, {"mask_id", config.mask_id}, {"pad_id", config.pad_id}};
  for (const auto& [name, id] : ids) {
    if (id < 0) return absl::InvalidArgumentError(absl::StrCat("BertDatasetConfig.", name, " must be set"));
  }
  if (config.sequence_length < 8) {
    return absl::InvalidArgumentError(
        absl::StrCat("BertDatasetConfig.sequence_length must be >= 8, got ", config.sequence_length));
  }
  if (config.random_token_limit <= 0) {
    return absl::InvalidArgumentError("BertDatasetConfig.random_token_limit must be positive");
  }
  if (!(config.masking.masking_probability > 0 && config.masking.masking_probability < 1) ||
      config.masking.masking_max_ngram < 1) {
    return absl::InvalidArgumentError(
        "BertDatasetConfig.masking: masking_probability must be in (0, 1) and masking_max_ngram >= 1");
  }
  absl::StatusOr<SplitMatrix> matrix = ParseSplit(config.split);
  if (!matrix.ok()) return absl::InvalidArgumentError(absl::StrCat("BertDatasetConfig.split: ", matrix.status().message()));
  const auto& bookends = (*matrix)[static_cast<int>(split)];
  BertDataset out;
  out.dataset_ = std::move(dataset);
  out.config_ = config;
  if (!bookends) return out;
  const auto [begin, end] = SplitRange(*bookends, out.dataset_->num_documents());
  // [CLS] and two [SEP]s come on top of the sentences (one [SEP] without the binary head).
  const int32_t specials = config.classification_head ? 3 : 2;
  out.samples_ = BuildMaskedSampleIndex(*out.dataset_, begin, end, config.sequence_length - specials,
                                        config.masking.short_sequence_probability,
                                        config.classification_head ? 2 : 1,
                                        config.random_seed + static_cast<uint32_t>(split));
  return out;
}

BertSample BertDataset::Get(int64_t i) const {
  if (i < 0 || i >= size()) throw std::out_of_range(absl::StrCat("BertDataset: sample ", i, " of ", size()));
  const MaskedSample& s = samples_[i];
  SampleRandom rng(config_.random_seed + static_cast<uint32_t>(i));
  std::vector<std::vector<int64_t>> sentences;
  for (int64_t k = s.begin; k < s.end; ++k) {
    sentences.emplace_back();
    dataset_->AppendTo(k, 0, -1, &sentences.back());
  }
  const int64_t n = static_cast<int64_t>(sentences.size());
  int64_t pivot = n;
  BertSample out;
  if (config_.classification_head) {
    pivot = n >= 3 ? rng.UniformInt(1, n) : 1;
    out.is_random = rng.Uniform() < 0.5;
  }
  std::vector<int64_t> a, b;
  for (int64_t k = 0; k < n; ++k) {
    std::vector<int64_t>& dst = k < pivot ? a : b;
    dst.insert(dst.end(), sentences[k].begin(), sentences[k].end());
  }
  if (out.is_random) std::swap(a, b);
  while (static_cast<int64_t>(a.size() + b.size()) > s.target_length) {
    std::vector<int64_t>& longer = a.size() > b.size() ? a : b;
    if (rng.Uniform() < 0.5) {
      longer.erase(longer.begin());
    } else {
      longer.pop_back();
    }
    out.truncated = 1;
  }
  std::vector<int64_t> tokens = {config_.cls_id};
  tokens.insert(tokens.end(), a.begin(), a.end());
  tokens.push_back(config_.sep_id);
  out.types.assign(tokens.size(), 0);
  if (!b.empty()) {
    tokens.insert(tokens.end(), b.begin(), b.end());
    tokens.push_back(config_.sep_id);
    out.types.resize(tokens.size(), 1);
  }
  const auto is_special = [&](int64_t id) { return id == config_.cls_id || id == config_.sep_id; };
  const auto starts_word = [&](int64_t id) {
    return config_.starts_word.empty() || id < 0 || id >= static_cast<int64_t>(config_.starts_word.size()) ||
           config_.starts_word[id];
  };
  const auto token_mask = [&](SampleRandom& r) -> std::optional<int64_t> {
    if (r.Uniform() < 0.8) return config_.mask_id;
    if (r.Uniform() >= 0.5) return r.UniformInt(0, config_.random_token_limit);
    return std::nullopt;
  };
  MaskedLmPredictions m =
      CreateMaskedLmPredictions(tokens, s.target_length, config_.masking, is_special, starts_word, token_mask, rng);
  const size_t length = m.tokens.size(), seq = static_cast<size_t>(config_.sequence_length);
  out.tokens = std::move(m.tokens);
  out.tokens.resize(seq, config_.pad_id);
  out.types.resize(seq, 0);
  out.padding_mask.assign(seq, 0);
  std::fill(out.padding_mask.begin(), out.padding_mask.begin() + length, 1);
  out.labels.assign(seq, -1);
  out.loss_mask.assign(seq, 0);
  for (size_t k = 0; k < m.positions.size(); ++k) {
    out.labels[m.positions[k]] = m.labels[k];
    out.loss_mask[m.positions[k]] = 1;
  }
  return out;
}

BertBatch BertDataset::GetBatch(const std::vector<int64_t>& ids) const {
  std::vector<at::Tensor> tokens, types, labels, padding, loss;
  std::vector<int64_t> is_random;
  for (int64_t id : ids) {
    BertSample s = Get(id);
    tokens.push_back(Row(s.tokens));
    types.push_back(Row(s.types));
    labels.push_back(Row(s.labels));
    padding.push_back(Row(s.padding_mask));
    loss.push_back(Row(s.loss_mask));
    is_random.push_back(s.is_random);
  }
  BertBatch batch;
  batch.tokens = at::stack(tokens);
  batch.types = at::stack(types);
  batch.labels = at::stack(labels);
  batch.padding_mask = at::stack(padding);
  batch.loss_mask = at::stack(loss).to(at::kFloat);
  batch.is_random = Row(is_random);
  return batch;
}

}  // namespace megatron::datasets
