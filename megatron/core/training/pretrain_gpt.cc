#include "megatron/core/training/pretrain_gpt.h"

#include <chrono>
#include <cmath>
#include <cstdio>
#include <map>
#include <optional>

#include <ATen/Parallel.h>
#include <ATen/TensorOperators.h>
#include <ATen/core/grad_mode.h>
#include <ATen/ops/cat.h>
#include <ATen/ops/full.h>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "megatron/core/checkpointing/checkpoint.h"
#include "megatron/core/distributed/process_group.h"
#include "megatron/core/inference/text_generation.h"
#include "megatron/core/models/gpt/gpt_model.h"
#include "megatron/core/models/huggingface/hf_loader.h"
#include "megatron/core/optimizer/optimizer.h"
#include "megatron/core/parallel_state/parallel_layout.h"
#include "megatron/core/tensor_parallel/random.h"
#include "megatron/core/training/autocast.h"
#include "megatron/core/training/gpt_data.h"
#include "megatron/core/training/recipe.h"
#include "megatron/core/training/tensorboard_writer.h"
#include "megatron/core/utils/progress_bar.h"

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
  std::shared_ptr<distributed::Group> tp, dp;
  int tp_size = 1, dp_size = 1, dp_rank = 0, rank = 0;
  bool sequence_parallel = false;
};

absl::StatusOr<Parallelism> SetUpParallelism(const proto::PretrainRecipe& recipe, const PretrainOptions& options,
                                             const at::Device& device) {
  Parallelism par;
  const auto& pc = recipe.parallel();
  const int tp = pc.tensor_model_parallel_size();
  if (options.distributed == nullptr) {
    if (tp != 1) {
      return absl::InvalidArgumentError(absl::StrCat(
          "parallel.tensor_model_parallel_size: ", tp, " needs ", tp,
          " (or a multiple of) processes; launch them with tools/launch (this is a single-process run)"));
    }
    return par;
  }
  distributed::DistributedContext& ctx = *options.distributed;
  if (device.type() != at::kCPU && ctx.world_size() > 1) {
    return absl::UnimplementedError(absl::StrCat("training.device: ", device.str(),
                                                 " with several ranks needs NCCL; NCCL is not implemented yet "
                                                 "(use training.device=cpu with Gloo)"));
  }
  parallel_state::ParallelConfig config;
  config.world_size = ctx.world_size();
  config.tp = tp;
  absl::StatusOr<parallel_state::ParallelLayout> layout = parallel_state::ParallelLayout::Create(config);
  if (!layout.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("parallel.tensor_model_parallel_size: ", tp, " does not fit ",
                                                   ctx.world_size(), " ranks: ", layout.status().message()));
  }
  par.ctx = &ctx;
  par.rank = ctx.rank();
  par.tp_size = layout->tp();
  par.dp_size = layout->dp();
  par.dp_rank = layout->Coordinates(ctx.rank()).dp;
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
  const auto& t = recipe.training();
  if (t.global_batch_size() % (t.micro_batch_size() * par.dp_size) != 0) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "training.global_batch_size: %d must be a multiple of training.micro_batch_size %d x data-parallel size %d",
        t.global_batch_size(), t.micro_batch_size(), par.dp_size));
  }
  if (par.tp_size > 1) {
    if (!recipe.checkpoint().save().empty() || !recipe.checkpoint().load().empty()) {
      return absl::UnimplementedError(
          "checkpoint.save / checkpoint.load: checkpoints of tensor-parallel runs are not supported yet "
          "(pass --checkpoint.save= with parallel.tensor_model_parallel_size > 1)");
    }
    if (recipe.has_load_hf()) {
      return absl::UnimplementedError("load_hf: loading HuggingFace weights into a tensor-parallel run is not "
                                      "supported yet");
    }
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

// ClipGradNorm over a tensor-parallel model (global norm): the squared norms of sharded parameters are summed over TP,
// replicated ones counted once. Same clipping formula as optimizer::ClipGradNorm.
absl::StatusOr<double> ClipGradNormTensorParallel(const std::vector<std::pair<std::string, at::Tensor>>& named,
                                                  double max_norm, distributed::Group& tp) {
  at::NoGradGuard no_grad;
  double sums[2] = {0, 0};  // squared norms: [sharded, replicated]
  for (const auto& [name, p] : named) {
    const at::Tensor& g = p.grad();
    if (!g.defined()) continue;
    const double n = (g.scalar_type() == at::kDouble ? g.norm() : g.to(at::kFloat).norm()).item<double>();
    sums[IsTensorParallelShard(name) ? 0 : 1] += n * n;
  }
  at::Tensor sharded = at::full({1}, sums[0], at::TensorOptions().dtype(at::kDouble));
  if (absl::Status s = tp.AllReduce(sharded, distributed::ReduceOp::kSum); !s.ok()) return s;
  const double total = std::sqrt(sharded.item<double>() + sums[1]);
  if (max_norm > 0.0 && total > max_norm) {
    const double coeff = max_norm / (total + 1e-6);
    for (const auto& [name, p] : named) {
      if (p.grad().defined()) p.grad().mul_(coeff);
    }
  }
  return total;
}

}  // namespace

absl::StatusOr<PretrainResult> PretrainGpt(const proto::PretrainRecipe& recipe, const PretrainOptions& options) {
  if (absl::Status s = CheckTraining(recipe); !s.ok()) return s;
  const auto& t = recipe.training();
  absl::StatusOr<at::Device> device = ParseDevice(t.device());
  if (!device.ok()) return device.status();
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
  if (config.position_embedding_type == transformer::PositionEmbedding::kLearnedAbsolute &&
      recipe.data().seq_length() > config.max_position_embeddings) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "data.seq_length: %d exceeds model.max_position_embeddings %d", recipe.data().seq_length(),
        config.max_position_embeddings));
  }
  transformer::ModelParallel model_parallel;
  if (par.tp_size > 1) model_parallel = transformer::ModelParallel{par.tp.get(), par.sequence_parallel};
  absl::StatusOr<std::unique_ptr<models::GPTModel>> created = models::GPTModel::Create(config, model_parallel);
  if (!created.ok()) return created.status();
  models::GPTModel& model = **created;
  if (recipe.has_load_hf()) {
    if (absl::Status s = models::huggingface::LoadHfWeights(ResolvePath(options.base_dir, recipe.load_hf()), model);
        !s.ok()) {
      return s;
    }
  }
  model.ToDevice(*device);

  const auto& o = recipe.optimizer();
  optimizer::AdamW adam(model.NamedParameters(),
                        optimizer::AdamWConfig{o.adam_beta1(), o.adam_beta2(), o.adam_eps(), o.weight_decay(),
                                               o.fused()});
  optimizer::LrSchedule schedule;
  schedule.max_lr = o.lr();
  schedule.min_lr = o.min_lr();
  schedule.warmup_steps = o.lr_warmup_iters();
  schedule.decay_steps = o.lr_decay_iters() > 0 ? o.lr_decay_iters() : std::max(1, t.train_iters());
  schedule.style = o.lr_decay_style() == proto::COSINE   ? optimizer::LrDecay::kCosine
                   : o.lr_decay_style() == proto::LINEAR ? optimizer::LrDecay::kLinear
                                                         : optimizer::LrDecay::kConstant;

  // Resume.
  PretrainResult result;
  result.num_parameters = model.NumParameters();
  if (par.tp_size > 1) {  // whole model: shards summed over TP, replicated parameters once
    int64_t counts[2] = {0, 0};  // [sharded, replicated]
    for (const auto& [name, p] : model.NamedParameters()) counts[IsTensorParallelShard(name) ? 0 : 1] += p.numel();
    at::Tensor sharded = at::full({1}, counts[0], at::TensorOptions().dtype(at::kLong));
    if (absl::Status s = par.tp->AllReduce(sharded); !s.ok()) return s;
    result.num_parameters = sharded.item<int64_t>() + counts[1];
  }
  if (show_progress && par.ctx != nullptr) {
    std::fprintf(stderr, "parallel: %d ranks = tensor-parallel %d%s x data-parallel %d (Gloo)\n",
                 par.ctx->world_size(), par.tp_size, par.sequence_parallel ? " (sequence-parallel)" : "", par.dp_size);
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
  int64_t iteration = 0;
  if (!load_dir.empty()) {
    absl::StatusOr<std::optional<int64_t>> latest = checkpointing::LatestIteration(load_dir);
    if (!latest.ok()) return latest.status();
    if (latest->has_value()) {
      const bool finetune = recipe.checkpoint().finetune();
      absl::StatusOr<checkpointing::Checkpoint> ckpt = checkpointing::LoadCheckpoint(
          load_dir, **latest, finetune ? checkpointing::LoadParts::kModelOnly : checkpointing::LoadParts::kAll);
      if (!ckpt.ok()) return ckpt.status();
      if (absl::Status s = model.LoadStateDict(ckpt->model, transformer::LoadMode::kStrict); !s.ok()) {
        return absl::InvalidArgumentError(
            absl::StrCat(checkpointing::IterationDirectory(load_dir, **latest), "/model.safetensors: ", s.message()));
      }
      if (!finetune) {
        if (absl::Status s = adam.LoadStateDict(ckpt->optimizer); !s.ok()) {
          return absl::InvalidArgumentError(absl::StrCat(checkpointing::IterationDirectory(load_dir, **latest),
                                                         "/optimizer.safetensors: ", s.message()));
        }
        if (absl::Status s = tensor_parallel::SetRngState(ckpt->rng); !s.ok()) return s;
        iteration = ckpt->iteration;
      }
      if (show_progress) {
        std::fprintf(stderr, "resumed from %s at iteration %lld%s\n",
                     checkpointing::IterationDirectory(load_dir, **latest).c_str(),
                     static_cast<long long>(ckpt->iteration), finetune ? " (weights only)" : "");
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

  auto evaluate = [&](int64_t at_iteration) {
    model.SetTraining(false);
    at::NoGradGuard no_grad;
    AutocastGuard autocast(device->type(), precision);
    double total = 0;
    for (int i = 0; i < t.eval_iters(); ++i) {
      GptBatch batch = (*data)->Valid(static_cast<int64_t>(i) * t.micro_batch_size(), t.micro_batch_size())
                           .ToDevice(*device);
      total += MaskedMean(model.Loss(batch.tokens, batch.position_ids, batch.labels), batch.loss_mask)
                   .item<double>();
    }
    model.SetTraining(true);
    const double loss = t.eval_iters() > 0 ? total / t.eval_iters() : 0.0;
    result.valid_losses.emplace_back(at_iteration, loss);
    if (tensorboard) {
      tensorboard->AddScalar("lm-loss-validation/lm loss", loss, at_iteration);
      tensorboard->AddScalar("lm-loss-validation/lm loss ppl", std::exp(loss), at_iteration);
    }
    return loss;
  };
  auto save = [&](int64_t at_iteration) -> absl::Status {
    if (save_dir.empty() || !rank0) return absl::OkStatus();  // DP replicas are identical (TP 1 only here)
    checkpointing::Checkpoint ckpt;
    ckpt.iteration = at_iteration;
    ckpt.recipe = ToText(recipe);
    ckpt.model = model.StateDict();
    for (auto& [name, tensor] : ckpt.model) tensor = tensor.to(at::kCPU);
    ckpt.optimizer = adam.StateDict();
    for (auto& [name, tensor] : ckpt.optimizer) tensor = tensor.to(at::kCPU);
    ckpt.rng = tensor_parallel::GetRngState();
    return checkpointing::SaveCheckpoint(save_dir, ckpt);
  };

  model.SetTraining(true);
  const bool do_eval = t.eval_iters() > 0;
  if (do_eval && iteration == 0) {
    const double loss = evaluate(0);
    if (show_progress) {
      std::fprintf(stderr, "validation at iteration 0: loss %.4f | ppl %.1f\n", loss, std::exp(loss));
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
  while (iteration < last_iteration) {
    if (iteration == steady_from) steady_start = Clock::now();
    const double lr = schedule.LearningRate(iteration);
    at::Tensor loss_sum;  // accumulated on the device: one host sync per iteration, not per micro-batch
    {
      AutocastGuard autocast(device->type(), precision);
      for (int64_t micro = 0; micro < micro_batches; ++micro) {
        const int64_t first = iteration * t.global_batch_size() +
                              par.dp_rank * (t.global_batch_size() / par.dp_size) + micro * t.micro_batch_size();
        GptBatch batch = (*data)->Train(first, t.micro_batch_size()).ToDevice(*device);
        at::Tensor loss = MaskedMean(model.Loss(batch.tokens, batch.position_ids, batch.labels), batch.loss_mask);
        (loss / static_cast<double>(micro_batches)).backward();
        loss_sum = loss_sum.defined() ? loss_sum + loss.detach() : loss.detach();
      }
    }
    double grad_norm = 0;
    if (par.ctx == nullptr) {
      grad_norm = optimizer::ClipGradNorm(model.Parameters(), o.clip_grad());
    } else {
      if (par.sequence_parallel) {
        std::vector<at::Tensor> sp_params;
        for (auto& [name, p] : model.SequenceParallelParameters()) sp_params.push_back(p);
        if (absl::Status s = AllReduceGrads(sp_params, *par.tp, 1.0); !s.ok()) return s;
      }
      if (par.dp_size > 1) {
        if (absl::Status s = AllReduceGrads(model.Parameters(), *par.dp, 1.0 / par.dp_size); !s.ok()) return s;
      }
      if (par.tp_size > 1) {
        absl::StatusOr<double> norm = ClipGradNormTensorParallel(model.NamedParameters(), o.clip_grad(), *par.tp);
        if (!norm.ok()) return norm.status();
        grad_norm = *norm;
      } else {
        grad_norm = optimizer::ClipGradNorm(model.Parameters(), o.clip_grad());
      }
    }
    adam.Step(lr);
    adam.ZeroGrad();
    ++iteration;
    if (iteration == last_iteration) {
      (void)at::Tensor(loss_sum).item<double>();  // waits for the device before the clock is read
      steady_end = Clock::now();
    }
    double train_loss = loss_sum.item<double>() / static_cast<double>(micro_batches);
    if (par.dp_size > 1) {  // the average over the data-parallel ranks' slices
      at::Tensor l = at::full({1}, train_loss, at::TensorOptions().dtype(at::kDouble));
      if (absl::Status s = par.dp->AllReduce(l, distributed::ReduceOp::kSum); !s.ok()) return s;
      train_loss = l.item<double>() / par.dp_size;
    }
    result.train_losses.push_back(train_loss);
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
      const double loss = evaluate(iteration);
      if (show_progress) {
        bar->Println(absl::StrFormat("validation at iteration %lld: loss %.4f | ppl %.1f",
                                     static_cast<long long>(iteration), loss, std::exp(loss)));
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
    if (par.tp_size > 1) {
      if (show_progress) std::fprintf(stderr, "sample: skipped (not implemented for tensor-parallel runs yet)\n");
    } else if (rank0) {
      result.sample = inference::GenerateText(model, tokenizer, sample);
    }
  }
  return result;
}

}  // namespace megatron::training
