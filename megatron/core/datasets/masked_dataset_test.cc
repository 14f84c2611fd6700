// Masked-LM datasets: worked examples of the masking rules, the 80/10/10 split and the masking rate measured
// on a large sample, sample structure (every sample reconstructs its source sentences), determinism per seed.
#include <algorithm>
#include <cmath>
#include <map>
#include <memory>
#include <random>
#include <set>
#include <vector>

#include <ATen/core/Tensor.h>
#include <gtest/gtest.h>

#include "megatron/core/datasets/bert_dataset.h"
#include "megatron/core/datasets/indexed_dataset.h"
#include "megatron/core/datasets/masked_dataset.h"
#include "megatron/core/datasets/t5_dataset.h"
#include "megatron/core/datasets/test_util.h"

namespace megatron::datasets {
namespace {

constexpr int64_t kCls = 1, kSep = 2, kMask = 3, kPad = 0, kBos = 4, kEos = 5;
constexpr int64_t kFirstWord = 10, kVocab = 500;  // ordinary tokens are [10, 500)

// `documents` documents of 2-5 sentences of 3-9 tokens each (deterministic).
std::shared_ptr<const IndexedDataset> SyntheticCorpus(const std::string& name, int documents = 600) {
  const std::string prefix = testing::TempPrefix(name);
  auto builder = IndexedDatasetBuilder::Create(prefix, TokenDtype::kInt32);
  EXPECT_TRUE(builder.ok()) << builder.status();
  std::mt19937 gen(7);
  for (int d = 0; d < documents; ++d) {
    const int sentences = 2 + gen() % 4;
    for (int s = 0; s < sentences; ++s) {
      std::vector<int32_t> tokens(3 + gen() % 7);
      for (int32_t& t : tokens) t = kFirstWord + gen() % (kVocab - kFirstWord);
      EXPECT_TRUE(builder->AddItem(tokens).ok());
    }
    builder->EndDocument();
  }
  EXPECT_TRUE(builder->Finalize().ok());
  auto dataset = IndexedDataset::Open(prefix);
  EXPECT_TRUE(dataset.ok()) << dataset.status();
  return std::make_shared<const IndexedDataset>(std::move(*dataset));
}

BertDatasetConfig BertConfig() {
  BertDatasetConfig c;
  c.sequence_length = 64;
  c.cls_id = kCls;
  c.sep_id = kSep;
  c.mask_id = kMask;
  c.pad_id = kPad;
  c.random_token_limit = kVocab;
  c.split = "1";
  c.masking.short_sequence_probability = 0;
  return c;
}

T5DatasetConfig T5Config() {
  T5DatasetConfig c;
  c.sequence_length = 48;
  c.decoder_sequence_length = 24;
  c.bos_id = kBos;
  c.eos_id = kEos;
  c.pad_id = kPad;
  c.mask_id = kMask;
  for (int k = 0; k < 10; ++k) c.sentinel_ids.push_back(kVocab + k);
  c.split = "1";
  c.masking.short_sequence_probability = 0;
  return c;
}

TEST(SampleRandom, DeterministicAndInRange) {
  SampleRandom a(5), b(5), c(6);
  double sum = 0;
  bool differs = false;
  for (int i = 0; i < 20000; ++i) {
    const double u = a.Uniform();
    EXPECT_EQ(u, b.Uniform());
    differs |= u != c.Uniform();
    ASSERT_TRUE(u >= 0 && u < 1);
    sum += u;
    const int64_t k = a.UniformInt(3, 10);
    b.UniformInt(3, 10);
    c.UniformInt(3, 10);
    ASSERT_TRUE(k >= 3 && k < 10);
  }
  EXPECT_TRUE(differs);
  EXPECT_NEAR(sum / 20000, 0.5, 0.01);
}

// [CLS] w1 ##w1 w2 ##w2 [SEP] with p = 0.5: the budget is min(0.5 * 6, round(0.5 * 6)) = 3 tokens.
TEST(CreateMaskedLmPredictions, WholeWordMaskingNeverSplitsAWord) {
  const std::vector<int64_t> tokens = {kCls, 10, 11, 12, 13, kSep};
  MaskingConfig config;
  config.masking_probability = 0.5;
  const auto is_special = [](int64_t id) { return id == kCls || id == kSep; };
  const auto starts_word = [](int64_t id) { return id == 10 || id == 12; };
  const auto mask = [](SampleRandom&) -> std::optional<int64_t> { return kMask; };
  std::set<std::vector<int64_t>> seen;
  for (uint32_t seed = 0; seed < 200; ++seed) {
    SampleRandom rng(seed);
    MaskedLmPredictions m = CreateMaskedLmPredictions(tokens, 6, config, is_special, starts_word, mask, rng);
    // A 2-token word fits the budget of 3; a second word (4 tokens) does not, nor does the 2-gram (4).
    ASSERT_TRUE(m.positions == std::vector<int64_t>({1, 2}) || m.positions == std::vector<int64_t>({3, 4}))
        << "seed " << seed;
    for (size_t k = 0; k < m.positions.size(); ++k) {
      EXPECT_EQ(m.labels[k], tokens[m.positions[k]]);
      EXPECT_EQ(m.tokens[m.positions[k]], kMask);
    }
    EXPECT_EQ(m.tokens[0], kCls);
    EXPECT_EQ(m.tokens[5], kSep);
    seen.insert(m.positions);
  }
  EXPECT_EQ(seen.size(), 2u);  // both words get chosen
  // Without whole-word masking the budget is filled with single tokens.
  config.masking_do_full_word = false;
  config.masking_max_ngram = 1;
  SampleRandom rng(1);
  MaskedLmPredictions m = CreateMaskedLmPredictions(tokens, 6, config, is_special, starts_word, mask, rng);
  EXPECT_EQ(m.positions.size(), 3u);
  for (int64_t p : m.positions) EXPECT_TRUE(p >= 1 && p <= 4);
}

TEST(CreateMaskedLmPredictions, MaxPredictionsCapsTheBudget) {
  std::vector<int64_t> tokens(100);
  for (int i = 0; i < 100; ++i) tokens[i] = kFirstWord + i;
  MaskingConfig config;
  config.max_predictions = 4;
  SampleRandom rng(3);
  MaskedLmPredictions m = CreateMaskedLmPredictions(
      tokens, 100, config, [](int64_t) { return false; }, [](int64_t) { return true; },
      [](SampleRandom&) -> std::optional<int64_t> { return kMask; }, rng);
  EXPECT_LE(m.positions.size(), 4u);
  EXPECT_GE(m.positions.size(), 3u);  // N-grams that would overshoot shrink, so the budget is nearly used
}

TEST(BertDataset, EightyTenTenAndMaskingRate) {
  auto corpus = SyntheticCorpus("bert_stats", 2400);
  BertDatasetConfig config = BertConfig();
  config.masking.masking_max_ngram = 1;  // every candidate is one token: the budget is met exactly
  auto ds = BertDataset::Build(corpus, config, Split::kTrain);
  ASSERT_TRUE(ds.ok()) << ds.status();
  ASSERT_GT(ds->size(), 200);
  int64_t masked = 0, as_mask = 0, unchanged = 0, random = 0;
  for (int64_t i = 0; i < ds->size(); ++i) {
    BertSample s = ds->Get(i);
    // Megatron's budget, min(p * target, max(1, round(p * length))) with length counting [CLS]/[SEP]; with
    // 1-grams of single-token words it is always filled to its floor.
    int64_t length = 0, sample_masked = 0;
    for (size_t k = 0; k < s.tokens.size(); ++k) {
      length += s.padding_mask[k];
      sample_masked += s.loss_mask[k];
    }
    const double budget = std::min(0.15 * ds->samples()[i].target_length,
                                   std::max(1.0, std::nearbyint(0.15 * static_cast<double>(length))));
    EXPECT_EQ(sample_masked, static_cast<int64_t>(std::floor(budget))) << "sample " << i;
    for (size_t k = 0; k < s.tokens.size(); ++k) {
      if (!s.loss_mask[k]) {
        EXPECT_EQ(s.labels[k], -1);
        continue;
      }
      ++masked;
      if (s.tokens[k] == kMask) {
        ++as_mask;
      } else if (s.tokens[k] == s.labels[k]) {
        ++unchanged;
      } else {
        ++random;
      }
    }
  }
  ASSERT_GT(masked, 3000);
  const double n = static_cast<double>(masked);
  // Binomial standard errors are ~0.007 (80%) and ~0.005 (10%) at this size; 4 sigma.
  EXPECT_NEAR(as_mask / n, 0.8, 0.028);
  EXPECT_NEAR(unchanged / n, 0.1, 0.02);
  EXPECT_NEAR(random / n, 0.1, 0.02);
}

TEST(BertDataset, SamplesReconstructTheirSentences) {
  auto corpus = SyntheticCorpus("bert_structure");
  auto ds = BertDataset::Build(corpus, BertConfig(), Split::kTrain);
  ASSERT_TRUE(ds.ok()) << ds.status();
  int random_order = 0;
  for (int64_t i = 0; i < 300; ++i) {
    BertSample s = ds->Get(i);
    const MaskedSample& m = ds->samples()[i];
    // Unmask, then read [CLS] A [SEP] B [SEP] back.
    std::vector<int64_t> tokens = s.tokens;
    for (size_t k = 0; k < tokens.size(); ++k) {
      if (s.loss_mask[k]) tokens[k] = s.labels[k];
    }
    ASSERT_EQ(tokens[0], kCls);
    std::vector<int64_t> a, b;
    size_t k = 1;
    for (; tokens[k] != kSep; ++k) {
      EXPECT_EQ(s.types[k], 0);
      a.push_back(tokens[k]);
    }
    for (++k; k < tokens.size() && s.padding_mask[k] && tokens[k] != kSep; ++k) {
      EXPECT_EQ(s.types[k], 1);
      b.push_back(tokens[k]);
    }
    ASSERT_FALSE(a.empty());
    ASSERT_FALSE(b.empty());
    EXPECT_EQ(s.tokens[k], kSep);
    for (++k; k < tokens.size(); ++k) {
      EXPECT_EQ(s.padding_mask[k], 0);
      EXPECT_EQ(s.tokens[k], kPad);
    }
    std::vector<int64_t> source;
    for (int64_t j = m.begin; j < m.end; ++j) corpus->AppendTo(j, 0, -1, &source);
    if (s.truncated) continue;
    std::vector<int64_t> joined = s.is_random ? b : a;
    const std::vector<int64_t>& second = s.is_random ? a : b;
    joined.insert(joined.end(), second.begin(), second.end());
    EXPECT_EQ(joined, source) << "sample " << i;
    random_order += s.is_random;
  }
  EXPECT_GT(random_order, 100);  // about half swap
  EXPECT_LT(random_order, 200);
}

TEST(BertDataset, DeterministicPerSeed) {
  auto corpus = SyntheticCorpus("bert_seed");
  auto a = BertDataset::Build(corpus, BertConfig(), Split::kTrain);
  auto b = BertDataset::Build(corpus, BertConfig(), Split::kTrain);
  BertDatasetConfig other = BertConfig();
  other.random_seed = 99;
  auto c = BertDataset::Build(corpus, other, Split::kTrain);
  ASSERT_TRUE(a.ok() && b.ok() && c.ok());
  BertBatch x = a->GetBatch({0, 5, 9}), y = b->GetBatch({0, 5, 9}), z = c->GetBatch({0, 5, 9});
  EXPECT_TRUE(x.tokens.equal(y.tokens));
  EXPECT_TRUE(x.labels.equal(y.labels));
  EXPECT_TRUE(x.is_random.equal(y.is_random));
  EXPECT_FALSE(x.tokens.equal(z.tokens));
  EXPECT_EQ(x.tokens.sizes(), (std::vector<int64_t>{3, 64}));
}

TEST(BertDataset, ConfigErrorsNameTheField) {
  auto corpus = SyntheticCorpus("bert_errors");
  BertDatasetConfig config = BertConfig();
  config.mask_id = -1;
  auto ds = BertDataset::Build(corpus, config, Split::kTrain);
  ASSERT_FALSE(ds.ok());
  EXPECT_CONTAINS(std::string(ds.status().message()), "mask_id");
}

TEST(T5Dataset, SpanCorruptionRoundTrips) {
  auto corpus = SyntheticCorpus("t5_structure");
  auto ds = T5Dataset::Build(corpus, T5Config(), Split::kTrain);
  ASSERT_TRUE(ds.ok()) << ds.status();
  ASSERT_GT(ds->size(), 100);
  int64_t spans = 0;
  for (int64_t i = 0; i < ds->size(); ++i) {
    T5Sample s = ds->Get(i);
    // Labels: <S0> span0 <S1> span1 ... <EOS>; the decoder input is <BOS> followed by the labels shifted.
    std::map<int64_t, std::vector<int64_t>> span_of;
    int64_t current = -1;
    size_t dec_len = 0;
    for (; dec_len < s.labels.size() && s.labels[dec_len] != -1; ++dec_len) {
      const int64_t t = s.labels[dec_len];
      if (t >= kVocab) {
        current = t;
        span_of[t];
      } else if (t != kEos) {
        ASSERT_NE(current, -1);
        span_of[current].push_back(t);
      }
      EXPECT_EQ(s.decoder_input[dec_len], dec_len == 0 ? kBos : s.labels[dec_len - 1]);
      EXPECT_EQ(s.loss_mask[dec_len], 1);
    }
    ASSERT_GT(dec_len, 1u);
    EXPECT_EQ(s.labels[dec_len - 1], kEos);
    for (size_t k = dec_len; k < s.labels.size(); ++k) {
      EXPECT_EQ(s.loss_mask[k], 0);
      EXPECT_EQ(s.decoder_input[k], kPad);
    }
    spans += static_cast<int64_t>(span_of.size());
    // Sentinels in the encoder, in order, each replaced by its span, give back the original tokens.
    std::vector<int64_t> restored;
    int64_t expected_sentinel = kVocab;
    for (size_t k = 0; k < s.encoder_input.size() && s.encoder_mask[k]; ++k) {
      const int64_t t = s.encoder_input[k];
      if (t >= kVocab) {
        EXPECT_EQ(t, expected_sentinel++);
        restored.insert(restored.end(), span_of[t].begin(), span_of[t].end());
      } else {
        EXPECT_NE(t, kMask);
        restored.push_back(t);
      }
    }
    // The sample's sentences, cut to its target length.
    const MaskedSample& m = ds->samples()[i];
    std::vector<int64_t> source;
    for (int64_t j = m.begin; j < m.end; ++j) corpus->AppendTo(j, 0, -1, &source);
    if (static_cast<int64_t>(source.size()) > m.target_length) source.resize(m.target_length);
    EXPECT_EQ(restored, source) << "sample " << i;
    EXPECT_EQ(static_cast<int64_t>(span_of.size()), expected_sentinel - kVocab);
    EXPECT_GE(restored.size(), 3u);
  }
  EXPECT_GT(spans, ds->size());  // typically several spans per sample
}

TEST(T5Dataset, TooFewSentinelsIsAnError) {
  auto corpus = SyntheticCorpus("t5_errors");
  T5DatasetConfig config = T5Config();
  config.sentinel_ids.resize(2);
  auto ds = T5Dataset::Build(corpus, config, Split::kTrain);
  ASSERT_FALSE(ds.ok());
  EXPECT_CONTAINS(std::string(ds.status().message()), "sentinel_ids");
}

}  // namespace
}  // namespace megatron::datasets
