// Writes TensorBoard scalar curves natively (no Python, no TensorFlow): an events.out.tfevents.* file of
// TFRecord-framed megatron.proto.Event messages, wire-compatible with tensorflow.Event.
//
//   absl::StatusOr<std::unique_ptr<TensorBoardWriter>> tb = TensorBoardWriter::Open("runs/gpt_125m");
//   if (!tb.ok()) return tb.status();
//   (*tb)->AddScalar("lm loss", loss, iteration);
//   (*tb)->AddScalar("learning-rate", lr, iteration);
//   if (iteration % 100 == 0) { absl::Status s = (*tb)->Flush(); ... }  // visible to `tensorboard --logdir`
//
// Records are buffered in memory and written by Flush() (and automatically once the buffer passes
// kAutoFlushBytes); a write error is remembered and returned by the next Flush()/Close(), so AddScalar
// stays a cheap void call in the training loop. Thread-safe.
//
// File layout (TFRecord): per record, u64 payload length (little-endian), u32 masked CRC-32C of those 8
// bytes, the payload, u32 masked CRC-32C of the payload. The first record is an Event with
// file_version "brain.Event:2", as TensorBoard expects.
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace megatron::training {

class TensorBoardWriter {
 public:
  static constexpr size_t kAutoFlushBytes = 1 << 20;

  // Creates `logdir` (recursively) and a new file `events.out.tfevents.<unix seconds>.<hostname>` in it
  // (".1", ".2", ... appended if that name is taken, e.g. two writers in the same second), and writes
  // the file_version record to disk.
  static absl::StatusOr<std::unique_ptr<TensorBoardWriter>> Open(const std::string& logdir);

  // Flushes and closes; errors at this point are dropped, so call Close() to see them.
  ~TensorBoardWriter();

  TensorBoardWriter(const TensorBoardWriter&) = delete;
  TensorBoardWriter& operator=(const TensorBoardWriter&) = delete;

  // Appends one scalar event (stored as float32, as TensorBoard's simple_value). Wall time is now.
  void AddScalar(std::string_view tag, double value, int64_t step);
  // Same with an explicit wall time in seconds since the epoch (for replaying logs and for tests).
  void AddScalar(std::string_view tag, double value, int64_t step, double wall_time);

  // Writes buffered records to the file (write(2); visible to readers, not fsync'd). Returns the first
  // error since the last Flush, if any.
  absl::Status Flush();
  // Flush, fsync and close. Later calls are no-ops returning OK; AddScalar after Close is ignored.
  absl::Status Close();

  // The event file's path.
  const std::string& path() const { return path_; }

  // TFRecord framing of one payload (exposed for tests and other TFRecord writers).
  static std::string FrameRecord(std::string_view payload);

 private:
  TensorBoardWriter(std::string path, int fd) : path_(std::move(path)), fd_(fd) {}
  void AppendEvent(const std::string& serialized_event);  // requires mu_
  absl::Status FlushLocked();                             // requires mu_

  const std::string path_;
  std::mutex mu_;
  int fd_;  // -1 once closed
  std::string buffer_;
  absl::Status sticky_error_;
};

}  // namespace megatron::training
