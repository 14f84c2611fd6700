#include <ATen/core/Tensor.h>
#include <ATen/ops/matmul.h>
#include <ATen/ops/randn.h>
#include <ATen/ops/ones.h>
#include <gtest/gtest.h>
#include "absl/strings/str_cat.h"
#include "absl/status/statusor.h"

TEST(Smoke, Autograd) {
  at::Tensor a = at::randn({3, 4}).set_requires_grad(true);
  at::Tensor b = at::ones({4, 2});
  at::Tensor c = at::matmul(a, b).sum();
  c.backward();
  EXPECT_TRUE(a.grad().defined());
  EXPECT_EQ(absl::StrCat("a", 1), "a1");
}
