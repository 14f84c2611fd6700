// Small POSIX file helpers with absl::Status errors that name the path and the OS error (strerror).
//
// Durability model of WriteFileAtomically (used for checkpoints, tokenizer files, event-file headers):
// readers see either the old file or the complete new one, never a torn write, and after OK the new file
// survives a crash: contents go to `<path>.tmp.<pid>`, which is fsync'd, renamed over `path`, and then the
// parent directory is fsync'd so the rename itself is durable.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace megatron::utils {

// A Status for a failed system call on `path`: "<what> '<path>': <strerror(err)>", with a code that fits
// `err` (ENOENT -> NotFound, EACCES -> PermissionDenied, ENOSPC -> ResourceExhausted, ...).
absl::Status ErrnoToStatus(int err, const std::string& what, const std::string& path);

// The whole file as bytes. NotFound if it does not exist.
absl::StatusOr<std::string> ReadFile(const std::string& path);

// Replaces (or creates) `path` with `contents` atomically and durably (see above). The temporary file is
// removed on failure. The parent directory must exist.
absl::Status WriteFileAtomically(const std::string& path, std::string_view contents);

// Same, with the contents given as consecutive pieces (e.g. a header and tensor buffers), so large
// outputs need not be concatenated in memory first.
absl::Status WriteFileAtomically(const std::string& path, const std::vector<std::string_view>& pieces);

// fsync on a directory, so that entries created/renamed in it are durable.
absl::Status FsyncDirectory(const std::string& dir);

// rename(2) `from` over `to` (atomic within one filesystem), then fsyncs the parent directory of `to`
// (and of `from` when different).
absl::Status RenameAtomically(const std::string& from, const std::string& to);

// write(2) all of `data` to `fd`, retrying short writes and EINTR. `path` only names the file in errors.
absl::Status WriteFully(int fd, std::string_view data, const std::string& path);

// `mkdir -p`: creates `dir` and missing parents (mode 0755). OK if it already exists as a directory;
// FailedPrecondition if it or a parent exists and is not a directory.
absl::Status MakeDirectories(const std::string& dir);

// Creates the parent directory of `path` (recursively); no-op for a bare file name.
absl::Status MakeParentDirectories(const std::string& path);

// The directory part of `path` ("." for a bare file name, "/" for "/x").
std::string DirName(const std::string& path);

bool PathExists(const std::string& path);
bool IsDirectory(const std::string& path);

}  // namespace megatron::utils
