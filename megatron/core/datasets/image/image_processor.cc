#include "megatron/core/datasets/image/image_processor.h"

#include "ATen/ops/empty.h"
#include "c10/util/Exception.h"
#include "megatron/core/datasets/image/resize.h"

namespace megatron::datasets::image {

PixelStatistics StatisticsFor(Statistics which) {
  switch (which) {
    case Statistics::kClip:  // OpenAI CLIP (also RADIO), transformers' OPENAI_CLIP_MEAN / OPENAI_CLIP_STD
      return {{0.48145466f, 0.4578275f, 0.40821073f}, {0.26862954f, 0.26130258f, 0.27577711f}};
    case Statistics::kSiglip:  // SigLIP and Megatron's "huggingface" encoders
      return {{0.5f, 0.5f, 0.5f}, {0.5f, 0.5f, 0.5f}};
    case Statistics::kImageNet:  // InternViT
      return {{0.485f, 0.456f, 0.406f}, {0.229f, 0.224f, 0.225f}};
  }
  TORCH_CHECK(false, "StatisticsFor: unknown statistics ", static_cast<int>(which));
}

ImageProcessorConfig ClipImageProcessor(int size) {
  ImageProcessorConfig c;
  c.resize_mode = ResizeMode::kShortestEdge;
  c.shortest_edge = size;
  c.crop_height = c.crop_width = size;
  c.statistics = StatisticsFor(Statistics::kClip);
  return c;
}

ImageProcessorConfig SiglipImageProcessor(int size) { return TileProcessor(size, Statistics::kSiglip); }

ImageProcessorConfig TileProcessor(int size, Statistics statistics) {
  ImageProcessorConfig c;
  c.resize_mode = ResizeMode::kExact;
  c.height = c.width = size;
  c.statistics = StatisticsFor(statistics);
  return c;
}

Image ResizeAndCrop(const Image& image, const ImageProcessorConfig& config) {
  TORCH_CHECK(!image.empty(), "ResizeAndCrop: empty ", image.height, "x", image.width, " image");
  Image out;
  if (config.resize_mode == ResizeMode::kShortestEdge) {
    TORCH_CHECK(config.shortest_edge > 0, "ResizeAndCrop: shortest_edge must be positive, got ", config.shortest_edge);
    // transformers' get_resize_output_image_size(default_to_square=False): int() truncates the long edge.
    const bool portrait = image.width <= image.height;
    const int shorter = portrait ? image.width : image.height;
    const int longer = portrait ? image.height : image.width;
    const int new_short = config.shortest_edge;
    const int new_long = static_cast<int>(static_cast<double>(new_short) * longer / shorter);
    out = portrait ? ResizeBicubic(image, new_long, new_short, config.pass_order)
                   : ResizeBicubic(image, new_short, new_long, config.pass_order);
  } else {
    out = ResizeBicubic(image, config.height, config.width, config.pass_order);
  }
  if (config.crop_height > 0 && config.crop_width > 0) {
    TORCH_CHECK(config.crop_height <= out.height && config.crop_width <= out.width, "ResizeAndCrop: crop ",
                config.crop_height, "x", config.crop_width, " is larger than the resized ", out.height, "x", out.width,
                " image; use a crop no larger than the resize target");
    out = Crop(out, (out.height - config.crop_height) / 2, (out.width - config.crop_width) / 2, config.crop_height,
               config.crop_width);
  }
  return out;
}

at::Tensor Normalize(const Image& image, const PixelStatistics& statistics) {
  at::Tensor out = at::empty({3, image.height, image.width}, at::TensorOptions().dtype(at::kFloat));
  float* data = out.data_ptr<float>();
  const int64_t plane = static_cast<int64_t>(image.height) * image.width;
  for (int c = 0; c < 3; ++c) {
    // transformers rescales (x * (1/255)) and normalises ((x - mean) / std) in float32 numpy arithmetic.
    const float scale = 1.0f / 255.0f;
    const float mean = statistics.mean[c];
    const float std = statistics.std[c];
    for (int64_t p = 0; p < plane; ++p) {
      data[c * plane + p] = (static_cast<float>(image.pixels[p * 3 + c]) * scale - mean) / std;
    }
  }
  return out;
}

at::Tensor Preprocess(const Image& image, const ImageProcessorConfig& config) {
  return Normalize(ResizeAndCrop(image, config), config.statistics);
}

}  // namespace megatron::datasets::image
