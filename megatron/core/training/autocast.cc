#include "megatron/core/training/autocast.h"

#include <ATen/autocast_mode.h>

namespace megatron::training {

AutocastGuard::AutocastGuard(c10::DeviceType device_type, Precision precision)
    : device_type_(device_type), active_(precision == Precision::kBf16), previous_(false) {
  if (!active_) return;
  previous_ = at::autocast::is_autocast_enabled(device_type_);
  at::autocast::set_autocast_dtype(device_type_, at::kBFloat16);
  at::autocast::set_autocast_enabled(device_type_, true);
}

AutocastGuard::~AutocastGuard() {
  if (!active_) return;
  at::autocast::set_autocast_enabled(device_type_, previous_);
  // Casts of the fp32 weights are cached for the duration of a step; drop them so the next step sees updates.
  at::autocast::clear_cache();
}

}  // namespace megatron::training
