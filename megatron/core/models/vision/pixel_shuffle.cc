#include "megatron/core/models/vision/pixel_shuffle.h"

#include <cmath>

namespace megatron::models::vision {

at::Tensor PixelShuffle(const at::Tensor& x) {
  TORCH_CHECK(x.dim() == 3, "PixelShuffle: expected [n, s, c], got ", x.sizes());
  const int64_t n = x.size(0), s = x.size(1), c = x.size(2);
  const int64_t sq = std::llround(std::sqrt(static_cast<double>(s)));
  TORCH_CHECK(sq * sq == s && sq % 2 == 0, "PixelShuffle: ", s,
              " tokens are not a square grid with an even side (drop the class token first)");
  // Megatron's chain with h = w = sq: [n, w, h, c] -> [n, w, h/2, 2c] -> permute -> [n, h/2, w, 2c]
  // -> [n, h/2, w/2, 4c] -> permute (version 2) -> [n, w/2, h/2, 4c] -> [n, s/4, 4c].
  at::Tensor y = x.reshape({n, sq, sq / 2, 2 * c});
  y = y.permute({0, 2, 1, 3}).contiguous().view({n, sq / 2, sq / 2, 4 * c});
  return y.permute({0, 2, 1, 3}).contiguous().reshape({n, s / 4, 4 * c});
}

}  // namespace megatron::models::vision
