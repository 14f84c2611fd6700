#include "megatron/core/utils/progress_bar.h"

#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <string>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace megatron::utils {
namespace {

constexpr int kBarWidth = 20;
// A TTY redraw is cheap but not free (and floods slow terminals such as ssh over a bad link): ~10 Hz.
constexpr double kTtyRedrawSeconds = 0.1;

double SecondsBetween(std::chrono::steady_clock::time_point a, std::chrono::steady_clock::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}

}  // namespace

ProgressBar::ProgressBar(std::string label, int64_t total, double log_every_seconds)
    : label_(std::move(label)),
      total_(total),
      log_every_seconds_(log_every_seconds),
      is_tty_(::isatty(STDERR_FILENO) == 1),
      start_(std::chrono::steady_clock::now()),
      last_draw_(start_) {}

ProgressBar::~ProgressBar() {
  if (!finished_) Finish();
}

void ProgressBar::Update(int64_t done, std::string_view postfix) {
  if (finished_) return;
  last_done_ = done;
  last_postfix_ = std::string(postfix);
  const auto now = std::chrono::steady_clock::now();
  // Non-TTY: the first line comes only after log_every_seconds, so a job shorter than that logs exactly
  // one (final) line.
  const double min_interval = is_tty_ ? kTtyRedrawSeconds : log_every_seconds_;
  if (SecondsBetween(last_draw_, now) < min_interval) return;
  Draw(done, postfix, /*final_draw=*/false);
}

void ProgressBar::Finish(std::string_view postfix) {
  if (finished_) return;
  finished_ = true;
  Draw(last_done_, postfix.empty() ? std::string_view(last_postfix_) : postfix, /*final_draw=*/true);
}

void ProgressBar::Println(std::string_view message) {
  const std::string out = is_tty_ ? absl::StrCat("\r\033[K", std::string(message), "\n")
                                  : absl::StrCat(std::string(message), "\n");
  std::fwrite(out.data(), 1, out.size(), stderr);
  std::fflush(stderr);
  if (is_tty_ && !finished_) Draw(last_done_, last_postfix_, /*final_draw=*/false);
}

std::string ProgressBar::FormatDuration(double seconds) {
  if (!std::isfinite(seconds)) return "?";
  const int64_t s = static_cast<int64_t>(std::floor(std::max(0.0, seconds)));
  const int64_t h = s / 3600, m = (s / 60) % 60, sec = s % 60;
  if (h > 0) return absl::StrFormat("%d:%02d:%02d", h, m, sec);
  return absl::StrFormat("%d:%02d", m, sec);
}

void ProgressBar::Draw(int64_t done, std::string_view postfix, bool final_draw) {
  const auto now = std::chrono::steady_clock::now();
  last_draw_ = now;
  const double elapsed = SecondsBetween(start_, now);

  std::string line = label_;
  if (total_ > 0) {
    const double frac = std::clamp(static_cast<double>(done) / static_cast<double>(total_), 0.0, 1.0);
    const int filled = static_cast<int>(frac * kBarWidth);
    std::string bar(kBarWidth, ' ');
    std::fill(bar.begin(), bar.begin() + filled, '=');
    if (filled < kBarWidth) bar[filled] = '>';  // the head sits just past the filled part
    // Right-align the counter to the width of the total so the bar does not jitter as digits grow.
    const int digits = static_cast<int>(std::to_string(total_).size());
    absl::StrAppend(&line, "  [", bar, "]  ",
                    absl::StrFormat("%*d/%d %3d%%", digits, done, total_, static_cast<int>(frac * 100.0)));
  } else {
    absl::StrAppend(&line, "  ", done, " it");  // unknown total: count and elapsed time only
  }
  // std::string(): Debian's absl is built with its own absl::string_view, which does not accept
  // std::string_view.
  if (!postfix.empty()) absl::StrAppend(&line, " | ", std::string(postfix));
  absl::StrAppend(&line, " | ", FormatDuration(elapsed));
  if (total_ > 0) {
    const double remaining =
        done > 0 ? elapsed * static_cast<double>(total_ - std::min(done, total_)) / static_cast<double>(done)
                 : NAN;
    absl::StrAppend(&line, "<", FormatDuration(remaining));
  }

  // One fwrite per draw so lines from other threads/processes do not interleave inside ours.
  std::string out;
  if (is_tty_) {
    out = absl::StrCat("\r", line, "\033[K", final_draw ? "\n" : "");  // \033[K clears a longer old line
  } else {
    out = absl::StrCat(line, "\n");
  }
  std::fwrite(out.data(), 1, out.size(), stderr);
  std::fflush(stderr);
}

}  // namespace megatron::utils
