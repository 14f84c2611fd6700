// How a weight is initialised (split out of layers.h so the tensor-parallel layers can use it without
// depending on the transformer library, which builds on them).
#pragma once

namespace megatron::transformer {

// N(0, std) as Megatron's init_method_normal / scaled_init_method_normal.
struct InitMethod {
  double std = 0.02;
};

}  // namespace megatron::transformer
