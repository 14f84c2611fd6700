#include "megatron/core/datasets/indexed_dataset.h"

#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <sstream>
#include <stdexcept>
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

bool Exists(const std::string& path) { return ::access(path.c_str(), F_OK) == 0; }

// documents[d][k] = tokens of the k-th sequence of document d, as megatron-core wrote them.
struct Expected {
  int dtype_code;
  std::vector<std::vector<std::vector<int32_t>>> documents;
};

Expected LoadExpected(const std::string& name) {
  nlohmann::json j = nlohmann::json::parse(ReadBytes(kTestdata + "indexed_expected.json"));
  return {j[name]["dtype_code"].get<int>(),
          j[name]["documents"].get<std::vector<std::vector<std::vector<int32_t>>>>()};
}

class McoreFixtureTest : public ::testing::TestWithParam<std::string> {};

TEST_P(McoreFixtureTest, ReaderReturnsMegatronTokens) {
  const Expected expected = LoadExpected(GetParam());
  absl::StatusOr<IndexedDataset> ds = IndexedDataset::Open(kTestdata + GetParam());
  ASSERT_TRUE(ds.ok()) << ds.status();
  EXPECT_EQ(static_cast<int>(ds->dtype()), expected.dtype_code);
  EXPECT_EQ(ds->num_documents(), static_cast<int64_t>(expected.documents.size()));

  std::vector<int64_t> document_indices = {0};
  std::vector<std::vector<int32_t>> sequences;
  int64_t tokens = 0;
  for (const auto& doc : expected.documents) {
    for (const auto& seq : doc) {
      sequences.push_back(seq);
      tokens += seq.size();
    }
    document_indices.push_back(sequences.size());
  }
  EXPECT_EQ(ds->document_indices().ToVector(), document_indices);
  ASSERT_EQ(ds->size(), static_cast<int64_t>(sequences.size()));
  EXPECT_EQ(ds->num_tokens(), tokens);
  for (size_t i = 0; i < sequences.size(); ++i) {
    EXPECT_EQ(ds->sequence_lengths()[i], static_cast<int32_t>(sequences[i].size()));
    EXPECT_EQ(ds->Get(i), sequences[i]) << "sequence " << i;
  }
}

TEST_P(McoreFixtureTest, WriterReproducesMegatronBytes) {
  const Expected expected = LoadExpected(GetParam());
  const std::string prefix = TempPrefix("rewrite_" + GetParam());
  absl::StatusOr<IndexedDatasetBuilder> builder =
      IndexedDatasetBuilder::Create(prefix, static_cast<TokenDtype>(expected.dtype_code));
  ASSERT_TRUE(builder.ok()) << builder.status();
  for (const auto& doc : expected.documents) {
    for (const auto& seq : doc) ASSERT_TRUE(builder->AddItem(seq).ok());
    builder->EndDocument();
  }
  ASSERT_TRUE(builder->Finalize().ok());
  EXPECT_EQ(ReadBytes(prefix + ".bin"), ReadBytes(kTestdata + GetParam() + ".bin"));
  EXPECT_EQ(ReadBytes(prefix + ".idx"), ReadBytes(kTestdata + GetParam() + ".idx"));
  EXPECT_FALSE(Exists(prefix + ".bin.tmp"));
  EXPECT_FALSE(Exists(prefix + ".idx.tmp"));
}

INSTANTIATE_TEST_SUITE_P(Fixtures, McoreFixtureTest, ::testing::Values("mcore_uint16", "mcore_int32_multi"));

TEST(IndexedDatasetTest, GetWithOffsetAndLength) {
  absl::StatusOr<IndexedDataset> ds = IndexedDataset::Open(kTestdata + "mcore_uint16");
  ASSERT_TRUE(ds.ok()) << ds.status();
  const std::vector<int32_t> all = ds->Get(3);
  ASSERT_GE(all.size(), 4u);
  EXPECT_EQ(ds->Get(3, 1, 2), std::vector<int32_t>(all.begin() + 1, all.begin() + 3));
  EXPECT_EQ(ds->Get(3, 2), std::vector<int32_t>(all.begin() + 2, all.end()));
  std::vector<int64_t> appended = {7};
  ds->AppendTo(3, 1, 2, &appended);
  EXPECT_EQ(appended, (std::vector<int64_t>{7, all[1], all[2]}));
  EXPECT_THROW(ds->Get(ds->size()), std::out_of_range);
  EXPECT_THROW(ds->Get(3, 0, all.size() + 1), std::out_of_range);
}

TEST(IndexedDatasetTest, DtypeForVocabFollowsMegatron) {
  EXPECT_EQ(DtypeForVocab(50257), TokenDtype::kUint16);
  EXPECT_EQ(DtypeForVocab(65499), TokenDtype::kUint16);
  EXPECT_EQ(DtypeForVocab(65500), TokenDtype::kInt32);
  EXPECT_EQ(DtypeForVocab(128256), TokenDtype::kInt32);
  EXPECT_EQ(DtypeSize(TokenDtype::kUint16), 2);
  EXPECT_EQ(DtypeSize(TokenDtype::kFloat64), 8);
}

// Copies the uint16 fixture under TEST_TMPDIR with its .idx/.bin bytes edited.
std::string CorruptCopy(const std::string& name, const std::string& idx, const std::string& bin) {
  const std::string prefix = TempPrefix(name);
  WriteBytes(prefix + ".idx", idx);
  WriteBytes(prefix + ".bin", bin);
  return prefix;
}

TEST(IndexedDatasetTest, TruncatedIdxNamesFileAndCounts) {
  const std::string idx = ReadBytes(kTestdata + "mcore_uint16.idx");
  const std::string bin = ReadBytes(kTestdata + "mcore_uint16.bin");
  const std::string prefix = CorruptCopy("trunc_idx", idx.substr(0, idx.size() - 100), bin);
  absl::StatusOr<IndexedDataset> ds = IndexedDataset::Open(prefix);
  ASSERT_FALSE(ds.ok());
  EXPECT_CONTAINS(std::string(ds.status().message()), prefix + ".idx: truncated: header says 40 sequences");
  EXPECT_CONTAINS(std::string(ds.status().message()), "file holds " + std::to_string(idx.size() - 100));

  const std::string header_only = CorruptCopy("trunc_header", idx.substr(0, 20), bin);
  ds = IndexedDataset::Open(header_only);
  ASSERT_FALSE(ds.ok());
  EXPECT_CONTAINS(std::string(ds.status().message()), header_only + ".idx: truncated: 20 bytes");
}

TEST(IndexedDatasetTest, TruncatedBinNamesFile) {
  const std::string idx = ReadBytes(kTestdata + "mcore_uint16.idx");
  const std::string bin = ReadBytes(kTestdata + "mcore_uint16.bin");
  const std::string prefix = CorruptCopy("trunc_bin", idx, bin.substr(0, bin.size() - 10));
  absl::StatusOr<IndexedDataset> ds = IndexedDataset::Open(prefix);
  ASSERT_FALSE(ds.ok());
  EXPECT_CONTAINS(std::string(ds.status().message()), prefix + ".bin: truncated");
  EXPECT_CONTAINS(std::string(ds.status().message()), "sequence 39 of 40");
}

TEST(IndexedDatasetTest, BadMagicVersionAndDtype) {
  std::string idx = ReadBytes(kTestdata + "mcore_uint16.idx");
  const std::string bin = ReadBytes(kTestdata + "mcore_uint16.bin");
  std::string bad = idx;
  bad[0] = 'X';
  std::string prefix = CorruptCopy("bad_magic", bad, bin);
  absl::StatusOr<IndexedDataset> ds = IndexedDataset::Open(prefix);
  ASSERT_FALSE(ds.ok());
  EXPECT_CONTAINS(std::string(ds.status().message()), prefix + ".idx: bad magic");

  bad = idx;
  bad[9] = 2;
  prefix = CorruptCopy("bad_version", bad, bin);
  ds = IndexedDataset::Open(prefix);
  ASSERT_FALSE(ds.ok());
  EXPECT_CONTAINS(std::string(ds.status().message()), prefix + ".idx: unsupported version 2");

  bad = idx;
  bad[17] = 9;
  prefix = CorruptCopy("bad_dtype", bad, bin);
  ds = IndexedDataset::Open(prefix);
  ASSERT_FALSE(ds.ok());
  EXPECT_CONTAINS(std::string(ds.status().message()), prefix + ".idx: unknown dtype code 9");

  bad = idx + "junk";
  prefix = CorruptCopy("trailing", bad, bin);
  ds = IndexedDataset::Open(prefix);
  ASSERT_FALSE(ds.ok());
  EXPECT_CONTAINS(std::string(ds.status().message()), prefix + ".idx: 4 unexpected bytes");
}

TEST(IndexedDatasetTest, MissingFilesAreNotFound) {
  absl::StatusOr<IndexedDataset> ds = IndexedDataset::Open(TempPrefix("does_not_exist"));
  ASSERT_FALSE(ds.ok());
  EXPECT_EQ(ds.status().code(), absl::StatusCode::kNotFound);
  EXPECT_CONTAINS(std::string(ds.status().message()), "does_not_exist.idx: cannot open");
}

TEST(IndexedDatasetBuilderTest, RejectsTokensOutsideDtype) {
  const std::string prefix = TempPrefix("range");
  absl::StatusOr<IndexedDatasetBuilder> builder = IndexedDatasetBuilder::Create(prefix, TokenDtype::kUint16);
  ASSERT_TRUE(builder.ok());
  const std::vector<int32_t> tokens = {1, 70000};
  absl::Status st = builder->AddItem(tokens);
  EXPECT_EQ(st.code(), absl::StatusCode::kOutOfRange);
  EXPECT_CONTAINS(std::string(st.message()), "token 70000 at position 1 of sequence 0 does not fit uint16");
  EXPECT_EQ(builder->num_sequences(), 0);
}

TEST(IndexedDatasetBuilderTest, AbandonedBuilderLeavesNoFiles) {
  const std::string prefix = TempPrefix("abandoned");
  {
    absl::StatusOr<IndexedDatasetBuilder> builder = IndexedDatasetBuilder::Create(prefix, TokenDtype::kInt32);
    ASSERT_TRUE(builder.ok());
    ASSERT_TRUE(builder->AddItem(std::vector<int32_t>{1, 2, 3}).ok());
    EXPECT_TRUE(Exists(prefix + ".bin.tmp"));
  }
  EXPECT_FALSE(Exists(prefix + ".bin.tmp"));
  EXPECT_FALSE(Exists(prefix + ".bin"));
  EXPECT_FALSE(Exists(prefix + ".idx"));
}

TEST(IndexedDatasetBuilderTest, CreateInMissingDirectoryFails) {
  absl::StatusOr<IndexedDatasetBuilder> builder =
      IndexedDatasetBuilder::Create(TempPrefix("no/such/dir/x"), TokenDtype::kInt32);
  ASSERT_FALSE(builder.ok());
  EXPECT_CONTAINS(std::string(builder.status().message()), "no/such/dir/x.bin.tmp: cannot create");
}

TEST(IndexedDatasetBuilderTest, RoundTripsEveryDtypeAndEmptyDataset) {
  for (TokenDtype dtype : {TokenDtype::kUint8, TokenDtype::kInt8, TokenDtype::kInt16, TokenDtype::kInt32,
                           TokenDtype::kInt64, TokenDtype::kFloat64, TokenDtype::kFloat32, TokenDtype::kUint16}) {
    const std::string prefix = TempPrefix(absl::StrCat("dtype_", DtypeName(dtype)));
    absl::StatusOr<IndexedDatasetBuilder> builder = IndexedDatasetBuilder::Create(prefix, dtype);
    ASSERT_TRUE(builder.ok());
    ASSERT_TRUE(builder->AddItem(std::vector<int32_t>{0, 5, 100}).ok());
    ASSERT_TRUE(builder->AddItem(std::vector<int32_t>{}).ok());
    builder->EndDocument();
    ASSERT_TRUE(builder->Finalize().ok());
    absl::StatusOr<IndexedDataset> ds = IndexedDataset::Open(prefix);
    ASSERT_TRUE(ds.ok()) << ds.status();
    EXPECT_EQ(ds->dtype(), dtype);
    EXPECT_EQ(ds->Get(0), (std::vector<int32_t>{0, 5, 100})) << DtypeName(dtype);
    EXPECT_TRUE(ds->Get(1).empty());
    EXPECT_EQ(ds->sequence_pointers()[1], 3 * DtypeSize(dtype));
  }
  const std::string prefix = TempPrefix("empty");
  absl::StatusOr<IndexedDatasetBuilder> builder = IndexedDatasetBuilder::Create(prefix, TokenDtype::kUint16);
  ASSERT_TRUE(builder.ok());
  ASSERT_TRUE(builder->Finalize().ok());
  absl::StatusOr<IndexedDataset> ds = IndexedDataset::Open(prefix);
  ASSERT_TRUE(ds.ok()) << ds.status();
  EXPECT_EQ(ds->size(), 0);
  EXPECT_EQ(ds->num_documents(), 0);
}

}  // namespace
}  // namespace megatron::datasets
