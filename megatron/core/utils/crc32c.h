// CRC-32C (Castagnoli, polynomial 0x1EDC6F41, reflected 0x82F63B78): the checksum of TFRecord files
// (TensorBoard event files) and of iSCSI/ext4. Software, table-driven (slicing-by-8): ~1-2 GB/s, which is
// plenty for log records and metadata; nothing here needs SSE4.2.
//
//   uint32_t crc = megatron::utils::Crc32c(data, n);           // whole buffer
//   crc = megatron::utils::Crc32cExtend(crc, more, m);          // == Crc32c(data ++ more)
//   uint32_t stored = megatron::utils::MaskCrc(crc);           // what TFRecord writes to disk
#pragma once

#include <cstddef>
#include <cstdint>
#include <string_view>

namespace megatron::utils {

// Extends `crc` (the CRC-32C of some prefix; 0 for the empty prefix) by `n` bytes at `data`.
uint32_t Crc32cExtend(uint32_t crc, const void* data, size_t n);

// CRC-32C of `n` bytes at `data`. Crc32c("123456789", 9) == 0xE3069283.
inline uint32_t Crc32c(const void* data, size_t n) { return Crc32cExtend(0, data, n); }
inline uint32_t Crc32c(std::string_view s) { return Crc32c(s.data(), s.size()); }

// TFRecord stores CRCs masked, because a CRC over data that itself embeds CRCs is weak
// (TensorFlow's lib/hash/crc32c.h): rotate right by 15 and add a constant.
constexpr uint32_t kCrcMaskDelta = 0xa282ead8u;
inline uint32_t MaskCrc(uint32_t crc) { return ((crc >> 15) | (crc << 17)) + kCrcMaskDelta; }
inline uint32_t UnmaskCrc(uint32_t masked) {
  const uint32_t rot = masked - kCrcMaskDelta;
  return (rot >> 17) | (rot << 15);
}

}  // namespace megatron::utils
