#include "legacy/checkpoint/convert.h"

#include <cctype>
#include <optional>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "legacy/model/module.h"
#include "megatron/core/checkpointing/checkpoint.h"

namespace megatron::legacy {
namespace {

bool StartsWith(const std::string& s, const std::string& prefix) { return s.rfind(prefix, 0) == 0; }

struct PrefixPair {
  const char* legacy;
  const char* core;
};

// Inside a layer ("layers.N." stripped on both sides).
const std::vector<PrefixPair> kEncoderLayerPairs = {
    {"input_norm.", "input_layernorm."},
    {"self_attention.query_key_value.", "self_attention.linear_qkv."},
    {"self_attention.dense.", "self_attention.linear_proj."},
    {"post_attention_norm.", "pre_mlp_layernorm."},
    {"mlp.dense_h_to_4h.", "mlp.linear_fc1."},
    {"mlp.dense_4h_to_h.", "mlp.linear_fc2."},
};
// T5 decoder layers: the legacy post-attention norm feeds the cross attention.
const std::vector<PrefixPair> kDecoderLayerPairs = {
    {"input_norm.", "input_layernorm."},
    {"self_attention.query_key_value.", "self_attention.linear_qkv."},
    {"self_attention.dense.", "self_attention.linear_proj."},
    {"post_attention_norm.", "pre_cross_attn_layernorm."},
    {"inter_attention.query.", "cross_attention.linear_q."},
    {"inter_attention.key_value.", "cross_attention.linear_kv."},
    {"inter_attention.dense.", "cross_attention.linear_proj."},
    {"post_inter_attention_norm.", "pre_mlp_layernorm."},
    {"mlp.dense_h_to_4h.", "mlp.linear_fc1."},
    {"mlp.dense_4h_to_h.", "mlp.linear_fc2."},
};

struct Stack {
  const char* legacy;  // "language_model.encoder."
  const char* core;    // "decoder."
  const std::vector<PrefixPair>* layers;
};

std::vector<Stack> Stacks(ModelFamily family) {
  switch (family) {
    case ModelFamily::kGpt: return {{"language_model.encoder.", "decoder.", &kEncoderLayerPairs}};
    case ModelFamily::kBert: return {{"language_model.encoder.", "encoder.", &kEncoderLayerPairs}};
    case ModelFamily::kT5:
      return {{"language_model.encoder.", "encoder.", &kEncoderLayerPairs},
              {"language_model.decoder.", "decoder.", &kDecoderLayerPairs}};
  }
  return {};
}

// Outside the stacks.
std::vector<PrefixPair> OtherPairs(ModelFamily family) {
  switch (family) {
    case ModelFamily::kGpt:
      return {{"language_model.embedding.", "embedding."}, {"language_model.output_layer.", "output_layer."}};
    case ModelFamily::kBert:
      return {{"language_model.embedding.", "embedding."},
              {"language_model.pooler.", "pooler."},
              {"lm_head.norm.", "lm_head.layer_norm."},
              {"lm_head.dense.", "lm_head.dense."},
              {"lm_head.bias", "output_layer.bias"},
              {"binary_head.", "binary_head."}};
    case ModelFamily::kT5:
      return {{"language_model.embedding.", "embedding."}, {"lm_head.bias", "lm_head.output_layer.bias"}};
  }
  return {};
}

// Maps one key; nullopt when it fits no rule.
std::optional<std::string> MapKey(const std::string& key, ModelFamily family, Direction direction) {
  const bool to_core = direction == Direction::kLegacyToCore;
  for (const Stack& stack : Stacks(family)) {
    const std::string from_stack = to_core ? stack.legacy : stack.core;
    const std::string to_stack = to_core ? stack.core : stack.legacy;
    const std::string from_final = from_stack + (to_core ? "final_norm." : "final_layernorm.");
    const std::string to_final = to_stack + (to_core ? "final_layernorm." : "final_norm.");
    if (StartsWith(key, from_final)) return to_final + key.substr(from_final.size());
    if (!StartsWith(key, from_stack + "layers.")) continue;
    const std::string rest = key.substr(from_stack.size() + sizeof("layers.") - 1);
    size_t digits = 0;
    while (digits < rest.size() && std::isdigit(static_cast<unsigned char>(rest[digits]))) ++digits;
    if (digits == 0 || digits >= rest.size() || rest[digits] != '.') return std::nullopt;
    const std::string index = rest.substr(0, digits), inner = rest.substr(digits + 1);
    for (const PrefixPair& p : *stack.layers) {
      const std::string from = to_core ? p.legacy : p.core, to = to_core ? p.core : p.legacy;
      if (StartsWith(inner, from)) return to_stack + "layers." + index + "." + to + inner.substr(from.size());
    }
    return std::nullopt;
  }
  for (const PrefixPair& p : OtherPairs(family)) {
    const std::string from = to_core ? p.legacy : p.core;
    const std::string to = to_core ? p.core : p.legacy;
    const bool exact = from.back() != '.';
    if (exact ? key == from : StartsWith(key, from)) return to + key.substr(from.size());
  }
  return std::nullopt;
}

absl::StatusOr<StateDict> Convert(const StateDict& in, ModelFamily family, Direction direction) {
  StateDict out;
  for (const auto& [raw_key, tensor] : in) {
    const std::string key = direction == Direction::kLegacyToCore ? UpgradeLegacyKey(raw_key) : raw_key;
    std::optional<std::string> mapped = MapKey(key, family, direction);
    if (!mapped.has_value()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "tensor '", raw_key, "' is not a ", direction == Direction::kLegacyToCore ? "legacy" : "core", " ",
          FamilyName(family), " parameter the converter knows (research notes §5.7)"));
    }
    if (!out.emplace(*mapped, tensor).second) {
      return absl::InvalidArgumentError(absl::StrCat("tensor '", raw_key, "' maps to '", *mapped,
                                                     "', which another tensor already maps to"));
    }
  }
  return out;
}

}  // namespace

const char* FamilyName(ModelFamily family) {
  switch (family) {
    case ModelFamily::kGpt: return "gpt";
    case ModelFamily::kBert: return "bert";
    case ModelFamily::kT5: return "t5";
  }
  return "?";
}
const char* TreeName(Tree tree) { return tree == Tree::kLegacy ? "legacy" : "core"; }

absl::StatusOr<StateDict> LegacyToCore(const StateDict& legacy, ModelFamily family) {
  return Convert(legacy, family, Direction::kLegacyToCore);
}

absl::StatusOr<StateDict> CoreToLegacy(const StateDict& core, ModelFamily family) {
  return Convert(core, family, Direction::kCoreToLegacy);
}

absl::StatusOr<CheckpointKind> DetectCheckpointKind(const StateDict& state) {
  bool legacy = false, legacy_decoder = false, bert_head = false, decoder = false, encoder = false;
  for (const auto& [key, tensor] : state) {
    legacy |= StartsWith(key, "language_model.");
    legacy_decoder |= StartsWith(key, "language_model.decoder.");
    bert_head |= StartsWith(key, "lm_head.") || StartsWith(key, "binary_head.");
    decoder |= StartsWith(key, "decoder.");
    encoder |= StartsWith(key, "encoder.");
  }
  if (legacy) {
    const ModelFamily f = legacy_decoder ? ModelFamily::kT5 : bert_head ? ModelFamily::kBert : ModelFamily::kGpt;
    return CheckpointKind{Tree::kLegacy, f};
  }
  if (decoder && encoder) return CheckpointKind{Tree::kCore, ModelFamily::kT5};
  if (decoder) return CheckpointKind{Tree::kCore, ModelFamily::kGpt};
  if (encoder) return CheckpointKind{Tree::kCore, ModelFamily::kBert};
  return absl::NotFoundError(
      "the tensors are neither a legacy (language_model.*) nor a core GPT (decoder.*), BERT (encoder.*) or T5 "
      "(both) model");
}

std::string ConversionCommand(ModelFamily family, Direction direction, const std::string& input) {
  const bool to_core = direction == Direction::kLegacyToCore;
  return absl::StrCat("bazel run //tools:convert_checkpoint -- --model=", FamilyName(family),
                      " --direction=", to_core ? "legacy_to_core" : "core_to_legacy", " --input=", input,
                      " --output=", input, to_core ? "_core" : "_legacy");
}

namespace {

absl::StatusOr<checkpointing::Checkpoint> LoadLatest(const std::string& dir) {
  auto latest = checkpointing::LatestIteration(dir);
  if (!latest.ok()) return latest.status();
  if (!latest->has_value()) {
    return absl::NotFoundError(absl::StrCat(dir, ": no checkpoint (latest_checkpointed_iteration.txt is missing)"));
  }
  return checkpointing::LoadCheckpoint(dir, **latest, checkpointing::LoadParts::kModelOnly);
}

}  // namespace

absl::Status ConvertCheckpoint(const std::string& input_dir, const std::string& output_dir, ModelFamily family,
                               Direction direction) {
  auto checkpoint = LoadLatest(input_dir);
  if (!checkpoint.ok()) return checkpoint.status();
  const std::string file = absl::StrCat(checkpointing::IterationDirectory(input_dir, checkpoint->iteration),
                                        "/model.safetensors");
  auto kind = DetectCheckpointKind(checkpoint->model);
  if (!kind.ok()) return absl::InvalidArgumentError(absl::StrCat(file, ": ", kind.status().message()));
  const Tree source = direction == Direction::kLegacyToCore ? Tree::kLegacy : Tree::kCore;
  if (kind->tree != source || kind->family != family) {
    return absl::InvalidArgumentError(absl::StrCat(
        file, ": holds a ", TreeName(kind->tree), " ", FamilyName(kind->family), " checkpoint, but --model=",
        FamilyName(family), " --direction=", direction == Direction::kLegacyToCore ? "legacy_to_core" : "core_to_legacy",
        " needs a ", TreeName(source), " ", FamilyName(family), " one"));
  }
  auto converted = Convert(checkpoint->model, family, direction);
  if (!converted.ok()) return absl::InvalidArgumentError(absl::StrCat(file, ": ", converted.status().message()));
  checkpointing::Checkpoint out;
  out.iteration = checkpoint->iteration;
  out.recipe = checkpoint->recipe;
  out.model = *std::move(converted);
  return checkpointing::SaveCheckpoint(output_dir, out);
}

absl::Status LoadModelCheckpoint(const std::string& dir, Tree tree, ModelFamily family,
                                 transformer::MegatronModule* model) {
  auto checkpoint = LoadLatest(dir);
  if (!checkpoint.ok()) return checkpoint.status();
  const std::string file = absl::StrCat(checkpointing::IterationDirectory(dir, checkpoint->iteration),
                                        "/model.safetensors");
  StateDict state = checkpoint->model;
  if (tree == Tree::kLegacy) {
    StateDict upgraded;
    for (auto& [key, tensor] : state) upgraded[UpgradeLegacyKey(key)] = tensor;
    state = std::move(upgraded);
  }
  // The first mismatch in the model's parameter order, then the first unexpected checkpoint tensor.
  std::string problem;
  for (const auto& [name, param] : model->NamedParameters()) {
    auto it = state.find(name);
    if (it == state.end()) {
      problem = absl::StrCat("tensor '", name, "' of the model is missing from the checkpoint");
    } else if (it->second.sizes() != param.sizes()) {
      problem = absl::StrCat("tensor '", name, "' has shape ", c10::str(it->second.sizes()),
                             " in the checkpoint but ", c10::str(param.sizes()), " in the model");
    }
    if (!problem.empty()) break;
  }
  if (problem.empty()) {
    std::map<std::string, bool> known;
    for (const auto& [name, param] : model->NamedParameters()) known[name] = true;
    for (const auto& [name, tensor] : state) {
      if (!known.count(name)) {
        problem = absl::StrCat("tensor '", name, "' of the checkpoint is not a parameter of the model");
        break;
      }
    }
  }
  if (problem.empty()) return model->LoadStateDict(state, transformer::LoadMode::kStrict);

  std::string message = absl::StrCat(file, ": ", problem, "; the model is a ", TreeName(tree), " ",
                                     FamilyName(family), " model");
  auto kind = DetectCheckpointKind(checkpoint->model);
  if (!kind.ok()) {
    absl::StrAppend(&message, " and the checkpoint is not a GPT, BERT or T5 model of either tree");
  } else if (kind->family != family) {
    absl::StrAppend(&message, " but the checkpoint holds a ", TreeName(kind->tree), " ", FamilyName(kind->family),
                    " model; load it into a ", FamilyName(kind->family), " model");
  } else if (kind->tree != tree) {
    absl::StrAppend(&message, " but the checkpoint holds a ", TreeName(kind->tree), " ", FamilyName(family),
                    " model; convert it first: ",
                    ConversionCommand(family, tree == Tree::kCore ? Direction::kLegacyToCore
                                                                  : Direction::kCoreToLegacy,
                                      dir));
  } else {
    absl::StrAppend(&message, " and the checkpoint was written by a model of another shape; build the model with "
                              "the checkpoint's configuration (its recipe is in metadata.json)");
  }
  return absl::InvalidArgumentError(message);
}

}  // namespace megatron::legacy
