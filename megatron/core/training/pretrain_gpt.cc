#include "megatron/core/training/pretrain_gpt.h"

#include <chrono>
#include <cmath>
#include <cstdio>
#include <optional>

#include <ATen/Parallel.h>
#include <ATen/TensorOperators.h>
#include <ATen/core/grad_mode.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "megatron/core/checkpointing/checkpoint.h"
#include "megatron/core/inference/text_generation.h"
#include "megatron/core/models/gpt/gpt_model.h"
#include "megatron/core/models/huggingface/hf_loader.h"
#include "megatron/core/optimizer/optimizer.h"
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

}  // namespace

absl::StatusOr<PretrainResult> PretrainGpt(const proto::PretrainRecipe& recipe, const PretrainOptions& options) {
  if (absl::Status s = CheckTraining(recipe); !s.ok()) return s;
  const auto& t = recipe.training();
  absl::StatusOr<at::Device> device = ParseDevice(t.device());
  if (!device.ok()) return device.status();
  if (t.num_threads() > 0) at::set_num_threads(t.num_threads());
  const Precision precision = t.precision() == proto::BF16 ? Precision::kBf16 : Precision::kFp32;
  const int64_t micro_batches = t.global_batch_size() / t.micro_batch_size();
  const int64_t eval_samples = static_cast<int64_t>(t.eval_iters()) * t.micro_batch_size();

  // Data (prepared on first use).
  absl::StatusOr<std::unique_ptr<GptData>> data =
      GptData::Prepare(recipe.data(), options.base_dir,
                       std::max<int64_t>(1, static_cast<int64_t>(t.train_iters()) * t.global_batch_size()),
                       std::max<int64_t>(1, eval_samples));
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
  absl::StatusOr<std::unique_ptr<models::GPTModel>> created = models::GPTModel::Create(config);
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
                        optimizer::AdamWConfig{o.adam_beta1(), o.adam_beta2(), o.adam_eps(), o.weight_decay()});
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
  if (options.show_progress) {
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
      if (options.show_progress) {
        std::fprintf(stderr, "resumed from %s at iteration %lld%s\n",
                     checkpointing::IterationDirectory(load_dir, **latest).c_str(),
                     static_cast<long long>(ckpt->iteration), finetune ? " (weights only)" : "");
      }
    }
  }
  result.start_iteration = iteration;

  std::unique_ptr<TensorBoardWriter> tensorboard;
  if (recipe.has_tensorboard_dir()) {
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
    if (save_dir.empty()) return absl::OkStatus();
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
    if (options.show_progress) {
      std::fprintf(stderr, "validation at iteration 0: loss %.4f | ppl %.1f\n", loss, std::exp(loss));
    }
  }
  const int64_t last_iteration =
      t.exit_after_iters() > 0 ? std::min<int64_t>(t.exit_after_iters(), t.train_iters()) : t.train_iters();
  const int64_t tokens_per_iteration = static_cast<int64_t>(t.global_batch_size()) * recipe.data().seq_length();
  std::optional<utils::ProgressBar> bar;
  if (options.show_progress) {
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
        const int64_t first = iteration * t.global_batch_size() + micro * t.micro_batch_size();
        GptBatch batch = (*data)->Train(first, t.micro_batch_size()).ToDevice(*device);
        at::Tensor loss = MaskedMean(model.Loss(batch.tokens, batch.position_ids, batch.labels), batch.loss_mask);
        (loss / static_cast<double>(micro_batches)).backward();
        loss_sum = loss_sum.defined() ? loss_sum + loss.detach() : loss.detach();
      }
    }
    const double grad_norm = optimizer::ClipGradNorm(model.Parameters(), o.clip_grad());
    adam.Step(lr);
    adam.ZeroGrad();
    ++iteration;
    if (iteration == last_iteration) {
      (void)at::Tensor(loss_sum).item<double>();  // waits for the device before the clock is read
      steady_end = Clock::now();
    }
    const double train_loss = loss_sum.item<double>() / static_cast<double>(micro_batches);
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
    if (options.show_progress) {
      bar->Update(iteration, absl::StrFormat("loss %.4f | lr %.2e | gnorm %.2f | %s tok/s", train_loss, lr, grad_norm,
                                            HumanRate(tokens_per_second)));
    }
    const bool last = iteration == last_iteration;
    if (do_eval && ((t.eval_interval() > 0 && iteration % t.eval_interval() == 0) || last)) {
      const double loss = evaluate(iteration);
      if (options.show_progress) {
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
    result.sample = inference::GenerateText(model, tokenizer, sample);
  }
  return result;
}

}  // namespace megatron::training
