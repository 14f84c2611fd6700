#include "megatron/core/checkpointing/checkpoint.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <utility>

#include <ATen/ops/empty.h>
#include <ATen/ops/full.h>
#include <nlohmann/json.hpp>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/strip.h"
#include "megatron/core/distributed/process_group.h"
#include "megatron/core/utils/crc32c.h"
#include "megatron/core/utils/file_io.h"

namespace megatron::checkpointing {
namespace {

using json = nlohmann::json;

constexpr char kTracker[] = "latest_checkpointed_iteration.txt";
constexpr char kMetadata[] = "metadata.json";

std::string Join(const std::string& a, const std::string& b) { return a + "/" + b; }

const char* PartName(Part part) { return part == Part::kModel ? "model" : "optimizer"; }

absl::Status RemoveTree(const std::string& path) {
  std::error_code ec;
  std::filesystem::remove_all(path, ec);
  if (ec) return absl::InternalError(absl::StrCat(path, ": cannot remove: ", ec.message()));
  return absl::OkStatus();
}

int64_t Numel(const std::vector<int64_t>& shape) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

// Size and CRC-32C of a file, read in 16 MiB blocks (a shard may be larger than we want in memory at once).
absl::Status FileCrc(const std::string& path, uint64_t* bytes, uint32_t* crc) {
  int fd;
  do {
    fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  } while (fd < 0 && errno == EINTR);
  if (fd < 0) return utils::ErrnoToStatus(errno, "cannot open", path);
  std::vector<char> buffer(16 << 20);
  *bytes = 0;
  *crc = 0;
  while (true) {
    const ssize_t got = ::read(fd, buffer.data(), buffer.size());
    if (got < 0) {
      if (errno == EINTR) continue;
      const int err = errno;
      ::close(fd);
      return utils::ErrnoToStatus(err, "read", path);
    }
    if (got == 0) break;
    *crc = utils::Crc32cExtend(*crc, buffer.data(), static_cast<size_t>(got));
    *bytes += static_cast<uint64_t>(got);
  }
  ::close(fd);
  return absl::OkStatus();
}

std::string ShardFileName(const char* part, int rank, int world) {
  if (world == 1) return absl::StrCat(part, ".safetensors");
  return absl::StrFormat("%s-%05d-of-%05d.safetensors", part, rank, world);
}

std::string IndexFileName(int rank) { return absl::StrFormat("index-%05d.json", rank); }

json LayoutJson(const SavedLayout& l) {
  return {{"world_size", l.world_size},
          {"tensor_model_parallel_size", l.tp},
          {"pipeline_model_parallel_size", l.pp},
          {"virtual_pipeline_model_parallel_size", l.vp},
          {"context_parallel_size", l.cp},
          {"data_parallel_size", l.dp},
          {"use_distributed_optimizer", l.distributed_optimizer}};
}

json PlaceJson(const RankPlace& p) {
  return {{"rank", p.rank}, {"tp", p.tp}, {"pp", p.pp}, {"cp", p.cp}, {"dp", p.dp}};
}

// Writes one rank's pieces of one part into `file` and describes them in index["tensors"][part] (and "files").
absl::Status WritePieces(const std::string& tmp_dir, const std::string& file, Part part,
                         const std::vector<TensorPiece>& pieces, json& index) {
  if (pieces.empty()) return absl::OkStatus();
  std::map<std::string, at::Tensor> tensors;
  json& described = index["tensors"][PartName(part)];
  for (const TensorPiece& p : pieces) {
    const std::vector<int64_t> shape = p.data.sizes().vec();
    if (p.offsets.size() != p.global_shape.size() || shape.size() != p.global_shape.size()) {
      return absl::InvalidArgumentError(absl::StrCat("checkpoint piece of ", p.name, ": offsets/shape rank ",
                                                     p.offsets.size(), "/", shape.size(), " vs global shape ",
                                                     c10::str(at::IntArrayRef(p.global_shape))));
    }
    for (size_t d = 0; d < shape.size(); ++d) {
      if (p.offsets[d] < 0 || p.offsets[d] + shape[d] > p.global_shape[d]) {
        return absl::InvalidArgumentError(absl::StrCat(
            "checkpoint piece of ", p.name, ": ", c10::str(at::IntArrayRef(shape)), " at offsets ",
            c10::str(at::IntArrayRef(p.offsets)), " lies outside ", c10::str(at::IntArrayRef(p.global_shape))));
      }
    }
    const bool whole = shape == p.global_shape;
    const std::string key = whole ? p.name : absl::StrCat(p.name, "@", absl::StrJoin(p.offsets, ","));
    if (!tensors.emplace(key, p.data).second) {
      return absl::InvalidArgumentError(absl::StrCat("checkpoint piece of ", p.name, " at offsets ",
                                                     c10::str(at::IntArrayRef(p.offsets)), " given twice"));
    }
    absl::StatusOr<std::string> dtype = SafetensorsDtypeName(p.data.scalar_type());
    if (!dtype.ok()) return dtype.status();
    json& t = described[p.name];
    if (t.is_null()) t = {{"dtype", *dtype}, {"shape", p.global_shape}, {"pieces", json::array()}};
    t["pieces"].push_back({{"file", file}, {"key", key}, {"offsets", p.offsets}, {"shape", shape}});
  }
  const std::string path = Join(tmp_dir, file);
  if (absl::Status s = SaveSafetensors(path, tensors); !s.ok()) return s;
  uint64_t bytes = 0;
  uint32_t crc = 0;
  if (absl::Status s = FileCrc(path, &bytes, &crc); !s.ok()) return s;
  index["files"][file] = {{"bytes", bytes}, {"crc32c", crc}};
  return absl::OkStatus();
}

// True when the boxes (offsets, shape) intersect.
bool Overlap(const std::vector<int64_t>& ao, const std::vector<int64_t>& as, const std::vector<int64_t>& bo,
             const std::vector<int64_t>& bs) {
  for (size_t d = 0; d < ao.size(); ++d) {
    if (std::max(ao[d], bo[d]) >= std::min(ao[d] + as[d], bo[d] + bs[d])) return false;
  }
  return true;
}

// Rank 0: the merged metadata of every rank's index; checks that each tensor's pieces tile it exactly.
absl::StatusOr<json> MergeIndexes(const std::string& tmp_dir, int world, json metadata) {
  metadata["files"] = json::object();
  metadata["tensors"] = {{"model", json::object()}, {"optimizer", json::object()}};
  metadata["rng"] = json::array();
  for (int r = 0; r < world; ++r) {
    const std::string path = Join(tmp_dir, IndexFileName(r));
    absl::StatusOr<std::string> text = utils::ReadFile(path);
    if (!text.ok()) return text.status();
    json index = json::parse(*text, nullptr, /*allow_exceptions=*/false);
    if (index.is_discarded()) return absl::DataLossError(absl::StrCat(path, ": not valid JSON"));
    for (auto& [file, entry] : index["files"].items()) metadata["files"][file] = entry;
    for (const char* part : {"model", "optimizer"}) {
      for (auto& [name, t] : index["tensors"][part].items()) {
        json& merged = metadata["tensors"][part][name];
        if (merged.is_null()) {
          merged = t;
          continue;
        }
        if (merged["dtype"] != t["dtype"] || merged["shape"] != t["shape"]) {
          return absl::InternalError(absl::StrCat("checkpoint: ranks disagree on ", part, " tensor ", name, ": ",
                                                  merged["dtype"].dump(), merged["shape"].dump(), " vs ",
                                                  t["dtype"].dump(), t["shape"].dump()));
        }
        for (auto& piece : t["pieces"]) merged["pieces"].push_back(piece);
      }
    }
    if (index.contains("rng")) metadata["rng"].push_back(index["rng"]);
  }
  for (const char* part : {"model", "optimizer"}) {
    for (auto& [name, t] : metadata["tensors"][part].items()) {
      const std::vector<int64_t> shape = t["shape"].get<std::vector<int64_t>>();
      int64_t covered = 0;
      const json& pieces = t["pieces"];
      for (size_t i = 0; i < pieces.size(); ++i) {
        const auto oi = pieces[i]["offsets"].get<std::vector<int64_t>>();
        const auto si = pieces[i]["shape"].get<std::vector<int64_t>>();
        covered += Numel(si);
        for (size_t j = 0; j < i; ++j) {
          if (Numel(si) > 0 && Overlap(oi, si, pieces[j]["offsets"].get<std::vector<int64_t>>(),
                                       pieces[j]["shape"].get<std::vector<int64_t>>())) {
            return absl::InternalError(absl::StrCat("checkpoint: two ranks wrote overlapping pieces of ", part,
                                                    " tensor ", name, " (", pieces[i].dump(), ", ", pieces[j].dump(),
                                                    "): a sharding bug"));
          }
        }
      }
      if (covered != Numel(shape)) {
        return absl::InternalError(absl::StrCat("checkpoint: the pieces of ", part, " tensor ", name, " cover ",
                                                covered, " of its ", Numel(shape), " elements: a sharding bug"));
      }
    }
  }
  return metadata;
}

}  // namespace

bool SameModelParallelism(const SavedLayout& a, const SavedLayout& b) {
  return a.tp == b.tp && a.pp == b.pp && a.vp == b.vp && a.cp == b.cp;
}

std::string DebugString(const SavedLayout& l) {
  return absl::StrFormat("TP=%d PP=%d VP=%d CP=%d DP=%d%s", l.tp, l.pp, l.vp, l.cp, l.dp,
                         l.distributed_optimizer ? " (distributed optimizer)" : "");
}

std::string IterationDirectory(const std::string& dir, int64_t iteration) {
  return Join(dir, absl::StrFormat("iter_%07d", iteration));
}

absl::Status SaveShardedCheckpoint(const std::string& dir, int64_t iteration, const std::string& recipe,
                                   const SavedLayout& layout, const RankPlace& place, const RankState& state,
                                   distributed::Group* world) {
  const int rank = world == nullptr ? 0 : world->rank();
  const int world_size = world == nullptr ? 1 : world->size();
  const std::string what = absl::StrCat("saving checkpoint ", IterationDirectory(dir, iteration));
  const std::string final_dir = IterationDirectory(dir, iteration);
  // One temporary directory for all ranks, named by rank 0's pid.
  at::Tensor pid = at::full({1}, static_cast<double>(getpid()), at::TensorOptions().dtype(at::kDouble));
  if (world != nullptr && world_size > 1) {
    if (absl::Status s = world->Broadcast(pid, 0); !s.ok()) return s;
  }
  const std::string tmp_dir = absl::StrCat(final_dir, ".tmp.", static_cast<int64_t>(pid.item<double>()));

  absl::Status s;
  if (rank == 0) {
    s = utils::MakeDirectories(dir);
    if (s.ok()) s = RemoveTree(tmp_dir);
    if (s.ok()) s = utils::MakeDirectories(tmp_dir);
  }
  if (absl::Status all = AllRanksOk(world, s, what); !all.ok()) return all;

  // Every rank: its files and its index.
  json index = {{"files", json::object()}, {"tensors", {{"model", json::object()}, {"optimizer", json::object()}}}};
  s = WritePieces(tmp_dir, ShardFileName("model", rank, world_size), Part::kModel, state.model, index);
  if (s.ok()) {
    s = WritePieces(tmp_dir, ShardFileName("optimizer", rank, world_size), Part::kOptimizer, state.optimizer, index);
  }
  if (s.ok() && !state.rng.empty()) {
    const std::string file = ShardFileName("rng", rank, world_size);
    const std::string path = Join(tmp_dir, file);
    s = SaveSafetensors(path, state.rng);
    uint64_t bytes = 0;
    uint32_t crc = 0;
    if (s.ok()) s = FileCrc(path, &bytes, &crc);
    if (s.ok()) {
      index["files"][file] = {{"bytes", bytes}, {"crc32c", crc}};
      index["rng"] = PlaceJson(place);
      index["rng"]["file"] = file;
    }
  }
  if (s.ok()) s = utils::WriteFileAtomically(Join(tmp_dir, IndexFileName(rank)), index.dump() + "\n");
  // A failed save leaves no temporary directory behind (rank 0 removes it once every rank has stopped writing).
  auto cleanup = [&](absl::Status failed) {
    if (rank == 0) RemoveTree(tmp_dir).IgnoreError();
    return failed;
  };
  if (absl::Status all = AllRanksOk(world, s, what); !all.ok()) return cleanup(all);

  if (rank == 0) {
    s = [&]() -> absl::Status {
      json metadata = {{"format_version", kCheckpointFormatVersion},
                       {"iteration", iteration},
                       {"recipe", recipe},
                       {"layout", LayoutJson(layout)}};
      absl::StatusOr<json> merged = MergeIndexes(tmp_dir, world_size, std::move(metadata));
      if (!merged.ok()) return merged.status();
      if (absl::Status st = utils::WriteFileAtomically(Join(tmp_dir, kMetadata), merged->dump(1) + "\n"); !st.ok()) {
        return st;
      }
      for (int r = 0; r < world_size; ++r) std::remove(Join(tmp_dir, IndexFileName(r)).c_str());
      if (absl::Status st = utils::FsyncDirectory(tmp_dir); !st.ok()) return st;
      // Re-saving an iteration (e.g. resumed and stopped at once): move the old one aside first, so iter_N is
      // always either the old or the new complete checkpoint.
      std::string old_dir;
      if (utils::PathExists(final_dir)) {
        old_dir = absl::StrCat(final_dir, ".old.", getpid());
        if (absl::Status st = utils::RenameAtomically(final_dir, old_dir); !st.ok()) return st;
      }
      if (absl::Status st = utils::RenameAtomically(tmp_dir, final_dir); !st.ok()) return st;
      if (absl::Status st = utils::FsyncDirectory(dir); !st.ok()) return st;
      if (absl::Status st = utils::WriteFileAtomically(Join(dir, kTracker), absl::StrCat(iteration, "\n")); !st.ok()) {
        return st;
      }
      if (!old_dir.empty()) return RemoveTree(old_dir);
      return absl::OkStatus();
    }();
  }
  if (absl::Status all = AllRanksOk(world, s, what); !all.ok()) return cleanup(all);
  return absl::OkStatus();
}

absl::Status SaveCheckpoint(const std::string& dir, const Checkpoint& checkpoint) {
  RankState state;
  auto whole = [](const std::map<std::string, at::Tensor>& tensors, std::vector<TensorPiece>& out) {
    for (const auto& [name, t] : tensors) {
      out.push_back(TensorPiece{name, t.sizes().vec(), std::vector<int64_t>(t.dim(), 0), t});
    }
  };
  whole(checkpoint.model, state.model);
  whole(checkpoint.optimizer, state.optimizer);
  state.rng = checkpoint.rng;
  return SaveShardedCheckpoint(dir, checkpoint.iteration, checkpoint.recipe, SavedLayout{}, RankPlace{}, state,
                               nullptr);
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

absl::StatusOr<CheckpointReader> CheckpointReader::Open(const std::string& dir, int64_t iteration) {
  CheckpointReader r;
  r.iter_dir_ = IterationDirectory(dir, iteration);
  r.metadata_path_ = Join(r.iter_dir_, kMetadata);
  const std::string& metadata_path = r.metadata_path_;
  absl::StatusOr<std::string> metadata_text = utils::ReadFile(metadata_path);
  if (!metadata_text.ok()) return metadata_text.status();
  json metadata = json::parse(*metadata_text, nullptr, /*allow_exceptions=*/false);
  if (metadata.is_discarded() || !metadata.is_object()) {
    return absl::DataLossError(absl::StrCat(metadata_path, ": not valid JSON (truncated or corrupt)"));
  }
  auto malformed = [&](const std::string& field) {
    return absl::DataLossError(absl::StrCat(metadata_path, ": field \"", field, "\" missing or of the wrong type"));
  };
  auto field = [&](const char* name, json::value_t type) -> absl::StatusOr<json> {
    auto it = metadata.find(name);
    if (it == metadata.end() || it->type() != type) return malformed(name);
    return *it;
  };
  auto version = field("format_version", json::value_t::number_unsigned);
  if (!version.ok()) return version.status();
  r.format_version_ = version->get<int>();
  if (r.format_version_ < 1 || r.format_version_ > kCheckpointFormatVersion) {
    return absl::FailedPreconditionError(absl::StrCat(metadata_path, ": format_version ", r.format_version_,
                                                      " is not supported (this build reads 1 to ",
                                                      kCheckpointFormatVersion, ")"));
  }
  auto iter = field("iteration", json::value_t::number_unsigned);
  auto recipe = field("recipe", json::value_t::string);
  auto files = field("files", json::value_t::object);
  for (const auto* s : {&iter, &recipe, &files}) {
    if (!s->ok()) return s->status();
  }
  r.iteration_ = iter->get<int64_t>();
  r.recipe_ = recipe->get<std::string>();
  if (r.iteration_ != iteration) {
    return absl::DataLossError(absl::StrCat(metadata_path, ": field \"iteration\" is ", r.iteration_,
                                            " but the directory is for iteration ", iteration));
  }
  for (const auto& [name, entry] : files->items()) {
    if (!entry.is_object() || !entry["bytes"].is_number_unsigned() || !entry["crc32c"].is_number_unsigned()) {
      return malformed(absl::StrCat("files.", name));
    }
    File f;
    f.bytes = entry["bytes"].get<uint64_t>();
    f.crc32c = entry["crc32c"].get<uint32_t>();
    const std::string path = Join(r.iter_dir_, name);
    struct stat st;
    if (::stat(path.c_str(), &st) != 0) return utils::ErrnoToStatus(errno, "cannot open", path);
    if (static_cast<uint64_t>(st.st_size) != f.bytes) {
      return absl::DataLossError(absl::StrCat(path, ": ", st.st_size, " bytes, metadata.json says ", f.bytes,
                                              " (truncated or overwritten)"));
    }
    r.files_.emplace(name, std::move(f));
  }

  if (r.format_version_ == 1) {
    // One file per part, whole tensors; saved by a single process (or by rank 0 of pure data parallelism).
    for (const char* part : {"model", "optimizer", "rng"}) {
      const std::string file = absl::StrCat(part, ".safetensors");
      if (!r.files_.count(file)) return malformed(absl::StrCat("files.", file));
    }
    for (Part part : {Part::kModel, Part::kOptimizer}) {
      const std::string file = absl::StrCat(PartName(part), ".safetensors");
      absl::StatusOr<SafetensorsHeader> header = ReadSafetensorsHeader(Join(r.iter_dir_, file));
      if (!header.ok()) return header.status();
      std::map<std::string, StoredTensor>& out = part == Part::kModel ? r.model_ : r.optimizer_;
      for (const auto& [name, entry] : header->tensors) {
        StoredTensor t;
        t.dtype = entry.dtype;
        t.shape = entry.shape;
        t.pieces.push_back({file, name, std::vector<int64_t>(entry.shape.size(), 0), entry.shape});
        out.emplace(name, std::move(t));
      }
    }
    r.rng_.push_back({RankPlace{}, "rng.safetensors"});
    return r;
  }

  auto layout = field("layout", json::value_t::object);
  auto tensors = field("tensors", json::value_t::object);
  auto rng = field("rng", json::value_t::array);
  for (const auto* s : {&layout, &tensors, &rng}) {
    if (!s->ok()) return s->status();
  }
  try {
    const json& l = *layout;
    r.layout_.world_size = l.at("world_size").get<int>();
    r.layout_.tp = l.at("tensor_model_parallel_size").get<int>();
    r.layout_.pp = l.at("pipeline_model_parallel_size").get<int>();
    r.layout_.vp = l.at("virtual_pipeline_model_parallel_size").get<int>();
    r.layout_.cp = l.at("context_parallel_size").get<int>();
    r.layout_.dp = l.at("data_parallel_size").get<int>();
    r.layout_.distributed_optimizer = l.at("use_distributed_optimizer").get<bool>();
    for (Part part : {Part::kModel, Part::kOptimizer}) {
      std::map<std::string, StoredTensor>& out = part == Part::kModel ? r.model_ : r.optimizer_;
      for (const auto& [name, t] : tensors->at(PartName(part)).items()) {
        StoredTensor stored;
        absl::StatusOr<at::ScalarType> dtype = SafetensorsDtypeFromName(t.at("dtype").get<std::string>());
        if (!dtype.ok()) return malformed(absl::StrCat("tensors.", PartName(part), ".", name, ".dtype"));
        stored.dtype = *dtype;
        stored.shape = t.at("shape").get<std::vector<int64_t>>();
        for (const json& p : t.at("pieces")) {
          StoredTensor::Piece piece{p.at("file").get<std::string>(), p.at("key").get<std::string>(),
                                    p.at("offsets").get<std::vector<int64_t>>(),
                                    p.at("shape").get<std::vector<int64_t>>()};
          if (!r.files_.count(piece.file) || piece.offsets.size() != stored.shape.size() ||
              piece.shape.size() != stored.shape.size()) {
            return malformed(absl::StrCat("tensors.", PartName(part), ".", name, ".pieces"));
          }
          stored.pieces.push_back(std::move(piece));
        }
        out.emplace(name, std::move(stored));
      }
    }
    for (const json& e : *rng) {
      RngEntry entry;
      entry.place = {e.at("rank").get<int>(), e.at("tp").get<int>(), e.at("pp").get<int>(), e.at("cp").get<int>(),
                     e.at("dp").get<int>()};
      entry.file = e.at("file").get<std::string>();
      if (!r.files_.count(entry.file)) return malformed("rng");
      r.rng_.push_back(std::move(entry));
    }
  } catch (const json::exception& e) {
    return absl::DataLossError(absl::StrCat(metadata_path, ": malformed layout/tensors/rng index: ", e.what()));
  }
  return r;
}

absl::StatusOr<const SafetensorsHeader*> CheckpointReader::VerifiedHeader(const std::string& file) {
  File& f = files_.at(file);
  const std::string path = Join(iter_dir_, file);
  if (!f.verified) {
    uint64_t bytes = 0;
    uint32_t crc = 0;
    if (absl::Status s = FileCrc(path, &bytes, &crc); !s.ok()) return s;
    if (bytes != f.bytes) {
      return absl::DataLossError(absl::StrCat(path, ": ", bytes, " bytes, metadata.json says ", f.bytes,
                                              " (truncated or overwritten)"));
    }
    if (crc != f.crc32c) {
      return absl::DataLossError(absl::StrCat(path, ": CRC-32C does not match metadata.json (corrupt file)"));
    }
    f.verified = true;
  }
  if (!f.header) {
    absl::StatusOr<SafetensorsHeader> header = ReadSafetensorsHeader(path);
    if (!header.ok()) return header.status();
    f.header = std::move(*header);
  }
  return &*f.header;
}

absl::StatusOr<at::Tensor> CheckpointReader::Read(Part part, const std::string& name,
                                                  const std::vector<int64_t>& offsets,
                                                  const std::vector<int64_t>& shape) {
  const std::map<std::string, StoredTensor>& index = tensors(part);
  auto it = index.find(name);
  if (it == index.end()) {
    return absl::NotFoundError(absl::StrCat(iter_dir_, ": no ", PartName(part), " tensor ", name));
  }
  const StoredTensor& t = it->second;
  const std::string box = absl::StrCat(c10::str(at::IntArrayRef(shape)), " at offsets ",
                                       c10::str(at::IntArrayRef(offsets)));
  if (offsets.size() != t.shape.size() || shape.size() != t.shape.size()) {
    return absl::InvalidArgumentError(absl::StrCat(iter_dir_, ": ", PartName(part), " tensor ", name, " of shape ",
                                                   c10::str(at::IntArrayRef(t.shape)), ": cannot read ", box));
  }
  for (size_t d = 0; d < shape.size(); ++d) {
    if (offsets[d] < 0 || shape[d] < 0 || offsets[d] + shape[d] > t.shape[d]) {
      return absl::InvalidArgumentError(absl::StrCat(iter_dir_, ": ", PartName(part), " tensor ", name, " of shape ",
                                                     c10::str(at::IntArrayRef(t.shape)), ": ", box,
                                                     " lies outside it"));
    }
  }
  at::Tensor out = at::empty(shape, at::TensorOptions().dtype(t.dtype));
  int64_t covered = 0;
  for (const StoredTensor::Piece& p : t.pieces) {
    // The intersection of the piece and the box, in global coordinates.
    std::vector<int64_t> lo(shape.size()), hi(shape.size());
    bool empty = false;
    for (size_t d = 0; d < shape.size(); ++d) {
      lo[d] = std::max(offsets[d], p.offsets[d]);
      hi[d] = std::min(offsets[d] + shape[d], p.offsets[d] + p.shape[d]);
      if (lo[d] >= hi[d]) empty = true;
    }
    if (empty && !shape.empty()) continue;
    absl::StatusOr<const SafetensorsHeader*> header = VerifiedHeader(p.file);
    if (!header.ok()) return header.status();
    const std::string path = Join(iter_dir_, p.file);
    auto entry = (*header)->tensors.find(p.key);
    if (entry == (*header)->tensors.end() || entry->second.shape != p.shape || entry->second.dtype != t.dtype) {
      return absl::DataLossError(absl::StrCat(path, ": tensor '", p.key, "' is missing or differs from metadata.json"));
    }
    // Only the rows needed (dim 0 is contiguous in the file).
    const int64_t row_begin = shape.empty() ? 0 : lo[0] - p.offsets[0];
    const int64_t row_end = shape.empty() ? -1 : hi[0] - p.offsets[0];
    absl::StatusOr<at::Tensor> data = LoadSafetensorsTensor(path, **header, p.key, row_begin, row_end);
    if (!data.ok()) return data.status();
    at::Tensor src = *data, dst = out;
    for (size_t d = 0; d < shape.size(); ++d) {
      if (d > 0) src = src.narrow(static_cast<int64_t>(d), lo[d] - p.offsets[d], hi[d] - lo[d]);
      dst = dst.narrow(static_cast<int64_t>(d), lo[d] - offsets[d], hi[d] - lo[d]);
    }
    dst.copy_(src);
    covered += src.numel();
  }
  if (covered != Numel(shape)) {
    return absl::DataLossError(absl::StrCat(metadata_path_, ": the pieces of ", PartName(part), " tensor ", name,
                                            " cover ", covered, " of the ", Numel(shape), " elements of ", box));
  }
  return out;
}

absl::StatusOr<at::Tensor> CheckpointReader::ReadWhole(Part part, const std::string& name) {
  auto it = tensors(part).find(name);
  if (it == tensors(part).end()) {
    return absl::NotFoundError(absl::StrCat(iter_dir_, ": no ", PartName(part), " tensor ", name));
  }
  return Read(part, name, std::vector<int64_t>(it->second.shape.size(), 0), it->second.shape);
}

absl::StatusOr<std::optional<std::map<std::string, at::Tensor>>> CheckpointReader::Rng(const RankPlace& place) {
  for (const RngEntry& e : rng_) {
    if (e.place.tp != place.tp || e.place.pp != place.pp || e.place.cp != place.cp || e.place.dp != place.dp) {
      continue;
    }
    if (absl::StatusOr<const SafetensorsHeader*> header = VerifiedHeader(e.file); !header.ok()) {
      return header.status();
    }
    absl::StatusOr<std::map<std::string, at::Tensor>> states = LoadSafetensors(Join(iter_dir_, e.file));
    if (!states.ok()) return states.status();
    return std::optional<std::map<std::string, at::Tensor>>(std::move(*states));
  }
  return std::optional<std::map<std::string, at::Tensor>>();
}

absl::StatusOr<Checkpoint> LoadCheckpoint(const std::string& dir, int64_t iteration, LoadParts parts) {
  absl::StatusOr<CheckpointReader> reader = CheckpointReader::Open(dir, iteration);
  if (!reader.ok()) return reader.status();
  Checkpoint out;
  out.iteration = reader->iteration();
  out.recipe = reader->recipe();
  for (Part part : {Part::kModel, Part::kOptimizer}) {
    if (part == Part::kOptimizer && parts == LoadParts::kModelOnly) break;
    std::map<std::string, at::Tensor>& target = part == Part::kModel ? out.model : out.optimizer;
    for (const auto& [name, stored] : reader->tensors(part)) {
      absl::StatusOr<at::Tensor> t = reader->ReadWhole(part, name);
      if (!t.ok()) return t.status();
      target.emplace(name, std::move(*t));
    }
  }
  if (parts == LoadParts::kAll) {
    absl::StatusOr<std::optional<std::map<std::string, at::Tensor>>> rng = reader->Rng(RankPlace{});
    if (!rng.ok()) return rng.status();
    if (rng->has_value()) out.rng = std::move(**rng);
  }
  return out;
}

absl::Status AllRanksOk(distributed::Group* world, const absl::Status& local, const std::string& what) {
  if (world == nullptr || world->size() == 1) return local;
  at::Tensor ok = at::full({1}, local.ok() ? 1.0 : 0.0, at::TensorOptions().dtype(at::kDouble));
  if (absl::Status s = world->AllReduce(ok, distributed::ReduceOp::kMin); !s.ok()) return s;
  if (!local.ok()) return local;
  if (ok.item<double>() == 0.0) return absl::AbortedError(absl::StrCat(what, ": another rank failed (see its error)"));
  return absl::OkStatus();
}

}  // namespace megatron::checkpointing
