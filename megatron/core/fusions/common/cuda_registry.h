// Where the CUDA half of a fused-kernel unit plugs in. Each unit's CPU library (contract, reference, dispatch)
// stays free of CUDA; its *_cuda.cc (alwayslink) registers the forward and backward entry points from a static
// initialiser, and the dispatcher sends CUDA tensors there. Written once before main and only read afterwards,
// so no lock. One registry per (Tag, ForwardFn, BackwardFn) type triple; a second registration replaces the first.
#pragma once

#include <c10/util/Exception.h>

namespace megatron::fusions::common {

template <typename Tag, typename ForwardFn, typename BackwardFn>
class CudaImplRegistry {
 public:
  static void Register(ForwardFn forward, BackwardFn backward) {
    Fns().forward = forward;
    Fns().backward = backward;
  }

  static bool Has() { return Fns().forward != nullptr && Fns().backward != nullptr; }

  // op names the caller for the error; target is the Bazel target that registers the kernels.
  static ForwardFn Forward(const char* op, const char* target) {
    Check(op, target);
    return Fns().forward;
  }
  static BackwardFn Backward(const char* op, const char* target) {
    Check(op, target);
    return Fns().backward;
  }

 private:
  struct Pair {
    ForwardFn forward = nullptr;
    BackwardFn backward = nullptr;
  };

  static Pair& Fns() {
    static Pair pair;  // function-local: safe to use from other translation units' static initialisers
    return pair;
  }

  static void Check(const char* op, const char* target) {
    TORCH_CHECK(Has(), op, ": got CUDA tensors but this binary has no CUDA kernels for it; build with --config=cuda ",
                "and depend on ", target, " (or move the tensors to the CPU)");
  }
};

}  // namespace megatron::fusions::common
