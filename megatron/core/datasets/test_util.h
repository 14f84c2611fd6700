// Helpers shared by the datasets tests: fixture paths, whole-file byte I/O, temporary prefixes.
#pragma once

#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"

#define EXPECT_CONTAINS(haystack, needle) \
  EXPECT_TRUE(absl::StrContains(haystack, needle)) << "\"" << (haystack) << "\" lacks \"" << (needle) << "\""

namespace megatron::datasets::testing {

inline const std::string kTestdata = "megatron/core/datasets/testdata/";

inline std::string ReadBytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

inline void WriteBytes(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << bytes;
}

// A path under the test's private temporary directory.
inline std::string TempPrefix(const std::string& name) {
  const char* dir = std::getenv("TEST_TMPDIR");
  return absl::StrCat(dir != nullptr ? dir : "/tmp", "/", name);
}

}  // namespace megatron::datasets::testing
