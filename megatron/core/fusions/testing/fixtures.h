// Helpers shared by the fused-kernel tests: reading the text fixtures that each unit's make_fixtures.py writes
// ("key1 key2 v0 v1 ..." lines, '#' comments).
#pragma once

#include <gtest/gtest.h>

#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <vector>

namespace megatron::fusions::testing {

// Lines "a b v0 v1 ..." keyed by "a b"; a missing file fails the calling test (and returns an empty map).
inline std::map<std::string, std::vector<double>> ReadFixture(const std::string& path) {
  std::ifstream in(path);
  EXPECT_TRUE(in.good()) << "missing fixture " << path << " (run the make_fixtures.py beside it)";
  std::map<std::string, std::vector<double>> out;
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty() || line[0] == '#') continue;
    std::istringstream ls(line);
    std::string first, second;
    ls >> first >> second;
    std::vector<double>& values = out[first + " " + second];
    double v;
    while (ls >> v) values.push_back(v);
  }
  return out;
}

}  // namespace megatron::fusions::testing
