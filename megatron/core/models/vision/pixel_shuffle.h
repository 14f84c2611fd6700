// Pixel shuffle (Megatron's multimodal pixel_shuffle, scale 0.5, version 2): merges each 2x2 block of patch
// embeddings into one token with 4x the channels, so an image costs a quarter of the language-model tokens.
//
// x [n, s, c] holds a row-major sq x sq grid of tokens (s = sq^2, token index row * sq + col). The result
// [n, s/4, 4c] holds the grid of 2x2 blocks, row-major over blocks (index i * (sq/2) + j), and block (i, j) is the
// channel-wise concatenation, in this order, of
//   x[2i, 2j], x[2i, 2j+1], x[2i+1, 2j], x[2i+1, 2j+1]
// (research notes §1.4; the reshape/permute chain below is Megatron's, which yields exactly that order).
#pragma once

#include <ATen/core/Tensor.h>

namespace megatron::models::vision {

// TORCH_CHECKs a square grid with an even side.
at::Tensor PixelShuffle(const at::Tensor& x);

}  // namespace megatron::models::vision
