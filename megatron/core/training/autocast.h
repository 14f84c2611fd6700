// Mixed precision by autocast (bf16 matmuls; norms, softmax and losses stay fp32; fp32 master weights).
// Kept in its own file because ATen/autocast_mode.h is expensive to compile.
#pragma once

#include <c10/core/DeviceType.h>

namespace megatron::training {

enum class Precision { kFp32, kBf16 };

// Turns bf16 autocast on for `device_type` for the guard's lifetime (no-op for kFp32).
class AutocastGuard {
 public:
  AutocastGuard(c10::DeviceType device_type, Precision precision);
  ~AutocastGuard();
  AutocastGuard(const AutocastGuard&) = delete;
  AutocastGuard& operator=(const AutocastGuard&) = delete;

 private:
  c10::DeviceType device_type_;
  bool active_;
  bool previous_;
};

}  // namespace megatron::training
