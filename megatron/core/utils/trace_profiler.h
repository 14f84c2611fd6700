// A window of training iterations under libtorch's Kineto profiler (Megatron's --profile with
// --use-pytorch-profiler): every ATen operator on the host and, on CUDA, every kernel and copy on the device.
// Writes a Chrome trace (open in chrome://tracing or https://ui.perfetto.dev) and returns a table of the device
// time by kernel, which answers "where does a step go" without leaving the terminal.
//
//   auto profiler = TraceProfiler::Start(/*cuda=*/true);
//   ... iterations ...
//   absl::StatusOr<std::string> table = (*profiler)->Stop("runs/trace_rank0.json", /*top=*/25);
//
// One profiler at a time per process. Kept in its own file: the profiler headers are expensive to compile.
#pragma once

#include <memory>
#include <string>

#include "absl/status/statusor.h"

namespace megatron::utils {

class TraceProfiler {
 public:
  // Starts collecting. FailedPrecondition if a profiler is already running in this process.
  static absl::StatusOr<std::unique_ptr<TraceProfiler>> Start(bool cuda);
  ~TraceProfiler();  // stops without saving if Stop was not called

  // Stops, writes the trace to `trace_path` (its directory must exist), and returns the summary: device time
  // per kernel name (calls, total, mean, share of all device time), the `top` largest first, plus the total
  // device time and the host wall time of the window. On a CPU-only run the table lists host operators
  // (self time is not separated: nested operators count in their parents too).
  absl::StatusOr<std::string> Stop(const std::string& trace_path, int top);

 private:
  TraceProfiler(bool cuda, double start_seconds);
  bool cuda_;
  bool running_ = true;
  double start_seconds_;
};

}  // namespace megatron::utils
