#include "megatron/core/datasets/multimodal/sample.h"

#include <dirent.h>

#include <algorithm>
#include <cstdio>
#include <map>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "megatron/core/datasets/multimodal/tar_archive.h"
#include "nlohmann/json.hpp"

namespace megatron::datasets::multimodal {
namespace {

using nlohmann::json;

const char* RoleName(Role role) {
  switch (role) {
    case Role::kSystem: return "system";
    case Role::kUser: return "human";
    case Role::kAssistant: return "gpt";
  }
  return "?";
}

absl::StatusOr<std::string> GetString(const json& j, const char* field, const std::string& where) {
  auto it = j.find(field);
  if (it == j.end() || !it->is_string()) {
    return absl::InvalidArgumentError(absl::StrCat(where, ": field '", field, "' is missing or not a string"));
  }
  return it->get<std::string>();
}

bool IsImageExtension(const std::string& ext) { return ext == "png" || ext == "jpg" || ext == "jpeg"; }

}  // namespace

const char* SampleKindName(SampleKind kind) {
  switch (kind) {
    case SampleKind::kCaption: return "caption";
    case SampleKind::kVqa: return "vqa";
    case SampleKind::kConversation: return "conversation";
  }
  return "?";
}

std::string SampleToJson(const MultimodalSample& sample) {
  json j = json::parse(sample.metadata_json, nullptr, /*allow_exceptions=*/false);
  if (!j.is_object()) j = json::object();
  j["kind"] = SampleKindName(sample.kind);
  switch (sample.kind) {
    case SampleKind::kCaption:
      j["caption"] = sample.caption;
      break;
    case SampleKind::kVqa:
      j["question"] = sample.question;
      j["answer"] = sample.answer;
      if (!sample.question_types.empty()) j["question_type"] = sample.question_types.front();
      break;
    case SampleKind::kConversation: {
      json turns = json::array();
      for (const Turn& t : sample.conversation) turns.push_back({{"from", RoleName(t.role)}, {"value", t.content}});
      j["conversations"] = turns;
      if (!sample.question_types.empty()) j["question_types"] = sample.question_types;
      break;
    }
  }
  return j.dump();
}

absl::StatusOr<MultimodalSample> SampleFromJson(const std::string& key, const std::string& text,
                                                const std::string& where) {
  json j = json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) {
    return absl::InvalidArgumentError(absl::StrCat(where, ": not a JSON object"));
  }
  MultimodalSample s;
  s.key = key;
  absl::StatusOr<std::string> kind = GetString(j, "kind", where);
  if (!kind.ok()) return kind.status();
  if (*kind == "caption") {
    s.kind = SampleKind::kCaption;
    absl::StatusOr<std::string> caption = GetString(j, "caption", where);
    if (!caption.ok()) return caption.status();
    s.caption = *caption;
    j.erase("caption");
  } else if (*kind == "vqa") {
    s.kind = SampleKind::kVqa;
    absl::StatusOr<std::string> q = GetString(j, "question", where);
    if (!q.ok()) return q.status();
    absl::StatusOr<std::string> a = GetString(j, "answer", where);
    if (!a.ok()) return a.status();
    s.question = *q;
    s.answer = *a;
    if (j.contains("question_type")) {
      absl::StatusOr<std::string> t = GetString(j, "question_type", where);
      if (!t.ok()) return t.status();
      s.question_types = {*t};
    }
    j.erase("question");
    j.erase("answer");
    j.erase("question_type");
  } else if (*kind == "conversation") {
    s.kind = SampleKind::kConversation;
    auto it = j.find("conversations");
    if (it == j.end() || !it->is_array() || it->empty()) {
      return absl::InvalidArgumentError(absl::StrCat(where, ": field 'conversations' must be a non-empty array"));
    }
    for (size_t i = 0; i < it->size(); ++i) {
      const json& t = (*it)[i];
      const std::string at = absl::StrCat(where, ": conversations[", i, "]");
      if (!t.is_object()) return absl::InvalidArgumentError(absl::StrCat(at, " is not an object"));
      absl::StatusOr<std::string> from = GetString(t, "from", at);
      if (!from.ok()) return from.status();
      absl::StatusOr<std::string> value = GetString(t, "value", at);
      if (!value.ok()) return value.status();
      Turn turn;
      if (*from == "human" || *from == "user") {
        turn.role = Role::kUser;
      } else if (*from == "gpt" || *from == "assistant") {
        turn.role = Role::kAssistant;
      } else if (*from == "system") {
        turn.role = Role::kSystem;
      } else {
        return absl::InvalidArgumentError(
            absl::StrCat(at, ": field 'from' is '", *from, "'; expected human, gpt or system"));
      }
      turn.content = *value;
      s.conversation.push_back(std::move(turn));
    }
    if (j.contains("question_types")) {
      const json& qt = j["question_types"];
      if (!qt.is_array()) return absl::InvalidArgumentError(absl::StrCat(where, ": 'question_types' is not an array"));
      for (const json& t : qt) {
        if (!t.is_string()) {
          return absl::InvalidArgumentError(absl::StrCat(where, ": 'question_types' holds a non-string"));
        }
        s.question_types.push_back(t.get<std::string>());
      }
    }
    j.erase("conversations");
    j.erase("question_types");
  } else {
    return absl::InvalidArgumentError(
        absl::StrCat(where, ": field 'kind' is '", *kind, "'; expected caption, vqa or conversation"));
  }
  j.erase("kind");
  s.metadata_json = j.dump();
  return s;
}

absl::Status WriteShard(const std::string& path, const std::vector<MultimodalSample>& samples) {
  std::vector<TarMember> members;
  for (const MultimodalSample& s : samples) {
    if (s.key.empty() || absl::StrContains(s.key, ".") || absl::StrContains(s.key, "/")) {
      return absl::InvalidArgumentError(absl::StrCat(path, ": sample key '", s.key,
                                                      "' must be non-empty without '.' or '/' (WebDataset keys)"));
    }
    for (size_t i = 0; i < s.images.size(); ++i) {
      absl::StatusOr<std::string> png = image::EncodePng(s.images[i]);
      if (!png.ok()) return absl::InvalidArgumentError(absl::StrCat(path, ": sample '", s.key, "': ", png.status().message()));
      members.push_back({s.images.size() == 1 ? absl::StrCat(s.key, ".png") : absl::StrCat(s.key, ".", i, ".png"),
                         std::move(*png)});
    }
    members.push_back({absl::StrCat(s.key, ".json"), SampleToJson(s)});
  }
  return WriteTar(path, members);
}

absl::StatusOr<std::vector<MultimodalSample>> ReadShard(const std::string& path) {
  absl::StatusOr<std::vector<TarMember>> members = ReadTar(path);
  if (!members.ok()) return members.status();
  std::vector<MultimodalSample> samples;
  std::map<std::string, bool> seen;
  size_t i = 0;
  while (i < members->size()) {
    // One sample = the run of consecutive members with the same key.
    auto split = [](const std::string& name) {
      const size_t slash = name.rfind('/');
      const size_t dot = name.find('.', slash == std::string::npos ? 0 : slash + 1);
      return dot == std::string::npos ? std::make_pair(name, std::string())
                                      : std::make_pair(name.substr(0, dot), name.substr(dot + 1));
    };
    const std::string key = split((*members)[i].name).first;
    if (seen.count(key)) {
      return absl::InvalidArgumentError(absl::StrCat(path, ": member '", (*members)[i].name, "': key '", key,
                                                     "' appears again after other keys; a sample's members must be "
                                                     "consecutive"));
    }
    seen[key] = true;
    const TarMember* json_member = nullptr;
    std::vector<std::pair<int, const TarMember*>> images;
    for (; i < members->size() && split((*members)[i].name).first == key; ++i) {
      const TarMember& m = (*members)[i];
      const std::string ext = split(m.name).second;
      if (ext == "json") {
        json_member = &m;
      } else if (IsImageExtension(ext)) {
        images.push_back({-1, &m});
      } else {
        const size_t dot = ext.find('.');
        if (dot != std::string::npos && IsImageExtension(ext.substr(dot + 1))) {
          int index = -1;
          if (std::sscanf(ext.substr(0, dot).c_str(), "%d", &index) != 1 || index < 0) {
            return absl::InvalidArgumentError(absl::StrCat(path, ": member '", m.name,
                                                           "': expected <key>.<index>.png|jpg for multiple images"));
          }
          images.push_back({index, &m});
        }
      }
    }
    if (json_member == nullptr) {
      return absl::InvalidArgumentError(absl::StrCat(path, ": sample '", key, "' has no '", key, ".json' member"));
    }
    absl::StatusOr<MultimodalSample> sample =
        SampleFromJson(key, json_member->data, absl::StrCat(path, ": member '", json_member->name, "'"));
    if (!sample.ok()) return sample.status();
    std::stable_sort(images.begin(), images.end(), [](const auto& a, const auto& b) { return a.first < b.first; });
    for (const auto& [index, m] : images) {
      absl::StatusOr<image::Image> img = image::DecodeImage(m->data, absl::StrCat(path, ": member '", m->name, "'"));
      if (!img.ok()) return img.status();
      sample->images.push_back(std::move(*img));
    }
    samples.push_back(std::move(*sample));
  }
  return samples;
}

std::string ShardName(const std::string& prefix, int index) {
  char buf[16];
  std::snprintf(buf, sizeof(buf), "%06d", index);
  return absl::StrCat(prefix, "-", buf, ".tar");
}

absl::StatusOr<std::vector<std::string>> ListShards(const std::string& dir, const std::string& prefix) {
  DIR* d = opendir(dir.c_str());
  if (d == nullptr) return absl::NotFoundError(absl::StrCat("cannot open shard directory '", dir, "'"));
  std::vector<std::string> shards;
  while (dirent* e = readdir(d)) {
    const std::string name = e->d_name;
    if (absl::StartsWith(name, absl::StrCat(prefix, "-")) && absl::EndsWith(name, ".tar")) {
      shards.push_back(absl::StrCat(dir, "/", name));
    }
  }
  closedir(d);
  std::sort(shards.begin(), shards.end());
  if (shards.empty()) {
    return absl::NotFoundError(absl::StrCat("no shards '", prefix, "-*.tar' in '", dir,
                                            "' (make them with bazel run //tools:make_multimodal_data)"));
  }
  return shards;
}

absl::StatusOr<std::vector<MultimodalSample>> ReadShards(const std::string& dir, const std::string& prefix) {
  absl::StatusOr<std::vector<std::string>> shards = ListShards(dir, prefix);
  if (!shards.ok()) return shards.status();
  std::vector<MultimodalSample> all;
  for (const std::string& shard : *shards) {
    absl::StatusOr<std::vector<MultimodalSample>> samples = ReadShard(shard);
    if (!samples.ok()) return samples.status();
    for (MultimodalSample& s : *samples) all.push_back(std::move(s));
  }
  return all;
}

}  // namespace megatron::datasets::multimodal
