// Image -> normalised float tensor [3, H, W], matching HuggingFace's PIL-backed image processors:
//   CLIPImageProcessor:   resize the shortest edge to `shortest_edge` (long edge int(size * long / short)),
//                         bicubic; center crop (top = (h - crop_h) / 2, left = (w - crop_w) / 2); rescale 1/255;
//                         normalise with OpenAI CLIP's mean/std.
//   SiglipImageProcessor: resize to height x width, bicubic; rescale 1/255; normalise with mean = std = 0.5.
// Megatron's examples/multimodal tiles use the exact-resize form with the statistics of the encoder
// (research notes §4.8): kExact + PixelStatistics(kClip) for CLIP tiles, no center crop.
// Resizing is PIL's bicubic (resize.h); the uint8 result is then scaled and normalised in float32. Against
// transformers (tested on odd-sized fixtures) the tensors agree to float32 rounding (~1e-7), except that with
// Pillow 13 a resize shrinking both dimensions may take the other pass order (Note [PIL bicubic]) and then
// differs by a few uint8 levels; CLIP's aspect-preserving resize was never affected in our measurements.
#pragma once

#include <array>

#include "ATen/core/Tensor.h"
#include "megatron/core/datasets/image/image.h"
#include "megatron/core/datasets/image/resize.h"

namespace megatron::datasets::image {

enum class Statistics { kClip, kSiglip, kImageNet };

struct PixelStatistics {
  std::array<float, 3> mean;
  std::array<float, 3> std;
};
PixelStatistics StatisticsFor(Statistics which);

enum class ResizeMode {
  kShortestEdge,  // CLIP: shortest edge -> shortest_edge, aspect kept (then usually center-cropped)
  kExact,         // SigLIP / Megatron tiles: straight to height x width
};

struct ImageProcessorConfig {
  ResizeMode resize_mode = ResizeMode::kExact;
  int shortest_edge = 224;  // kShortestEdge
  int height = 224;         // kExact
  int width = 224;
  int crop_height = 0;      // 0: no center crop
  int crop_width = 0;
  PixelStatistics statistics = StatisticsFor(Statistics::kSiglip);
  PassOrder pass_order = PassOrder::kAuto;  // resize.h: which Pillow the uint8 resize follows
};

// HuggingFace defaults: CLIPImageProcessor(size={"shortest_edge": size}, crop_size=size) and
// SiglipImageProcessor(size={"height": size, "width": size}).
ImageProcessorConfig ClipImageProcessor(int size = 224);
ImageProcessorConfig SiglipImageProcessor(int size = 224);
// Megatron's per-tile transform: exact resize to size x size, the given statistics.
ImageProcessorConfig TileProcessor(int size, Statistics statistics);

// The uint8 geometry steps (resize, then center crop).
Image ResizeAndCrop(const Image& image, const ImageProcessorConfig& config);

// (pixel / 255 - mean) / std as float32 [3, H, W].
at::Tensor Normalize(const Image& image, const PixelStatistics& statistics);

// ResizeAndCrop then Normalize.
at::Tensor Preprocess(const Image& image, const ImageProcessorConfig& config);

}  // namespace megatron::datasets::image
