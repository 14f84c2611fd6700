// Helpers shared by the BERT and T5 parity tests.
#pragma once

#include <algorithm>
#include <map>
#include <string>

#include <ATen/TensorOperators.h>
#include <ATen/core/Tensor.h>
#include <gtest/gtest.h>

#include "megatron/core/checkpointing/safetensors.h"

namespace megatron::testing {

// Float32 against HuggingFace's float32 (and its float64 rerun): rounding only.
constexpr double kRelTol = 1e-5;

// max |a - b| / max |b|: the relative error of a tensor as a whole.
inline double RelativeError(const at::Tensor& actual, const at::Tensor& expected) {
  const double scale = expected.abs().max().item<double>();
  return (actual.to(at::kDouble) - expected.to(at::kDouble)).abs().max().item<double>() / std::max(scale, 1e-30);
}

inline std::map<std::string, at::Tensor> LoadExpected(const std::string& dir) {
  auto expected = checkpointing::LoadSafetensors(dir + "/expected.safetensors");
  EXPECT_TRUE(expected.ok()) << expected.status();
  return expected.ok() ? *expected : std::map<std::string, at::Tensor>();
}

// The HF gradients ("grad.<hf name>") under their HF names.
inline std::map<std::string, at::Tensor> HfGradients(const std::map<std::string, at::Tensor>& expected) {
  std::map<std::string, at::Tensor> out;
  for (const auto& [name, tensor] : expected) {
    if (name.rfind("grad.", 0) == 0) out[name.substr(5)] = tensor;
  }
  return out;
}

}  // namespace megatron::testing
