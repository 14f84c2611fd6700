#include "megatron/core/training/tensorboard_writer.h"

#include <dirent.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "megatron/core/proto/tensorboard.pb.h"
#include "megatron/core/utils/crc32c.h"
#include "megatron/core/utils/file_io.h"

namespace megatron::training {
namespace {

// Written by testdata/make_tb_fixture.py with torch.utils.tensorboard.SummaryWriter.
constexpr char kFixture[] = "megatron/core/training/testdata/torch_summary_writer.tfevents";
constexpr double kBaseWallTime = 1700000000.5;

struct Scalar {
  std::string tag;
  int64_t step;
  float value;
  double wall_time;
};

// Keep in sync with SCALARS in testdata/make_tb_fixture.py (wall time = base + step).
std::vector<Scalar> ExpectedScalars() {
  std::vector<Scalar> out = {
      {"loss", 0, 4.0f, 0},
      {"loss", 1, 3.5f, 0},
      {"loss", 2, 0.0f, 0},
      {"loss", 3, -1.25f, 0},
      {"lr", 0, 3e-4f, 0},
      {"lr", 1000000, 1e-6f, 0},
      {"train/grad norm", 7, 123456.75f, 0},
  };
  for (Scalar& s : out) s.wall_time = kBaseWallTime + static_cast<double>(s.step);
  return out;
}

uint64_t LoadLe(const std::string& s, size_t pos, int bytes) {
  uint64_t v = 0;
  for (int i = 0; i < bytes; ++i) v |= uint64_t{static_cast<uint8_t>(s[pos + i])} << (8 * i);
  return v;
}

// An independent minimal TFRecord reader: checks both CRCs of every record.
absl::StatusOr<std::vector<std::string>> ReadRecords(const std::string& path) {
  absl::StatusOr<std::string> data = utils::ReadFile(path);
  if (!data.ok()) return data.status();
  std::vector<std::string> records;
  size_t pos = 0;
  while (pos < data->size()) {
    if (data->size() - pos < 12)
      return absl::DataLossError(absl::StrCat(path, ": truncated header at ", pos));
    const uint64_t len = LoadLe(*data, pos, 8);
    if (utils::MaskCrc(utils::Crc32c(data->data() + pos, 8)) != LoadLe(*data, pos + 8, 4)) {
      return absl::DataLossError(absl::StrCat(path, ": bad length CRC at ", pos));
    }
    if (data->size() - pos - 12 < len + 4)
      return absl::DataLossError(absl::StrCat(path, ": truncated record"));
    std::string payload = data->substr(pos + 12, len);
    if (utils::MaskCrc(utils::Crc32c(payload)) != LoadLe(*data, pos + 12 + len, 4)) {
      return absl::DataLossError(absl::StrCat(path, ": bad data CRC at ", pos));
    }
    records.push_back(std::move(payload));
    pos += 12 + len + 4;
  }
  return records;
}

struct ParsedFile {
  std::string file_version;
  std::vector<Scalar> scalars;
  std::vector<std::string> records;
};

ParsedFile Parse(const std::string& path) {
  ParsedFile out;
  absl::StatusOr<std::vector<std::string>> records = ReadRecords(path);
  EXPECT_TRUE(records.ok()) << records.status();
  if (!records.ok()) return out;
  out.records = *records;
  for (size_t i = 0; i < records->size(); ++i) {
    proto::Event event;
    EXPECT_TRUE(event.ParseFromString((*records)[i])) << path << " record " << i;
    if (event.what_case() == proto::Event::kFileVersion) {
      EXPECT_EQ(i, 0u) << "file_version must be the first record";
      out.file_version = event.file_version();
    } else if (event.what_case() == proto::Event::kSummary) {
      for (const proto::Summary::Value& v : event.summary().value()) {
        EXPECT_EQ(v.value_case(), proto::Summary::Value::kSimpleValue) << v.tag();
        out.scalars.push_back({v.tag(), event.step(), v.simple_value(), event.wall_time()});
      }
    }
  }
  return out;
}

void ExpectScalarsEq(const std::vector<Scalar>& got, const std::vector<Scalar>& want) {
  ASSERT_EQ(got.size(), want.size());
  for (size_t i = 0; i < got.size(); ++i) {
    EXPECT_EQ(got[i].tag, want[i].tag) << i;
    EXPECT_EQ(got[i].step, want[i].step) << i;
    EXPECT_EQ(got[i].value, want[i].value) << i;  // exact: float32 on both sides
    EXPECT_EQ(got[i].wall_time, want[i].wall_time) << i;
  }
}

std::string TempDir(const std::string& name) {
  const char* tmp = std::getenv("TEST_TMPDIR");
  return absl::StrCat(tmp ? tmp : "/tmp", "/tb_", name, "_", ::getpid());
}

std::vector<std::string> ListDir(const std::string& dir) {
  std::vector<std::string> names;
  if (DIR* d = ::opendir(dir.c_str())) {
    while (dirent* e = ::readdir(d)) {
      if (e->d_name[0] != '.') names.push_back(e->d_name);
    }
    ::closedir(d);
  }
  return names;
}

std::string WriteExpected(const std::string& logdir) {
  absl::StatusOr<std::unique_ptr<TensorBoardWriter>> tb = TensorBoardWriter::Open(logdir);
  EXPECT_TRUE(tb.ok()) << tb.status();
  if (!tb.ok()) return "";
  for (const Scalar& s : ExpectedScalars()) (*tb)->AddScalar(s.tag, s.value, s.step, s.wall_time);
  EXPECT_TRUE((*tb)->Close().ok());
  return (*tb)->path();
}

TEST(TensorBoardWriter, ReaderParsesReferenceFixture) {
  const ParsedFile f = Parse(kFixture);
  EXPECT_EQ(f.file_version, "brain.Event:2");
  ExpectScalarsEq(f.scalars, ExpectedScalars());
}

TEST(TensorBoardWriter, OurFileParsesLikeTheFixture) {
  const std::string path = WriteExpected(TempDir("ours") + "/nested/run");
  const ParsedFile f = Parse(path);
  EXPECT_EQ(f.file_version, "brain.Event:2");
  ExpectScalarsEq(f.scalars, ExpectedScalars());

  // Scalar records are byte-identical to the reference writer's (same fields, same field order).
  const ParsedFile ref = Parse(kFixture);
  ASSERT_EQ(f.records.size(), ref.records.size());
  for (size_t i = 1; i < f.records.size(); ++i) EXPECT_EQ(f.records[i], ref.records[i]) << "record " << i;

  // Leave a copy for `make_tb_fixture.py --verify` (TensorBoard's EventAccumulator; outside CI).
  if (const char* out = std::getenv("TEST_UNDECLARED_OUTPUTS_DIR")) {
    const std::string base = path.substr(path.find_last_of('/') + 1);
    absl::StatusOr<std::string> bytes = utils::ReadFile(path);
    ASSERT_TRUE(bytes.ok());
    ASSERT_TRUE(utils::WriteFileAtomically(absl::StrCat(out, "/", base), *bytes).ok());
  }
}

TEST(TensorBoardWriter, FileNameAndUniqueness) {
  const std::string logdir = TempDir("names");
  absl::StatusOr<std::unique_ptr<TensorBoardWriter>> a = TensorBoardWriter::Open(logdir);
  absl::StatusOr<std::unique_ptr<TensorBoardWriter>> b = TensorBoardWriter::Open(logdir);
  ASSERT_TRUE(a.ok()) << a.status();
  ASSERT_TRUE(b.ok()) << b.status();
  EXPECT_NE((*a)->path(), (*b)->path());
  char host[256] = {};
  ASSERT_EQ(::gethostname(host, sizeof(host) - 1), 0);
  for (const std::string& name : ListDir(logdir)) {
    EXPECT_TRUE(absl::StartsWith(name, "events.out.tfevents.")) << name;
    EXPECT_TRUE(absl::StrContains(name, host)) << name;
  }
  EXPECT_EQ(ListDir(logdir).size(), 2u);
}

TEST(TensorBoardWriter, HeaderOnDiskAtOpenScalarsAfterFlush) {
  absl::StatusOr<std::unique_ptr<TensorBoardWriter>> tb = TensorBoardWriter::Open(TempDir("flush"));
  ASSERT_TRUE(tb.ok()) << tb.status();
  EXPECT_EQ(Parse((*tb)->path()).records.size(), 1u);
  (*tb)->AddScalar("x", 1.0, 5);
  EXPECT_EQ(Parse((*tb)->path()).records.size(), 1u);  // buffered
  ASSERT_TRUE((*tb)->Flush().ok());
  const ParsedFile f = Parse((*tb)->path());
  ASSERT_EQ(f.scalars.size(), 1u);
  EXPECT_EQ(f.scalars[0].step, 5);
  EXPECT_GT(f.scalars[0].wall_time, 1.6e9);  // "now"
  ASSERT_TRUE((*tb)->Close().ok());
  (*tb)->AddScalar("x", 2.0, 6);  // ignored after Close
  EXPECT_TRUE((*tb)->Close().ok());
  EXPECT_EQ(Parse((*tb)->path()).scalars.size(), 1u);
}

TEST(TensorBoardWriter, AutoFlushesLargeBuffers) {
  absl::StatusOr<std::unique_ptr<TensorBoardWriter>> tb = TensorBoardWriter::Open(TempDir("auto"));
  ASSERT_TRUE(tb.ok()) << tb.status();
  const std::string long_tag(1000, 't');
  const int n = static_cast<int>(TensorBoardWriter::kAutoFlushBytes / 1000) + 10;
  for (int i = 0; i < n; ++i) (*tb)->AddScalar(long_tag, i, i, kBaseWallTime);
  EXPECT_GT(Parse((*tb)->path()).scalars.size(), 0u);  // some already on disk without Flush()
  (*tb).reset();                                       // destructor flushes the rest
}

TEST(TensorBoardWriter, OpenFailureNamesPath) {
  const std::string blocker = TempDir("blocker");
  ASSERT_TRUE(utils::WriteFileAtomically(blocker, "not a directory").ok());
  absl::StatusOr<std::unique_ptr<TensorBoardWriter>> tb = TensorBoardWriter::Open(blocker + "/run");
  ASSERT_FALSE(tb.ok());
  EXPECT_TRUE(absl::StrContains(tb.status().message(), blocker)) << tb.status();
}

TEST(TensorBoardWriter, ReaderRejectsCorruption) {
  const std::string path = WriteExpected(TempDir("corrupt"));
  std::string bytes = *utils::ReadFile(path);
  bytes[bytes.size() - 6] ^= 0x01;  // inside the last payload
  ASSERT_TRUE(utils::WriteFileAtomically(path, bytes).ok());
  absl::StatusOr<std::vector<std::string>> records = ReadRecords(path);
  ASSERT_FALSE(records.ok());
  EXPECT_TRUE(absl::StrContains(records.status().message(), "bad data CRC")) << records.status();
}

}  // namespace
}  // namespace megatron::training
