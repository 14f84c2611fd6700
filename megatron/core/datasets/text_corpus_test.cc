#include "megatron/core/datasets/text_corpus.h"

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "megatron/core/datasets/test_util.h"

namespace megatron::datasets {
namespace {

using namespace ::megatron::datasets::testing;  // NOLINT: test helpers

namespace fs = std::filesystem;

const std::string kCorpus = "megatron/core/datasets/testdata/corpus/";

std::vector<std::string> MustRead(const std::vector<std::string>& paths, CorpusOptions options = {}) {
  absl::StatusOr<std::vector<std::string>> docs = ReadCorpus(paths, options);
  EXPECT_TRUE(docs.ok()) << docs.status();
  return docs.ok() ? *docs : std::vector<std::string>{};
}

std::string ErrorOf(const std::vector<std::string>& paths, CorpusOptions options = {}) {
  absl::StatusOr<std::vector<std::string>> docs = ReadCorpus(paths, options);
  EXPECT_FALSE(docs.ok());
  return std::string(docs.status().message());
}

TEST(TextCorpusTest, JsonlDocumentsSkipBlankLinesAndEmptyTexts) {
  EXPECT_EQ(MustRead({kCorpus + "docs.jsonl"}),
            (std::vector<std::string>{"The first document.", "Second\nwith a newline and caf\xc3\xa9.",
                                      "Third, \"quoted\"."}));
}

TEST(TextCorpusTest, JsonKeyIsConfigurable) {
  CorpusOptions options;
  options.json_key = "body";
  EXPECT_CONTAINS(ErrorOf({kCorpus + "missing_key.jsonl"}, options), "missing_key.jsonl:1: no \"body\" field");
}

TEST(TextCorpusTest, MalformedJsonlNamesFileAndLine) {
  EXPECT_CONTAINS(ErrorOf({kCorpus + "bad.jsonl"}), kCorpus + "bad.jsonl:2: not valid JSON");
  EXPECT_CONTAINS(ErrorOf({kCorpus + "missing_key.jsonl"}), kCorpus + "missing_key.jsonl:2: no \"text\" field");
  EXPECT_CONTAINS(ErrorOf({kCorpus + "not_object.jsonl"}), "not_object.jsonl:1: expected a JSON object, got array");
}

TEST(TextCorpusTest, FortuneSeparatorsAndCrlf) {
  EXPECT_EQ(MustRead({kCorpus + "quotes"}),
            (std::vector<std::string>{"A day for firm decisions!!!!!  Or is it?", "Two lines\nof wisdom.",
                                      "  -- Anonymous, with a 50% chance"}));
}

TEST(TextCorpusTest, PlainTextIsOneDocument) {
  const std::vector<std::string> docs = MustRead({kCorpus + "essay.txt"});
  ASSERT_EQ(docs.size(), 1u);
  EXPECT_EQ(docs[0], "A plain text file.\n% is not alone on this line.\nSo it is one document.\n");
}

TEST(TextCorpusTest, ExplicitFormatOverridesDetection) {
  CorpusOptions options;
  options.format = CorpusFormat::kText;
  EXPECT_EQ(MustRead({kCorpus + "quotes"}, options).size(), 1u);
  options.format = CorpusFormat::kFortune;
  EXPECT_EQ(MustRead({kCorpus + "essay.txt"}, options).size(), 1u);
  options.format = CorpusFormat::kJsonl;
  EXPECT_CONTAINS(ErrorOf({kCorpus + "essay.txt"}, options), "essay.txt:1: not valid JSON");
}

TEST(TextCorpusTest, MissingPathIsAnError) {
  EXPECT_CONTAINS(ErrorOf({kCorpus + "nope.jsonl"}), "nope.jsonl: no such file or directory");
}

TEST(TextCorpusTest, DirectoryWalkIsSortedAndSkipsHiddenDatAndDuplicates) {
  const char* tmp = std::getenv("TEST_TMPDIR");
  const fs::path dir = fs::path(tmp != nullptr ? tmp : "/tmp") / "walk";
  fs::remove_all(dir);
  fs::create_directories(dir / "sub");
  fs::create_directories(dir / ".git");
  auto write = [](const fs::path& p, const std::string& text) { std::ofstream(p, std::ios::binary) << text; };
  write(dir / "b_fortunes", "one\n%\ntwo\n%\n");
  write(dir / "b_fortunes.dat", "\x02\x00\x00\x00binary offsets");
  fs::create_symlink("b_fortunes", dir / "b_fortunes.u8");  // Debian's layout: .u8 -> plain file
  write(dir / "a.txt", "alpha");
  write(dir / ".hidden", "never");
  write(dir / ".git" / "HEAD", "never");
  write(dir / "sub" / "c.jsonl", "{\"text\": \"gamma\"}\n");
  EXPECT_EQ(MustRead({dir.string()}), (std::vector<std::string>{"alpha", "one", "two", "gamma"}));
  // Named explicitly, a file is read even if a walk already read it.
  EXPECT_EQ(MustRead({dir.string(), (dir / "a.txt").string()}),
            (std::vector<std::string>{"alpha", "one", "two", "gamma", "alpha"}));
}

// Debian's fortunes package, when installed: every fortune once, none from .dat or the .u8 symlinks.
TEST(TextCorpusTest, DebianFortunesWhenInstalled) {
  const std::string dir = "/usr/share/games/fortunes";
  if (!fs::is_directory(dir)) GTEST_SKIP() << dir << " not installed";
  const std::vector<std::string> all = MustRead({dir});
  std::vector<std::string> plain;
  size_t files = 0;
  for (const auto& entry : fs::directory_iterator(dir)) {
    const std::string name = entry.path().filename().string();
    if (entry.is_symlink() || absl::EndsWith(name, ".dat") || absl::StartsWith(name, ".")) continue;
    ++files;
    const std::vector<std::string> docs = MustRead({entry.path().string()}, {CorpusFormat::kFortune, "text"});
    plain.insert(plain.end(), docs.begin(), docs.end());
  }
  EXPECT_GT(files, 10u);
  EXPECT_EQ(all.size(), plain.size());
  EXPECT_GT(all.size(), 1000u);
}

}  // namespace
}  // namespace megatron::datasets
