// Recipes: protobuf text files (experiments/<model>/recipes/*.textproto) plus command-line overrides.
//
//   pretrain --recipe=experiments/gpt/recipes/tiny.textproto --training.train_iters=50 --model.num_layers=4
//
// Any field of the recipe message can be set as --dotted.path=value; a repeated field takes a comma-separated
// list and replaces the recipe's list. Errors name the file, line and field, or the flag:
//   experiments/gpt/recipes/x.textproto:12:3: Message type "megatron.proto.ModelConfig" has no field named "layers".
//   --model.num_layer=4: megatron.proto.ModelConfig has no field "num_layer"
#pragma once

#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace google::protobuf {
class Message;
}

namespace megatron::training {

// Parses `text` (the contents of `source_name`) into `message`, replacing its contents.
absl::Status ParseTextProto(const std::string& text, const std::string& source_name,
                            google::protobuf::Message* message);
// Reads and parses a text-format file.
absl::Status LoadTextProto(const std::string& path, google::protobuf::Message* message);

// Applies one override: `path` is a dotted field path ("model.hidden_size"), `value` its text.
absl::Status ApplyOverride(const std::string& path, const std::string& value, google::protobuf::Message* message);

// The command line of a recipe-driven binary: --recipe=PATH, --help, and --field.path=value overrides
// (kept in order). `reserved` flags (e.g. "load") are returned separately, not treated as recipe fields.
struct CommandLine {
  std::string recipe;
  bool help = false;
  std::vector<std::pair<std::string, std::string>> overrides;
  std::vector<std::pair<std::string, std::string>> reserved;
};
absl::StatusOr<CommandLine> ParseCommandLine(int argc, char** argv, const std::vector<std::string>& reserved = {});

// Loads `command_line.recipe` (if set) into `message` and applies the overrides in order.
absl::Status BuildRecipe(const CommandLine& command_line, google::protobuf::Message* message);

// The recipe as text (what checkpoints store, so a run can be reproduced and reloaded).
std::string ToText(const google::protobuf::Message& message);

}  // namespace megatron::training
