#include "megatron/core/datasets/image/image.h"

#include <cstring>
#include <limits>

#include "absl/strings/str_cat.h"
#include "c10/util/Exception.h"
#include "megatron/core/utils/file_io.h"
#include "stb/stb_image.h"
#include "stb/stb_image_write.h"

namespace megatron::datasets::image {

bool operator==(const Image& a, const Image& b) {
  return a.height == b.height && a.width == b.width && a.pixels == b.pixels;
}

absl::StatusOr<Image> DecodeImage(std::string_view bytes, const std::string& name) {
  if (bytes.size() > static_cast<size_t>(std::numeric_limits<int>::max())) {
    return absl::InvalidArgumentError(absl::StrCat(name, ": image of ", bytes.size(), " bytes is too large"));
  }
  int width = 0, height = 0, channels_in_file = 0;
  // stb_image keeps its failure reason in a global: with concurrent decodes the message could come from another
  // thread's failure, but the result (pixels or NULL) is always this call's.
  stbi_uc* data = stbi_load_from_memory(reinterpret_cast<const stbi_uc*>(bytes.data()), static_cast<int>(bytes.size()),
                                        &width, &height, &channels_in_file, /*desired_channels=*/3);
  if (data == nullptr) {
    const char* reason = stbi_failure_reason();
    return absl::InvalidArgumentError(
        absl::StrCat(name, ": cannot decode image (", bytes.size(), " bytes): ", reason ? reason : "unknown error"));
  }
  Image image;
  image.height = height;
  image.width = width;
  image.pixels.assign(data, data + static_cast<size_t>(width) * height * 3);
  stbi_image_free(data);
  return image;
}

absl::StatusOr<Image> ReadImageFile(const std::string& path) {
  absl::StatusOr<std::string> bytes = utils::ReadFile(path);
  if (!bytes.ok()) return bytes.status();
  return DecodeImage(*bytes, path);
}

namespace {
void AppendToString(void* context, void* data, int size) {
  static_cast<std::string*>(context)->append(static_cast<const char*>(data), static_cast<size_t>(size));
}
}  // namespace

absl::StatusOr<std::string> EncodePng(const Image& image) {
  if (image.empty() || image.pixels.size() != static_cast<size_t>(image.height) * image.width * 3) {
    return absl::InvalidArgumentError(absl::StrCat("EncodePng: image ", image.height, "x", image.width, " holds ",
                                                   image.pixels.size(), " bytes, expected height*width*3 > 0"));
  }
  std::string out;
  if (stbi_write_png_to_func(&AppendToString, &out, image.width, image.height, 3, image.pixels.data(),
                             image.width * 3) == 0) {
    return absl::InternalError(absl::StrCat("EncodePng: stb could not encode a ", image.height, "x", image.width,
                                            " image"));
  }
  return out;
}

Image Crop(const Image& image, int top, int left, int height, int width) {
  TORCH_CHECK(top >= 0 && left >= 0 && height >= 0 && width >= 0 && top + height <= image.height &&
                  left + width <= image.width,
              "Crop: box (top ", top, ", left ", left, ", ", height, "x", width, ") is outside the ", image.height,
              "x", image.width, " image");
  Image out(height, width);
  for (int y = 0; y < height; ++y) {
    std::memcpy(out.at(y, 0), image.at(top + y, left), static_cast<size_t>(width) * 3);
  }
  return out;
}

}  // namespace megatron::datasets::image
