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
//     when the height shrinks. Its rule is not documented and we could not recover it from outputs (no cost
//     model, scale ratio or kernel-size rule we fitted reproduces it; it also depends on the aspect ratio).
//     Measured with Pillow 13.0 (each resize's order told apart by Pillow's own single-axis resizes): a
//     growing height always goes horizontal first; a shrinking height with a non-shrinking width always goes
//     vertical first (92 of 92 random cases); when both shrink, 276 of 408 random cases (sizes 20-400) went
//     horizontal first, as did every aspect-preserving resize tried (CLIP's shortest-edge resize of 640x480,
//     480x640, 1280x720, 500x375, ... to 224/336/384), while square resizes of portrait images often go
//     vertical first (480x640 -> 336x336). kAuto follows the measured part exactly and picks horizontal first
//     when both shrink, so it can be off only then, by a few uint8 levels (<= 8 seen; <= 0.12 after CLIP
//     normalisation). Use kHorizontalFirst to match Pillow <= 12 exactly.
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
