#include "megatron/core/models/multimodal/llava_model.h"

#include <ATen/ops/cat.h>

#include <ATen/TensorOperators.h>
#include <ATen/ops/ones.h>
#include <ATen/ops/where.h>
#include <ATen/ops/zeros.h>

#include "absl/strings/str_cat.h"
#include "megatron/core/models/vision/pixel_shuffle.h"

namespace megatron::models::multimodal {

int64_t LlavaConfig::img_seq_len() const {
  int64_t n = vision.seq_length();
  if (drop_vision_class_token && vision.add_class_token) n -= vision.class_token_len;
  if (pixel_shuffle) n /= 4;
  return n;
}

absl::Status LlavaConfig::Validate() const {
  if (absl::Status s = language.Validate(); !s.ok()) return s;
  if (absl::Status s = vision.Validate(); !s.ok()) return s;
  if (absl::Status s = projector.Validate(); !s.ok()) return s;
  if (language_padding.cp < 1 || language_padding.tp < 1) {
    return absl::InvalidArgumentError(absl::StrCat("language_padding: cp=", language_padding.cp, " and tp=",
                                                   language_padding.tp, " must be >= 1"));
  }
  if (vision.model_subtype == vision::VisionSubtype::kSiglip && drop_vision_class_token) {
    return absl::InvalidArgumentError(
        "drop_vision_class_token: SigLIP has no class token; set it to false (Megatron asserts the same)");
  }
  const int64_t vision_out = static_cast<int64_t>(vision.transformer.hidden_size) * (pixel_shuffle ? 4 : 1);
  if (projector.input_size != vision_out) {
    return absl::InvalidArgumentError(absl::StrCat("projector.input_size: ", projector.input_size,
                                                   " must equal the vision hidden size", pixel_shuffle ? " x 4" : "",
                                                   " = ", vision_out));
  }
  if (projector.hidden_size != language.hidden_size) {
    return absl::InvalidArgumentError(absl::StrCat("projector.hidden_size: ", projector.hidden_size,
                                                   " must equal the language model's hidden_size ",
                                                   language.hidden_size));
  }
  if (pixel_shuffle) {
    const int64_t patches_per_side = vision.img_h / vision.patch_dim;
    if (vision.img_h != vision.img_w || patches_per_side % 2 != 0 ||
        (vision.add_class_token && !drop_vision_class_token)) {
      return absl::InvalidArgumentError(
          "pixel_shuffle: needs a square image with an even number of patches per side and no class token "
          "(set drop_vision_class_token)");
    }
  }
  const int max_len = language_max_sequence_length > 0 ? language_max_sequence_length
                                                       : language.max_position_embeddings;
  if (img_seq_len() >= max_len) {
    return absl::InvalidArgumentError(absl::StrCat("language_max_sequence_length: ", max_len,
                                                   " must exceed the ", img_seq_len(), " embeddings of one tile"));
  }
  if (image_token_index >= 0 && image_token_index >= language.vocab_size) {
    return absl::InvalidArgumentError(absl::StrCat("image_token_index: ", image_token_index,
                                                   " is outside the vocabulary of ", language.vocab_size));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<LLaVAModel>> LLaVAModel::Create(const LlavaConfig& config) {
  if (absl::Status s = config.Validate(); !s.ok()) return s;
  auto lm = GPTModel::Create(config.language);
  if (!lm.ok()) return lm.status();
  auto vit = vision::CLIPViTModel::Create(config.vision);
  if (!vit.ok()) return vit.status();
  auto projector = vision::MultimodalProjector::Create(config.projector);
  if (!projector.ok()) return projector.status();
  return std::unique_ptr<LLaVAModel>(
      new LLaVAModel(config, std::move(*lm), std::move(*vit), std::move(*projector)));
}

LLaVAModel::LLaVAModel(const LlavaConfig& config, std::unique_ptr<GPTModel> lm,
                       std::unique_ptr<vision::CLIPViTModel> vit,
                       std::unique_ptr<vision::MultimodalProjector> projector)
    : config_(config) {
  language_model_ = RegisterModule("language_model", std::move(lm));
  vision_model_ = RegisterModule("vision_model", std::move(vit));
  vision_projection_ = RegisterModule("vision_projection", std::move(projector));
}

at::Tensor LLaVAModel::EncodeImages(const at::Tensor& images) const {
  TORCH_CHECK(images.dim() == 4 && images.size(1) == 3 && images.size(2) == config_.vision.img_h &&
                  images.size(3) == config_.vision.img_w,
              "LLaVAModel: images must be [tiles, 3, ", config_.vision.img_h, ", ", config_.vision.img_w, "], got ",
              images.sizes());
  at::Tensor x = vision_model_->Forward(images);  // [tiles, seq_v, h_v]
  if (config_.drop_vision_class_token && config_.vision.add_class_token) {
    x = x.narrow(1, config_.vision.class_token_len, x.size(1) - config_.vision.class_token_len);
  }
  if (config_.pixel_shuffle) x = vision::PixelShuffle(x);
  x = x.permute({1, 0, 2}).contiguous();  // [img_seq, tiles, h_v]
  return vision_projection_->Forward(x);  // [img_seq, tiles, h]
}

LlavaOutput LLaVAModel::Forward(const at::Tensor& images, const at::Tensor& input_ids, const at::Tensor& labels,
                                const at::Tensor& loss_mask, const at::Tensor& num_image_tiles,
                                transformer::KVCache* cache) const {
  TORCH_CHECK(input_ids.dim() == 2, "LLaVAModel: input_ids must be [b, t], got ", input_ids.sizes());
  const bool has_images = images.defined() && images.numel() > 0;
  at::Tensor image_embeddings;
  at::Tensor tiles = num_image_tiles;
  if (has_images) {
    image_embeddings = EncodeImages(images);
    if (!tiles.defined()) tiles = at::ones({images.size(0)}, input_ids.options().dtype(at::kLong));
  } else {
    tiles = at::zeros({0}, input_ids.options().dtype(at::kLong));
    bool projector_trainable = false;
    for (const at::Tensor& p : vision_projection_->Parameters()) projector_trainable |= p.requires_grad();
    if (projector_trainable && cache == nullptr) {
      // Megatron's zero projection anchor: keeps the projector in the graph of text-only batches, so that every
      // data-parallel rank reduces the same gradients.
      image_embeddings = vision_projection_->Forward(
          at::zeros({1, 1, config_.projector.input_size}, language_model_->Parameters()[0].options()));
    }
  }
  // Text embeddings, with image tokens read as id 0 (their rows are replaced by the splice).
  const at::Tensor text_ids = at::where(input_ids == config_.image_token_index, at::zeros_like(input_ids), input_ids);
  const at::Tensor text = language_model_->EmbedTokens(text_ids, at::Tensor()).transpose(0, 1);  // [b, t, h]

  SpliceInputs in;
  in.image_embeddings = image_embeddings;
  in.language_embeddings = text;
  in.input_ids = input_ids;
  in.labels = labels;
  in.loss_mask = loss_mask;
  in.num_image_tiles = tiles;
  in.image_token_index = config_.image_token_index;
  in.img_seq_len = config_.img_seq_len();
  in.language_max_sequence_length = config_.language_max_sequence_length > 0
                                        ? config_.language_max_sequence_length
                                        : config_.language.max_position_embeddings;
  SpliceOutputs spliced = SpliceImageEmbeddings(in);
  const parallel_state::PaddingOptions& pad_for = config_.language_padding;
  if (labels.defined() && (pad_for.sequence_parallel || pad_for.cp > 1)) {
    const int64_t length = spliced.embeddings.size(1);
    absl::StatusOr<int64_t> pad = parallel_state::ContextParallelPadding(length, pad_for);
    TORCH_CHECK(pad.ok(), "LLaVAModel: ", std::string(pad.status().message()));
    if (*pad > 0) {
      const int64_t b = spliced.embeddings.size(0);
      spliced.embeddings =
          at::cat({spliced.embeddings, at::zeros({b, *pad, spliced.embeddings.size(2)}, spliced.embeddings.options())},
                  1);
      spliced.labels = at::cat({spliced.labels, at::zeros({b, *pad}, spliced.labels.options())}, 1);
      if (spliced.loss_mask.defined()) {
        spliced.loss_mask = at::cat({spliced.loss_mask, at::zeros({b, *pad}, spliced.loss_mask.options())}, 1);
      }
    }
  }
  const at::Tensor decoder_input = spliced.embeddings.transpose(0, 1);  // [S, b, h]
  LlavaOutput out;
  out.loss_mask = spliced.loss_mask;
  out.labels = spliced.labels;
  out.output = labels.defined() ? language_model_->LossFromEmbeddings(decoder_input, spliced.labels)
                                : language_model_->LogitsFromEmbeddings(decoder_input, cache);
  return out;
}

void LLaVAModel::Freeze(bool language_model, bool vision_model, bool vision_projection) {
  const std::pair<bool, const transformer::MegatronModule*> parts[] = {
      {language_model, language_model_}, {vision_model, vision_model_}, {vision_projection, vision_projection_}};
  for (const auto& [freeze, module] : parts) {
    if (!freeze) continue;
    for (at::Tensor p : module->Parameters()) p.set_requires_grad(false);
  }
}

}  // namespace megatron::models::multimodal
