// Reading and writing the safetensors format (https://github.com/huggingface/safetensors), the format of
// HuggingFace checkpoints (model.safetensors) and of our parity fixtures.
//
// Layout: u64 little-endian N | N bytes of JSON header | data buffer. The header maps each tensor name to
// {"dtype": "F32", "shape": [2, 3], "data_offsets": [begin, end]} (byte offsets into the data buffer,
// row-major, little-endian) and may hold "__metadata__": {string: string}.
//
//   absl::StatusOr<std::map<std::string, at::Tensor>> t = LoadSafetensors("gpt2/model.safetensors");
//   absl::Status s = SaveSafetensors("out.safetensors", tensors, {{"format", "pt"}});
//
// Loading validates as strictly as the reference Rust implementation, and a little more: header length
// within the file, well-formed JSON with no duplicate keys and no unknown fields, known dtypes, each
// tensor's byte length == numel x element size, offsets within the buffer, tensors tiling the buffer
// exactly (no overlap, no gap, nothing trailing), BOOL bytes 0/1. Errors name the file and the tensor.
// Tensors are read straight into fresh CPU tensors (pread), so peak memory is about the checkpoint size.
//
// Saving writes atomically (temporary file, fsync, rename: utils::WriteFileAtomically). Tensors may be
// non-contiguous or on an accelerator; they are copied to contiguous CPU memory first where needed. The
// data is laid out by decreasing element size, then name, so every tensor is naturally aligned in the
// file (the header is space-padded to a multiple of 8 bytes, as the Python library does).
//
// Dtypes: F64 F32 F16 BF16 I64 I32 I16 I8 U8 BOOL F8_E4M3 F8_E5M2 (U16/U32/U64 are refused: little of
// libtorch supports them).
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include <ATen/core/Tensor.h>
#include <c10/core/ScalarType.h>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace megatron::checkpointing {

// The "__metadata__" string map (e.g. {"format": "pt"}).
using SafetensorsMetadata = std::map<std::string, std::string>;

// One tensor's header entry.
struct SafetensorsEntry {
  at::ScalarType dtype;
  std::vector<int64_t> shape;
  // Byte range in the data buffer (which starts after the 8-byte length and the header).
  uint64_t begin = 0;
  uint64_t end = 0;
};

struct SafetensorsHeader {
  std::map<std::string, SafetensorsEntry> tensors;
  SafetensorsMetadata metadata;
  // File offset of the data buffer (8 + header length).
  uint64_t data_start = 0;
};

// Reads and validates only the header (cheap on multi-GB checkpoints: names, dtypes, shapes).
absl::StatusOr<SafetensorsHeader> ReadSafetensorsHeader(const std::string& path);

// Loads every tensor as a CPU tensor. `metadata`, if given, receives "__metadata__" (empty if absent).
absl::StatusOr<std::map<std::string, at::Tensor>> LoadSafetensors(const std::string& path,
                                                                  SafetensorsMetadata* metadata = nullptr);

// Loads rows [row_begin, row_end) of one tensor (dim 0; the whole tensor for 0-d tensors or row_end < 0) using a
// header from ReadSafetensorsHeader, reading only those bytes (a shard of a large checkpoint tensor).
absl::StatusOr<at::Tensor> LoadSafetensorsTensor(const std::string& path, const SafetensorsHeader& header,
                                                 const std::string& name, int64_t row_begin = 0,
                                                 int64_t row_end = -1);

// Writes `tensors` (and `metadata` as "__metadata__", omitted when empty). Names must be non-empty and not
// "__metadata__"; tensors must be defined, dense, and of a supported dtype.
absl::Status SaveSafetensors(const std::string& path, const std::map<std::string, at::Tensor>& tensors,
                             const SafetensorsMetadata& metadata = {});

// The safetensors dtype string ("BF16") of `dtype`, or InvalidArgument; and back.
absl::StatusOr<std::string> SafetensorsDtypeName(at::ScalarType dtype);
absl::StatusOr<at::ScalarType> SafetensorsDtypeFromName(std::string_view name);

}  // namespace megatron::checkpointing
