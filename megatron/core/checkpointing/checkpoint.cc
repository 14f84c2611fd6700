#include "megatron/core/checkpointing/checkpoint.h"

#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>

#include <nlohmann/json.hpp>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/strip.h"
#include "megatron/core/checkpointing/safetensors.h"
#include "megatron/core/utils/crc32c.h"
#include "megatron/core/utils/file_io.h"

namespace megatron::checkpointing {
namespace {

constexpr char kTracker[] = "latest_checkpointed_iteration.txt";
constexpr char kMetadata[] = "metadata.json";
const char* const kParts[] = {"model", "optimizer", "rng"};

std::string Join(const std::string& a, const std::string& b) { return a + "/" + b; }

absl::Status RemoveTree(const std::string& path) {
  std::error_code ec;
  std::filesystem::remove_all(path, ec);
  if (ec) return absl::InternalError(absl::StrCat(path, ": cannot remove: ", ec.message()));
  return absl::OkStatus();
}

}  // namespace

std::string IterationDirectory(const std::string& dir, int64_t iteration) {
  return Join(dir, absl::StrFormat("iter_%07d", iteration));
}

absl::Status SaveCheckpoint(const std::string& dir, const Checkpoint& checkpoint) {
  if (absl::Status s = utils::MakeDirectories(dir); !s.ok()) return s;
  const std::string final_dir = IterationDirectory(dir, checkpoint.iteration);
  const std::string tmp_dir = absl::StrCat(final_dir, ".tmp.", getpid());
  if (absl::Status s = RemoveTree(tmp_dir); !s.ok()) return s;
  if (absl::Status s = utils::MakeDirectories(tmp_dir); !s.ok()) return s;

  nlohmann::json files = nlohmann::json::object();
  const std::map<std::string, at::Tensor>* contents[] = {&checkpoint.model, &checkpoint.optimizer, &checkpoint.rng};
  for (int i = 0; i < 3; ++i) {
    const std::string name = absl::StrCat(kParts[i], ".safetensors");
    const std::string path = Join(tmp_dir, name);
    if (absl::Status s = SaveSafetensors(path, *contents[i]); !s.ok()) return s;
    absl::StatusOr<std::string> bytes = utils::ReadFile(path);
    if (!bytes.ok()) return bytes.status();
    files[name] = {{"bytes", bytes->size()}, {"crc32c", utils::Crc32c(*bytes)}};
  }
  nlohmann::json metadata = {{"format_version", kCheckpointFormatVersion},
                             {"iteration", checkpoint.iteration},
                             {"recipe", checkpoint.recipe},
                             {"files", files}};
  if (absl::Status s = utils::WriteFileAtomically(Join(tmp_dir, kMetadata), metadata.dump(2) + "\n"); !s.ok()) {
    return s;
  }
  if (absl::Status s = utils::FsyncDirectory(tmp_dir); !s.ok()) return s;

  // Re-saving an iteration (e.g. resumed and stopped at once): move the old one aside first, so iter_N is
  // always either the old or the new complete checkpoint.
  std::string old_dir;
  if (utils::PathExists(final_dir)) {
    old_dir = absl::StrCat(final_dir, ".old.", getpid());
    if (absl::Status s = utils::RenameAtomically(final_dir, old_dir); !s.ok()) return s;
  }
  if (absl::Status s = utils::RenameAtomically(tmp_dir, final_dir); !s.ok()) return s;
  if (absl::Status s = utils::FsyncDirectory(dir); !s.ok()) return s;
  if (absl::Status s = utils::WriteFileAtomically(Join(dir, kTracker), absl::StrCat(checkpoint.iteration, "\n"));
      !s.ok()) {
    return s;
  }
  if (!old_dir.empty()) return RemoveTree(old_dir);
  return absl::OkStatus();
}

absl::StatusOr<std::optional<int64_t>> LatestIteration(const std::string& dir) {
  const std::string tracker = Join(dir, kTracker);
  if (!utils::PathExists(tracker)) return std::optional<int64_t>();
  absl::StatusOr<std::string> text = utils::ReadFile(tracker);
  if (!text.ok()) return text.status();
  int64_t iteration = 0;
  if (!absl::SimpleAtoi(absl::StripAsciiWhitespace(*text), &iteration) || iteration < 0) {
    return absl::DataLossError(absl::StrCat(tracker, ": expected an iteration number, found \"",
                                            absl::StripAsciiWhitespace(*text), "\""));
  }
  return std::optional<int64_t>(iteration);
}

absl::StatusOr<Checkpoint> LoadCheckpoint(const std::string& dir, int64_t iteration, LoadParts parts) {
  const std::string iter_dir = IterationDirectory(dir, iteration);
  const std::string metadata_path = Join(iter_dir, kMetadata);
  absl::StatusOr<std::string> metadata_text = utils::ReadFile(metadata_path);
  if (!metadata_text.ok()) return metadata_text.status();
  nlohmann::json metadata = nlohmann::json::parse(*metadata_text, nullptr, /*allow_exceptions=*/false);
  if (metadata.is_discarded() || !metadata.is_object()) {
    return absl::DataLossError(absl::StrCat(metadata_path, ": not valid JSON (truncated or corrupt)"));
  }
  auto field = [&](const char* name, nlohmann::json::value_t type) -> absl::StatusOr<nlohmann::json> {
    auto it = metadata.find(name);
    if (it == metadata.end() || it->type() != type) {
      return absl::DataLossError(absl::StrCat(metadata_path, ": field \"", name, "\" missing or of the wrong type"));
    }
    return *it;
  };
  auto version = field("format_version", nlohmann::json::value_t::number_unsigned);
  if (!version.ok()) return version.status();
  if (version->get<int>() != kCheckpointFormatVersion) {
    return absl::FailedPreconditionError(absl::StrCat(metadata_path, ": format_version ", version->get<int>(),
                                                      " is not supported (this build reads ",
                                                      kCheckpointFormatVersion, ")"));
  }
  auto iter = field("iteration", nlohmann::json::value_t::number_unsigned);
  auto recipe = field("recipe", nlohmann::json::value_t::string);
  auto files = field("files", nlohmann::json::value_t::object);
  for (const auto* s : {&iter, &recipe, &files}) {
    if (!s->ok()) return s->status();
  }
  Checkpoint out;
  out.iteration = iter->get<int64_t>();
  out.recipe = recipe->get<std::string>();
  if (out.iteration != iteration) {
    return absl::DataLossError(absl::StrCat(metadata_path, ": field \"iteration\" is ", out.iteration,
                                            " but the directory is for iteration ", iteration));
  }
  std::map<std::string, at::Tensor>* targets[] = {&out.model, &out.optimizer, &out.rng};
  for (int i = 0; i < 3; ++i) {
    if (parts == LoadParts::kModelOnly && i > 0) break;
    const std::string name = absl::StrCat(kParts[i], ".safetensors");
    const std::string path = Join(iter_dir, name);
    auto entry = files->find(name);
    if (entry == files->end() || !(*entry)["bytes"].is_number() || !(*entry)["crc32c"].is_number()) {
      return absl::DataLossError(absl::StrCat(metadata_path, ": field \"files.", name, "\" missing or malformed"));
    }
    absl::StatusOr<std::string> bytes = utils::ReadFile(path);
    if (!bytes.ok()) return bytes.status();
    const uint64_t expected_bytes = (*entry)["bytes"].get<uint64_t>();
    if (bytes->size() != expected_bytes) {
      return absl::DataLossError(absl::StrCat(path, ": ", bytes->size(), " bytes, metadata.json says ",
                                              expected_bytes, " (truncated or overwritten)"));
    }
    if (utils::Crc32c(*bytes) != (*entry)["crc32c"].get<uint32_t>()) {
      return absl::DataLossError(absl::StrCat(path, ": CRC-32C does not match metadata.json (corrupt file)"));
    }
    absl::StatusOr<std::map<std::string, at::Tensor>> tensors = LoadSafetensors(path);
    if (!tensors.ok()) return tensors.status();
    *targets[i] = std::move(*tensors);
  }
  return out;
}

}  // namespace megatron::checkpointing
