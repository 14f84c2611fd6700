#include "megatron/core/utils/trace_profiler.h"

#include <ATen/ops/matmul.h>
#include <ATen/ops/randn.h>
#include <gtest/gtest.h>

#include <cstdio>
#include <fstream>
#include <sstream>
#include <string>

namespace megatron::utils {
namespace {

TEST(TraceProfiler, WritesAChromeTraceAndTablesTheOperators) {
  const std::string path = ::testing::TempDir() + "/trace.json";
  auto profiler = TraceProfiler::Start(/*cuda=*/false);
  ASSERT_TRUE(profiler.ok()) << profiler.status();
  EXPECT_FALSE(TraceProfiler::Start(false).ok()) << "one profiler at a time";
  at::Tensor a = at::randn({64, 64});
  for (int i = 0; i < 3; ++i) a = at::matmul(a, a).tanh();
  absl::StatusOr<std::string> table = (*profiler)->Stop(path, 10);
  ASSERT_TRUE(table.ok()) << table.status();
  EXPECT_NE(table->find("aten::matmul"), std::string::npos) << *table;
  // The matmul line says 3 calls.
  const size_t line = table->find("aten::matmul");
  const std::string row = table->substr(line, table->find('\n', line) - line);
  std::istringstream fields(row);
  std::string name;
  int calls = 0;
  fields >> name >> calls;
  EXPECT_EQ(calls, 3) << row;
  std::ifstream in(path);
  std::stringstream trace;
  trace << in.rdbuf();
  EXPECT_NE(trace.str().find("traceEvents"), std::string::npos);
  EXPECT_NE(trace.str().find("aten::tanh"), std::string::npos);
  EXPECT_FALSE((*profiler)->Stop(path, 10).ok()) << "stopping twice";
  // A new profiler may start once the first has stopped.
  auto again = TraceProfiler::Start(false);
  EXPECT_TRUE(again.ok()) << again.status();
}

}  // namespace
}  // namespace megatron::utils
