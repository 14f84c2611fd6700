#include "megatron/core/datasets/gpt_dataset.h"

#include <algorithm>
#include <cstdlib>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "megatron/core/datasets/test_util.h"
#include "nlohmann/json.hpp"

namespace megatron::datasets {
namespace {

using namespace ::megatron::datasets::testing;  // NOLINT: test helpers

std::shared_ptr<const IndexedDataset> OpenShared(const std::string& prefix) {
  absl::StatusOr<IndexedDataset> ds = IndexedDataset::Open(prefix);
  EXPECT_TRUE(ds.ok()) << ds.status();
  return std::make_shared<const IndexedDataset>(std::move(*ds));
}

// A dataset whose token at position p of sequence d is d * 1000 + p, so every token names its origin.
std::shared_ptr<const IndexedDataset> MakeDataset(const std::string& name, const std::vector<int>& lengths) {
  const std::string prefix = TempPrefix(name);
  absl::StatusOr<IndexedDatasetBuilder> builder = IndexedDatasetBuilder::Create(prefix, TokenDtype::kInt32);
  EXPECT_TRUE(builder.ok());
  for (size_t d = 0; d < lengths.size(); ++d) {
    std::vector<int32_t> tokens(lengths[d]);
    for (int p = 0; p < lengths[d]; ++p) tokens[p] = static_cast<int32_t>(d * 1000 + p);
    EXPECT_TRUE(builder->AddItem(tokens).ok());
    builder->EndDocument();
  }
  EXPECT_TRUE(builder->Finalize().ok());
  return OpenShared(prefix);
}

template <typename T>
std::vector<T> ToVector(const at::Tensor& t) {
  const at::Tensor c = t.contiguous();
  return std::vector<T>(c.data_ptr<T>(), c.data_ptr<T>() + c.numel());
}

TEST(SplitTest, ParsesLikeMegatron) {
  absl::StatusOr<SplitMatrix> m = ParseSplit("969,30,1");
  ASSERT_TRUE(m.ok());
  ASSERT_TRUE((*m)[0] && (*m)[1] && (*m)[2]);
  EXPECT_DOUBLE_EQ((*m)[0]->first, 0.0);
  EXPECT_DOUBLE_EQ((*m)[0]->second, 0.969);
  EXPECT_DOUBLE_EQ((*m)[1]->second, 0.999);
  EXPECT_DOUBLE_EQ((*m)[2]->second, 1.0);
  EXPECT_EQ(SplitRange(*(*m)[0], 1000), (std::pair<int64_t, int64_t>{0, 969}));
  EXPECT_EQ(SplitRange(*(*m)[1], 1000), (std::pair<int64_t, int64_t>{969, 999}));

  m = ParseSplit("98,2");
  ASSERT_TRUE(m.ok());
  EXPECT_TRUE((*m)[0] && (*m)[1]);
  EXPECT_FALSE((*m)[2]);
  m = ParseSplit("1 0 1");  // any non-number separates, as in Megatron's regex
  ASSERT_TRUE(m.ok());
  EXPECT_FALSE((*m)[1]);
  EXPECT_DOUBLE_EQ((*m)[2]->first, 0.5);

  EXPECT_FALSE(ParseSplit("0,0,0").ok());
  EXPECT_FALSE(ParseSplit("1,2,3,4").ok());
  EXPECT_FALSE(ParseSplit("1.2.3").ok());
  // Python's round(): half to even.
  EXPECT_EQ(SplitRange({0.0, 0.5}, 5), (std::pair<int64_t, int64_t>{0, 2}));
  EXPECT_EQ(SplitRange({0.0, 0.5}, 3), (std::pair<int64_t, int64_t>{0, 2}));
}

TEST(NumpyRandomStateTest, MatchesNumpyBitForBit) {
  // numpy.random.RandomState(1234).shuffle(numpy.arange(10))
  NumpyRandomState rng(1234);
  std::vector<int64_t> v = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9};
  rng.Shuffle(&v);
  EXPECT_EQ(v, (std::vector<int64_t>{7, 2, 9, 1, 0, 8, 4, 5, 6, 3}));
  // numpy.random.RandomState(0).randint(0, 2**40 + 1, dtype=numpy.int64): the 64-bit masked path.
  NumpyRandomState big(0);
  EXPECT_EQ(big.RandomInterval(1ULL << 40), 741280623151ULL);
  EXPECT_EQ(big.RandomInterval(1ULL << 40), 506137267392ULL);
}

// gpt_reference.json: what megatron-core 0.16.1 built from testdata/mcore_uint16 (see make_fixtures.py).
TEST(GPTDatasetTest, MatchesMegatronCoreExactly) {
  const nlohmann::json refs = nlohmann::json::parse(ReadBytes(kTestdata + "gpt_reference.json"));
  auto dataset = OpenShared(kTestdata + "mcore_uint16");
  ASSERT_GT(refs.size(), 0u);
  for (const nlohmann::json& ref : refs) {
    SCOPED_TRACE(ref["name"].get<std::string>());
    GPTDatasetConfig config;
    config.sequence_length = ref["seq_length"];
    config.random_seed = ref["seed"];
    config.split = ref["split"];
    for (int k = 0; k < 3; ++k) {
      if (!ref["sizes"][k].is_null()) config.num_samples[k] = ref["sizes"][k].get<int64_t>();
    }
    config.eod_token = 0;
    config.eod_mask_loss = ref["eod_mask_loss"];
    config.reset_position_ids = ref["reset_position_ids"];
    config.drop_last_partial_validation_sequence = ref.value("drop_last_partial_validation_sequence", true);
    absl::StatusOr<std::array<std::optional<GPTDataset>, 3>> splits = GPTDataset::BuildSplits(dataset, config);
    ASSERT_TRUE(splits.ok()) << splits.status();
    for (int k = 0; k < 3; ++k) {
      SCOPED_TRACE(SplitName(static_cast<Split>(k)));
      const nlohmann::json& want = ref["splits"][k];
      const std::optional<GPTDataset>& ds = (*splits)[k];
      ASSERT_EQ(want.is_null(), !ds.has_value());
      if (!ds) continue;
      EXPECT_EQ(ds->sequences(), (std::pair<int64_t, int64_t>{want["documents"][0], want["documents"][1]}));
      EXPECT_EQ(ds->size(), want["size"].get<int64_t>());
      EXPECT_EQ(ds->document_index(), want["document_index"].get<std::vector<int32_t>>());
      EXPECT_EQ(ds->sample_index(), want["sample_index"].get<std::vector<int64_t>>());
      EXPECT_EQ(ds->shuffle_index(), want["shuffle_index"].get<std::vector<int64_t>>());
      for (const nlohmann::json& sample : want["samples"]) {
        const int64_t i = sample["index"];
        SCOPED_TRACE(i);
        GPTBatch batch = ds->GetBatch({i});
        EXPECT_EQ(batch.tokens.sizes(), (std::vector<int64_t>{1, config.sequence_length}));
        EXPECT_EQ(ToVector<int64_t>(batch.tokens), sample["tokens"].get<std::vector<int64_t>>());
        EXPECT_EQ(ToVector<int64_t>(batch.labels), sample["labels"].get<std::vector<int64_t>>());
        EXPECT_EQ(ToVector<float>(batch.loss_mask), sample["loss_mask"].get<std::vector<float>>());
        EXPECT_EQ(ToVector<int64_t>(batch.position_ids), sample["position_ids"].get<std::vector<int64_t>>());
      }
    }
  }
}

// Independent of Megatron's bookkeeping: sample k (before shuffling) is the window of seq_length + 1 tokens
// starting at token k * seq_length of the documents concatenated in document_index order.
TEST(GPTDatasetTest, SamplesAreWindowsOfTheShuffledTokenStream) {
  const std::vector<int> lengths = {1, 7, 3, 25, 2, 9, 1, 1, 14, 5, 30, 4, 6, 1, 11};
  auto dataset = MakeDataset("windows", lengths);
  struct Case {
    int32_t seq_length;
    std::array<std::optional<int64_t>, 3> num_samples;
    std::string split;
  };
  for (const Case& c : {Case{4, {}, "1"}, Case{5, {40, 3, 1}, "70,20,10"}, Case{3, {200, 50, 7}, "60,30,10"},
                        Case{16, {31, 1, 1}, "80,10,10"}, Case{2, {0, 1, 1}, "8,1,1"}}) {
    GPTDatasetConfig config;
    config.sequence_length = c.seq_length;
    config.split = c.split;
    config.num_samples = c.num_samples;
    config.random_seed = 42;
    absl::StatusOr<std::array<std::optional<GPTDataset>, 3>> splits = GPTDataset::BuildSplits(dataset, config);
    ASSERT_TRUE(splits.ok()) << splits.status();
    for (int k = 0; k < 3; ++k) {
      const std::optional<GPTDataset>& ds = (*splits)[k];
      if (!ds) continue;
      SCOPED_TRACE(absl::StrCat("seq_length ", c.seq_length, " split ", c.split, " ", SplitName(ds->split())));
      const auto [begin, end] = ds->sequences();
      // Document index: each epoch's documents exactly once per epoch.
      std::map<int32_t, int64_t> counts;
      for (int32_t d : ds->document_index()) {
        EXPECT_TRUE(d >= begin && d < end);
        ++counts[d];
      }
      EXPECT_EQ(static_cast<int64_t>(counts.size()), end - begin);
      for (const auto& [d, n] : counts) EXPECT_EQ(n, ds->num_epochs());
      if (ds->separate_final_epoch()) {  // the final epoch is a permutation of its own
        std::vector<int32_t> last(ds->document_index().end() - (end - begin), ds->document_index().end());
        std::sort(last.begin(), last.end());
        for (int64_t j = 0; j < end - begin; ++j) EXPECT_EQ(last[j], begin + j);
      }
      if (c.num_samples[k]) {
        EXPECT_GE(ds->size(), *c.num_samples[k]);
      }
      // Shuffle index: a permutation.
      std::vector<int64_t> perm = ds->shuffle_index();
      std::sort(perm.begin(), perm.end());
      for (int64_t j = 0; j < ds->size(); ++j) ASSERT_EQ(perm[j], j);
      // Brute force.
      std::vector<int64_t> stream;
      for (int32_t d : ds->document_index()) {
        for (int p = 0; p < lengths[d]; ++p) stream.push_back(d * 1000 + p);
      }
      for (int64_t i = 0; i < ds->size(); ++i) {
        const int64_t sample = ds->shuffle_index()[i];
        const auto first = stream.begin() + sample * c.seq_length;
        ASSERT_LE(sample * c.seq_length + c.seq_length + 1, static_cast<int64_t>(stream.size()));
        EXPECT_EQ(ds->Get(i), std::vector<int64_t>(first, first + c.seq_length + 1)) << "sample " << i;
      }
      EXPECT_EQ(ds->size(), (static_cast<int64_t>(stream.size()) - 1) / c.seq_length);
    }
  }
}

TEST(GPTDatasetTest, PartialValidationSampleIsPadded) {
  auto dataset = MakeDataset("partial", {10, 10, 10, 10});
  GPTDatasetConfig config;
  config.sequence_length = 4;
  config.split = "0,1,0";
  config.drop_last_partial_validation_sequence = false;
  absl::StatusOr<GPTDataset> ds = GPTDataset::Build(dataset, config, Split::kValid);
  ASSERT_TRUE(ds.ok()) << ds.status();
  EXPECT_EQ(ds->size(), 10);  // ceil(39 / 4), where dropping gives 9
  int64_t padded = -1;
  for (int64_t i = 0; i < ds->size(); ++i) {
    if (ds->shuffle_index()[i] == 9) padded = i;
  }
  // Sample 9 starts at stream token 36 and needs 5 tokens; only 36..39 exist.
  EXPECT_EQ(ds->Get(padded), (std::vector<int64_t>{3006, 3007, 3008, 3009, -1}));
  GPTBatch batch = ds->GetBatch({padded});
  EXPECT_EQ(ToVector<int64_t>(batch.tokens), (std::vector<int64_t>{3006, 3007, 3008, 3009}));
  EXPECT_EQ(ToVector<int64_t>(batch.labels), (std::vector<int64_t>{3007, 3008, 3009, 0}));
  EXPECT_EQ(ToVector<float>(batch.loss_mask), (std::vector<float>{1, 1, 1, 0}));
}

TEST(GPTDatasetTest, BatchLayoutMasksAndPositions) {
  auto dataset = MakeDataset("batch", {4, 4, 4, 4, 4, 4});
  GPTDatasetConfig config;
  config.sequence_length = 6;
  config.split = "1";
  config.eod_token = 2003;  // the last token of document 2
  config.eod_mask_loss = true;
  config.reset_position_ids = true;
  absl::StatusOr<GPTDataset> ds = GPTDataset::Build(dataset, config, Split::kTrain);
  ASSERT_TRUE(ds.ok()) << ds.status();
  std::vector<int64_t> ids(ds->size());
  for (int64_t i = 0; i < ds->size(); ++i) ids[i] = i;
  GPTBatch batch = ds->GetBatch(ids);
  ASSERT_EQ(batch.tokens.sizes(), (std::vector<int64_t>{ds->size(), 6}));
  EXPECT_EQ(batch.tokens.scalar_type(), at::kLong);
  EXPECT_EQ(batch.loss_mask.scalar_type(), at::kFloat);
  const auto tokens = ToVector<int64_t>(batch.tokens), labels = ToVector<int64_t>(batch.labels),
             positions = ToVector<int64_t>(batch.position_ids);
  const auto mask = ToVector<float>(batch.loss_mask);
  bool saw_eod = false;
  for (int64_t r = 0; r < ds->size(); ++r) {
    const std::vector<int64_t> text = ds->Get(r);
    int64_t expected_position = 0;
    for (int t = 0; t < 6; ++t) {
      EXPECT_EQ(tokens[r * 6 + t], text[t]);
      EXPECT_EQ(labels[r * 6 + t], text[t + 1]);
      EXPECT_EQ(positions[r * 6 + t], expected_position++);
      const bool eod = text[t] == 2003;
      saw_eod |= eod;
      EXPECT_EQ(mask[r * 6 + t], eod ? 0.0f : 1.0f);
      if (eod) expected_position = 0;
    }
  }
  EXPECT_TRUE(saw_eod);
  EXPECT_THROW(ds->Get(ds->size()), std::out_of_range);
}

TEST(GPTDatasetTest, DeterministicPerSeed) {
  auto dataset = MakeDataset("seeds", {5, 9, 3, 12, 7, 8, 2, 6, 11, 4});
  GPTDatasetConfig config;
  config.sequence_length = 4;
  config.split = "1";
  config.num_samples[0] = 30;
  absl::StatusOr<GPTDataset> a = GPTDataset::Build(dataset, config, Split::kTrain);
  absl::StatusOr<GPTDataset> b = GPTDataset::Build(dataset, config, Split::kTrain);
  config.random_seed = 7;
  absl::StatusOr<GPTDataset> c = GPTDataset::Build(dataset, config, Split::kTrain);
  ASSERT_TRUE(a.ok() && b.ok() && c.ok());
  EXPECT_EQ(a->document_index(), b->document_index());
  EXPECT_EQ(a->shuffle_index(), b->shuffle_index());
  EXPECT_NE(a->document_index(), c->document_index());
}

TEST(GPTDatasetTest, ExplainsEmptySplitsAndBadConfig) {
  auto dataset = MakeDataset("small", {5, 5, 5, 5, 5, 5, 5, 5, 5, 5});
  GPTDatasetConfig config;
  config.sequence_length = 4;
  config.split = "969,30,1";  // 10 sequences: valid and test round to nothing
  config.num_samples = {10, 2, 2};
  absl::StatusOr<std::array<std::optional<GPTDataset>, 3>> splits = GPTDataset::BuildSplits(dataset, config);
  ASSERT_FALSE(splits.ok());
  EXPECT_CONTAINS(std::string(splits.status().message()), "(valid split): split \"969,30,1\" leaves it 0 of the 10");

  config.split = "1,0,0";
  absl::StatusOr<GPTDataset> ds = GPTDataset::Build(dataset, config, Split::kValid);
  ASSERT_FALSE(ds.ok());
  EXPECT_CONTAINS(std::string(ds.status().message()), "gives it weight 0");
  splits = GPTDataset::BuildSplits(dataset, config);
  ASSERT_TRUE(splits.ok()) << splits.status();
  EXPECT_TRUE((*splits)[0].has_value());
  EXPECT_FALSE((*splits)[1].has_value());

  config.eod_mask_loss = true;
  EXPECT_FALSE(GPTDataset::Build(dataset, config, Split::kTrain).ok());  // no eod_token
  config.eod_token = 3;
  config.pad_token = 3;
  EXPECT_FALSE(GPTDataset::Build(dataset, config, Split::kTrain).ok());
}

}  // namespace
}  // namespace megatron::datasets
