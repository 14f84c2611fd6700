#include "megatron/core/checkpointing/safetensors.h"

#include <unistd.h>

#include <ATen/core/Tensor.h>
#include <ATen/ops/arange.h>
#include <ATen/ops/equal.h>
#include <ATen/ops/scalar_tensor.h>
#include <ATen/ops/tensor.h>
#include <ATen/ops/zeros.h>
#include <gtest/gtest.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <map>
#include <string>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "megatron/core/utils/file_io.h"

namespace megatron::checkpointing {
namespace {

// Written by testdata/make_fixtures.py with the Python `safetensors` library.
constexpr char kFixture[] = "megatron/core/checkpointing/testdata/python_reference.safetensors";

// The same tensors as expected_tensors() in testdata/make_fixtures.py, built with the same ATen ops.
std::map<std::string, at::Tensor> ExpectedTensors() {
  const auto f32 = at::TensorOptions().dtype(at::kFloat);
  return {
      {"f64", at::arange(6, at::TensorOptions().dtype(at::kDouble)).reshape({2, 3}).div(3)},
      {"f32", at::arange(24, f32).reshape({2, 3, 4}).sub(10).mul(0.25)},
      {"f16", at::arange(-4, 4, f32).div(3).to(at::kHalf)},
      {"bf16", at::arange(10, f32).reshape({2, 5}).div(3).to(at::kBFloat16)},
      {"i64", at::tensor({-(int64_t{1} << 62), int64_t{-1}, int64_t{0}, int64_t{1}, (int64_t{1} << 62) + 5})},
      {"i32", at::arange(-3, 3, at::TensorOptions().dtype(at::kInt))},
      {"i16", at::tensor({int16_t{-32768}, int16_t{0}, int16_t{32767}})},
      {"i8", at::tensor({int8_t{-128}, int8_t{-1}, int8_t{0}, int8_t{127}})},
      {"u8", at::tensor({uint8_t{0}, uint8_t{1}, uint8_t{128}, uint8_t{255}})},
      {"bool", at::tensor({uint8_t{1}, uint8_t{0}, uint8_t{0}, uint8_t{1}}).to(at::kBool).reshape({2, 2})},
      {"f8_e4m3", at::arange(8, f32).mul(0.5).to(at::kFloat8_e4m3fn)},
      {"f8_e5m2", at::arange(8, f32).mul(-0.25).to(at::kFloat8_e5m2)},
      {"scalar", at::scalar_tensor(3.5, f32)},
      {"empty", at::zeros({0, 4}, f32)},
      {"empty_i64", at::zeros({0}, at::TensorOptions().dtype(at::kLong))},
  };
}

const SafetensorsMetadata kMetadata = {{"format", "pt"}, {"source", "make_fixtures.py"}};

// Same dtype, shape and bytes (works for dtypes without comparison kernels, e.g. float8).
::testing::AssertionResult SameTensor(const at::Tensor& got, const at::Tensor& want) {
  if (got.scalar_type() != want.scalar_type()) {
    return ::testing::AssertionFailure() << "dtype " << got.scalar_type() << " vs " << want.scalar_type();
  }
  if (got.sizes() != want.sizes())
    return ::testing::AssertionFailure() << got.sizes() << " vs " << want.sizes();
  const at::Tensor a = got.contiguous(), b = want.contiguous();
  if (a.numel() > 0 && std::memcmp(a.data_ptr(), b.data_ptr(), a.numel() * a.element_size()) != 0) {
    return ::testing::AssertionFailure() << "bytes differ";
  }
  return ::testing::AssertionSuccess();
}

void ExpectSameMap(const std::map<std::string, at::Tensor>& got,
                   const std::map<std::string, at::Tensor>& want) {
  ASSERT_EQ(got.size(), want.size());
  for (const auto& [name, tensor] : want) {
    auto it = got.find(name);
    ASSERT_NE(it, got.end()) << name;
    EXPECT_TRUE(SameTensor(it->second, tensor)) << name;
  }
}

std::string TempPath(const std::string& name) {
  const char* tmp = std::getenv("TEST_TMPDIR");
  return absl::StrCat(tmp ? tmp : "/tmp", "/st_", ::getpid(), "_", name);
}

// A file with `json` as its header and `data_bytes` bytes of zeros (or `data`) after it.
std::string WriteRaw(const std::string& name, const std::string& json, const std::string& data) {
  std::string bytes(8, '\0');
  const uint64_t n = json.size();
  for (int i = 0; i < 8; ++i) bytes[i] = static_cast<char>((n >> (8 * i)) & 0xFF);
  bytes += json;
  bytes += data;
  const std::string path = TempPath(name);
  EXPECT_TRUE(utils::WriteFileAtomically(path, bytes).ok());
  return path;
}

// Loading `path` fails with a message that names the file and contains every one of `parts`.
void ExpectLoadError(const std::string& path, std::initializer_list<const char*> parts,
                     absl::StatusCode code = absl::StatusCode::kDataLoss) {
  absl::StatusOr<std::map<std::string, at::Tensor>> got = LoadSafetensors(path);
  ASSERT_FALSE(got.ok()) << path;
  EXPECT_EQ(got.status().code(), code) << got.status();
  EXPECT_TRUE(absl::StrContains(got.status().message(), path)) << got.status();
  for (const char* part : parts) EXPECT_TRUE(absl::StrContains(got.status().message(), part)) << got.status();
}

TEST(Safetensors, ReadsPythonFixtureExactly) {
  SafetensorsMetadata metadata;
  absl::StatusOr<std::map<std::string, at::Tensor>> got = LoadSafetensors(kFixture, &metadata);
  ASSERT_TRUE(got.ok()) << got.status();
  ExpectSameMap(*got, ExpectedTensors());
  EXPECT_EQ(metadata, kMetadata);
  EXPECT_EQ(got->at("scalar").dim(), 0);
  EXPECT_EQ(got->at("scalar").item<float>(), 3.5f);
  EXPECT_EQ(got->at("bf16").to(at::kFloat).reshape({-1})[1].item<float>(), 0.333984375f);  // bf16(1/3)
}

TEST(Safetensors, HeaderOnly) {
  absl::StatusOr<SafetensorsHeader> h = ReadSafetensorsHeader(kFixture);
  ASSERT_TRUE(h.ok()) << h.status();
  EXPECT_EQ(h->tensors.size(), 15u);
  EXPECT_EQ(h->metadata, kMetadata);
  EXPECT_EQ(h->data_start % 8, 0u);
  const SafetensorsEntry& f32 = h->tensors.at("f32");
  EXPECT_EQ(f32.dtype, at::kFloat);
  EXPECT_EQ(f32.shape, (std::vector<int64_t>{2, 3, 4}));
  EXPECT_EQ(f32.end - f32.begin, 96u);
  EXPECT_TRUE(h->tensors.at("scalar").shape.empty());
}

TEST(Safetensors, RoundTrip) {
  const std::string path = TempPath("roundtrip.safetensors");
  ASSERT_TRUE(SaveSafetensors(path, ExpectedTensors(), kMetadata).ok());
  SafetensorsMetadata metadata;
  absl::StatusOr<std::map<std::string, at::Tensor>> got = LoadSafetensors(path, &metadata);
  ASSERT_TRUE(got.ok()) << got.status();
  ExpectSameMap(*got, ExpectedTensors());
  EXPECT_EQ(metadata, kMetadata);

  // Every tensor is naturally aligned in the file.
  absl::StatusOr<SafetensorsHeader> h = ReadSafetensorsHeader(path);
  ASSERT_TRUE(h.ok()) << h.status();
  EXPECT_EQ(h->data_start % 8, 0u);
  for (const auto& [name, e] : h->tensors) EXPECT_EQ(e.begin % c10::elementSize(e.dtype), 0u) << name;

  // Leave a copy for `make_fixtures.py --verify` (the Python library reads our file; outside CI).
  if (const char* out = std::getenv("TEST_UNDECLARED_OUTPUTS_DIR")) {
    ASSERT_TRUE(SaveSafetensors(absl::StrCat(out, "/ours.safetensors"), ExpectedTensors(), kMetadata).ok());
  }
}

TEST(Safetensors, EmptyMapAndNoMetadata) {
  const std::string path = TempPath("empty.safetensors");
  ASSERT_TRUE(SaveSafetensors(path, {}).ok());
  SafetensorsMetadata metadata = {{"stale", "x"}};
  absl::StatusOr<std::map<std::string, at::Tensor>> got = LoadSafetensors(path, &metadata);
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_TRUE(got->empty());
  EXPECT_TRUE(metadata.empty());
  EXPECT_EQ(*utils::ReadFile(path), std::string("\x08\0\0\0\0\0\0\0{}      ", 16));
}

TEST(Safetensors, SavesNonContiguousViews) {
  const at::Tensor base = at::arange(12, at::TensorOptions().dtype(at::kFloat)).reshape({3, 4});
  const std::map<std::string, at::Tensor> tensors = {
      {"transposed", base.t()},
      {"sliced", base.select(1, 2)},                  // strided, storage offset 2
      {"row", base.select(0, 1)},                     // contiguous, storage offset 4
      {"grad", base.clone().set_requires_grad(true)}  // requires_grad does not matter
  };
  const std::string path = TempPath("views.safetensors");
  ASSERT_TRUE(SaveSafetensors(path, tensors).ok());
  absl::StatusOr<std::map<std::string, at::Tensor>> got = LoadSafetensors(path);
  ASSERT_TRUE(got.ok()) << got.status();
  for (const auto& [name, t] : tensors) EXPECT_TRUE(at::equal(got->at(name), t.detach())) << name;
}

TEST(Safetensors, SaveErrors) {
  const std::string path = TempPath("bad_save.safetensors");
  const at::Tensor ok = at::zeros({2});
  auto expect_error = [&](const std::map<std::string, at::Tensor>& tensors, const char* part) {
    const absl::Status s = SaveSafetensors(path, tensors);
    ASSERT_FALSE(s.ok()) << part;
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
    EXPECT_TRUE(absl::StrContains(s.message(), path)) << s;
    EXPECT_TRUE(absl::StrContains(s.message(), part)) << s;
  };
  expect_error({{"x", at::Tensor()}}, "'x': undefined");
  expect_error({{"__metadata__", ok}}, "reserved");
  expect_error({{"", ok}}, "reserved or empty");
  expect_error({{"c", at::zeros({2}, at::TensorOptions().dtype(at::kComplexFloat))}}, "'c'");
  EXPECT_FALSE(utils::PathExists(path));
}

TEST(Safetensors, MissingFile) {
  absl::StatusOr<std::map<std::string, at::Tensor>> got = LoadSafetensors("/nonexistent/x.safetensors");
  ASSERT_FALSE(got.ok());
  EXPECT_EQ(got.status().code(), absl::StatusCode::kNotFound);
  EXPECT_TRUE(absl::StrContains(got.status().message(), "/nonexistent/x.safetensors")) << got.status();
}

TEST(Safetensors, TruncatedFile) {
  std::string bytes = *utils::ReadFile(kFixture);
  const std::string cut = TempPath("truncated.safetensors");
  ASSERT_TRUE(utils::WriteFileAtomically(cut, bytes.substr(0, bytes.size() - 10)).ok());
  ExpectLoadError(cut, {"run past the data buffer", "truncated"});
  ASSERT_TRUE(utils::WriteFileAtomically(cut, bytes.substr(0, 100)).ok());
  ExpectLoadError(cut, {"header length 976 exceeds the file size 100"});
  ASSERT_TRUE(utils::WriteFileAtomically(cut, bytes.substr(0, 5)).ok());
  ExpectLoadError(cut, {"shorter than the 8-byte header length"});
  // Trailing garbage is as wrong as missing data.
  ASSERT_TRUE(utils::WriteFileAtomically(cut, bytes + "xx").ok());
  ExpectLoadError(cut, {"trailing bytes"});
}

TEST(Safetensors, BadHeader) {
  ExpectLoadError(WriteRaw("json.st", R"({"a": {"dtype": "F32", )", ""), {"not valid JSON"});
  ExpectLoadError(WriteRaw("array.st", "[1, 2]", ""), {"not a JSON object"});
  ExpectLoadError(WriteRaw("huge.st", std::string(), ""), {"not valid JSON"});
  {
    std::string bytes = "\xff\xff\xff\xff\xff\xff\xff\x7f{}";
    const std::string path = TempPath("hugelen.st");
    ASSERT_TRUE(utils::WriteFileAtomically(path, bytes).ok());
    ExpectLoadError(path, {"exceeds the 100000000-byte limit"});
  }
  ExpectLoadError(WriteRaw("dtype.st", R"({"w": {"dtype": "F128", "shape": [1], "data_offsets": [0, 16]}})",
                           std::string(16, '\0')),
                  {"tensor 'w'", "unknown dtype 'F128'"});
  ExpectLoadError(WriteRaw("u16.st", R"({"w": {"dtype": "U16", "shape": [1], "data_offsets": [0, 2]}})",
                           std::string(2, '\0')),
                  {"tensor 'w'", "U16"}, absl::StatusCode::kUnimplemented);
  ExpectLoadError(WriteRaw("len.st", R"({"w": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}})",
                           std::string(8, '\0')),
                  {"tensor 'w'", "span 8 bytes but F32 [3] needs 12"});
  ExpectLoadError(WriteRaw("neg.st", R"({"w": {"dtype": "F32", "shape": [-1], "data_offsets": [0, 0]}})", ""),
                  {"tensor 'w'", "non-negative integers"});
  ExpectLoadError(WriteRaw("missing.st", R"({"w": {"dtype": "F32", "shape": [0]}})", ""),
                  {"tensor 'w'", "missing 'data_offsets'"});
  ExpectLoadError(
      WriteRaw("extra.st", R"({"w": {"dtype": "F32", "shape": [0], "data_offsets": [0, 0], "x": 1}})", ""),
      {"tensor 'w'", "unknown field 'x'"});
  ExpectLoadError(WriteRaw("dup.st",
                           R"({"w": {"dtype": "U8", "shape": [1], "data_offsets": [0, 1]},)"
                           R"( "w": {"dtype": "U8", "shape": [1], "data_offsets": [0, 1]}})",
                           "a"),
                  {"duplicate key 'w'"});
  ExpectLoadError(WriteRaw("meta.st", R"({"__metadata__": {"k": 1}})", ""),
                  {"__metadata__ 'k' is not a string"});
  ExpectLoadError(
      WriteRaw("overflow.st",
               R"({"w": {"dtype": "F32", "shape": [4294967296, 4294967296], "data_offsets": [0, 0]}})", ""),
      {"tensor 'w'", "overflows"});
  ExpectLoadError(WriteRaw("bool.st", R"({"b": {"dtype": "BOOL", "shape": [2], "data_offsets": [0, 2]}})",
                           std::string("\x01\x02", 2)),
                  {"tensor 'b'", "BOOL byte 1 is 2"});
}

TEST(Safetensors, OverlapsAndGaps) {
  ExpectLoadError(WriteRaw("overlap.st",
                           R"({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},)"
                           R"( "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}})",
                           std::string(12, '\0')),
                  {"tensor 'b'", "overlap tensor 'a'"});
  ExpectLoadError(WriteRaw("same.st",
                           R"({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},)"
                           R"( "b": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}})",
                           std::string(8, '\0')),
                  {"tensor 'b'", "overlap tensor 'a'"});
  ExpectLoadError(WriteRaw("gap.st",
                           R"({"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]},)"
                           R"( "b": {"dtype": "F32", "shape": [1], "data_offsets": [8, 12]}})",
                           std::string(12, '\0')),
                  {"tensor 'b'", "gap of 4"});
  ExpectLoadError(WriteRaw("reversed.st", R"({"a": {"dtype": "U8", "shape": [0], "data_offsets": [4, 0]}})",
                           std::string(4, '\0')),
                  {"tensor 'a'", "reversed"});
  // Empty tensors may sit at any tensor boundary, and in any number.
  const std::string path = WriteRaw("empties.st",
                                    R"({"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]},)"
                                    R"( "e1": {"dtype": "F32", "shape": [0], "data_offsets": [4, 4]},)"
                                    R"( "e0": {"dtype": "I64", "shape": [0, 3], "data_offsets": [0, 0]}})",
                                    std::string(4, '\0'));
  absl::StatusOr<std::map<std::string, at::Tensor>> got = LoadSafetensors(path);
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(got->at("e0").sizes(), (std::vector<int64_t>{0, 3}));
}

}  // namespace
}  // namespace megatron::checkpointing
