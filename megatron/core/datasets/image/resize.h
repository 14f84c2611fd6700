// PIL's bicubic resampling (Image.resize(size, Image.BICUBIC)), re-implemented so that preprocessing matches
// HuggingFace's PIL-backed image processors (CLIPImageProcessorPil, SiglipImageProcessorPil) and torchvision's
// Resize on PIL images, which Megatron's examples/multimodal uses.
//
// Note [PIL bicubic] (Pillow src/libImaging/Resample.c, ImagingResampleInner / precompute_coeffs / normalize_coeffs_8bpc):
//   * Separable: a horizontal pass (when the width changes) into uint8, then a vertical pass (when the height
//     changes). The intermediate image is rounded to uint8, so the result differs from a float two-pass resize.
//   * Kernel: Keys cubic with a = -0.5, support 2. When shrinking, the kernel is stretched by the scale
//     (antialiasing): support = 2 * max(scale, 1), taps evaluated at (x - center + 0.5) / max(scale, 1).
//   * Output pixel i samples around center = (i + 0.5) * scale, taps x in [int(center - support + 0.5),
//     int(center + support + 0.5)) clipped to the image; weights normalised to sum 1.
//   * 8-bit fixed point: weights are rounded to ints with 22 fractional bits (away from zero), the accumulator
//     starts at 1 << 21 (round half up) and the result is shifted back and clamped to [0, 255].
//   * Pass order: Pillow <= 12 always runs the horizontal pass first. Pillow 13 (PR #9549, "if height is scaled
//     down significantly more than width, resize vertically first") sometimes runs the vertical pass first
//     when the height shrinks; its exact rule is not documented and we could not pin it down from outputs
//     (no cost model or scale-ratio rule we tried reproduces it). Measured on random sizes: growing heights
//     always go horizontal first, a shrinking height with a non-shrinking width always vertical first, and
//     when both shrink, mostly (~80%) horizontal first. kAuto follows exactly that ("vertical first iff the
//     height shrinks and the width does not"), so it is wrong only for some images shrunk in both directions,
//     where pixels then differ by a few uint8 levels (<= 8 seen; that is <= 0.06 after CLIP normalisation).
// With the same pass order our output equals Pillow's byte for byte (resize tests label each fixture resize
// with the order Pillow used, found with Pillow's own single-axis resizes).
#pragma once

#include "megatron/core/datasets/image/image.h"

namespace megatron::datasets::image {

enum class PassOrder {
  kAuto,             // Pillow 13's choice, approximated (see above)
  kHorizontalFirst,  // Pillow <= 12
  kVerticalFirst,
};

// Resizes to height x width with PIL's BICUBIC filter. Same size returns a copy.
Image ResizeBicubic(const Image& image, int height, int width, PassOrder order = PassOrder::kAuto);

}  // namespace megatron::datasets::image
