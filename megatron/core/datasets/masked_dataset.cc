#include "megatron/core/datasets/masked_dataset.h"

#include <algorithm>
#include <cmath>
#include <set>

namespace megatron::datasets {

double SampleRandom::Uniform() {
  const uint64_t a = mt_() >> 5, b = mt_() >> 6;
  return (static_cast<double>(a) * 67108864.0 + static_cast<double>(b)) / 9007199254740992.0;
}

int64_t SampleRandom::UniformInt(int64_t low, int64_t high) {
  const uint64_t max = static_cast<uint64_t>(high - low - 1);
  if (max == 0) return low;
  uint64_t mask = max;
  for (int shift = 1; shift < 64; shift <<= 1) mask |= mask >> shift;
  while (true) {
    const uint64_t draw = max <= 0xffffffffULL ? (mt_() & mask)
                                               : (((static_cast<uint64_t>(mt_()) << 32) | mt_()) & mask);
    if (draw <= max) return low + static_cast<int64_t>(draw);
  }
}

int64_t SampleRandom::Geometric(double p) {
  return static_cast<int64_t>(std::ceil(std::log1p(-Uniform()) / std::log1p(-p)));
}

MaskedLmPredictions CreateMaskedLmPredictions(const std::vector<int64_t>& tokens, int64_t target_sequence_length,
                                              const MaskingConfig& config,
                                              const std::function<bool(int64_t)>& is_special,
                                              const std::function<bool(int64_t)>& starts_word,
                                              const std::function<std::optional<int64_t>(SampleRandom&)>& token_mask,
                                              SampleRandom& rng) {
  // Candidates: words (whole-word masking) or single tokens.
  std::vector<std::vector<int64_t>> candidates;
  for (int64_t i = 0; i < static_cast<int64_t>(tokens.size()); ++i) {
    if (is_special(tokens[i])) continue;
    if (!starts_word(tokens[i]) && config.masking_do_full_word && !candidates.empty()) {
      candidates.back().push_back(i);
    } else {
      candidates.push_back({i});
    }
  }
  const double p = config.masking_probability;
  double n_maskings = std::min(p * static_cast<double>(target_sequence_length),
                               std::max(1.0, std::nearbyint(static_cast<double>(tokens.size()) * p)));
  if (config.max_predictions > 0) n_maskings = std::min(n_maskings, static_cast<double>(config.max_predictions));

  // P(N) ~ 1/N (or reversed: longer N-grams more likely).
  const int max_n = config.masking_max_ngram;
  std::vector<double> nprobs(max_n);
  double total = 0;
  for (int n = 1; n <= max_n; ++n) total += (nprobs[n - 1] = 1.0 / n);
  for (double& q : nprobs) q /= total;
  if (config.masking_use_longer_ngrams) std::reverse(nprobs.begin(), nprobs.end());

  // Candidate order: the start index of each candidate, shuffled; its N-grams are candidates[start, start + N).
  std::vector<int64_t> order(candidates.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = static_cast<int64_t>(i);
  rng.Shuffle(&order);

  MaskedLmPredictions out;
  out.tokens = tokens;
  std::vector<std::pair<int64_t, int64_t>> positions_and_labels;
  std::set<int64_t> masked;
  for (int64_t start : order) {
    if (static_cast<double>(positions_and_labels.size()) >= n_maskings) break;
    const int n_ngrams = static_cast<int>(std::min<int64_t>(max_n, static_cast<int64_t>(candidates.size()) - start));
    int n;
    if (config.masking_use_geometric_distribution) {
      n = static_cast<int>(std::min<int64_t>(rng.Geometric(0.2), max_n));
      n = std::min(n, n_ngrams);
    } else {
      double z = 0;
      for (int k = 0; k < n_ngrams; ++k) z += nprobs[k];
      const double u = rng.Uniform() * z;
      double acc = 0;
      n = n_ngrams;
      for (int k = 0; k < n_ngrams; ++k) {
        acc += nprobs[k];
        if (u < acc) {
          n = k + 1;
          break;
        }
      }
    }
    // Shrink N until the N-gram fits the remaining budget; skip the candidate if even its 1-gram does not.
    std::vector<int64_t> ngram;
    bool skip = true;
    for (; n >= 1; --n) {
      ngram.clear();
      for (int k = 0; k < n; ++k) ngram.insert(ngram.end(), candidates[start + k].begin(), candidates[start + k].end());
      if (n_maskings >= static_cast<double>(positions_and_labels.size() + ngram.size())) {
        skip = false;
        break;
      }
    }
    if (skip) continue;
    if (std::any_of(ngram.begin(), ngram.end(), [&](int64_t i) { return masked.count(i) > 0; })) continue;
    MaskedSpan span;
    for (int64_t index : ngram) {
      masked.insert(index);
      const std::optional<int64_t> replacement = token_mask(rng);
      out.tokens[index] = replacement.value_or(tokens[index]);
      positions_and_labels.emplace_back(index, tokens[index]);
      span.positions.push_back(index);
      span.labels.push_back(tokens[index]);
    }
    out.spans.push_back(std::move(span));
  }
  std::sort(positions_and_labels.begin(), positions_and_labels.end());
  for (const auto& [position, label] : positions_and_labels) {
    out.positions.push_back(position);
    out.labels.push_back(label);
  }
  std::sort(out.spans.begin(), out.spans.end(),
            [](const MaskedSpan& a, const MaskedSpan& b) { return a.positions[0] < b.positions[0]; });
  return out;
}

std::vector<MaskedSample> BuildMaskedSampleIndex(const IndexedDataset& dataset, int64_t doc_begin, int64_t doc_end,
                                                 int32_t max_length, double short_sequence_probability,
                                                 int min_sentences, uint32_t seed) {
  SampleRandom rng(seed);
  const UnalignedArray<int64_t> docs = dataset.document_indices();
  const UnalignedArray<int32_t> lengths = dataset.sequence_lengths();
  auto draw_target = [&]() -> int32_t {
    if (short_sequence_probability > 0 && rng.Uniform() < short_sequence_probability) {
      return static_cast<int32_t>(rng.UniformInt(2, max_length + 1));
    }
    return max_length;
  };
  std::vector<MaskedSample> samples;
  for (int64_t d = doc_begin; d < doc_end; ++d) {
    const int64_t first = docs[d], last = docs[d + 1];
    if (last - first < min_sentences) continue;
    int32_t target = draw_target();
    int64_t start = first, length = 0;
    for (int64_t s = first; s < last; ++s) {
      length += lengths[s];
      const bool at_end = s + 1 == last;
      // Enough sentences remain after this one to start another sample? Otherwise the rest joins this one.
      const bool full = length >= target && last - (s + 1) >= min_sentences;
      if ((full || at_end) && s + 1 - start >= min_sentences) {
        samples.push_back({start, s + 1, target});
        start = s + 1;
        length = 0;
        target = draw_target();
      }
    }
  }
  rng.Shuffle(&samples);
  return samples;
}

}  // namespace megatron::datasets
