// A terminal progress bar for long work (training, preprocessing, tokenizer training):
//   pretrain  [=========>          ]  120/500  24% | loss 4.213 | 5.31k tok/s | 0:23<1:02
// On a TTY it redraws one line with '\r' at most ~10 times a second; otherwise (logs, CI) it prints a full line
// every `log_every_seconds` so logs stay readable.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>

namespace megatron::utils {

class ProgressBar {
 public:
  ProgressBar(std::string label, int64_t total, double log_every_seconds = 10.0);
  ~ProgressBar();

  // `done` items of `total` are complete; `postfix` is shown after the percentage ("loss 4.21 | 5.3k tok/s").
  void Update(int64_t done, std::string_view postfix = "");
  // Draws the final state and ends the line. Called by the destructor if not called before.
  void Finish(std::string_view postfix = "");

  // Prints `message` on a line of its own above the bar (validation results, warnings) and redraws the bar,
  // so the message stays in the terminal instead of being overwritten by the next update.
  void Println(std::string_view message);

  // Formats seconds as M:SS or H:MM:SS.
  static std::string FormatDuration(double seconds);

 private:
  void Draw(int64_t done, std::string_view postfix, bool final_draw);

  std::string label_;
  int64_t total_;
  double log_every_seconds_;
  bool is_tty_;
  bool finished_ = false;
  int64_t last_done_ = 0;
  std::string last_postfix_;
  std::chrono::steady_clock::time_point start_;
  std::chrono::steady_clock::time_point last_draw_;
};

}  // namespace megatron::utils
