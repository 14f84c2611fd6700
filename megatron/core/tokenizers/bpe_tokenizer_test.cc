// Tests for the byte-level BPE tokenizer against references written by HuggingFace `tokenizers`
// (testdata/make_fixtures.py): its tokenizer.json, its encodings of tricky strings, its decoding of ill-formed
// byte sequences, its character classes for every code point, and its encodings with a tokenizer.json that our
// trainer wrote. See make_fixtures.py for how to regenerate them.
#include "megatron/core/tokenizers/bpe_tokenizer.h"

#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "megatron/core/tokenizers/unicode_classes.h"

namespace megatron::tokenizers {
namespace {

using Json = nlohmann::json;

// Bazel runs tests from the runfiles root, where the data files sit under their package path.
std::string TestDataPath(const std::string& name) { return "megatron/core/tokenizers/testdata/" + name; }

std::string TempPath(const std::string& name) {
  const char* dir = std::getenv("TEST_TMPDIR");
  return std::string(dir != nullptr ? dir : "/tmp") + "/" + name;
}

std::string ReadFileOrDie(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  EXPECT_TRUE(in.good()) << "cannot open " << path;
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

void WriteFile(const std::string& path, const std::string& contents) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << contents;
}

Json ReadJson(const std::string& path) { return Json::parse(ReadFileOrDie(path)); }

// Same document split as make_fixtures.py's split_fortune().
std::vector<std::string> SplitFortune(const std::string& text) {
  std::vector<std::string> docs;
  std::vector<std::string> lines;
  size_t start = 0;
  while (true) {
    const size_t nl = text.find('\n', start);
    lines.push_back(text.substr(start, nl == std::string::npos ? std::string::npos : nl - start));
    if (nl == std::string::npos) break;
    start = nl + 1;
  }
  std::string cur;
  bool first = true;
  const auto flush = [&] {
    if (!cur.empty()) docs.push_back(cur);
    cur.clear();
    first = true;
  };
  for (const std::string& line : lines) {
    if (line == "%") {
      flush();
      continue;
    }
    if (!first) cur += "\n";
    cur += line;
    first = false;
  }
  flush();
  return docs;
}

BpeTrainerOptions FixtureTrainerOptions() {
  BpeTrainerOptions options;
  options.vocab_size = 500;
  options.min_frequency = 2;
  options.special_tokens = {"<|endoftext|>"};
  return options;
}

ByteLevelBPETokenizer LoadOrDie(const std::string& path) {
  absl::StatusOr<ByteLevelBPETokenizer> tok = ByteLevelBPETokenizer::Load(path);
  EXPECT_TRUE(tok.ok()) << tok.status();
  return *std::move(tok);
}

// Encodes every fixture case and compares ids and decode with what HF produced.
void ExpectMatchesCases(const ByteLevelBPETokenizer& tok, const Json& cases) {
  ASSERT_GT(cases.size(), 50u);
  int mismatches = 0;
  for (const Json& c : cases) {
    const std::string text = c["text"].get<std::string>();
    const std::vector<int32_t> expected = c["ids"].get<std::vector<int32_t>>();
    const std::vector<int32_t> ids = tok.Encode(text);
    EXPECT_EQ(ids, expected) << "text: " << Json(text).dump();
    // "decoded" is only stored where HF's decode differs from the text.
    const std::string decoded = c.contains("decoded") ? c["decoded"].get<std::string>() : text;
    EXPECT_EQ(tok.Decode(ids), decoded) << "text: " << Json(text).dump();
    if (ids != expected && ++mismatches > 10) FAIL() << "too many mismatches";
  }
}

TEST(UnicodeClassesTest, EveryCodePointMatchesHuggingFace) {
  const Json classes = ReadJson(TestDataPath("hf_char_classes.json"));
  std::vector<internal::CharClass> expected(0x110000, internal::CharClass::kOther);
  const std::pair<const char*, internal::CharClass> kinds[] = {{"letter", internal::CharClass::kLetter},
                                                               {"number", internal::CharClass::kNumber},
                                                               {"whitespace", internal::CharClass::kWhiteSpace}};
  for (const auto& [name, cls] : kinds) {
    for (const Json& range : classes[name]) {
      for (uint32_t cp = range[0].get<uint32_t>(); cp <= range[1].get<uint32_t>(); ++cp) expected[cp] = cls;
    }
  }
  int mismatches = 0;
  for (char32_t cp = 0; cp < 0x110000; ++cp) {
    if (cp >= 0xD800 && cp <= 0xDFFF) continue;
    if (internal::ClassifyCodePoint(cp) != expected[cp] && ++mismatches <= 10) {
      ADD_FAILURE() << "U+" << std::hex << static_cast<uint32_t>(cp) << " classified differently from HF "
                    << classes["tokenizers_version"] << " (tables are Unicode " << internal::UnicodeTablesVersion()
                    << ")";
    }
  }
  EXPECT_EQ(mismatches, 0);
}

TEST(UnicodeClassesTest, Utf8LossyMatchesRust) {
  // Expected strings follow Rust's String::from_utf8_lossy (one U+FFFD per maximal subpart).
  const std::string r = "\xEF\xBF\xBD";
  EXPECT_EQ(internal::Utf8Lossy("\xE2\x82"), r);
  EXPECT_EQ(internal::Utf8Lossy("\xF0\x80"), r + r);
  EXPECT_EQ(internal::Utf8Lossy("\xED\xA0\x80"), r + r + r);
  EXPECT_EQ(internal::Utf8Lossy("\xF0\x9F\x98\x80\xF0"), "\xF0\x9F\x98\x80" + r);
  EXPECT_EQ(internal::Utf8Lossy("ok \xE2\x82\xAC"), "ok \xE2\x82\xAC");
}

TEST(BpeTokenizerTest, EncodesAndDecodesLikeHuggingFace) {
  const ByteLevelBPETokenizer tok = LoadOrDie(TestDataPath("hf_tokenizer.json"));
  const Json fixture = ReadJson(TestDataPath("hf_encodings.json"));
  ExpectMatchesCases(tok, fixture["cases"]);
}

TEST(BpeTokenizerTest, DecodesIllFormedBytesAndAddedTokensLikeHuggingFace) {
  const ByteLevelBPETokenizer tok = LoadOrDie(TestDataPath("hf_tokenizer.json"));
  const Json fixture = ReadJson(TestDataPath("hf_encodings.json"));
  ASSERT_GT(fixture["decode_cases"].size(), 10u);
  for (const Json& c : fixture["decode_cases"]) {
    EXPECT_EQ(tok.Decode(c["ids"].get<std::vector<int32_t>>()), c["decoded"].get<std::string>())
        << "ids: " << c["ids"].dump();
  }
}

TEST(BpeTokenizerTest, VocabularyAccessors) {
  const ByteLevelBPETokenizer tok = LoadOrDie(TestDataPath("hf_tokenizer.json"));
  EXPECT_EQ(tok.vocab_size(), 502);  // 500 trained + <|fim_middle|> + <custom sep>
  EXPECT_EQ(tok.eod_id(), 0);
  EXPECT_EQ(tok.token_to_id("<|endoftext|>"), 0);
  EXPECT_EQ(tok.id_to_token(0), "<|endoftext|>");
  EXPECT_EQ(tok.token_to_id("<|fim_middle|>"), 500);
  EXPECT_EQ(tok.token_to_id("\xC4\xA0"), tok.Encode(" ")[0]);  // "Ġ" is the space byte
  EXPECT_EQ(tok.token_to_id("no such token"), -1);
  EXPECT_EQ(tok.id_to_token(-1), "");
  EXPECT_EQ(tok.id_to_token(100000), "");
}

TEST(BpeTokenizerTest, LegacyMergeStringsLoadTheSame) {
  Json file = ReadJson(TestDataPath("hf_tokenizer.json"));
  Json legacy = Json::array();
  for (const Json& m : file["model"]["merges"]) {
    legacy.push_back(m[0].get<std::string>() + " " + m[1].get<std::string>());
  }
  file["model"]["merges"] = legacy;
  const std::string path = TempPath("legacy_merges.json");
  WriteFile(path, file.dump());
  const ByteLevelBPETokenizer tok = LoadOrDie(path);
  ExpectMatchesCases(tok, ReadJson(TestDataPath("hf_encodings.json"))["cases"]);
}

TEST(BpeTokenizerTest, IllFormedInputKeepsEveryByte) {
  const ByteLevelBPETokenizer tok = LoadOrDie(TestDataPath("hf_tokenizer.json"));
  const std::string text = "a\xFF" "b \xC3 caf\xC3\xA9\xE2\x82";
  const std::vector<int32_t> ids = tok.Encode(text);
  EXPECT_EQ(tok.Decode(ids), internal::Utf8Lossy(text));
  EXPECT_EQ(tok.Decode(ids), "a\xEF\xBF\xBD" "b \xEF\xBF\xBD caf\xC3\xA9\xEF\xBF\xBD");
}

TEST(BpeTokenizerTest, ConcurrentEncodesAgree) {
  const ByteLevelBPETokenizer tok = LoadOrDie(TestDataPath("hf_tokenizer.json"));
  const Json cases = ReadJson(TestDataPath("hf_encodings.json"))["cases"];
  std::vector<std::thread> threads;
  std::vector<int> failures(4, 0);
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      const ByteLevelBPETokenizer copy = tok;  // copies share the cache
      for (int round = 0; round < 3; ++round) {
        for (const Json& c : cases) {
          if (copy.Encode(c["text"].get<std::string>()) != c["ids"].get<std::vector<int32_t>>()) ++failures[t];
        }
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(failures, std::vector<int>(4, 0));
}

// ---------------------------------------------------------------------------------------------------------------
// Training.

TEST(BpeTrainerTest, FirstMergesAreTheMostFrequentPairs) {
  // Word counts: hug 10, pug 5, pun 12, bun 4, hugs 5 (one word per document: no spaces involved).
  // Pairs: ug 20, pu 17, un 16, hu 15, ... -> merge "u g". Then un 16, hug 15, pun 12 -> "u n". Then "h ug" 15.
  std::vector<std::string> docs;
  for (const auto& [word, n] : std::vector<std::pair<std::string, int>>{
           {"hug", 10}, {"pug", 5}, {"pun", 12}, {"bun", 4}, {"hugs", 5}}) {
    for (int i = 0; i < n; ++i) docs.push_back(word);
  }
  BpeTrainerOptions options;
  options.vocab_size = 1 + 256 + 3;
  absl::StatusOr<ByteLevelBPETokenizer> tok = ByteLevelBPETokenizer::Train(docs, options);
  ASSERT_TRUE(tok.ok()) << tok.status();
  EXPECT_EQ(tok->vocab_size(), 260);
  EXPECT_EQ(tok->num_merges(), 3);
  EXPECT_EQ(tok->id_to_token(257), "ug");
  EXPECT_EQ(tok->id_to_token(258), "un");
  EXPECT_EQ(tok->id_to_token(259), "hug");
  EXPECT_EQ(tok->Encode("hugs"), (std::vector<int32_t>{259, tok->token_to_id("s")}));
  EXPECT_EQ(tok->Encode("pun"), (std::vector<int32_t>{tok->token_to_id("p"), 258}));
  // Ids: <|endoftext|> first, then the bytes in GPT-2 order ("!" is the first printable byte).
  EXPECT_EQ(tok->id_to_token(0), "<|endoftext|>");
  EXPECT_EQ(tok->id_to_token(1), "!");
  EXPECT_EQ(tok->eod_id(), 0);
}

TEST(BpeTrainerTest, TiesGoToTheLexicographicallySmallestPair) {
  BpeTrainerOptions options;
  options.vocab_size = 1 + 256 + 2;
  options.min_frequency = 1;
  absl::StatusOr<ByteLevelBPETokenizer> tok = ByteLevelBPETokenizer::Train({"yz", "cd", "ab"}, options);
  ASSERT_TRUE(tok.ok()) << tok.status();
  EXPECT_EQ(tok->id_to_token(257), "ab");
  EXPECT_EQ(tok->id_to_token(258), "cd");
}

TEST(BpeTrainerTest, MinFrequencyStopsMerging) {
  BpeTrainerOptions options;
  options.vocab_size = 1000;
  options.min_frequency = 3;
  // "ab" twice, "cd" three times: only c+d reaches the threshold. Special tokens never join a merge.
  absl::StatusOr<ByteLevelBPETokenizer> tok =
      ByteLevelBPETokenizer::Train({"ab", "ab", "cd<|endoftext|>", "cd", "cd", "<|endoftext|><|endoftext|>"}, options);
  ASSERT_TRUE(tok.ok()) << tok.status();
  EXPECT_EQ(tok->num_merges(), 1);
  EXPECT_EQ(tok->id_to_token(257), "cd");
  EXPECT_EQ(tok->vocab_size(), 258);
}

TEST(BpeTrainerTest, OverlappingPairsAreCountedAndMergedLeftToRight) {
  BpeTrainerOptions options;
  options.vocab_size = 1 + 256 + 2;
  options.min_frequency = 2;
  absl::StatusOr<ByteLevelBPETokenizer> tok = ByteLevelBPETokenizer::Train({"aaaa", "aaa"}, options);
  ASSERT_TRUE(tok.ok()) << tok.status();
  // a+a occurs 3 + 2 times; after merging, "aaaa" -> aa aa (aa+aa once), "aaa" -> aa a: below min_frequency.
  EXPECT_EQ(tok->num_merges(), 1);
  EXPECT_EQ(tok->Encode("aaaaa"), (std::vector<int32_t>{257, 257, tok->token_to_id("a")}));
}

TEST(BpeTrainerTest, RejectsBadOptions) {
  BpeTrainerOptions options;
  options.vocab_size = 100;
  EXPECT_FALSE(ByteLevelBPETokenizer::Train({"x"}, options).ok());
  options.vocab_size = 1000;
  options.special_tokens = {"<a>", "<a>"};
  EXPECT_FALSE(ByteLevelBPETokenizer::Train({"x"}, options).ok());
  options.special_tokens = {""};
  EXPECT_FALSE(ByteLevelBPETokenizer::Train({"x"}, options).ok());
}

// Our trainer on the bundled text must give the merges recorded in ours_encodings.json, and the file it saves
// must encode every case exactly as HF encodes them with that same file (make_fixtures.py --check_ours).
TEST(BpeTrainerTest, TrainedTokenizerEncodesLikeHuggingFaceWithOurFile) {
  const std::vector<std::string> docs = SplitFortune(ReadFileOrDie(TestDataPath("train_text.txt")));
  ASSERT_GT(docs.size(), 100u);
  absl::StatusOr<ByteLevelBPETokenizer> trained = ByteLevelBPETokenizer::Train(docs, FixtureTrainerOptions());
  ASSERT_TRUE(trained.ok()) << trained.status();
  const std::string path = TempPath("ours_tokenizer.json");
  ASSERT_TRUE(trained->Save(path).ok());
  std::ifstream tmp(path + ".tmp");
  EXPECT_FALSE(tmp.good()) << "Save left its temporary file behind";
  if (const char* outputs = std::getenv("TEST_UNDECLARED_OUTPUTS_DIR")) {
    ASSERT_TRUE(trained->Save(std::string(outputs) + "/ours_tokenizer.json").ok());  // for --check_ours
  }

  const Json ours = ReadJson(TestDataPath("ours_encodings.json"));
  const Json saved = ReadJson(path);
  ASSERT_EQ(saved["model"]["merges"], ours["merges"])
      << "training changed; if intended, regenerate ours_encodings.json with make_fixtures.py --check_ours";
  EXPECT_EQ(trained->vocab_size(), ours["vocab_size"].get<int>());

  const ByteLevelBPETokenizer reloaded = LoadOrDie(path);
  EXPECT_EQ(reloaded.vocab_size(), trained->vocab_size());
  ExpectMatchesCases(*trained, ours["cases"]);
  ExpectMatchesCases(reloaded, ours["cases"]);
}

TEST(BpeTrainerTest, SaveLoadRoundTripsHuggingFaceFile) {
  const ByteLevelBPETokenizer tok = LoadOrDie(TestDataPath("hf_tokenizer.json"));
  const std::string path = TempPath("resaved.json");
  ASSERT_TRUE(tok.Save(path).ok());
  const ByteLevelBPETokenizer again = LoadOrDie(path);
  const Json a = ReadJson(TestDataPath("hf_tokenizer.json"));
  const Json b = ReadJson(path);
  EXPECT_EQ(a["model"]["vocab"], b["model"]["vocab"]);
  EXPECT_EQ(a["model"]["merges"], b["model"]["merges"]);
  EXPECT_EQ(a["added_tokens"], b["added_tokens"]);
  ExpectMatchesCases(again, ReadJson(TestDataPath("hf_encodings.json"))["cases"]);
}

// ---------------------------------------------------------------------------------------------------------------
// Bad input: the error names the file and the field.

std::string LoadError(const std::string& path) {
  absl::StatusOr<ByteLevelBPETokenizer> tok = ByteLevelBPETokenizer::Load(path);
  EXPECT_FALSE(tok.ok());
  return tok.ok() ? "" : std::string(tok.status().message());
}

// Writes hf_tokenizer.json with one edit applied and returns the error loading it gives.
template <typename Edit>
std::string LoadErrorAfterEdit(const std::string& name, Edit edit) {
  Json file = ReadJson(TestDataPath("hf_tokenizer.json"));
  edit(file);
  const std::string path = TempPath(name);
  WriteFile(path, file.dump());
  const std::string error = LoadError(path);
  EXPECT_NE(error.find(path), std::string::npos) << error;
  return error;
}

TEST(BpeLoadErrorsTest, MissingFile) {
  const std::string path = TempPath("does_not_exist.json");
  absl::StatusOr<ByteLevelBPETokenizer> tok = ByteLevelBPETokenizer::Load(path);
  ASSERT_FALSE(tok.ok());
  EXPECT_EQ(tok.status().code(), absl::StatusCode::kNotFound);
  EXPECT_NE(tok.status().message().find(path), absl::string_view::npos) << tok.status();
}

TEST(BpeLoadErrorsTest, MalformedJson) {
  const std::string path = TempPath("malformed.json");
  WriteFile(path, "{\"model\": {\"vocab\": ");
  const std::string error = LoadError(path);
  EXPECT_NE(error.find(path), std::string::npos) << error;
  EXPECT_NE(error.find("malformed JSON"), std::string::npos) << error;
}

TEST(BpeLoadErrorsTest, UnsupportedConfigurationsNameTheField) {
  EXPECT_NE(LoadErrorAfterEdit("normalizer.json", [](Json& j) { j["normalizer"] = {{"type", "NFC"}}; })
                .find("'normalizer'"),
            std::string::npos);
  EXPECT_NE(LoadErrorAfterEdit("byte_fallback.json", [](Json& j) { j["model"]["byte_fallback"] = true; })
                .find("'model.byte_fallback'"),
            std::string::npos);
  EXPECT_NE(LoadErrorAfterEdit("dropout.json", [](Json& j) { j["model"]["dropout"] = 0.1; })
                .find("'model.dropout'"),
            std::string::npos);
  EXPECT_NE(LoadErrorAfterEdit("pre_tokenizer.json", [](Json& j) { j["pre_tokenizer"] = {{"type", "Whitespace"}}; })
                .find("'pre_tokenizer.type'"),
            std::string::npos);
  EXPECT_NE(LoadErrorAfterEdit("prefix_space.json",
                               [](Json& j) { j["pre_tokenizer"]["add_prefix_space"] = true; })
                .find("'pre_tokenizer.add_prefix_space'"),
            std::string::npos);
  EXPECT_NE(LoadErrorAfterEdit("model_type.json", [](Json& j) { j["model"]["type"] = "WordPiece"; })
                .find("'model.type'"),
            std::string::npos);
  EXPECT_NE(LoadErrorAfterEdit("bad_merge.json",
                               [](Json& j) { j["model"]["merges"][3] = Json::array({"nope", "x"}); })
                .find("'model.merges[3]'"),
            std::string::npos);
  EXPECT_NE(LoadErrorAfterEdit("lstrip.json", [](Json& j) { j["added_tokens"][0]["lstrip"] = true; })
                .find("'added_tokens[0].lstrip'"),
            std::string::npos);
  EXPECT_NE(LoadErrorAfterEdit("no_vocab.json", [](Json& j) { j["model"].erase("vocab"); }).find("'model.vocab'"),
            std::string::npos);
  EXPECT_NE(LoadErrorAfterEdit("post.json", [](Json& j) { j["post_processor"] = {{"type", "TemplateProcessing"}}; })
                .find("'post_processor.type'"),
            std::string::npos);
}

}  // namespace
}  // namespace megatron::tokenizers
