#include "megatron/core/training/llava_combine.h"

#include <filesystem>
#include <map>
#include <optional>
#include <vector>

#include <ATen/core/Tensor.h>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "megatron/core/checkpointing/checkpoint.h"
#include "megatron/core/models/huggingface/hf_vision.h"
#include "megatron/core/training/recipe.h"

namespace megatron::training {
namespace {

namespace fs = std::filesystem;
using StateDict = std::map<std::string, at::Tensor>;

constexpr int64_t kCombinedIteration = 1;  // combine_lm_vision_checkpoints.sh writes iter_0000001 and "1"

bool AnyKeyStartsWith(const StateDict& state, absl::string_view prefix) {
  for (const auto& [name, tensor] : state) {
    if (absl::StartsWith(name, prefix)) return true;
  }
  return false;
}

// The part of `state` under `prefix`, with the prefix removed.
StateDict Strip(const StateDict& state, absl::string_view prefix) {
  StateDict out;
  for (const auto& [name, tensor] : state) {
    if (absl::StartsWith(name, prefix)) out.emplace(name.substr(prefix.size()), tensor);
  }
  return out;
}

// The latest checkpoint of `dir`, model tensors only. `flag` names the input in errors.
absl::StatusOr<checkpointing::Checkpoint> LoadInput(const std::string& dir, const std::string& flag) {
  if (!fs::is_directory(dir)) return absl::NotFoundError(absl::StrCat(flag, ": ", dir, " is not a directory"));
  absl::StatusOr<std::optional<int64_t>> latest = checkpointing::LatestIteration(dir);
  if (!latest.ok()) return absl::InvalidArgumentError(absl::StrCat(flag, ": ", latest.status().message()));
  if (!latest->has_value()) {
    return absl::NotFoundError(absl::StrCat(flag, ": no checkpoint in ", dir,
                                            " (latest_checkpointed_iteration.txt is missing)"));
  }
  const std::string iteration_dir = checkpointing::IterationDirectory(dir, **latest);
  if (!fs::exists(iteration_dir + "/model.safetensors") && fs::is_directory(iteration_dir)) {
    for (const auto& entry : fs::directory_iterator(iteration_dir)) {
      if (absl::StartsWith(entry.path().filename().string(), "mp_rank_")) {
        return absl::UnimplementedError(absl::StrCat(
            flag, ": ", iteration_dir, " is a tensor-parallel sharded Megatron checkpoint (mp_rank_NN/); only whole "
            "checkpoints in this repository's format are supported (merge the shards to one rank first)"));
      }
    }
  }
  absl::StatusOr<checkpointing::Checkpoint> ckpt =
      checkpointing::LoadCheckpoint(dir, **latest, checkpointing::LoadParts::kModelOnly);
  if (!ckpt.ok()) return absl::InvalidArgumentError(absl::StrCat(flag, ": ", ckpt.status().message()));
  return ckpt;
}

// A GPT (core tree) checkpoint's tensors, or an error saying which family it is instead.
absl::Status CheckLanguageModelFamily(const StateDict& state, const std::string& where) {
  if (AnyKeyStartsWith(state, "vision_model.") || AnyKeyStartsWith(state, "vision_projection.")) {
    return absl::InvalidArgumentError(absl::StrCat(where, ": is a LLaVA checkpoint (vision_model.*), not a language "
                                                   "model one; pass the GPT checkpoint the language model came from"));
  }
  if (AnyKeyStartsWith(state, "language_model.")) {
    return absl::InvalidArgumentError(absl::StrCat(
        where, ": is a legacy-tree checkpoint (language_model.*); convert it to core names first: bazel run "
        "//tools:convert_checkpoint -- --model=gpt --direction=legacy_to_core --input=DIR --output=DIR_core"));
  }
  if (AnyKeyStartsWith(state, "encoder.")) {
    return absl::InvalidArgumentError(absl::StrCat(where, ": is a BERT or T5 checkpoint (encoder.*); LLaVA's language "
                                                   "model is a GPT (decoder-only, decoder.* and embedding.*)"));
  }
  if (!AnyKeyStartsWith(state, "decoder.") || !state.count("embedding.word_embeddings.weight")) {
    return absl::InvalidArgumentError(absl::StrCat(where, ": is not a GPT checkpoint (no decoder.* and "
                                                   "embedding.word_embeddings.weight tensors)"));
  }
  return absl::OkStatus();
}

// A CLIPViTModel's tensors (bare names) from our checkpoint, bare or from a LLaVA checkpoint's vision_model.*.
absl::StatusOr<StateDict> VisionTensors(const StateDict& state, const std::string& where) {
  StateDict vision = AnyKeyStartsWith(state, "vision_model.") ? Strip(state, "vision_model.") : state;
  if (!vision.count("conv1.weight") || !vision.count("position_embeddings.weight")) {
    const char* what = state.count("embedding.word_embeddings.weight") ? " (it is a GPT language model)"
                       : AnyKeyStartsWith(state, "encoder.")          ? " (it is a BERT or T5 model)"
                                                                     : "";
    return absl::InvalidArgumentError(absl::StrCat(where, ": is not a vision encoder checkpoint (no conv1.weight and "
                                                   "position_embeddings.weight)", what));
  }
  return vision;
}

// The fields of a HuggingFace config.json that shapes alone would not catch (or would catch less clearly).
absl::Status CheckHfVisionConfig(const models::vision::VisionConfig& hf, const models::vision::VisionConfig& recipe,
                                 const std::string& where) {
  const auto& a = hf.transformer;
  const auto& b = recipe.transformer;
  struct Field {
    const char* name;
    double hf, recipe;
  };
  const Field fields[] = {
      {"model_subtype (0 CLIP, 1 SigLIP)", static_cast<double>(hf.model_subtype), static_cast<double>(recipe.model_subtype)},
      {"num_layers", static_cast<double>(a.num_layers), static_cast<double>(b.num_layers)},
      {"hidden_size", static_cast<double>(a.hidden_size), static_cast<double>(b.hidden_size)},
      {"num_attention_heads", static_cast<double>(a.num_attention_heads), static_cast<double>(b.num_attention_heads)},
      {"ffn_hidden_size", static_cast<double>(a.ffn_hidden_size), static_cast<double>(b.ffn_hidden_size)},
      {"activation", static_cast<double>(a.activation), static_cast<double>(b.activation)},
      {"layernorm_epsilon", a.layernorm_epsilon, b.layernorm_epsilon},
      {"patch_dim", static_cast<double>(hf.patch_dim), static_cast<double>(recipe.patch_dim)},
      {"img_h", static_cast<double>(hf.img_h), static_cast<double>(recipe.img_h)},
      {"img_w", static_cast<double>(hf.img_w), static_cast<double>(recipe.img_w)},
      {"add_class_token", static_cast<double>(hf.add_class_token), static_cast<double>(recipe.add_class_token)},
  };
  for (const Field& f : fields) {
    if (f.hf != f.recipe) {
      return absl::InvalidArgumentError(absl::StrCat(where, ": config.json gives model.vision_model.", f.name, " = ",
                                                     f.hf, " but the recipe has ", f.recipe,
                                                     " (set the recipe's vision_model to the encoder's shape)"));
    }
  }
  return absl::OkStatus();
}

// Every parameter of `module_prefix` in the recipe's model must be in `tensors` (without the prefix) with its shape,
// and `tensors` must hold nothing else. Errors name the first offending tensor.
absl::Status CheckAgainstModel(const std::vector<std::pair<std::string, at::Tensor>>& model_params,
                               const std::string& module_prefix, const StateDict& tensors, const std::string& where) {
  int64_t matched = 0;
  for (const auto& [name, param] : model_params) {
    if (!absl::StartsWith(name, module_prefix)) continue;
    const std::string key = name.substr(module_prefix.size());
    auto it = tensors.find(key);
    if (it == tensors.end()) {
      return absl::InvalidArgumentError(absl::StrCat(where, ": tensor '", key, "' (", name,
                                                     " of the recipe's model) is missing; does the recipe's model "
                                                     "shape (layers, sizes) match the checkpoint's?"));
    }
    if (it->second.sizes() != param.sizes()) {
      return absl::InvalidArgumentError(absl::StrCat(where, ": tensor '", key, "' has shape ",
                                                     c10::str(it->second.sizes()), " but the recipe's model has ", name,
                                                     " ", c10::str(param.sizes())));
    }
    ++matched;
  }
  if (matched != static_cast<int64_t>(tensors.size())) {
    for (const auto& [key, tensor] : tensors) {
      bool known = false;
      for (const auto& [name, param] : model_params) known |= name == module_prefix + key;
      if (!known) {
        return absl::InvalidArgumentError(absl::StrCat(where, ": tensor '", key, "' has no counterpart ",
                                                       module_prefix, key, " in the recipe's model (more layers, or "
                                                       "another architecture, than the recipe describes?)"));
      }
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<CombineCheckpointsResult> CombineLlavaCheckpoints(const proto::LlavaRecipe& recipe,
                                                                 const CombineCheckpointsOptions& options,
                                                                 const LlavaRunOptions& run) {
  for (const auto& [flag, value] : {std::pair{"--language_model", &options.language_model},
                                    std::pair{"--vision_model", &options.vision_model},
                                    std::pair{"--output", &options.output}}) {
    if (value->empty()) return absl::InvalidArgumentError(absl::StrCat(flag, " is required"));
  }
  {
    absl::StatusOr<std::optional<int64_t>> existing = checkpointing::LatestIteration(options.output);
    if (!existing.ok() || existing->has_value()) {
      return absl::AlreadyExistsError(absl::StrCat("--output: ", options.output,
                                                   " already holds a checkpoint; choose a new directory"));
    }
  }
  CombineCheckpointsResult result;

  // Language model: our GPT checkpoint.
  absl::StatusOr<checkpointing::Checkpoint> lm = LoadInput(options.language_model, "--language_model");
  if (!lm.ok()) return lm.status();
  const std::string lm_where =
      absl::StrCat("--language_model ", checkpointing::IterationDirectory(options.language_model, lm->iteration),
                   "/model.safetensors");
  if (absl::Status s = CheckLanguageModelFamily(lm->model, lm_where); !s.ok()) return s;
  result.language_model_iteration = lm->iteration;

  // The model the recipe builds: names and shapes every input tensor must match.
  absl::StatusOr<std::unique_ptr<LlavaData>> data = LlavaData::Prepare(recipe, run.base_dir, run.show_progress);
  if (!data.ok()) return data.status();
  absl::StatusOr<std::unique_ptr<models::multimodal::LLaVAModel>> model =
      BuildLlavaModel(recipe, **data, run.show_progress);
  if (!model.ok()) return model.status();
  const auto params = (*model)->NamedParameters();
  if (absl::Status s = CheckAgainstModel(params, "language_model.", lm->model, lm_where); !s.ok()) return s;

  // Vision encoder: HuggingFace directory or our checkpoint.
  StateDict vision;
  std::string vision_where;
  if (fs::exists(options.vision_model + "/config.json")) {
    vision_where = absl::StrCat("--vision_model ", options.vision_model);
    absl::StatusOr<models::huggingface::HfVisionInfo> info = models::huggingface::ReadHfVisionInfo(options.vision_model);
    if (!info.ok()) return absl::InvalidArgumentError(absl::StrCat("--vision_model: ", info.status().message()));
    if (absl::Status s = CheckHfVisionConfig(info->config, (*model)->config().vision, vision_where); !s.ok()) return s;
    absl::StatusOr<models::huggingface::HfVisionModel> hf = models::huggingface::LoadHfVisionModel(options.vision_model);
    if (!hf.ok()) return absl::InvalidArgumentError(absl::StrCat("--vision_model: ", hf.status().message()));
    for (const auto& [name, tensor] : hf->model->NamedParameters()) vision.emplace(name, tensor.detach());
    result.vision_source = absl::StrCat("HuggingFace ", info->model_type, " ", options.vision_model);
  } else {
    absl::StatusOr<checkpointing::Checkpoint> ckpt = LoadInput(options.vision_model, "--vision_model");
    if (!ckpt.ok()) {
      if (absl::IsNotFound(ckpt.status()) && fs::is_directory(options.vision_model)) {
        return absl::NotFoundError(absl::StrCat(ckpt.status().message(), " and no HuggingFace config.json"));
      }
      return ckpt.status();
    }
    vision_where = absl::StrCat("--vision_model ", checkpointing::IterationDirectory(options.vision_model, ckpt->iteration),
                                "/model.safetensors");
    absl::StatusOr<StateDict> tensors = VisionTensors(ckpt->model, vision_where);
    if (!tensors.ok()) return tensors.status();
    vision = *std::move(tensors);
    result.vision_source = absl::StrCat("checkpoint ", options.vision_model, " iteration ", ckpt->iteration);
  }
  if (absl::Status s = CheckAgainstModel(params, "vision_model.", vision, vision_where); !s.ok()) return s;

  // combine_state_dicts.py: prefix each part; the projector is left out (allow_missing_vision_projection_checkpoint).
  checkpointing::Checkpoint out;
  out.iteration = kCombinedIteration;
  out.recipe = ToText(recipe);
  for (const auto& [name, tensor] : lm->model) out.model.emplace("language_model." + name, tensor.contiguous());
  for (const auto& [name, tensor] : vision) out.model.emplace("vision_model." + name, tensor.contiguous().cpu());
  result.language_model_tensors = static_cast<int64_t>(lm->model.size());
  result.vision_model_tensors = static_cast<int64_t>(vision.size());
  if (absl::Status s = checkpointing::SaveCheckpoint(options.output, out); !s.ok()) return s;
  result.output_directory = checkpointing::IterationDirectory(options.output, kCombinedIteration);
  return result;
}

}  // namespace megatron::training
