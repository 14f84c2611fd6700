// Images for multimodal data: a small uint8 RGB type, decoding (JPEG, PNG, anything stb_image reads) and PNG
// encoding through Debian's stb (third_party/system:stb). No libtorch here: tensors are made by
// image_processor.h.
//
// Decoding always yields 3-channel RGB (grey, grey+alpha and RGBA inputs are converted by stb; alpha is
// dropped, as PIL's convert("RGB") does). 16-bit PNGs are reduced to 8 bits by stb.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace megatron::datasets::image {

// Row-major height x width x 3 (RGB), one byte per channel.
struct Image {
  int height = 0;
  int width = 0;
  std::vector<uint8_t> pixels;  // size height * width * 3

  Image() = default;
  Image(int h, int w, uint8_t fill = 0) : height(h), width(w), pixels(static_cast<size_t>(h) * w * 3, fill) {}

  uint8_t* at(int y, int x) { return pixels.data() + (static_cast<size_t>(y) * width + x) * 3; }
  const uint8_t* at(int y, int x) const { return pixels.data() + (static_cast<size_t>(y) * width + x) * 3; }
  bool empty() const { return height == 0 || width == 0; }
};

bool operator==(const Image& a, const Image& b);
inline bool operator!=(const Image& a, const Image& b) { return !(a == b); }

// Decodes an encoded image held in memory. `name` (a file or tar member) only labels errors, which carry stb's
// reason ("megatron/x.png: cannot decode image: bad png sig").
absl::StatusOr<Image> DecodeImage(std::string_view bytes, const std::string& name);

// Reads and decodes a file.
absl::StatusOr<Image> ReadImageFile(const std::string& path);

// Encodes as PNG (8-bit RGB, stb's zlib). Deterministic: the same image gives the same bytes.
absl::StatusOr<std::string> EncodePng(const Image& image);

// The pixels of rows [top, top+height) and columns [left, left+width). The box must lie inside the image.
Image Crop(const Image& image, int top, int left, int height, int width);

}  // namespace megatron::datasets::image
