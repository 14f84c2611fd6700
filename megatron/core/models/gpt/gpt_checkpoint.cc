#include "megatron/core/models/gpt/gpt_checkpoint.h"

#include <cstring>
#include <set>

#include <ATen/core/grad_mode.h>
#include <ATen/ops/full.h>
#include <ATen/ops/zeros.h>
#include <nlohmann/json.hpp>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "megatron/core/distributed/process_group.h"

namespace megatron::models {
namespace {

using json = nlohmann::json;

constexpr char kWordEmbeddings[] = "embedding.word_embeddings.weight";
constexpr const char* kStatePrefixes[] = {"exp_avg.", "exp_avg_sq."};

std::string Shape(const std::vector<int64_t>& shape) { return c10::str(at::IntArrayRef(shape)); }

// A piece along `dim` (all other dims whole): local [local_begin, +length) == global [global_begin, +length).
ShardPiece Slab(const std::vector<int64_t>& local_shape, int64_t dim, int64_t local_begin, int64_t global_begin,
                int64_t length) {
  ShardPiece p;
  p.local_offsets.assign(local_shape.size(), 0);
  p.global_offsets.assign(local_shape.size(), 0);
  p.shape = local_shape;
  p.local_offsets[dim] = local_begin;
  p.global_offsets[dim] = global_begin;
  p.shape[dim] = length;
  return p;
}

at::Tensor Box(const at::Tensor& t, const std::vector<int64_t>& offsets, const std::vector<int64_t>& shape) {
  at::Tensor out = t;
  for (size_t d = 0; d < shape.size(); ++d) out = out.narrow(static_cast<int64_t>(d), offsets[d], shape[d]);
  return out;
}

bool Writes(const ParameterShard& shard, const checkpointing::RankPlace& place) {
  return !shard.tied_copy && place.dp == 0 && place.cp == 0 && (!shard.tp_replicated || place.tp == 0);
}

// Every rank's string, on every rank (in rank order).
absl::StatusOr<std::vector<std::string>> AllGatherStrings(distributed::Group* world, const std::string& s) {
  if (world == nullptr || world->size() == 1) return std::vector<std::string>{s};
  at::Tensor length = at::full({1}, static_cast<int64_t>(s.size()), at::TensorOptions().dtype(at::kLong));
  absl::StatusOr<std::vector<at::Tensor>> lengths = world->AllGather(length);
  if (!lengths.ok()) return lengths.status();
  int64_t longest = 1;
  for (const at::Tensor& l : *lengths) longest = std::max(longest, l.item<int64_t>());
  at::Tensor bytes = at::zeros({longest}, at::TensorOptions().dtype(at::kByte));
  std::memcpy(bytes.data_ptr(), s.data(), s.size());
  absl::StatusOr<std::vector<at::Tensor>> all = world->AllGather(bytes);
  if (!all.ok()) return all.status();
  std::vector<std::string> out;
  for (size_t r = 0; r < all->size(); ++r) {
    const at::Tensor t = (*all)[r].contiguous();
    out.emplace_back(static_cast<const char*>(t.data_ptr()), static_cast<size_t>((*lengths)[r].item<int64_t>()));
  }
  return out;
}

// The parameter an optimizer-state key belongs to ("exp_avg.<param>" -> "<param>", prefix "exp_avg."), or false.
bool SplitStateKey(const std::string& key, std::string* prefix, std::string* param) {
  for (const char* p : kStatePrefixes) {
    if (absl::StartsWith(key, p)) {
      *prefix = p;
      *param = key.substr(std::strlen(p));
      return true;
    }
  }
  return false;
}

// One local tensor to save or load: its shard description (global name already prefixed for optimizer state).
struct Local {
  at::Tensor tensor;
  ParameterShard shard;
};

absl::StatusOr<std::vector<Local>> Locals(const std::vector<std::pair<std::string, at::Tensor>>& named_params,
                                          const std::map<std::string, at::Tensor>* optimizer_state,
                                          const GptShardingInfo& info, checkpointing::Part part) {
  std::vector<Local> out;
  if (part == checkpointing::Part::kModel) {
    for (const auto& [name, p] : named_params) {
      absl::StatusOr<ParameterShard> shard = GptParameterShard(name, p.sizes().vec(), info);
      if (!shard.ok()) return shard.status();
      out.push_back({p, std::move(*shard)});
    }
    return out;
  }
  for (const auto& [key, t] : *optimizer_state) {
    std::string prefix, param;
    if (key == "step") {
      ParameterShard shard;
      shard.global_name = "step";
      shard.pieces.push_back(ShardPiece{});
      shard.tp_replicated = true;
      out.push_back({t, std::move(shard)});
      continue;
    }
    if (!SplitStateKey(key, &prefix, &param)) {
      return absl::InvalidArgumentError(absl::StrCat("optimizer state: unknown entry ", key,
                                                     " (expected exp_avg.<param>, exp_avg_sq.<param> or step)"));
    }
    absl::StatusOr<ParameterShard> shard = GptParameterShard(param, t.sizes().vec(), info);
    if (!shard.ok()) return shard.status();
    shard->global_name = prefix + shard->global_name;
    out.push_back({t, std::move(*shard)});
  }
  return out;
}

}  // namespace

absl::StatusOr<ParameterShard> GptParameterShard(const std::string& name, const std::vector<int64_t>& local_shape,
                                                 const GptShardingInfo& info) {
  const auto ends = [&](const char* suffix) { return absl::EndsWith(name, suffix); };
  const int tp = info.tp_size, r = info.tp_rank;
  ParameterShard s;
  s.global_name = name;
  s.global_shape = local_shape;
  auto bad = [&](const std::string& why) {
    return absl::InvalidArgumentError(absl::StrCat("parameter ", name, " of shape ", Shape(local_shape),
                                                   " on tensor-parallel rank ", r, " of ", tp, ": ", why));
  };
  if (tp < 1 || r < 0 || r >= tp) return bad("bad tensor-parallel rank/size");
  const bool vocab = ends("word_embeddings.weight") || ends("output_layer.weight");
  const bool column = ends("linear_qkv.weight") || ends("linear_qkv.bias") || ends("linear_fc1.weight") ||
                      ends("linear_fc1.bias");
  const bool row = ends("linear_proj.weight") || ends("linear_fc2.weight");
  if (vocab) {
    if (local_shape.size() != 2) return bad("expected [vocab rows, hidden]");
    if (info.tied_embeddings && name == "output_layer.weight") {
      s.global_name = kWordEmbeddings;
      s.tied_copy = true;
    }
    const int64_t n = local_shape[0];
    if (info.vocab_size <= 0 || info.vocab_size > n * tp) {
      return bad(absl::StrCat("the vocabulary of ", info.vocab_size, " rows does not fit ", tp, " x ", n, " rows"));
    }
    s.global_shape[0] = info.vocab_size;
    const int64_t begin = r * n, length = std::max<int64_t>(0, std::min(n, info.vocab_size - begin));
    if (length > 0) s.pieces.push_back(Slab(local_shape, 0, 0, begin, length));
    return s;
  }
  if (column) {
    if (local_shape.empty()) return bad("expected a dimension to shard");
    const int64_t stride = info.gated_mlp && (ends("linear_fc1.weight") || ends("linear_fc1.bias")) ? 2 : 1;
    const int64_t n = local_shape[0];
    if (n % stride != 0) return bad("a gated linear_fc1 must have an even number of rows ([gate_r; up_r])");
    const int64_t c = n / stride;  // rows per block on this rank
    s.global_shape[0] = n * tp;
    for (int64_t k = 0; k < stride; ++k) s.pieces.push_back(Slab(local_shape, 0, k * c, k * c * tp + r * c, c));
    return s;
  }
  if (row) {
    if (local_shape.size() != 2) return bad("expected [out, in/tp]");
    s.global_shape[1] = local_shape[1] * tp;
    s.pieces.push_back(Slab(local_shape, 1, 0, r * local_shape[1], local_shape[1]));
    return s;
  }
  s.tp_replicated = true;
  s.pieces.push_back(ShardPiece{std::vector<int64_t>(local_shape.size(), 0),
                                std::vector<int64_t>(local_shape.size(), 0), local_shape});
  return s;
}

absl::Status SaveGptCheckpoint(const std::string& dir, int64_t iteration, const std::string& recipe,
                               const std::vector<std::pair<std::string, at::Tensor>>& named_params,
                               const std::map<std::string, at::Tensor>& optimizer_state,
                               const std::map<std::string, at::Tensor>& rng, const GptCheckpointPlacement& placement) {
  checkpointing::RankState state;
  state.rng = rng;
  absl::Status s;
  for (checkpointing::Part part : {checkpointing::Part::kModel, checkpointing::Part::kOptimizer}) {
    absl::StatusOr<std::vector<Local>> locals = Locals(named_params, &optimizer_state, placement.sharding, part);
    if (!locals.ok()) {
      s = locals.status();
      break;
    }
    std::vector<checkpointing::TensorPiece>& out =
        part == checkpointing::Part::kModel ? state.model : state.optimizer;
    for (const Local& l : *locals) {
      if (!Writes(l.shard, placement.place)) continue;
      if (l.shard.global_name == "step" && placement.place.rank != 0) continue;
      for (const ShardPiece& p : l.shard.pieces) {
        out.push_back({l.shard.global_name, l.shard.global_shape, p.global_offsets,
                       Box(l.tensor.detach(), p.local_offsets, p.shape)});
      }
    }
  }
  // A local error must not leave the other ranks waiting in the collective save.
  if (absl::Status all = checkpointing::AllRanksOk(placement.world, s, "saving checkpoint"); !all.ok()) return all;
  return checkpointing::SaveShardedCheckpoint(dir, iteration, recipe, placement.layout, placement.place, state,
                                              placement.world);
}

std::string LoadReport::ToString() const {
  std::vector<std::string> lines;
  for (const std::string& n : missing) lines.push_back(absl::StrCat("  missing from the checkpoint: ", n));
  for (const std::string& n : unexpected) lines.push_back(absl::StrCat("  unexpected (not in the model): ", n));
  for (const Mismatch& m : mismatched) {
    lines.push_back(absl::StrCat("  shape mismatch: ", m.name, ": the model expects ", Shape(m.expected),
                                 ", the checkpoint has ", Shape(m.found)));
  }
  return absl::StrJoin(lines, "\n");
}

absl::StatusOr<GptLoadResult> LoadGptCheckpoint(checkpointing::CheckpointReader& reader,
                                                const std::vector<std::pair<std::string, at::Tensor>>& named_params,
                                                std::map<std::string, at::Tensor>* optimizer_state,
                                                const GptCheckpointPlacement& placement, transformer::LoadMode mode) {
  using checkpointing::Part;
  std::vector<Part> parts = {Part::kModel};
  if (optimizer_state != nullptr) parts.push_back(Part::kOptimizer);
  std::map<Part, std::vector<Local>> locals;
  absl::Status s;
  json expected = {{"model", json::object()}, {"optimizer", json::object()}};
  for (Part part : parts) {
    absl::StatusOr<std::vector<Local>> l = Locals(named_params, optimizer_state, placement.sharding, part);
    if (!l.ok()) {
      s = l.status();
      break;
    }
    for (const Local& local : *l) {
      if (!local.shard.tied_copy) {
        expected[part == Part::kModel ? "model" : "optimizer"][local.shard.global_name] = local.shard.global_shape;
      }
    }
    locals[part] = std::move(*l);
  }
  const std::string what = absl::StrCat("loading checkpoint ", reader.directory());
  if (absl::Status all = checkpointing::AllRanksOk(placement.world, s, what); !all.ok()) return all;

  // The report over the whole model: the union of every rank's tensors against the checkpoint's index.
  absl::StatusOr<std::vector<std::string>> gathered = AllGatherStrings(placement.world, expected.dump());
  if (!gathered.ok()) return gathered.status();
  GptLoadResult result;
  std::map<Part, std::map<std::string, std::vector<int64_t>>> wanted;
  for (const std::string& text : *gathered) {
    const json j = json::parse(text);
    for (Part part : parts) {
      for (const auto& [name, shape] : j[part == Part::kModel ? "model" : "optimizer"].items()) {
        wanted[part][name] = shape.get<std::vector<int64_t>>();
      }
    }
  }
  std::set<std::string> skip;  // global names (optimizer ones prefixed) not to load
  for (Part part : parts) {
    const auto& stored = reader.tensors(part);
    for (const auto& [name, shape] : wanted[part]) {
      auto it = stored.find(name);
      if (it == stored.end()) {
        result.report.missing.push_back(name);
        skip.insert(name);
      } else if (it->second.shape != shape) {
        result.report.mismatched.push_back({name, shape, it->second.shape});
        skip.insert(name);
      }
    }
    for (const auto& [name, t] : stored) {
      if (!wanted[part].count(name)) result.report.unexpected.push_back(name);
    }
  }
  if (mode == transformer::LoadMode::kStrict && !result.report.empty()) {
    return absl::FailedPreconditionError(absl::StrCat(
        reader.directory(), ": the checkpoint does not match the model (strict loading; "
        "checkpoint.strict=false loads the tensors that match):\n", result.report.ToString()));
  }

  s = [&]() -> absl::Status {
    at::NoGradGuard no_grad;
    for (Part part : parts) {
      for (const Local& l : locals[part]) {
        if (skip.count(l.shard.global_name)) continue;
        for (const ShardPiece& p : l.shard.pieces) {
          absl::StatusOr<at::Tensor> box = reader.Read(part, l.shard.global_name, p.global_offsets, p.shape);
          if (!box.ok()) return box.status();
          Box(l.tensor.detach(), p.local_offsets, p.shape).copy_(*box);
        }
      }
    }
    return absl::OkStatus();
  }();
  if (absl::Status all = checkpointing::AllRanksOk(placement.world, s, what); !all.ok()) return all;

  const checkpointing::SavedLayout& saved = reader.layout();
  if (!checkpointing::SameModelParallelism(saved, placement.layout)) {
    result.rng_note = absl::StrCat("RNG state not restored: saved at ", checkpointing::DebugString(saved),
                                   ", loading at ", checkpointing::DebugString(placement.layout));
    return result;
  }
  checkpointing::RankPlace place = placement.place;
  absl::StatusOr<std::optional<std::map<std::string, at::Tensor>>> rng = reader.Rng(place);
  if (rng.ok() && !rng->has_value() && place.dp != 0) {  // fewer DP ranks then: DP replicas' generators agree
    place.dp = 0;
    rng = reader.Rng(place);
  }
  if (absl::Status all = checkpointing::AllRanksOk(placement.world, rng.status(), what); !all.ok()) return all;
  result.rng = std::move(*rng);
  if (!result.rng) result.rng_note = "RNG state not restored: the checkpoint has none for this rank";
  return result;
}

}  // namespace megatron::models
