// Shared by the fused-kernel tests (norm, cross_entropy, ...): tolerances by dtype (STYLE.md), an every-element
// comparison, and the row counts every unit sweeps.
#pragma once

#include <ATen/TensorOperators.h>
#include <ATen/core/Tensor.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <sstream>
#include <string>
#include <vector>

namespace megatron::fusions::testing {

struct Tolerance {
  double rtol;
  double atol;
};

// rtol by dtype (STYLE.md): float32 1e-5, bfloat16 2e-2 (8-bit mantissa: one rounding is up to 2^-8 relative, and
// two independent roundings may land an ulp apart), float16 5e-3 (11-bit mantissa). atol equals rtol: values
// near zero come from cancellations whose absolute error scales with the O(1) terms, not the result.
inline Tolerance ToleranceFor(at::ScalarType dtype) {
  switch (dtype) {
    case at::kBFloat16:
      return {2e-2, 2e-2};
    case at::kHalf:
      return {5e-3, 5e-3};
    case at::kDouble:
      return {1e-12, 1e-12};
    default:
      return {1e-5, 1e-5};
  }
}

// Every element: |actual - expected| <= atol + rtol * |expected|, and actual finite. Reports the count and the
// first few offenders with their flat index.
inline ::testing::AssertionResult AllClose(const at::Tensor& actual, const at::Tensor& expected, Tolerance tol) {
  if (actual.sizes() != expected.sizes()) {
    std::ostringstream os;
    os << "shape " << actual.sizes() << " != expected " << expected.sizes();
    return ::testing::AssertionFailure() << os.str();
  }
  const at::Tensor a = actual.detach().to(at::kCPU).to(at::kDouble).contiguous();
  const at::Tensor e = expected.detach().to(at::kCPU).to(at::kDouble).contiguous();
  const double* ap = a.data_ptr<double>();
  const double* ep = e.data_ptr<double>();
  int64_t bad = 0;
  std::ostringstream first;
  for (int64_t i = 0; i < a.numel(); ++i) {
    const double diff = std::abs(ap[i] - ep[i]);
    if (!std::isfinite(ap[i]) || !std::isfinite(ep[i]) || !(diff <= tol.atol + tol.rtol * std::abs(ep[i]))) {
      if (bad < 5) first << "\n  [" << i << "] got " << ap[i] << " expected " << ep[i] << " (diff " << diff << ")";
      ++bad;
    }
  }
  if (bad == 0) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << bad << " of " << a.numel() << " elements outside atol " << tol.atol
                                       << " + rtol " << tol.rtol << " * |expected|:" << first.str();
}

// Row counts: one, a small odd number, and more rows than a block handles at once.
inline std::vector<int64_t> AwkwardRows() { return {1, 3, 257}; }

inline std::string DtypeName(at::ScalarType t) { return std::string(c10::toString(t)); }

}  // namespace megatron::fusions::testing
