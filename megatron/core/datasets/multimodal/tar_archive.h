// POSIX ustar tar archives, the container of WebDataset shards: write (regular files only) and read.
//
// Writing produces exactly the bytes Python's tarfile writes with format=USTAR_FORMAT for the same members
// when each TarInfo has its defaults (mode 0644, uid/gid 0, empty user/group names, mtime 0): 512-byte headers,
// data padded to 512 bytes, two zero blocks, and the archive padded to a 10240-byte record. Written atomically.
//
// Reading accepts ustar ("ustar\0" "00") and GNU ("ustar  \0") headers, long names from the ustar prefix field
// and from pax extended headers ('x' records: path=), and skips directories, links and pax global headers.
// Corrupt or truncated input gives one InvalidArgument naming the file, the member and the byte offset, e.g.
//   "train-000001.tar: member '000042.png' is truncated: needs 1873 bytes at offset 20992, file has 21504".
#pragma once

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace megatron::datasets::multimodal {

struct TarMember {
  std::string name;  // path inside the archive, at most 100 bytes when writing
  std::string data;
};

// The archive bytes (see above). Errors on names that are empty or longer than 100 bytes.
absl::StatusOr<std::string> SerializeTar(const std::vector<TarMember>& members);
absl::Status WriteTar(const std::string& path, const std::vector<TarMember>& members);

// The regular-file members in archive order. `name` labels errors (the path for ReadTar).
absl::StatusOr<std::vector<TarMember>> ParseTar(const std::string& bytes, const std::string& name);
absl::StatusOr<std::vector<TarMember>> ReadTar(const std::string& path);

}  // namespace megatron::datasets::multimodal
