// MegatronModule: the base of every model component (Megatron's megatron/core/transformer/module.py).
//
// A deliberately small replacement for torch::nn::Module, which costs ~10 s of compile time per file that
// includes it. A module owns named parameters (at::Tensor handles with requires_grad) and named children.
// Parameter names follow Megatron core's state-dict keys ("decoder.layers.0.self_attention.linear_qkv.weight")
// so checkpoints map one to one onto Megatron's.
//
// Parameters are registered as handles: the member `weight_` and the registry entry share one TensorImpl, so
// in-place updates (optimizer steps, state-dict loads, device moves through set_data) are seen by both.
#pragma once

#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <ATen/core/Tensor.h>

#include "absl/status/status.h"

namespace megatron::transformer {

enum class LoadMode { kStrict, kNonStrict };

class MegatronModule {
 public:
  MegatronModule() = default;
  MegatronModule(const MegatronModule&) = delete;
  MegatronModule& operator=(const MegatronModule&) = delete;
  virtual ~MegatronModule() = default;

  // Every parameter of this module and its descendants, in registration order, with dotted names.
  std::vector<std::pair<std::string, at::Tensor>> NamedParameters() const;
  std::vector<at::Tensor> Parameters() const;
  int64_t NumParameters() const;

  // Detached copies keyed by name (what a checkpoint stores).
  std::map<std::string, at::Tensor> StateDict() const;
  // Copies values into the parameters (converting dtype/device). kStrict: every parameter must be present and
  // nothing else; either way a shape mismatch is an error. The message lists missing/unexpected/mismatched keys.
  absl::Status LoadStateDict(const std::map<std::string, at::Tensor>& state, LoadMode mode);

  // Training mode turns dropout on; evaluation mode off. Applies to the whole subtree.
  void SetTraining(bool training);
  bool training() const { return training_; }

  // Moves every parameter to `device` in place (handles stay valid).
  void ToDevice(const at::Device& device);

 protected:
  // Registers a parameter; returns the handle to keep as a member. Sets requires_grad.
  at::Tensor RegisterParameter(const std::string& name, at::Tensor value);
  // Registers a child; the module keeps ownership and returns a raw pointer for the member.
  template <typename M>
  M* RegisterModule(const std::string& name, std::unique_ptr<M> child) {
    M* raw = child.get();
    children_.emplace_back(name, std::move(child));
    return raw;
  }

 private:
  void CollectParameters(const std::string& prefix, std::vector<std::pair<std::string, at::Tensor>>* out) const;

  bool training_ = true;
  std::vector<std::pair<std::string, at::Tensor>> parameters_;
  std::vector<std::pair<std::string, std::unique_ptr<MegatronModule>>> children_;
};

}  // namespace megatron::transformer
