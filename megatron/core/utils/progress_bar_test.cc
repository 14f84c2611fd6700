#include "megatron/core/utils/progress_bar.h"

#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <vector>

#include "absl/strings/str_split.h"

namespace megatron::utils {
namespace {

TEST(ProgressBar, FormatDuration) {
  EXPECT_EQ(ProgressBar::FormatDuration(0), "0:00");
  EXPECT_EQ(ProgressBar::FormatDuration(5.9), "0:05");
  EXPECT_EQ(ProgressBar::FormatDuration(23), "0:23");
  EXPECT_EQ(ProgressBar::FormatDuration(62), "1:02");
  EXPECT_EQ(ProgressBar::FormatDuration(3599), "59:59");
  EXPECT_EQ(ProgressBar::FormatDuration(3600), "1:00:00");
  EXPECT_EQ(ProgressBar::FormatDuration(3 * 3600 + 25 * 60 + 7), "3:25:07");
  EXPECT_EQ(ProgressBar::FormatDuration(100 * 3600), "100:00:00");
  EXPECT_EQ(ProgressBar::FormatDuration(-3), "0:00");
  EXPECT_EQ(ProgressBar::FormatDuration(NAN), "?");
  EXPECT_EQ(ProgressBar::FormatDuration(INFINITY), "?");
}

std::vector<std::string> Lines(const std::string& s) {
  std::vector<std::string> lines = absl::StrSplit(s, '\n');
  EXPECT_TRUE(!lines.empty() && lines.back().empty()) << "output must end with a newline: " << s;
  lines.pop_back();
  return lines;
}

// Under `bazel test` (and inside CaptureStderr) stderr is not a TTY, so the bar is in line mode.
TEST(ProgressBar, NonTtyPrintsOnlyFinalLineWhenFast) {
  testing::internal::CaptureStderr();
  {
    ProgressBar bar("pretrain", 500, /*log_every_seconds=*/3600);
    for (int i = 1; i <= 120; ++i) bar.Update(i, "loss 4.213");
    bar.Finish();
    bar.Finish();  // idempotent
  }                // destructor must not draw again
  const std::vector<std::string> lines = Lines(testing::internal::GetCapturedStderr());
  ASSERT_EQ(lines.size(), 1u);
  EXPECT_EQ(lines[0].find('\r'), std::string::npos);
  EXPECT_EQ(lines[0].find('\033'), std::string::npos);
  EXPECT_EQ(lines[0].rfind("pretrain  [====>               ]  120/500  24% | loss 4.213 | 0:00<0:0", 0), 0u)
      << lines[0];
}

TEST(ProgressBar, NonTtyLogsEveryInterval) {
  testing::internal::CaptureStderr();
  {
    ProgressBar bar("tok", 4, /*log_every_seconds=*/0);  // interval 0: every update prints
    bar.Update(1);
    bar.Update(2);
    bar.Update(4, "done");
  }  // Finish() from the destructor repeats the last state
  const std::vector<std::string> lines = Lines(testing::internal::GetCapturedStderr());
  ASSERT_EQ(lines.size(), 4u);
  EXPECT_EQ(lines[0].rfind("tok  [=====>              ]  1/4  25% | 0:00<0:00", 0), 0u) << lines[0];
  EXPECT_EQ(lines[1].rfind("tok  [==========>         ]  2/4  50% | 0:00<0:00", 0), 0u) << lines[1];
  EXPECT_EQ(lines[2], lines[3]);
  EXPECT_EQ(lines[3].rfind("tok  [====================]  4/4 100% | done | 0:00<0:00", 0), 0u) << lines[3];
}

TEST(ProgressBar, UnknownTotal) {
  testing::internal::CaptureStderr();
  {
    ProgressBar bar("scan", 0, 3600);
    bar.Update(7);
    bar.Finish("7 files");
  }
  const std::vector<std::string> lines = Lines(testing::internal::GetCapturedStderr());
  ASSERT_EQ(lines.size(), 1u);
  EXPECT_EQ(lines[0], "scan  7 it | 7 files | 0:00");
}

}  // namespace
}  // namespace megatron::utils
