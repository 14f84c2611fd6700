#include "megatron/core/training/pretrain_gpt.h"

#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <map>
#include <optional>
#include <set>

#include <c10/core/impl/VirtualGuardImpl.h>
#include <ATen/Parallel.h>
#include <ATen/TensorOperators.h>
#include <ATen/core/grad_mode.h>
#include <ATen/ops/cat.h>
#include <ATen/ops/full.h>
#include <ATen/ops/scalar_tensor.h>
#include <ATen/ops/zeros_like.h>
#include <ATen/ops/tensor.h>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "megatron/core/checkpointing/checkpoint.h"
#include "megatron/core/distributed/data_parallel.h"
#include "megatron/core/distributed/process_group.h"
#include "megatron/core/inference/text_generation.h"
#include "megatron/core/models/gpt/gpt_checkpoint.h"
#include "megatron/core/models/gpt/gpt_model.h"
#include "megatron/core/models/huggingface/hf_loader.h"
#include "megatron/core/optimizer/distributed_optimizer.h"
#include "megatron/core/optimizer/optimizer.h"
#include "megatron/core/parallel_state/context_parallel.h"
#include "megatron/core/parallel_state/layer_assignment.h"
#include "megatron/core/parallel_state/parallel_layout.h"
#include "megatron/core/pipeline_parallel/gpt_chunks.h"
#include "megatron/core/pipeline_parallel/schedules.h"
#include "megatron/core/tensor_parallel/random.h"
#include "megatron/core/training/autocast.h"
#include "megatron/core/training/gpt_data.h"
#include "megatron/core/training/recipe.h"
#include "megatron/core/training/trainer_common.h"
#include "megatron/core/training/tensorboard_writer.h"
#include "megatron/core/utils/file_io.h"
#include "megatron/core/utils/progress_bar.h"
#include "megatron/core/utils/trace_profiler.h"

namespace megatron::training {
namespace {

using Clock = std::chrono::steady_clock;

absl::Status CheckTraining(const proto::PretrainRecipe& recipe) {
  const auto& t = recipe.training();
  if (t.micro_batch_size() <= 0) {
    return absl::InvalidArgumentError(absl::StrCat("training.micro_batch_size: must be positive, got ",
                                                   t.micro_batch_size()));
  }
  if (t.global_batch_size() <= 0 || t.global_batch_size() % t.micro_batch_size() != 0) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "training.global_batch_size: %d must be a positive multiple of training.micro_batch_size %d",
        t.global_batch_size(), t.micro_batch_size()));
  }
  if (t.train_iters() < 0) return absl::InvalidArgumentError("training.train_iters: must be >= 0");
  if (t.eval_interval() < 0 || t.eval_iters() < 0) {
    return absl::InvalidArgumentError("training.eval_interval / training.eval_iters: must be >= 0");
  }
  if (recipe.data().seq_length() <= 0) {
    return absl::InvalidArgumentError(absl::StrCat("data.seq_length: must be positive, got ",
                                                   recipe.data().seq_length()));
  }
  if (recipe.training().profile_step_start() < 0) {
    return absl::InvalidArgumentError(absl::StrCat("training.profile_step_start: ",
                                                   recipe.training().profile_step_start(), " must be >= 0"));
  }
  if (recipe.checkpoint().save_interval() < 0) {
    return absl::InvalidArgumentError("checkpoint.save_interval: must be >= 0");
  }
  return absl::OkStatus();
}

absl::StatusOr<at::Device> ParseDevice(const std::string& name) {
  if (name == "cpu") return at::Device(at::kCPU);
  if (name.rfind("cuda", 0) == 0) {
    try {
      return at::Device(name);
    } catch (const std::exception&) {
    }
  }
  return absl::InvalidArgumentError(absl::StrCat("training.device: \"", name, "\" is not cpu, cuda or cuda:N"));
}

// Masked mean of the per-token loss of one micro-batch: sum(loss * mask) / max(sum(mask), 1).
at::Tensor MaskedMean(const at::Tensor& per_token_loss, const at::Tensor& loss_mask) {
  return (per_token_loss * loss_mask).sum() / loss_mask.sum().clamp_min(1.0);
}

std::string HumanRate(double per_second) {
  if (per_second >= 1e6) return absl::StrFormat("%.2fM", per_second / 1e6);
  if (per_second >= 1e3) return absl::StrFormat("%.2fk", per_second / 1e3);
  return absl::StrFormat("%.0f", per_second);
}

// This rank's place in a distributed run (defaults: single process).
struct Parallelism {
  distributed::DistributedContext* ctx = nullptr;
  // embedding: {first, last} pipeline stage (null elsewhere); model: tp x pp (the gradient-norm group).
  // cp: context-parallel group; dp_cp: data x context (where gradients are reduced).
  std::shared_ptr<distributed::Group> tp, dp, pp, embedding, model, cp, dp_cp;
  int tp_size = 1, dp_size = 1, dp_rank = 0, rank = 0, cp_size = 1;
  int tp_rank = 0, pp_size = 1, pp_rank = 0, vp_size = 1, cp_rank = 0;
  bool sequence_parallel = false;
  bool last_stage() const { return pp_rank == pp_size - 1; }
};

// The pipeline's layer layout for `num_layers` layers; errors name the recipe field.
absl::StatusOr<parallel_state::LayerAssignment> PipelineLayers(const proto::ParallelConfig& pc, int num_layers) {
  const int pp = pc.pipeline_model_parallel_size(), vp = pc.virtual_pipeline_model_parallel_size();
  absl::StatusOr<parallel_state::LayerAssignment> a;
  if (pc.pipeline_layers_per_stage_size() > 0) {
    const std::vector<int> counts(pc.pipeline_layers_per_stage().begin(), pc.pipeline_layers_per_stage().end());
    a = parallel_state::LayerAssignment::FromStageCounts(num_layers, pp, vp, counts);
    if (!a.ok()) {
      return absl::InvalidArgumentError(absl::StrCat("parallel.pipeline_layers_per_stage: ", a.status().message()));
    }
    return a;
  }
  a = parallel_state::LayerAssignment::Even(num_layers, pp, vp);
  if (!a.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "model.num_layers: ", a.status().message(),
        " (or give an uneven layout with parallel.pipeline_layers_per_stage)"));
  }
  return a;
}

absl::StatusOr<Parallelism> SetUpParallelism(const proto::PretrainRecipe& recipe, const PretrainOptions& options,
                                             const at::Device& device) {
  Parallelism par;
  const auto& pc = recipe.parallel();
  const int tp = pc.tensor_model_parallel_size();
  const int pp = pc.pipeline_model_parallel_size();
  const int vp = pc.virtual_pipeline_model_parallel_size();
  const int cp = pc.context_parallel_size();
  if (options.distributed == nullptr) {
    if (cp != 1) {
      return absl::InvalidArgumentError(absl::StrCat(
          "parallel.context_parallel_size: ", cp, " needs ", cp,
          " (or a multiple of) processes; launch them with tools/launch (this is a single-process run)"));
    }
    if (tp != 1) {
      return absl::InvalidArgumentError(absl::StrCat(
          "parallel.tensor_model_parallel_size: ", tp, " needs ", tp,
          " (or a multiple of) processes; launch them with tools/launch (this is a single-process run)"));
    }
    if (pp != 1 || vp != 1) {
      return absl::InvalidArgumentError(absl::StrCat(
          "parallel.pipeline_model_parallel_size: ", pp, " (virtual ", vp, ") needs ", pp,
          " (or a multiple of) processes; launch them with tools/launch (this is a single-process run)"));
    }
    return par;
  }
  distributed::DistributedContext& ctx = *options.distributed;
  if (device.type() == at::kCUDA && ctx.backend() != distributed::Backend::kNccl) {
    return absl::InvalidArgumentError(absl::StrCat("training.device: ", device.str(), " with several ranks needs "
                                                   "process groups with NCCL (InitDistributed(Backend::kNccl))"));
  }
  parallel_state::ParallelConfig config;
  config.world_size = ctx.world_size();
  config.tp = tp;
  config.pp = pp;
  config.vp = vp;
  config.cp = cp;
  absl::StatusOr<parallel_state::ParallelLayout> layout = parallel_state::ParallelLayout::Create(config);
  if (!layout.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "parallel.tensor_model_parallel_size / pipeline_model_parallel_size / virtual_pipeline_model_parallel_size / "
        "context_parallel_size: ", tp, " x ", pp, " (virtual ", vp, ") x ", cp, " does not fit ", ctx.world_size(),
        " ranks: ", layout.status().message()));
  }
  if (cp > 1) {
    const int seq = recipe.data().seq_length();
    if (seq % (2 * cp) != 0 || (pc.sequence_parallel() && (seq / cp) % tp != 0)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "data.seq_length: ", seq, " must be divisible by 2 x parallel.context_parallel_size = ", 2 * cp,
          pc.sequence_parallel() ? absl::StrCat(" and each CP rank's share by the tensor-parallel size ", tp) : "",
          " (pad it: parallel_state::ContextParallelPadding)"));
    }
  }
  if (!recipe.has_load_hf()) {  // the layer layout, before any data or model work (load_hf: checked later)
    if (absl::StatusOr<parallel_state::LayerAssignment> a = PipelineLayers(pc, recipe.model().num_layers()); !a.ok()) {
      return a.status();
    }
  }
  par.ctx = &ctx;
  par.rank = ctx.rank();
  par.tp_size = layout->tp();
  par.dp_size = layout->dp();
  par.pp_size = layout->pp();
  par.vp_size = layout->vp();
  const parallel_state::RankCoordinates coords = layout->Coordinates(ctx.rank());
  par.dp_rank = coords.dp;
  par.tp_rank = coords.tp;
  par.pp_rank = coords.pp;
  par.cp_size = layout->cp();
  par.cp_rank = coords.cp;
  par.sequence_parallel = pc.sequence_parallel() && par.tp_size > 1;
  // Collective: every rank creates every group, in the same order.
  for (const std::vector<int>& ranks : layout->TensorParallelGroups()) {
    absl::StatusOr<std::shared_ptr<distributed::Group>> g = ctx.NewGroup(ranks, "tp");
    if (!g.ok()) return g.status();
    if (*g) par.tp = *g;
  }
  for (const std::vector<int>& ranks : layout->DataParallelGroups()) {
    absl::StatusOr<std::shared_ptr<distributed::Group>> g = ctx.NewGroup(ranks, "dp");
    if (!g.ok()) return g.status();
    if (*g) par.dp = *g;
  }
  const std::pair<parallel_state::GroupKind, std::shared_ptr<distributed::Group>*> more[] = {
      {parallel_state::GroupKind::kPipeline, &par.pp},
      {parallel_state::GroupKind::kEmbedding, &par.embedding},
      {parallel_state::GroupKind::kModel, &par.model},
      {parallel_state::GroupKind::kContext, &par.cp},
      {parallel_state::GroupKind::kDataWithContext, &par.dp_cp}};
  for (const auto& [kind, slot] : more) {
    for (const std::vector<int>& ranks : layout->Groups(kind)) {
      absl::StatusOr<std::shared_ptr<distributed::Group>> g = ctx.NewGroup(ranks, parallel_state::GroupKindName(kind));
      if (!g.ok()) return g.status();
      if (*g) *slot = *g;
    }
  }
  const auto& t = recipe.training();
  if (t.global_batch_size() % (t.micro_batch_size() * par.dp_size) != 0) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "training.global_batch_size: %d must be a multiple of training.micro_batch_size %d x data-parallel size %d",
        t.global_batch_size(), t.micro_batch_size(), par.dp_size));
  }
  const int micro_batches = t.global_batch_size() / (t.micro_batch_size() * par.dp_size);
  if (par.vp_size > 1 && micro_batches % par.pp_size != 0) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "training.global_batch_size: %d gives %d micro-batches per step (micro_batch_size %d x data-parallel size "
        "%d); the interleaved pipeline schedule needs a multiple of pipeline_model_parallel_size %d",
        t.global_batch_size(), micro_batches, t.micro_batch_size(), par.dp_size, par.pp_size));
  }
  if (pc.ddp_bucket_size() <= 0) {
    return absl::InvalidArgumentError(absl::StrCat("parallel.ddp_bucket_size: ", pc.ddp_bucket_size(),
                                                   " must be positive"));
  }
  if ((par.tp_size > 1 || par.pp_size > 1 || par.cp_size > 1) && recipe.has_load_hf()) {
    return absl::UnimplementedError("load_hf: loading HuggingFace weights into a tensor-, pipeline- or "
                                    "context-parallel run is not supported yet");
  }
  return par;
}

// True for the parameters that tensor parallelism shards (each rank holds a slice); the others are replicated.
bool IsTensorParallelShard(const std::string& name) {
  const auto ends = [&](const char* suffix) { return absl::EndsWith(name, suffix); };
  return ends("linear_qkv.weight") || ends("linear_qkv.bias") || ends("linear_fc1.weight") ||
         ends("linear_fc1.bias") || ends("linear_proj.weight") || ends("linear_fc2.weight") ||
         ends("word_embeddings.weight") || ends("output_layer.weight");
}

// All-reduces (sum) the defined gradients of `params` over `group`, one flat buffer per dtype, then scales them.
absl::Status AllReduceGrads(const std::vector<at::Tensor>& params, distributed::Group& group, double scale) {
  at::NoGradGuard no_grad;
  std::map<at::ScalarType, std::vector<at::Tensor>> buckets;
  for (const at::Tensor& p : params) {
    if (p.grad().defined()) buckets[p.grad().scalar_type()].push_back(p.grad());
  }
  for (auto& [dtype, grads] : buckets) {
    std::vector<at::Tensor> flat_parts;
    flat_parts.reserve(grads.size());
    for (const at::Tensor& g : grads) flat_parts.push_back(g.reshape({-1}));
    at::Tensor flat = at::cat(flat_parts).contiguous();
    if (absl::Status s = group.AllReduce(flat, distributed::ReduceOp::kSum); !s.ok()) return s;
    if (scale != 1.0) flat.mul_(scale);
    int64_t offset = 0;
    for (at::Tensor& g : grads) {
      const int64_t n = g.numel();
      g.copy_(flat.slice(0, offset, offset + n).view(g.sizes()));
      offset += n;
    }
  }
  return absl::OkStatus();
}

// ClipGradNorm over a model split by TP and PP (Megatron's global norm): squared norms summed over the model-parallel
// (tp x pp) group, each parameter counted once: TP-replicated ones on TP rank 0 only, and the last stage's copy of
// tied embeddings not at all (`counted` says which). Same clipping formula as optimizer::ClipGradNorm.
absl::StatusOr<double> ClipGradNormModelParallel(const std::vector<std::pair<std::string, at::Tensor>>& named,
                                                 const std::vector<bool>& counted, double max_norm,
                                                 distributed::Group& model_group) {
  std::vector<at::Tensor> counted_grads, all_grads;
  for (size_t i = 0; i < named.size(); ++i) {
    all_grads.push_back(named[i].second.grad());
    if (counted[i]) counted_grads.push_back(named[i].second.grad());
  }
  // On the grads' device: NCCL reduces it there, and the step waits for the device once.
  const at::Device device = named.empty() ? at::Device(at::kCPU) : named.front().second.device();
  at::Tensor total_sq = optimizer::SquaredNormSum(counted_grads, device);
  if (absl::Status s = model_group.AllReduce(total_sq, distributed::ReduceOp::kSum); !s.ok()) return s;
  const double total = std::sqrt(total_sq.item<double>());
  optimizer::ScaleGradsToNorm(all_grads, total, max_norm);
  return total;
}

}  // namespace

absl::StatusOr<PretrainResult> PretrainGpt(const proto::PretrainRecipe& recipe, const PretrainOptions& options) {
  if (absl::Status s = CheckTraining(recipe); !s.ok()) return s;
  const auto& t = recipe.training();
  absl::StatusOr<at::Device> device = ParseDevice(t.device());
  if (!device.ok()) return device.status();
  if (device->is_cuda() && !device->has_index() && options.distributed != nullptr) {
    // One GPU per rank: "cuda" means this rank's LOCAL_RANK device.
    device = at::Device(at::kCUDA, static_cast<c10::DeviceIndex>(options.distributed->local_rank()));
  }
  if (device->is_cuda() && device->has_index()) c10::impl::VirtualGuardImpl(at::kCUDA).setDevice(*device);
  absl::StatusOr<Parallelism> parallelism = SetUpParallelism(recipe, options, *device);
  if (!parallelism.ok()) return parallelism.status();
  const Parallelism& par = *parallelism;
  const bool rank0 = par.rank == 0;
  const bool show_progress = options.show_progress && rank0;
  if (t.num_threads() > 0) at::set_num_threads(t.num_threads());
  const Precision precision = t.precision() == proto::BF16 ? Precision::kBf16 : Precision::kFp32;
  // Micro-batches per iteration on this rank (its data-parallel slice of the global batch).
  const int64_t micro_batches = t.global_batch_size() / t.micro_batch_size() / par.dp_size;
  const int64_t eval_samples = static_cast<int64_t>(t.eval_iters()) * t.micro_batch_size();

  // Data (prepared on first use; by rank 0 alone when distributed, the others then open what it wrote).
  auto prepare = [&] {
    return GptData::Prepare(recipe.data(), options.base_dir,
                            std::max<int64_t>(1, static_cast<int64_t>(t.train_iters()) * t.global_batch_size()),
                            std::max<int64_t>(1, eval_samples));
  };
  absl::StatusOr<std::unique_ptr<GptData>> data = absl::UnknownError("data not prepared");
  if (rank0) data = prepare();
  if (par.ctx != nullptr) {
    at::Tensor ok = at::full({1}, !rank0 || data.ok() ? 1.0 : 0.0, at::TensorOptions().dtype(at::kDouble));
    if (absl::Status s = par.ctx->world().AllReduce(ok, distributed::ReduceOp::kMin); !s.ok()) return s;
    if (!rank0) {
      if (ok.item<double>() == 0.0) return absl::AbortedError("rank 0 failed to prepare the data (see its error)");
      data = prepare();
    }
  }
  if (!data.ok()) return data.status();
  const tokenizers::ByteLevelBPETokenizer& tokenizer = (*data)->tokenizer();

  // Model.
  tensor_parallel::ManualSeed(t.seed());
  transformer::TransformerConfig config;
  if (recipe.has_load_hf()) {
    absl::StatusOr<transformer::TransformerConfig> hf =
        models::huggingface::ReadHfConfig(ResolvePath(options.base_dir, recipe.load_hf()), recipe.model());
    if (!hf.ok()) return hf.status();
    config = *hf;
    if (config.vocab_size < tokenizer.vocab_size()) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "load_hf: the checkpoint's vocabulary (%d) is smaller than data.tokenizer's (%d)", config.vocab_size,
          tokenizer.vocab_size()));
    }
  } else if (absl::Status s = transformer::FromProto(recipe.model(), tokenizer.vocab_size(), &config); !s.ok()) {
    return s;
  }
  // The vocabulary of the TP=1 model (what checkpoints store); tensor parallelism pads it to a multiple of TP
  // with rows past every token id (Note [GPT parameter shards]; unchanged when TP divides it, as usual).
  const int64_t global_vocab_size = config.vocab_size;
  config.vocab_size = parallel_state::PaddedVocabSize(config.vocab_size, 1, par.tp_size);
  if (config.position_embedding_type == transformer::PositionEmbedding::kLearnedAbsolute &&
      recipe.data().seq_length() > config.max_position_embeddings) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "data.seq_length: %d exceeds model.max_position_embeddings %d", recipe.data().seq_length(),
        config.max_position_embeddings));
  }
  transformer::ModelParallel model_parallel;
  if (par.tp_size > 1) model_parallel = transformer::ModelParallel{par.tp.get(), par.sequence_parallel};
  if (par.cp_size > 1) model_parallel.cp = par.cp.get();
  absl::StatusOr<parallel_state::LayerAssignment> layers = PipelineLayers(recipe.parallel(), config.num_layers);
  if (!layers.ok()) return layers.status();
  // This rank's model chunks (one per virtual pipeline stage; without a pipeline, one chunk: the whole model).
  absl::StatusOr<pipeline_parallel::GptChunks> built =
      pipeline_parallel::BuildGptChunks(config, model_parallel, *layers, par.pp_rank);
  if (!built.ok()) return built.status();
  const pipeline_parallel::GptChunks& chunks = *built;
  models::GPTModel& model = *chunks.front();  // the whole model when PP = 1 (load_hf, checkpoints, sample)
  if (recipe.has_load_hf()) {
    if (absl::Status s = models::huggingface::LoadHfWeights(ResolvePath(options.base_dir, recipe.load_hf()), model);
        !s.ok()) {
      return s;
    }
  }
  for (const auto& chunk : chunks) chunk->ToDevice(*device);
  if (absl::Status s = pipeline_parallel::SyncTiedEmbeddings(chunks, par.embedding.get()); !s.ok()) return s;
  // Every parameter of this rank; `counted`: whether it enters the global gradient norm and parameter count
  // (TP-replicated parameters on TP rank 0 only for the norm; the last stage's tied copy never).
  std::vector<std::pair<std::string, at::Tensor>> named_params;
  std::vector<at::Tensor> params;
  std::vector<bool> tied_copy;
  for (const auto& chunk : chunks) {
    for (auto& [name, p] : chunk->NamedParameters()) {
      named_params.emplace_back(name, p);
      params.push_back(p);
      tied_copy.push_back(config.share_embeddings_and_output_weights && !chunk->stage().pre_process &&
                          name == "output_layer.weight");
    }
  }
  std::vector<bool> norm_counted(named_params.size());
  for (size_t i = 0; i < named_params.size(); ++i) {
    norm_counted[i] = !tied_copy[i] && (IsTensorParallelShard(named_params[i].first) || par.tp_rank == 0);
  }
  // The value of the pipeline's last stage, on every stage (losses are computed there), summed over the CP
  // ranks' shares of the tokens.
  auto from_last_stage = [&](double value) -> absl::StatusOr<double> {
    if (par.cp_size > 1) {
      at::Tensor v = at::full({1}, value, at::TensorOptions().dtype(at::kDouble));
      if (absl::Status s = par.cp->AllReduce(v); !s.ok()) return s;
      value = v.item<double>();
    }
    if (par.pp_size == 1) return value;
    at::Tensor v = at::full({1}, value, at::TensorOptions().dtype(at::kDouble));
    if (absl::Status s = par.pp->Broadcast(v, par.pp_size - 1); !s.ok()) return s;
    return v.item<double>();
  };

  const auto& o = recipe.optimizer();
  const optimizer::AdamWConfig adam_config{o.adam_beta1(), o.adam_beta2(), o.adam_eps(), o.weight_decay(),
                                           o.fused()};
  // Data parallelism: gradients reduced bucket by bucket while backward runs; optionally the sharded optimizer.
  std::unique_ptr<distributed::DataParallelGrads> ddp;
  std::unique_ptr<optimizer::DistributedAdamW> dist_adam;
  // With CP the gradients are summed over the CP ranks' tokens as well: reduce over data x context.
  distributed::Group* grad_group = par.cp_size > 1 ? par.dp_cp.get() : par.dp.get();
  if (grad_group != nullptr && grad_group->size() > 1) {
    absl::StatusOr<std::unique_ptr<distributed::DataParallelGrads>> created_ddp = distributed::DataParallelGrads::Create(
        named_params, grad_group, {recipe.parallel().ddp_bucket_size()});
    if (!created_ddp.ok()) return created_ddp.status();
    ddp = std::move(*created_ddp);
    if (recipe.parallel().use_distributed_optimizer()) {
      dist_adam = std::make_unique<optimizer::DistributedAdamW>(*ddp, adam_config);
    }
  }
  optimizer::AdamW adam(dist_adam ? std::vector<std::pair<std::string, at::Tensor>>{} : named_params, adam_config);
  const optimizer::LrSchedule schedule = LrScheduleFromRecipe(o, t.train_iters());

  // Resume.
  PretrainResult result;
  {  // whole model: TP shards summed over TP, replicated parameters once, stages summed over PP
    int64_t counts[2] = {0, 0};  // [sharded, replicated]
    for (size_t i = 0; i < named_params.size(); ++i) {
      if (!tied_copy[i]) counts[IsTensorParallelShard(named_params[i].first) ? 0 : 1] += params[i].numel();
    }
    at::Tensor sharded = at::full({1}, counts[0], at::TensorOptions().dtype(at::kLong));
    if (par.tp_size > 1) {
      if (absl::Status s = par.tp->AllReduce(sharded); !s.ok()) return s;
    }
    at::Tensor total = sharded + counts[1];
    if (par.pp_size > 1) {
      if (absl::Status s = par.pp->AllReduce(total); !s.ok()) return s;
    }
    result.num_parameters = total.item<int64_t>();
  }
  if (show_progress && par.ctx != nullptr) {
    std::fprintf(stderr,
                 "parallel: %d ranks = tensor-parallel %d%s x context-parallel %d x data-parallel %d x "
                 "pipeline-parallel %d%s (%s)\n",
                 par.ctx->world_size(), par.tp_size, par.sequence_parallel ? " (sequence-parallel)" : "", par.cp_size,
                 par.dp_size, par.pp_size,
                 par.vp_size > 1 ? absl::StrCat(" (", par.vp_size, " chunks each)").c_str() : "",
                 par.ctx->backend() == distributed::Backend::kNccl ? "NCCL" : "Gloo");
  }
  if (show_progress) {
    std::fprintf(stderr, "model: GPT, %.2fM parameters (%s) on %s, %s\n", result.num_parameters / 1e6,
                 config.DebugString().c_str(), device->str().c_str(), precision == Precision::kBf16 ? "bf16" : "fp32");
    std::fprintf(stderr, "data: %lld train / %lld validation samples of %d tokens; %lld micro-batch(es) of %d per step\n",
                 static_cast<long long>((*data)->num_train_samples()), static_cast<long long>((*data)->num_valid_samples()),
                 recipe.data().seq_length(), static_cast<long long>(micro_batches), t.micro_batch_size());
  }
  result.flops_per_token = 6.0 * static_cast<double>(result.num_parameters) +
                           12.0 * config.num_layers * config.hidden_size * recipe.data().seq_length();
  const std::string save_dir =
      recipe.checkpoint().save().empty() ? "" : ResolvePath(options.base_dir, recipe.checkpoint().save());
  const std::string load_dir =
      recipe.checkpoint().load().empty() ? save_dir : ResolvePath(options.base_dir, recipe.checkpoint().load());
  // Where this rank's tensors sit in the layout-independent checkpoint (Note [GPT parameter shards]).
  models::GptCheckpointPlacement placement;
  placement.layout = {par.ctx == nullptr ? 1 : par.ctx->world_size(), par.tp_size, par.pp_size, par.vp_size,
                      par.cp_size, par.dp_size, dist_adam != nullptr};
  placement.place = {par.rank, par.tp_rank, par.pp_rank, par.cp_rank, par.dp_rank};
  placement.world = par.ctx == nullptr ? nullptr : &par.ctx->world();
  placement.sharding = {global_vocab_size, config.gated_linear_unit(), config.share_embeddings_and_output_weights,
                        par.tp_rank, par.tp_size};
  int64_t iteration = 0;
  if (!load_dir.empty()) {
    absl::StatusOr<std::optional<int64_t>> latest = checkpointing::LatestIteration(load_dir);
    if (!latest.ok()) return latest.status();
    if (latest->has_value()) {
      const bool finetune = recipe.checkpoint().finetune();
      absl::StatusOr<checkpointing::CheckpointReader> reader = checkpointing::CheckpointReader::Open(load_dir, **latest);
      if (!reader.ok()) return reader.status();
      std::map<std::string, at::Tensor> optimizer_state;  // filled by the load, then given to the optimizer
      if (!finetune) {
        if (dist_adam) {
          for (const auto& [name, p] : named_params) {
            optimizer_state["exp_avg." + name] = at::zeros_like(p.detach());
            optimizer_state["exp_avg_sq." + name] = at::zeros_like(p.detach());
          }
          optimizer_state["step"] = at::scalar_tensor(0, at::kLong);
        } else {
          optimizer_state = adam.StateDict();
        }
      }
      absl::StatusOr<models::GptLoadResult> loaded = models::LoadGptCheckpoint(
          *reader, named_params, finetune ? nullptr : &optimizer_state, placement,
          recipe.checkpoint().strict() ? transformer::LoadMode::kStrict : transformer::LoadMode::kNonStrict);
      if (!loaded.ok()) return loaded.status();
      if (!finetune) {
        if (absl::Status s = dist_adam ? dist_adam->LoadStateDict(optimizer_state) : adam.LoadStateDict(optimizer_state);
            !s.ok()) {
          return absl::InvalidArgumentError(absl::StrCat(reader->directory(), ": ", s.message()));
        }
        if (loaded->rng) {
          if (absl::Status s = tensor_parallel::SetRngState(*loaded->rng); !s.ok()) return s;
        }
        iteration = reader->iteration();
      }
      if (show_progress) {
        std::fprintf(stderr, "resumed from %s at iteration %lld%s (saved at %s)\n", reader->directory().c_str(),
                     static_cast<long long>(reader->iteration()), finetune ? " (weights only)" : "",
                     checkpointing::DebugString(reader->layout()).c_str());
        if (!loaded->report.empty()) {
          std::fprintf(stderr, "checkpoint.strict=false: loaded the tensors that match; not loaded:\n%s\n",
                       loaded->report.ToString().c_str());
        }
        if (!finetune && !loaded->rng_note.empty()) std::fprintf(stderr, "%s\n", loaded->rng_note.c_str());
      }
    }
  }
  result.start_iteration = iteration;

  std::unique_ptr<TensorBoardWriter> tensorboard;
  if (recipe.has_tensorboard_dir() && rank0) {
    auto tb = TensorBoardWriter::Open(ResolvePath(options.base_dir, recipe.tensorboard_dir()));
    if (!tb.ok()) return tb.status();
    tensorboard = std::move(*tb);
  }

  // One micro-batch through one chunk: the embedding's chunk takes the tokens, the others the received hidden
  // states; the last chunk returns the masked-mean loss (reported through `loss_sum`) scaled by `scale`.
  // Context parallelism: this rank's zigzag tokens of a batch, and the loss over all CP ranks' tokens: each rank
  // contributes sum(loss * mask) over its tokens / the mask count summed over CP (the masked means add up over CP).
  at::Tensor cp_index;
  if (par.cp_size > 1) {
    cp_index = at::tensor(parallel_state::ZigzagPositions(recipe.data().seq_length(), par.cp_size, par.cp->rank()),
                          at::TensorOptions().dtype(at::kLong))
                   .to(*device);
  }
  auto local_tokens = [&](GptBatch batch) {
    if (par.cp_size == 1) return batch;
    for (at::Tensor* t : {&batch.tokens, &batch.labels, &batch.loss_mask, &batch.position_ids}) {
      *t = t->index_select(1, cp_index);
    }
    return batch;
  };
  absl::Status step_error;  // a collective failing inside a forward step (reported after the schedule)
  auto stage_step = [&](int chunk, const GptBatch& batch, const at::Tensor& input, double scale,
                        at::Tensor& loss_sum) -> at::Tensor {
    const models::GPTModel& m = *chunks[chunk];
    at::Tensor out = m.StageForward(m.stage().pre_process ? batch.tokens : input, batch.position_ids, batch.labels);
    if (!m.stage().post_process) return out;
    at::Tensor loss;
    if (par.cp_size == 1) {
      loss = MaskedMean(out, batch.loss_mask);
    } else {
      at::Tensor count = batch.loss_mask.sum().to(at::kDouble).reshape({1}).contiguous();
      if (absl::Status s = par.cp->AllReduce(count); !s.ok() && step_error.ok()) step_error = s;
      loss = (out * batch.loss_mask).sum() / count.clamp_min(1.0).to(out.scalar_type()).squeeze();
      // DataParallelGrads averages over DP x CP; the CP share must be summed (Megatron's loss * cp_size).
      scale *= par.cp_size;
    }
    loss_sum = loss_sum.defined() ? loss_sum + loss.detach() : loss.detach();
    return scale == 1.0 ? loss : loss * scale;
  };
  auto set_training = [&](bool on) {
    for (const auto& chunk : chunks) chunk->SetTraining(on);
  };
  auto evaluate = [&](int64_t at_iteration) -> absl::StatusOr<double> {
    set_training(false);
    at::NoGradGuard no_grad;
    AutocastGuard autocast(device->type(), precision);
    at::Tensor total;
    auto step = [&](int chunk, int i, const at::Tensor& input) {
      GptBatch batch = local_tokens(
          (*data)->Valid(static_cast<int64_t>(i) * t.micro_batch_size(), t.micro_batch_size()).ToDevice(*device));
      return stage_step(chunk, batch, input, 1.0, total);
    };
    if (t.eval_iters() > 0) {
      if (absl::Status s = pipeline_parallel::ForwardBackward(step, par.pp.get(), {par.vp_size, t.eval_iters(), true});
          !s.ok()) {
        return s;
      }
    }
    set_training(true);
    if (!step_error.ok()) return step_error;
    absl::StatusOr<double> summed = from_last_stage(total.defined() ? total.item<double>() : 0.0);
    if (!summed.ok()) return summed.status();
    const double loss = t.eval_iters() > 0 ? *summed / t.eval_iters() : 0.0;
    result.valid_losses.emplace_back(at_iteration, loss);
    if (tensorboard) {
      tensorboard->AddScalar("lm-loss-validation/lm loss", loss, at_iteration);
      tensorboard->AddScalar("lm-loss-validation/lm loss ppl", std::exp(loss), at_iteration);
    }
    return loss;
  };
  auto save = [&](int64_t at_iteration) -> absl::Status {  // collective: every rank writes the pieces it owns
    if (save_dir.empty()) return absl::OkStatus();
    std::map<std::string, at::Tensor> optimizer_state;
    if (dist_adam) {
      absl::StatusOr<std::map<std::string, at::Tensor>> state = dist_adam->StateDict();  // gathered over DP
      if (!state.ok()) return state.status();
      optimizer_state = std::move(*state);
    } else {
      optimizer_state = adam.StateDict();
    }
    return models::SaveGptCheckpoint(save_dir, at_iteration, ToText(recipe), named_params, optimizer_state,
                                     tensor_parallel::GetRngState(), placement);
  };

  set_training(true);
  const bool do_eval = t.eval_iters() > 0;
  if (do_eval && iteration == 0) {
    absl::StatusOr<double> loss = evaluate(0);
    if (!loss.ok()) return loss.status();
    if (show_progress) {
      std::fprintf(stderr, "validation at iteration 0: loss %.4f | ppl %.1f\n", *loss, std::exp(*loss));
    }
  }
  const int64_t last_iteration =
      t.exit_after_iters() > 0 ? std::min<int64_t>(t.exit_after_iters(), t.train_iters()) : t.train_iters();
  const int64_t tokens_per_iteration = static_cast<int64_t>(t.global_batch_size()) * recipe.data().seq_length();
  std::optional<utils::ProgressBar> bar;
  if (show_progress) {
    bar.emplace(recipe.name(), t.train_iters());
    bar->Update(iteration);
  }
  const auto run_start = Clock::now();
  auto window_start = run_start;
  int64_t window_iterations = 0;
  double tokens_per_second = 0;
  // Steady-state throughput skips the first iterations (allocator warm-up, kernel autotuning).
  const int64_t steady_from = iteration + std::max<int64_t>(1, (last_iteration - iteration) / 10);
  Clock::time_point steady_start = run_start, steady_end = run_start;
  // Profiling window (training.profile_step_start/end): see Megatron's --profile.
  const bool profile = t.profile_step_end() > t.profile_step_start();
  std::unique_ptr<utils::TraceProfiler> profiler;
  while (iteration < last_iteration) {
    if (iteration == steady_from) steady_start = Clock::now();
    if (profile && iteration == t.profile_step_start()) {
      absl::StatusOr<std::unique_ptr<utils::TraceProfiler>> started = utils::TraceProfiler::Start(device->is_cuda());
      if (!started.ok()) return started.status();
      profiler = std::move(*started);
    }
    const double lr = schedule.LearningRate(iteration);
    at::Tensor loss_sum;  // on the last stage, accumulated on the device: one host sync per iteration
    {
      // Each stage reads a micro-batch once per iteration (a chunk's forward may come long after another's).
      std::map<int, GptBatch> batches;
      auto step = [&](int chunk, int micro, const at::Tensor& input) {
        auto it = batches.find(micro);
        if (it == batches.end()) {
          const int64_t first = iteration * t.global_batch_size() +
                                par.dp_rank * (t.global_batch_size() / par.dp_size) + micro * t.micro_batch_size();
          it = batches.emplace(micro, local_tokens((*data)->Train(first, t.micro_batch_size()).ToDevice(*device)))
                   .first;
        }
        return stage_step(chunk, it->second, input, 1.0 / static_cast<double>(micro_batches), loss_sum);
      };
      AutocastGuard autocast(device->type(), precision);
      if (ddp) ddp->StartIteration(static_cast<int>(micro_batches));
      if (absl::Status s = pipeline_parallel::ForwardBackward(
              step, par.pp.get(), {par.vp_size, static_cast<int>(micro_batches), false});
          !s.ok()) {
        return s;
      }
    }
    if (!step_error.ok()) return step_error;
    if (ddp) {  // waits for the buckets' all-reduces (started during backward): gradients averaged over DP
      if (absl::Status s = ddp->FinishIteration(); !s.ok()) return s;
    }
    double grad_norm = 0;
    if (par.ctx == nullptr) {
      grad_norm = optimizer::ClipGradNorm(params, o.clip_grad());
    } else {
      if (par.sequence_parallel) {
        std::vector<at::Tensor> sp_params;
        for (const auto& chunk : chunks) {
          for (auto& [name, p] : chunk->SequenceParallelParameters()) sp_params.push_back(p);
        }
        if (absl::Status s = AllReduceGrads(sp_params, *par.tp, 1.0); !s.ok()) return s;
      }
      if (absl::Status s = pipeline_parallel::AllReduceTiedEmbeddingGrads(chunks, par.embedding.get()); !s.ok()) {
        return s;
      }
      if (dist_adam) {
        std::set<std::string> not_counted;
        for (size_t i = 0; i < named_params.size(); ++i) {
          if (!norm_counted[i]) not_counted.insert(named_params[i].first);
        }
        absl::StatusOr<double> norm = dist_adam->ClipGradNorm(
            o.clip_grad(), [&](const std::string& name) { return not_counted.count(name) == 0; }, par.model.get());
        if (!norm.ok()) return norm.status();
        grad_norm = *norm;
      } else if (par.model != nullptr && par.model->size() > 1) {
        absl::StatusOr<double> norm = ClipGradNormModelParallel(named_params, norm_counted, o.clip_grad(), *par.model);
        if (!norm.ok()) return norm.status();
        grad_norm = *norm;
      } else {
        grad_norm = optimizer::ClipGradNorm(params, o.clip_grad());
      }
    }
    if (dist_adam) {
      if (absl::Status s = dist_adam->Step(lr); !s.ok()) return s;
      dist_adam->ZeroGrad();
    } else {
      adam.Step(lr);
      adam.ZeroGrad();
    }
    ++iteration;
    const double local_loss = loss_sum.defined() ? loss_sum.item<double>() : 0.0;  // waits for the device
    if (iteration == last_iteration) steady_end = Clock::now();
    if (profiler && (iteration == t.profile_step_end() || iteration == last_iteration)) {
      // The loss read above waited for the device, so every kernel of the window has ended.
      const std::string dir = ResolvePath(options.base_dir, t.profile_dir());
      std::error_code ec;
      std::filesystem::create_directories(dir, ec);
      if (ec) return absl::InternalError(absl::StrCat("training.profile_dir: cannot create ", dir, ": ", ec.message()));
      const std::string trace = absl::StrCat(dir, "/trace_rank", par.rank, ".json");
      absl::StatusOr<std::string> table = profiler->Stop(trace, 30);
      profiler.reset();
      if (!table.ok()) return table.status();
      if (absl::Status s = utils::WriteFileAtomically(absl::StrCat(dir, "/kernels_rank", par.rank, ".txt"), *table);
          !s.ok()) {
        return s;
      }
      if (show_progress) {
        std::fprintf(stderr, "\nprofile of iterations [%d, %lld) on rank 0:\n%s", t.profile_step_start(),
                     static_cast<long long>(iteration), table->c_str());
      }
    }
    absl::StatusOr<double> pipeline_loss = from_last_stage(local_loss / static_cast<double>(micro_batches));
    if (!pipeline_loss.ok()) return pipeline_loss.status();
    double train_loss = *pipeline_loss;
    if (par.dp_size > 1) {  // the average over the data-parallel ranks' slices
      at::Tensor l = at::full({1}, train_loss, at::TensorOptions().dtype(at::kDouble));
      if (absl::Status s = par.dp->AllReduce(l, distributed::ReduceOp::kSum); !s.ok()) return s;
      train_loss = l.item<double>() / par.dp_size;
    }
    result.train_losses.push_back(train_loss);
    result.grad_norms.push_back(grad_norm);
    ++window_iterations;
    const double window_seconds = std::chrono::duration<double>(Clock::now() - window_start).count();
    if (window_seconds > 0) tokens_per_second = window_iterations * tokens_per_iteration / window_seconds;
    if (window_seconds > 5.0) {
      window_start = Clock::now();
      window_iterations = 0;
    }
    if (tensorboard) {
      tensorboard->AddScalar("lm loss", train_loss, iteration);
      tensorboard->AddScalar("learning-rate", lr, iteration);
      tensorboard->AddScalar("grad-norm", grad_norm, iteration);
      tensorboard->AddScalar("throughput/tokens-per-sec", tokens_per_second, iteration);
    }
    if (show_progress) {
      bar->Update(iteration, absl::StrFormat("loss %.4f | lr %.2e | gnorm %.2f | %s tok/s", train_loss, lr, grad_norm,
                                            HumanRate(tokens_per_second)));
    }
    const bool last = iteration == last_iteration;
    if (do_eval && ((t.eval_interval() > 0 && iteration % t.eval_interval() == 0) || last)) {
      absl::StatusOr<double> loss = evaluate(iteration);
      if (!loss.ok()) return loss.status();
      if (show_progress) {
        bar->Println(absl::StrFormat("validation at iteration %lld: loss %.4f | ppl %.1f",
                                     static_cast<long long>(iteration), *loss, std::exp(*loss)));
      }
    }
    const int save_interval = recipe.checkpoint().save_interval();
    if ((save_interval > 0 && iteration % save_interval == 0) || last) {
      if (absl::Status s = save(iteration); !s.ok()) return s;
    }
  }
  if (bar) bar->Finish();
  const double seconds = std::chrono::duration<double>(Clock::now() - run_start).count();
  const int64_t run_iterations = iteration - result.start_iteration;
  result.tokens_per_second = seconds > 0 ? run_iterations * tokens_per_iteration / seconds : 0;
  result.final_iteration = iteration;
  if (iteration > steady_from) {
    const double steady_seconds = std::chrono::duration<double>(steady_end - steady_start).count();
    result.steady_tokens_per_second = (iteration - steady_from) * tokens_per_iteration / steady_seconds;
  }
  if (tensorboard) {
    if (absl::Status s = tensorboard->Flush(); !s.ok()) return s;
  }

  const auto& sample = recipe.sample();
  if (sample.max_new_tokens() > 0 && iteration == t.train_iters()) {
    if (par.tp_size == 1 && par.pp_size == 1 && par.cp_size == 1) {
      if (rank0) result.sample = inference::GenerateText(model, tokenizer, sample);
    } else if (rank0) {
      // A sharded model cannot generate on one rank: rank 0 samples from the whole model of the final checkpoint
      // (a second copy of the weights, on rank 0 only).
      absl::StatusOr<std::optional<int64_t>> latest =
          save_dir.empty() ? absl::StatusOr<std::optional<int64_t>>(std::nullopt)
                           : checkpointing::LatestIteration(save_dir);
      if (!latest.ok()) return latest.status();
      if (*latest != std::optional<int64_t>(iteration)) {
        if (show_progress) {
          std::fprintf(stderr, "sample: skipped (a tensor-, pipeline- or context-parallel run samples from its final "
                               "checkpoint: set checkpoint.save)\n");
        }
      } else {
        transformer::TransformerConfig whole_config = config;
        whole_config.vocab_size = static_cast<int>(global_vocab_size);
        absl::StatusOr<std::unique_ptr<models::GPTModel>> whole = models::GPTModel::Create(whole_config);
        if (!whole.ok()) return whole.status();
        absl::StatusOr<checkpointing::Checkpoint> ckpt =
            checkpointing::LoadCheckpoint(save_dir, iteration, checkpointing::LoadParts::kModelOnly);
        if (!ckpt.ok()) return ckpt.status();
        if (absl::Status s = (*whole)->LoadStateDict(ckpt->model, transformer::LoadMode::kStrict); !s.ok()) return s;
        (*whole)->ToDevice(*device);
        result.sample = inference::GenerateText(**whole, tokenizer, sample);
      }
    }
  }
  return result;
}

}  // namespace megatron::training
