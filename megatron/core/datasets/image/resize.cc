#include "megatron/core/datasets/image/resize.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "c10/util/Exception.h"

namespace megatron::datasets::image {
namespace {

// See Note [PIL bicubic] in resize.h.
constexpr int kPrecisionBits = 32 - 8 - 2;

double BicubicFilter(double x) {
  constexpr double a = -0.5;
  if (x < 0.0) x = -x;
  if (x < 1.0) return ((a + 2.0) * x - (a + 3.0)) * x * x + 1;
  if (x < 2.0) return (((x - 5) * x + 8) * x - 4) * a;
  return 0.0;
}

// Per output pixel: first input tap, tap count, and the fixed-point weights (ksize per pixel).
struct Coefficients {
  int ksize = 0;
  std::vector<int> first;
  std::vector<int> count;
  std::vector<int32_t> weights;
};

Coefficients PrecomputeCoefficients(int in_size, int out_size) {
  constexpr double kSupport = 2.0;
  const double scale = static_cast<double>(in_size) / out_size;
  const double filterscale = std::max(scale, 1.0);
  const double support = kSupport * filterscale;
  Coefficients c;
  c.ksize = static_cast<int>(std::ceil(support)) * 2 + 1;
  c.first.resize(out_size);
  c.count.resize(out_size);
  c.weights.assign(static_cast<size_t>(out_size) * c.ksize, 0);
  std::vector<double> k(c.ksize);
  for (int xx = 0; xx < out_size; ++xx) {
    const double center = (xx + 0.5) * scale;
    const double ss = 1.0 / filterscale;
    // (int) truncates toward zero, as in C; center - support + 0.5 can be negative, then clipped to 0.
    int xmin = static_cast<int>(center - support + 0.5);
    if (xmin < 0) xmin = 0;
    int xmax = static_cast<int>(center + support + 0.5);
    if (xmax > in_size) xmax = in_size;
    xmax -= xmin;
    double ww = 0.0;
    for (int x = 0; x < xmax; ++x) {
      const double w = BicubicFilter((x + xmin - center + 0.5) * ss);
      k[x] = w;
      ww += w;
    }
    for (int x = 0; x < xmax; ++x) {
      if (ww != 0.0) k[x] /= ww;
      // normalize_coeffs_8bpc: round half away from zero.
      const double v = k[x] * (1 << kPrecisionBits);
      c.weights[static_cast<size_t>(xx) * c.ksize + x] = static_cast<int32_t>(v < 0 ? -0.5 + v : 0.5 + v);
    }
    c.first[xx] = xmin;
    c.count[xx] = xmax;
  }
  return c;
}

uint8_t Clip8(int64_t in) {
  if (in >= (int64_t{1} << kPrecisionBits << 8)) return 255;
  if (in <= 0) return 0;
  return static_cast<uint8_t>(in >> kPrecisionBits);
}

Image ResampleHorizontal(const Image& in, int out_width) {
  const Coefficients c = PrecomputeCoefficients(in.width, out_width);
  Image out(in.height, out_width);
  for (int y = 0; y < in.height; ++y) {
    for (int xx = 0; xx < out_width; ++xx) {
      const int32_t* k = &c.weights[static_cast<size_t>(xx) * c.ksize];
      for (int ch = 0; ch < 3; ++ch) {
        int64_t ss = int64_t{1} << (kPrecisionBits - 1);
        for (int x = 0; x < c.count[xx]; ++x) ss += int64_t{in.at(y, c.first[xx] + x)[ch]} * k[x];
        out.at(y, xx)[ch] = Clip8(ss);
      }
    }
  }
  return out;
}

Image ResampleVertical(const Image& in, int out_height) {
  const Coefficients c = PrecomputeCoefficients(in.height, out_height);
  Image out(out_height, in.width);
  for (int yy = 0; yy < out_height; ++yy) {
    const int32_t* k = &c.weights[static_cast<size_t>(yy) * c.ksize];
    for (int x = 0; x < in.width; ++x) {
      for (int ch = 0; ch < 3; ++ch) {
        int64_t ss = int64_t{1} << (kPrecisionBits - 1);
        for (int y = 0; y < c.count[yy]; ++y) ss += int64_t{in.at(c.first[yy] + y, x)[ch]} * k[y];
        out.at(yy, x)[ch] = Clip8(ss);
      }
    }
  }
  return out;
}

}  // namespace

Image ResizeBicubic(const Image& image, int height, int width, PassOrder order) {
  TORCH_CHECK(height > 0 && width > 0, "ResizeBicubic: target size ", height, "x", width, " must be positive");
  TORCH_CHECK(!image.empty(), "ResizeBicubic: cannot resize an empty ", image.height, "x", image.width, " image");
  if (order == PassOrder::kAuto) {
    order = height < image.height && width >= image.width ? PassOrder::kVerticalFirst : PassOrder::kHorizontalFirst;
  }
  Image out = image;
  if (order == PassOrder::kVerticalFirst) {
    if (height != out.height) out = ResampleVertical(out, height);
    if (width != out.width) out = ResampleHorizontal(out, width);
  } else {
    if (width != out.width) out = ResampleHorizontal(out, width);
    if (height != out.height) out = ResampleVertical(out, height);
  }
  return out;
}

}  // namespace megatron::datasets::image
