#include "megatron/core/utils/crc32c.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <string>
#include <vector>

namespace megatron::utils {
namespace {

TEST(Crc32c, CheckValue) { EXPECT_EQ(Crc32c("123456789"), 0xE3069283u); }

TEST(Crc32c, Empty) { EXPECT_EQ(Crc32c(nullptr, 0), 0u); }

// RFC 3720 (iSCSI), Appendix B.4 "CRC Examples".
TEST(Crc32c, Rfc3720Vectors) {
  std::vector<uint8_t> buf(32, 0x00);
  EXPECT_EQ(Crc32c(buf.data(), buf.size()), 0x8A9136AAu);
  buf.assign(32, 0xFF);
  EXPECT_EQ(Crc32c(buf.data(), buf.size()), 0x62A8AB43u);
  for (int i = 0; i < 32; ++i) buf[i] = static_cast<uint8_t>(i);
  EXPECT_EQ(Crc32c(buf.data(), buf.size()), 0x46DD794Eu);
  for (int i = 0; i < 32; ++i) buf[i] = static_cast<uint8_t>(31 - i);
  EXPECT_EQ(Crc32c(buf.data(), buf.size()), 0x113FDB5Cu);
  // iSCSI SCSI Read (10) command PDU.
  const std::vector<uint8_t> pdu = {
      0x01, 0xc0, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
      0x14, 0x00, 0x00, 0x00, 0x00, 0x00, 0x04, 0x00, 0x00, 0x00, 0x00, 0x14, 0x00, 0x00, 0x00, 0x18,
      0x28, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x02, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
  };
  EXPECT_EQ(Crc32c(pdu.data(), pdu.size()), 0xD9963A56u);
}

// TensorFlow's crc32c_test.cc values.
TEST(Crc32c, TensorFlowVectors) {
  EXPECT_EQ(Crc32c("a"), 0xC1D04330u);
  EXPECT_EQ(Crc32c("foo"), 0xCFC4AE1Du);
  EXPECT_EQ(Crc32c("hello world"), 0xC99465AAu);
}

// Extend over any split point equals the one-shot value; exercises the 8-byte loop and the tail.
TEST(Crc32c, ExtendMatchesOneShot) {
  std::string s;
  for (int i = 0; i < 1000; ++i) s.push_back(static_cast<char>((i * 131 + 7) & 0xFF));
  const uint32_t whole = Crc32c(s);
  for (size_t split = 0; split <= s.size(); split += 37) {
    const uint32_t a = Crc32c(s.data(), split);
    EXPECT_EQ(Crc32cExtend(a, s.data() + split, s.size() - split), whole) << "split " << split;
  }
  // Misaligned start: same bytes from an odd offset.
  std::string shifted = "x" + s;
  EXPECT_EQ(Crc32c(shifted.data() + 1, s.size()), whole);
}

TEST(Crc32c, MaskRoundTrip) {
  for (uint32_t c : {0u, 1u, 0xE3069283u, 0xFFFFFFFFu, 0x12345678u}) {
    EXPECT_EQ(UnmaskCrc(MaskCrc(c)), c);
    EXPECT_NE(MaskCrc(c), c);
  }
  EXPECT_EQ(MaskCrc(0u), 0xa282ead8u);
}

}  // namespace
}  // namespace megatron::utils
