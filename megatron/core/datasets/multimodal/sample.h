// Multimodal samples and WebDataset-style shards (the format Megatron-Energon reads).
//
// A shard is a POSIX tar (tar_archive.h) of consecutive members sharing a key (WebDataset: the key is the
// member's path up to the first '.' of its file name, the extension is the rest):
//   000042.png  000042.json          one image
//   000043.0.png 000043.1.jpg 000043.json   several images, in index order
//   000044.json                      text only
// Images are PNG or JPEG (decoded with stb). The JSON says what kind of sample it is:
//   {"kind": "caption", "caption": "a red circle at top left."}
//   {"kind": "vqa", "question": "What colour is the circle?", "answer": "red", "question_type": "colour"}
//   {"kind": "conversation", "conversations": [{"from": "human", "value": "<image>\nWhat shape ...?"},
//                                              {"from": "gpt", "value": "circle"}, ...],
//    "question_types": ["shape", ...]}
// "conversations" with from = system / human / gpt is LLaVA's convention (Megatron's encode_llava_sft reads it).
// Extra JSON fields are kept in `metadata` and written back; unknown member extensions are ignored.
#pragma once

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "megatron/core/datasets/image/image.h"

namespace megatron::datasets::multimodal {

enum class SampleKind { kCaption, kVqa, kConversation };
const char* SampleKindName(SampleKind kind);

enum class Role { kSystem, kUser, kAssistant };

struct Turn {
  Role role = Role::kUser;
  std::string content;
  bool operator==(const Turn& o) const { return role == o.role && content == o.content; }
};

struct MultimodalSample {
  std::string key;
  SampleKind kind = SampleKind::kCaption;
  std::vector<image::Image> images;
  std::string caption;                      // kCaption
  std::string question, answer;             // kVqa
  std::vector<Turn> conversation;           // kConversation
  std::vector<std::string> question_types;  // optional: one per question (VQA: 1), for evaluation
  std::string metadata_json = "{}";         // any other JSON fields, as a JSON object
};

// The sample's JSON member (images are separate members).
std::string SampleToJson(const MultimodalSample& sample);

// Parses the JSON member of `key`; `where` names the shard and member in errors.
absl::StatusOr<MultimodalSample> SampleFromJson(const std::string& key, const std::string& json,
                                                const std::string& where);

// Writes samples as one shard (images as PNG). Keys must be non-empty, without '.' or '/'.
absl::Status WriteShard(const std::string& path, const std::vector<MultimodalSample>& samples);

// Reads and decodes a whole shard. Errors name the shard and the member.
absl::StatusOr<std::vector<MultimodalSample>> ReadShard(const std::string& path);

// The shards "<dir>/<prefix>-*.tar", sorted. NotFound if there are none.
absl::StatusOr<std::vector<std::string>> ListShards(const std::string& dir, const std::string& prefix);

// Every sample of every shard "<dir>/<prefix>-*.tar", in shard order.
absl::StatusOr<std::vector<MultimodalSample>> ReadShards(const std::string& dir, const std::string& prefix);

// The shard file name for index i: "<prefix>-000007.tar".
std::string ShardName(const std::string& prefix, int index);

}  // namespace megatron::datasets::multimodal
