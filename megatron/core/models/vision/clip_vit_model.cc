#include "megatron/core/models/vision/clip_vit_model.h"

#include <cmath>
#include <optional>
#include <utility>

#include <ATen/TensorOperators.h>
#include <ATen/ops/cat.h>
#include <ATen/ops/conv2d.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/randn.h>

#include "absl/strings/str_cat.h"

namespace megatron::models::vision {

absl::StatusOr<std::unique_ptr<CLIPViTModel>> CLIPViTModel::Create(const VisionConfig& config,
                                                                   const transformer::ModelParallel& parallel) {
  if (absl::Status s = config.Validate(); !s.ok()) return s;
  const int tp = parallel.tp_size();
  const std::pair<const char*, int> fields[] = {
      {"vision_model.num_attention_heads", config.transformer.num_attention_heads},
      {"vision_model.ffn_hidden_size", config.transformer.ffn_hidden_size}};
  for (const auto& [name, value] : fields) {
    if (value % tp != 0) {
      return absl::InvalidArgumentError(
          absl::StrCat(name, "=", value, " is not divisible by the tensor-parallel size ", tp));
    }
  }
  absl::StatusOr<std::shared_ptr<const transformer::BackendProvider>> backend =
      transformer::GetBackend(config.transformer.backend);
  if (!backend.ok()) return backend.status();
  return std::unique_ptr<CLIPViTModel>(new CLIPViTModel(config, *backend, parallel));
}

CLIPViTModel::CLIPViTModel(const VisionConfig& config, std::shared_ptr<const transformer::BackendProvider> backend,
                           const transformer::ModelParallel& parallel)
    : config_(config) {
  const int64_t h = config.transformer.hidden_size, p = config.patch_dim;
  const bool clip = config.model_subtype == VisionSubtype::kClip;
  // nn.Conv2d's default init: kaiming_uniform(a=sqrt(5)) = U(-1/sqrt(fan_in), 1/sqrt(fan_in)), bias likewise.
  const double bound = 1.0 / std::sqrt(static_cast<double>(3 * p * p));
  auto* conv1 = RegisterModule("conv1", std::make_unique<Params>());
  conv1_weight_ = conv1->Add("weight", at::empty({h, 3, p, p}).uniform_(-bound, bound));
  if (!clip) conv1_bias_ = conv1->Add("bias", at::empty({h}).uniform_(-bound, bound));
  if (config.add_class_token) {
    class_token_ = RegisterParameter("class_token", at::randn({1, config.class_token_len, h}));
  }
  auto* positions = RegisterModule("position_embeddings", std::make_unique<Params>());
  position_embeddings_ = positions->Add("weight", at::randn({config.seq_length(), h}));
  // Megatron builds ln_pre/ln_post with the encoder's own norm and epsilon.
  if (clip) ln_pre_ = RegisterModule("ln_pre", backend->MakeNorm(config.transformer, h));
  decoder_ = RegisterModule("decoder", std::make_unique<transformer::TransformerBlock>(
                                          config.transformer, backend, transformer::ModelParallel{parallel.tp, false}));
  if (!clip) ln_post_ = RegisterModule("ln_post", backend->MakeNorm(config.transformer, h));
}

at::Tensor CLIPViTModel::Forward(const at::Tensor& images) const {
  TORCH_CHECK(images.dim() == 4 && images.size(1) == 3 && images.size(2) == config_.img_h &&
                  images.size(3) == config_.img_w,
              "CLIPViTModel: expected images [b, 3, ", config_.img_h, ", ", config_.img_w, "], got ", images.sizes(),
              " (resize or tile images to the encoder's resolution first)");
  const int64_t p = config_.patch_dim;
  at::Tensor x = at::conv2d(images, conv1_weight_,
                            conv1_bias_.defined() ? std::optional<at::Tensor>(conv1_bias_) : std::nullopt, {p, p});
  x = x.flatten(2).transpose(1, 2);  // [b, h, H/p, W/p] -> [b, patches, h], patches row-major
  if (class_token_.defined()) {
    x = at::cat({class_token_.expand({x.size(0), -1, -1}).to(x.scalar_type()), x}, 1);
  }
  x = x + position_embeddings_;
  if (ln_pre_ != nullptr) x = ln_pre_->Forward(x);
  x = decoder_->Forward(x.transpose(0, 1).contiguous(), at::Tensor(), nullptr);  // [s, b, h]
  x = x.transpose(0, 1).contiguous();                                            // [b, s, h]
  if (ln_post_ != nullptr) x = ln_post_->Forward(x);
  return x;
}

}  // namespace megatron::models::vision
