#include "megatron/core/parallel_state/layer_assignment.h"

#include <cstdio>
#include <cstdlib>
#include <numeric>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace megatron::parallel_state {
namespace {

[[noreturn]] void Die(const std::string& message) {
  std::fprintf(stderr, "LayerAssignment: %s\n", message.c_str());
  std::abort();
}

absl::Status CheckShape(int num_layers, int pp, int vp) {
  if (num_layers < 1) return absl::InvalidArgumentError(absl::StrCat("num_layers: ", num_layers, " must be >= 1"));
  if (pp < 1) {
    return absl::InvalidArgumentError(absl::StrCat("pipeline_model_parallel_size: ", pp, " must be >= 1"));
  }
  if (vp < 1) {
    return absl::InvalidArgumentError(absl::StrCat("virtual_pipeline_model_parallel_size: ", vp, " must be >= 1"));
  }
  if (vp > 1 && pp == 1) {
    return absl::InvalidArgumentError(absl::StrCat("virtual_pipeline_model_parallel_size: ", vp,
                                                   " needs pipeline_model_parallel_size > 1"));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<LayerAssignment> LayerAssignment::FromChunkCounts(int num_layers, int pp, int vp,
                                                                 const std::vector<int>& layers_per_chunk) {
  if (absl::Status s = CheckShape(num_layers, pp, vp); !s.ok()) return s;
  if (static_cast<int>(layers_per_chunk.size()) != pp * vp) {
    return absl::InvalidArgumentError(absl::StrCat(
        "layers_per_chunk: has ", layers_per_chunk.size(), " entries, expected pipeline_model_parallel_size (", pp,
        ") x virtual_pipeline_model_parallel_size (", vp, ") = ", pp * vp));
  }
  long long sum = 0;
  for (size_t i = 0; i < layers_per_chunk.size(); ++i) {
    if (layers_per_chunk[i] < 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("layers_per_chunk[", i, "]: ", layers_per_chunk[i], " is negative"));
    }
    sum += layers_per_chunk[i];
  }
  if (sum != num_layers) {
    return absl::InvalidArgumentError(absl::StrCat("layers_per_chunk: {", absl::StrJoin(layers_per_chunk, ", "),
                                                   "} sums to ", sum, ", not num_layers ", num_layers));
  }
  LayerAssignment a;
  a.num_layers_ = num_layers;
  a.pp_ = pp;
  a.vp_ = vp;
  int begin = 0;
  for (int count : layers_per_chunk) {
    a.chunks_.push_back({begin, begin + count});
    begin += count;
  }
  return a;
}

absl::StatusOr<LayerAssignment> LayerAssignment::Even(int num_layers, int pp, int vp) {
  if (absl::Status s = CheckShape(num_layers, pp, vp); !s.ok()) return s;
  // Megatron issue #468: 80 layers on PP 16 x VP 2 silently built 64. Refuse instead.
  if (num_layers % (pp * vp) != 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "num_layers: ", num_layers, " is not divisible by pipeline_model_parallel_size (", pp,
        ") x virtual_pipeline_model_parallel_size (", vp, ") = ", pp * vp,
        "; give an explicit layout (per-stage layer counts, or first/last pipeline stage layer counts)"));
  }
  return FromChunkCounts(num_layers, pp, vp, std::vector<int>(pp * vp, num_layers / (pp * vp)));
}

absl::StatusOr<LayerAssignment> LayerAssignment::FromStageCounts(int num_layers, int pp, int vp,
                                                                 const std::vector<int>& layers_per_stage) {
  if (absl::Status s = CheckShape(num_layers, pp, vp); !s.ok()) return s;
  if (static_cast<int>(layers_per_stage.size()) != pp) {
    return absl::InvalidArgumentError(absl::StrCat("layers_per_stage: has ", layers_per_stage.size(),
                                                   " entries, expected pipeline_model_parallel_size ", pp));
  }
  long long sum = std::accumulate(layers_per_stage.begin(), layers_per_stage.end(), 0LL);
  if (sum != num_layers) {
    return absl::InvalidArgumentError(absl::StrCat("layers_per_stage: {", absl::StrJoin(layers_per_stage, ", "),
                                                   "} sums to ", sum, ", not num_layers ", num_layers));
  }
  std::vector<int> chunks(pp * vp);
  for (int r = 0; r < pp; ++r) {
    if (layers_per_stage[r] < 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("layers_per_stage[", r, "]: ", layers_per_stage[r], " is negative"));
    }
    if (layers_per_stage[r] % vp != 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("layers_per_stage[", r, "]: ", layers_per_stage[r],
                       " is not divisible by virtual_pipeline_model_parallel_size ", vp,
                       "; give per-chunk counts (layers_per_chunk) instead"));
    }
    for (int v = 0; v < vp; ++v) chunks[v * pp + r] = layers_per_stage[r] / vp;
  }
  return FromChunkCounts(num_layers, pp, vp, chunks);
}

absl::StatusOr<LayerAssignment> LayerAssignment::FirstLastStage(int num_layers, int pp, int vp,
                                                                std::optional<int> first_stage_layers,
                                                                std::optional<int> last_stage_layers) {
  if (absl::Status s = CheckShape(num_layers, pp, vp); !s.ok()) return s;
  if (!first_stage_layers && !last_stage_layers) return Even(num_layers, pp, vp);
  if (pp == 1) {
    return absl::InvalidArgumentError(
        "decoder_first_pipeline_num_layers / decoder_last_pipeline_num_layers: need "
        "pipeline_model_parallel_size > 1");
  }
  if (first_stage_layers && *first_stage_layers < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("decoder_first_pipeline_num_layers: ", *first_stage_layers, " is negative"));
  }
  if (last_stage_layers && *last_stage_layers < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("decoder_last_pipeline_num_layers: ", *last_stage_layers, " is negative"));
  }
  const int first = first_stage_layers.value_or(0);
  const int last = last_stage_layers.value_or(0);
  const int middle_stages = pp - (first_stage_layers ? 1 : 0) - (last_stage_layers ? 1 : 0);
  const int middle_layers = num_layers - first - last;
  if (middle_layers < 0) {
    return absl::InvalidArgumentError(absl::StrCat("decoder_first_pipeline_num_layers (", first,
                                                   ") + decoder_last_pipeline_num_layers (", last,
                                                   ") exceed num_layers ", num_layers));
  }
  if (middle_stages == 0 && middle_layers != 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "decoder_first_pipeline_num_layers (", first, ") + decoder_last_pipeline_num_layers (", last,
        ") must equal num_layers ", num_layers, " when pipeline_model_parallel_size is 2"));
  }
  if (middle_stages > 0 && middle_layers % (middle_stages * vp) != 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "num_layers: the ", middle_layers, " layers left for the ", middle_stages,
        " middle pipeline stages are not divisible by ", middle_stages, " x virtual_pipeline_model_parallel_size (",
        vp, "); adjust decoder_first/last_pipeline_num_layers or give per-stage layer counts"));
  }
  if (first % vp != 0) {
    return absl::InvalidArgumentError(absl::StrCat("decoder_first_pipeline_num_layers: ", first,
                                                   " is not divisible by virtual_pipeline_model_parallel_size ", vp));
  }
  if (last % vp != 0) {
    return absl::InvalidArgumentError(absl::StrCat("decoder_last_pipeline_num_layers: ", last,
                                                   " is not divisible by virtual_pipeline_model_parallel_size ", vp));
  }
  const int per_middle = middle_stages > 0 ? middle_layers / middle_stages : 0;
  std::vector<int> stages(pp, per_middle);
  if (first_stage_layers) stages.front() = first;
  if (last_stage_layers) stages.back() = last;
  return FromStageCounts(num_layers, pp, vp, stages);
}

LayerRange LayerAssignment::Chunk(int pp_rank, int vp_stage) const {
  if (pp_rank < 0 || pp_rank >= pp_ || vp_stage < 0 || vp_stage >= vp_) {
    Die(absl::StrCat("chunk (pp_rank ", pp_rank, ", vp_stage ", vp_stage, ") is outside ", pp_, " x ", vp_));
  }
  return chunks_[vp_stage * pp_ + pp_rank];
}

std::vector<int> LayerAssignment::LayersOf(int pp_rank) const {
  std::vector<int> layers;
  for (int v = 0; v < vp_; ++v) {
    const LayerRange range = Chunk(pp_rank, v);
    for (int l = range.begin; l < range.end; ++l) layers.push_back(l);
  }
  return layers;
}

absl::StatusOr<std::pair<int, int>> LayerAssignment::OwnerOf(int layer) const {
  if (layer < 0 || layer >= num_layers_) {
    return absl::InvalidArgumentError(absl::StrCat("layer: ", layer, " is outside [0, ", num_layers_, ")"));
  }
  for (int i = 0; i < static_cast<int>(chunks_.size()); ++i) {
    if (layer >= chunks_[i].begin && layer < chunks_[i].end) return std::make_pair(i % pp_, i / pp_);
  }
  return absl::InternalError("unreachable: chunks cover every layer");
}

int PaddedVocabSize(int vocab_size, int make_vocab_size_divisible_by, int tp) {
  const long long multiple = 1LL * make_vocab_size_divisible_by * tp;
  return static_cast<int>((vocab_size + multiple - 1) / multiple * multiple);
}

absl::StatusOr<int> CheckDivisibility(const ModelDims& dims, int tp, int cp, int ep) {
  if (tp < 1) return absl::InvalidArgumentError(absl::StrCat("tensor_model_parallel_size: ", tp, " must be >= 1"));
  if (cp < 1) return absl::InvalidArgumentError(absl::StrCat("context_parallel_size: ", cp, " must be >= 1"));
  if (ep < 1) return absl::InvalidArgumentError(absl::StrCat("expert_model_parallel_size: ", ep, " must be >= 1"));
  auto divides = [&](const char* field, int value, const char* by_name, int by) -> absl::Status {
    if (value % by != 0) {
      return absl::InvalidArgumentError(
          absl::StrCat(field, ": ", value, " is not divisible by ", by_name, " ", by));
    }
    return absl::OkStatus();
  };
  if (dims.num_attention_heads > 0) {
    if (auto s = divides("num_attention_heads", dims.num_attention_heads, "tensor_model_parallel_size", tp); !s.ok())
      return s;
  }
  if (dims.num_query_groups > 0) {
    if (auto s = divides("num_query_groups", dims.num_query_groups, "tensor_model_parallel_size", tp); !s.ok())
      return s;
  }
  if (dims.ffn_hidden_size > 0) {
    if (auto s = divides("ffn_hidden_size", dims.ffn_hidden_size, "tensor_model_parallel_size", tp); !s.ok())
      return s;
  }
  if (dims.seq_length > 0) {
    if (cp > 1) {
      if (dims.seq_length % (2 * cp) != 0) {
        return absl::InvalidArgumentError(absl::StrCat("seq_length: ", dims.seq_length,
                                                       " is not divisible by 2 x context_parallel_size = ", 2 * cp));
      }
    }
    if (dims.sequence_parallel && (dims.seq_length / cp) % tp != 0) {
      return absl::InvalidArgumentError(absl::StrCat(
          "seq_length: ", dims.seq_length, " / context_parallel_size (", cp,
          ") is not divisible by tensor_model_parallel_size ", tp, " (sequence_parallel splits it)"));
    }
  }
  if (dims.num_moe_experts > 0) {
    if (auto s = divides("num_moe_experts", dims.num_moe_experts, "expert_model_parallel_size", ep); !s.ok())
      return s;
  }
  if (dims.vocab_size < 0) {
    return absl::InvalidArgumentError(absl::StrCat("vocab_size: ", dims.vocab_size, " is negative"));
  }
  if (dims.make_vocab_size_divisible_by < 1) {
    return absl::InvalidArgumentError(absl::StrCat("make_vocab_size_divisible_by: ",
                                                   dims.make_vocab_size_divisible_by, " must be >= 1"));
  }
  return PaddedVocabSize(dims.vocab_size, dims.make_vocab_size_divisible_by, tp);
}

}  // namespace megatron::parallel_state
