#include "megatron/core/training/recipe.h"

#include <google/protobuf/descriptor.h>
#include <google/protobuf/io/tokenizer.h>
#include <google/protobuf/message.h>
#include <google/protobuf/text_format.h>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "megatron/core/utils/file_io.h"

namespace megatron::training {
namespace {

using google::protobuf::Descriptor;
using google::protobuf::FieldDescriptor;
using google::protobuf::Message;

class CollectErrors : public google::protobuf::io::ErrorCollector {
 public:
  explicit CollectErrors(std::string source) : source_(std::move(source)) {}
  void AddError(int line, google::protobuf::io::ColumnNumber column, const std::string& message) override {
    errors_.push_back(absl::StrCat(source_, ":", line + 1, ":", column + 1, ": ", message));
  }
  void AddWarning(int line, google::protobuf::io::ColumnNumber column, const std::string& message) override {
    errors_.push_back(absl::StrCat(source_, ":", line + 1, ":", column + 1, ": ", message));
  }
  std::string Joined() const { return absl::StrJoin(errors_, "\n"); }

 private:
  std::string source_;
  std::vector<std::string> errors_;
};

// Formats one scalar value for text format: strings are quoted and escaped, everything else is passed through
// (the parser then checks it against the field's type).
std::string ScalarText(const FieldDescriptor* field, absl::string_view value) {
  if (field->type() == FieldDescriptor::TYPE_STRING || field->type() == FieldDescriptor::TYPE_BYTES) {
    return absl::StrCat("\"", absl::CEscape(value), "\"");
  }
  return std::string(value);
}

}  // namespace

absl::Status ParseTextProto(const std::string& text, const std::string& source_name, Message* message) {
  google::protobuf::TextFormat::Parser parser;
  CollectErrors errors(source_name);
  parser.RecordErrorsTo(&errors);
  if (!parser.ParseFromString(text, message)) return absl::InvalidArgumentError(errors.Joined());
  return absl::OkStatus();
}

absl::Status LoadTextProto(const std::string& path, Message* message) {
  absl::StatusOr<std::string> text = utils::ReadFile(path);
  if (!text.ok()) return text.status();
  return ParseTextProto(*text, path, message);
}

absl::Status ApplyOverride(const std::string& path, const std::string& value, Message* message) {
  const std::string flag = absl::StrCat("--", path, "=", value);
  std::vector<std::string> parts = absl::StrSplit(path, '.');
  const Descriptor* descriptor = message->GetDescriptor();
  Message* target = message;
  for (size_t i = 0; i < parts.size(); ++i) {
    const FieldDescriptor* field = descriptor->FindFieldByName(parts[i]);
    if (field == nullptr) {
      return absl::InvalidArgumentError(
          absl::StrCat(flag, ": ", descriptor->full_name(), " has no field \"", parts[i], "\""));
    }
    const bool last = i + 1 == parts.size();
    if (!last) {
      if (field->type() != FieldDescriptor::TYPE_MESSAGE || field->is_repeated()) {
        return absl::InvalidArgumentError(
            absl::StrCat(flag, ": \"", parts[i], "\" is not a message field, it has no \"", parts[i + 1], "\""));
      }
      target = target->GetReflection()->MutableMessage(target, field);
      descriptor = field->message_type();
      continue;
    }
    if (field->type() == FieldDescriptor::TYPE_MESSAGE) {
      return absl::InvalidArgumentError(absl::StrCat(flag, ": \"", parts[i],
                                                     "\" is a message; set one of its fields instead"));
    }
    std::string text;
    if (field->is_repeated()) {
      target->GetReflection()->ClearField(target, field);
      if (!value.empty()) {
        for (absl::string_view item : absl::StrSplit(value, ',')) {
          absl::StrAppend(&text, field->name(), ": ", ScalarText(field, item), "\n");
        }
      }
    } else {
      text = absl::StrCat(field->name(), ": ", ScalarText(field, value));
    }
    google::protobuf::TextFormat::Parser parser;
    CollectErrors errors(flag);
    parser.RecordErrorsTo(&errors);
    if (!parser.MergeFromString(text, target)) {
      return absl::InvalidArgumentError(absl::StrCat(flag, ": not a valid ", field->type_name(), " for ",
                                                     field->full_name(), " (", errors.Joined(), ")"));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<CommandLine> ParseCommandLine(int argc, char** argv, const std::vector<std::string>& reserved) {
  CommandLine out;
  for (int i = 1; i < argc; ++i) {
    absl::string_view arg = argv[i];
    if (arg == "--help" || arg == "-h") {
      out.help = true;
      continue;
    }
    if (!absl::ConsumePrefix(&arg, "--")) {
      return absl::InvalidArgumentError(
          absl::StrCat("unexpected argument \"", arg, "\": flags are --recipe=PATH and --field.path=value"));
    }
    std::pair<std::string, std::string> kv = absl::StrSplit(arg, absl::MaxSplits('=', 1));
    if (std::string(arg).find('=') == std::string::npos) {
      kv.second = "true";  // --flag means --flag=true (booleans)
    }
    if (kv.first == "recipe") {
      out.recipe = kv.second;
    } else if (std::find(reserved.begin(), reserved.end(), kv.first) != reserved.end()) {
      out.reserved.push_back(kv);
    } else {
      out.overrides.push_back(kv);
    }
  }
  return out;
}

absl::Status BuildRecipe(const CommandLine& command_line, Message* message) {
  if (!command_line.recipe.empty()) {
    if (absl::Status s = LoadTextProto(command_line.recipe, message); !s.ok()) return s;
  }
  for (const auto& [path, value] : command_line.overrides) {
    if (absl::Status s = ApplyOverride(path, value, message); !s.ok()) return s;
  }
  return absl::OkStatus();
}

std::string ToText(const Message& message) {
  std::string out;
  google::protobuf::TextFormat::PrintToString(message, &out);
  return out;
}

}  // namespace megatron::training
