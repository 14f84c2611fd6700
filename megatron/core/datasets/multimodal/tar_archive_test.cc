// Tar and shard tests: byte equality with Python tarfile's USTAR output, reading tarfile's PAX and GNU
// archives, shard round trips, and corrupt or truncated shards giving one error that names file and member.
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "gtest/gtest.h"
#include "megatron/core/datasets/multimodal/sample.h"
#include "megatron/core/datasets/multimodal/tar_archive.h"
#include "megatron/core/utils/file_io.h"
#include "nlohmann/json.hpp"

namespace megatron::datasets::multimodal {
namespace {

const std::string kDir = "megatron/core/datasets/multimodal/testdata/";

std::string TempPath(const std::string& name) {
  const char* dir = std::getenv("TEST_TMPDIR");
  return std::string(dir != nullptr ? dir : "/tmp") + "/" + name;
}

std::string Bytes(const std::string& path) {
  absl::StatusOr<std::string> b = utils::ReadFile(path);
  EXPECT_TRUE(b.ok()) << b.status();
  return b.ok() ? *b : "";
}

// The members make_fixtures.py wrote (MEMBERS there).
std::vector<TarMember> FixtureMembers() {
  return {{"000001.png", "\x89PNG fake image bytes"},
          {"000001.json", R"({"kind": "caption", "caption": "hi"})"},
          {"000002.json", std::string(512, 'x')},
          {"000003.json", std::string(513, 'y')},
          {"empty.json", ""}};
}

void ExpectMembers(const std::vector<TarMember>& got, const std::vector<TarMember>& want) {
  ASSERT_EQ(got.size(), want.size());
  for (size_t i = 0; i < got.size(); ++i) {
    EXPECT_EQ(got[i].name, want[i].name) << i;
    EXPECT_EQ(got[i].data, want[i].data) << got[i].name;
  }
}

TEST(TarArchiveTest, WritesExactlyWhatPythonTarfileWrites) {
  absl::StatusOr<std::string> ours = SerializeTar(FixtureMembers());
  ASSERT_TRUE(ours.ok()) << ours.status();
  EXPECT_TRUE(*ours == Bytes(kDir + "ustar.tar")) << "SerializeTar differs from tarfile USTAR_FORMAT output";
  const std::string path = TempPath("written.tar");
  ASSERT_TRUE(WriteTar(path, FixtureMembers()).ok());
  absl::StatusOr<std::vector<TarMember>> back = ReadTar(path);
  ASSERT_TRUE(back.ok()) << back.status();
  ExpectMembers(*back, FixtureMembers());
}

TEST(TarArchiveTest, ReadsPythonUstarPaxAndGnuArchives) {
  absl::StatusOr<std::vector<TarMember>> ustar = ReadTar(kDir + "ustar.tar");
  ASSERT_TRUE(ustar.ok()) << ustar.status();
  ExpectMembers(*ustar, FixtureMembers());

  absl::StatusOr<std::vector<TarMember>> pax = ReadTar(kDir + "pax.tar");
  ASSERT_TRUE(pax.ok()) << pax.status();
  const std::string long_name = std::string(40, 'd') + "/" + std::string(74, 'n') + ".json";
  ExpectMembers(*pax, {{long_name, "long"}, {"sub/a.json", "{}"}, {"e.json", ""}});  // the directory is skipped

  absl::StatusOr<std::vector<TarMember>> gnu = ReadTar(kDir + "gnu.tar");
  ASSERT_TRUE(gnu.ok()) << gnu.status();
  std::vector<TarMember> first_two = FixtureMembers();
  first_two.resize(2);
  ExpectMembers(*gnu, first_two);
}

TEST(TarArchiveTest, TruncatedAndCorruptArchivesNameFileAndMember) {
  const std::string good = Bytes(kDir + "ustar.tar");
  // Cut inside 000003.json's data (its header is at 3072, its 513 bytes of data at 3584).
  absl::StatusOr<std::vector<TarMember>> cut = ParseTar(good.substr(0, 3800), "shard-7.tar");
  ASSERT_FALSE(cut.ok());
  EXPECT_TRUE(absl::StrContains(cut.status().message(), "shard-7.tar")) << cut.status();
  EXPECT_TRUE(absl::StrContains(cut.status().message(), "'000003.json' is truncated")) << cut.status();
  // Cut exactly between members: the missing end-of-archive blocks are noticed.
  absl::StatusOr<std::vector<TarMember>> between = ParseTar(good.substr(0, 1024), "shard-7.tar");
  ASSERT_FALSE(between.ok());
  EXPECT_TRUE(absl::StrContains(between.status().message(), "after '000001.png'")) << between.status();
  // A flipped byte in the second header breaks its checksum.
  std::string corrupt = good;
  corrupt[1024 + 3] ^= 0x20;
  absl::StatusOr<std::vector<TarMember>> bad = ParseTar(corrupt, "shard-7.tar");
  ASSERT_FALSE(bad.ok());
  EXPECT_TRUE(absl::StrContains(bad.status().message(), "corrupt tar header")) << bad.status();
  EXPECT_TRUE(absl::StrContains(bad.status().message(), "after '000001.png'")) << bad.status();
  EXPECT_FALSE(ReadTar(kDir + "missing.tar").ok());
  EXPECT_FALSE(SerializeTar({{std::string(101, 'a'), ""}}).ok());
}

TEST(TarArchiveTest, MutatedArchivesNeverCrash) {
  // Random byte flips and cuts of real archives (run under --config=asan too): ParseTar returns members or an
  // error, never crashes or reads out of bounds.
  const std::vector<std::string> archives = {Bytes(kDir + "ustar.tar"), Bytes(kDir + "pax.tar"),
                                             Bytes(kDir + "gnu.tar")};
  uint64_t state = 12345;
  auto next = [&]() { return state = state * 6364136223846793005ull + 1442695040888963407ull, state >> 33; };
  int errors = 0;
  for (int trial = 0; trial < 3000; ++trial) {
    std::string bytes = archives[trial % 3];
    const int flips = 1 + next() % 4;
    for (int f = 0; f < flips; ++f) bytes[next() % 2048] = static_cast<char>(next());
    if (next() % 2) bytes.resize(next() % bytes.size());
    errors += !ParseTar(bytes, "fuzz.tar").ok();
  }
  EXPECT_GT(errors, 100);
}

MultimodalSample TwoImageConversation() {
  MultimodalSample s;
  s.key = "k2";
  s.kind = SampleKind::kConversation;
  s.images = {image::Image(3, 5, 17), image::Image(4, 2, 200)};
  s.images[0].pixels[7] = 99;
  s.conversation = {{Role::kUser, "<image>\n<image>\nSame?"}, {Role::kAssistant, "no"}};
  s.question_types = {"exists"};
  s.metadata_json = R"({"source":"test"})";
  return s;
}

TEST(ShardTest, RoundTripsEveryKind) {
  MultimodalSample caption;
  caption.key = "k0";
  caption.kind = SampleKind::kCaption;
  caption.images = {image::Image(6, 7, 10)};
  caption.caption = "a red circle at top.";
  MultimodalSample vqa;
  vqa.key = "k1";
  vqa.kind = SampleKind::kVqa;
  vqa.images = {image::Image(2, 2, 1)};
  vqa.question = "What colour?";
  vqa.answer = "red";
  vqa.question_types = {"colour"};
  MultimodalSample text_only;
  text_only.key = "k3";
  text_only.kind = SampleKind::kVqa;
  text_only.question = "2+2?";
  text_only.answer = "4";
  const std::vector<MultimodalSample> samples = {caption, vqa, TwoImageConversation(), text_only};
  const std::string dir = TempPath("shards");
  ASSERT_TRUE(utils::MakeDirectories(dir).ok());
  ASSERT_TRUE(WriteShard(dir + "/" + ShardName("train", 0), samples).ok());
  absl::StatusOr<std::vector<TarMember>> members = ReadTar(dir + "/train-000000.tar");
  ASSERT_TRUE(members.ok());
  std::vector<std::string> names;
  for (const TarMember& m : *members) names.push_back(m.name);
  EXPECT_EQ(names, (std::vector<std::string>{"k0.png", "k0.json", "k1.png", "k1.json", "k2.0.png", "k2.1.png",
                                             "k2.json", "k3.json"}));
  absl::StatusOr<std::vector<MultimodalSample>> back = ReadShards(dir, "train");
  ASSERT_TRUE(back.ok()) << back.status();
  ASSERT_EQ(back->size(), samples.size());
  for (size_t i = 0; i < samples.size(); ++i) {
    const MultimodalSample& a = samples[i];
    const MultimodalSample& b = (*back)[i];
    EXPECT_EQ(a.key, b.key);
    EXPECT_EQ(a.kind, b.kind);
    ASSERT_EQ(a.images.size(), b.images.size()) << a.key;
    for (size_t j = 0; j < a.images.size(); ++j) EXPECT_EQ(a.images[j], b.images[j]) << a.key << " image " << j;
    EXPECT_EQ(a.caption, b.caption);
    EXPECT_EQ(a.question, b.question);
    EXPECT_EQ(a.answer, b.answer);
    EXPECT_EQ(a.conversation, b.conversation);
    EXPECT_EQ(a.question_types, b.question_types);
    EXPECT_EQ(SampleToJson(a), SampleToJson(b));
  }
  EXPECT_EQ((*back)[2].metadata_json, R"({"source":"test"})");
  EXPECT_EQ(ListShards(dir, "valid").status().code(), absl::StatusCode::kNotFound);
}

int64_t PixelSum(const image::Image& img) {
  int64_t sum = 0;
  for (uint8_t p : img.pixels) sum += p;
  return sum;
}

TEST(ShardTest, ReadsAShardWrittenByPythonTarfile) {
  absl::StatusOr<std::vector<MultimodalSample>> samples = ReadShard(kDir + "webdataset.tar");
  ASSERT_TRUE(samples.ok()) << samples.status();
  ASSERT_EQ(samples->size(), 3u);
  const nlohmann::json sums = nlohmann::json::parse(Bytes(kDir + "webdataset.json"));
  const MultimodalSample& s0 = (*samples)[0];
  EXPECT_EQ(s0.key, "s0");
  EXPECT_EQ(s0.kind, SampleKind::kCaption);
  EXPECT_EQ(s0.caption, "noise");
  EXPECT_EQ(s0.metadata_json, R"({"source":"fixture"})");
  ASSERT_EQ(s0.images.size(), 1u);  // s0.txt is ignored
  EXPECT_EQ(s0.images[0].height, 12);
  EXPECT_EQ(s0.images[0].width, 20);
  // JPEG: stb and libjpeg may round the IDCT differently; on average within one level per value.
  EXPECT_NEAR(PixelSum(s0.images[0]), sums["s0.jpg"]["sum"].get<int64_t>(), 12 * 20 * 3);
  const MultimodalSample& s1 = (*samples)[1];
  ASSERT_EQ(s1.images.size(), 2u);
  EXPECT_EQ(s1.images[0].height, 5);
  EXPECT_EQ(PixelSum(s1.images[0]), sums["s1.0.png"]["sum"].get<int64_t>());
  EXPECT_EQ(s1.images[1].height, 9);
  EXPECT_EQ(PixelSum(s1.images[1]), sums["s1.1.png"]["sum"].get<int64_t>());
  EXPECT_EQ(s1.conversation.size(), 2u);
  EXPECT_EQ((*samples)[2].kind, SampleKind::kVqa);
  EXPECT_TRUE((*samples)[2].images.empty());
}

TEST(ShardTest, BadSamplesNameShardAndMember) {
  const std::string path = TempPath("bad.tar");
  auto read_error = [&](const std::vector<TarMember>& members) {
    EXPECT_TRUE(WriteTar(path, members).ok());
    absl::StatusOr<std::vector<MultimodalSample>> r = ReadShard(path);
    EXPECT_FALSE(r.ok());
    return std::string(r.status().message());
  };
  std::string e = read_error({{"a.png", "not a png"}, {"a.json", R"({"kind":"caption","caption":"x"})"}});
  EXPECT_TRUE(absl::StrContains(e, "bad.tar: member 'a.png'")) << e;
  e = read_error({{"a.json", R"({"kind":"vqa","question":"q"})"}});
  EXPECT_TRUE(absl::StrContains(e, "member 'a.json': field 'answer'")) << e;
  e = read_error({{"a.json", "{nope"}});
  EXPECT_TRUE(absl::StrContains(e, "member 'a.json': not a JSON object")) << e;
  e = read_error({{"a.json", R"({"kind":"poem"})"}});
  EXPECT_TRUE(absl::StrContains(e, "'kind' is 'poem'")) << e;
  e = read_error({{"a.png", ""}});
  EXPECT_TRUE(absl::StrContains(e, "sample 'a' has no 'a.json'")) << e;
  e = read_error({{"a.json", R"({"kind":"conversation","conversations":[{"from":"bot","value":"x"}]})"}});
  EXPECT_TRUE(absl::StrContains(e, "conversations[0]: field 'from' is 'bot'")) << e;
  e = read_error({{"a.json", R"({"kind":"caption","caption":"x"})"}, {"b.json", R"({"kind":"caption","caption":"y"})"},
                  {"a.png", ""}});
  EXPECT_TRUE(absl::StrContains(e, "key 'a' appears again")) << e;
  // Truncating a real shard: the error names the member.
  const std::string shard = TempPath("good.tar");
  ASSERT_TRUE(WriteShard(shard, {TwoImageConversation()}).ok());
  const std::string bytes = Bytes(shard);
  ASSERT_TRUE(utils::WriteFileAtomically(path, bytes.substr(0, 530)).ok());
  absl::StatusOr<std::vector<MultimodalSample>> r = ReadShard(path);
  ASSERT_FALSE(r.ok());
  EXPECT_TRUE(absl::StrContains(r.status().message(), "bad.tar: member 'k2.0.png' is truncated")) << r.status();
  MultimodalSample bad_key = TwoImageConversation();
  bad_key.key = "a.b";
  EXPECT_FALSE(WriteShard(path, {bad_key}).ok());
}

}  // namespace
}  // namespace megatron::datasets::multimodal
