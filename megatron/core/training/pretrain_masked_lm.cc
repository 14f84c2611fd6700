#include "megatron/core/training/pretrain_masked_lm.h"

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <optional>

#include <ATen/Parallel.h>
#include <ATen/TensorOperators.h>
#include <ATen/core/grad_mode.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "megatron/core/checkpointing/checkpoint.h"
#include "megatron/core/datasets/bert_dataset.h"
#include "megatron/core/datasets/indexed_dataset.h"
#include "megatron/core/datasets/t5_dataset.h"
#include "megatron/core/models/T5/t5_model.h"
#include "megatron/core/models/bert/bert_model.h"
#include "megatron/core/optimizer/optimizer.h"
#include "megatron/core/tensor_parallel/random.h"
#include "megatron/core/training/autocast.h"
#include "megatron/core/training/gpt_data.h"
#include "megatron/core/training/recipe.h"
#include "megatron/core/training/trainer_common.h"
#include "megatron/core/training/tensorboard_writer.h"
#include "megatron/core/utils/file_io.h"
#include "megatron/core/utils/progress_bar.h"

namespace megatron::training {
namespace {

using Clock = std::chrono::steady_clock;

constexpr int kNumSentinels = 100;  // T5's extra_ids

std::string Trim(const std::string& s) {
  const size_t b = s.find_first_not_of(" \t\r\n");
  if (b == std::string::npos) return "";
  return s.substr(b, s.find_last_not_of(" \t\r\n") - b + 1);
}

// One sequence per sentence, one document per corpus document (documents without sentences are skipped).
absl::Status BuildSentenceDataset(const std::vector<std::string>& documents,
                                  const tokenizers::ByteLevelBPETokenizer& tokenizer, const std::string& prefix) {
  if (absl::Status s = utils::MakeParentDirectories(prefix); !s.ok()) return s;
  auto builder = datasets::IndexedDatasetBuilder::Create(prefix, datasets::DtypeForVocab(tokenizer.vocab_size()));
  if (!builder.ok()) return builder.status();
  utils::ProgressBar bar("tokenize sentences", static_cast<int64_t>(documents.size()));
  for (size_t i = 0; i < documents.size(); ++i) {
    bool any = false;
    for (const std::string& sentence : SplitSentences(documents[i])) {
      std::vector<int32_t> ids = tokenizer.Encode(sentence);
      if (ids.empty()) continue;
      if (absl::Status s = builder->AddItem(ids); !s.ok()) return s;
      any = true;
    }
    if (any) builder->EndDocument();
    if (i % 256 == 0) bar.Update(static_cast<int64_t>(i));
  }
  if (absl::Status s = builder->Finalize(); !s.ok()) return s;
  bar.Finish(absl::StrFormat("%lld sentences, %lld tokens -> %s.{bin,idx}",
                             static_cast<long long>(builder->num_sequences()),
                             static_cast<long long>(builder->num_tokens()), prefix));
  return absl::OkStatus();
}

// Byte-level BPE: a token starting with a letter or digit continues the previous word (a new word starts with
// the space marker or punctuation).
std::vector<bool> WordStarts(const tokenizers::ByteLevelBPETokenizer& tokenizer) {
  std::vector<bool> starts(tokenizer.vocab_size(), true);
  for (int32_t id = 0; id < tokenizer.vocab_size(); ++id) {
    const std::string& token = tokenizer.id_to_token(id);
    if (!token.empty() && std::isalnum(static_cast<unsigned char>(token[0]))) starts[id] = false;
  }
  return starts;
}

// One micro-batch's loss under either family.
class Task {
 public:
  virtual ~Task() = default;
  virtual transformer::MegatronModule& model() = 0;
  virtual int64_t train_size() const = 0;
  virtual int64_t valid_size() const = 0;
  virtual at::Tensor Loss(bool train, const std::vector<int64_t>& ids, const at::Device& device) = 0;
};

class BertTask : public Task {
 public:
  BertTask(std::unique_ptr<models::BertModel> model, datasets::BertDataset train, datasets::BertDataset valid)
      : model_(std::move(model)), train_(std::move(train)), valid_(std::move(valid)) {}
  transformer::MegatronModule& model() override { return *model_; }
  int64_t train_size() const override { return train_.size(); }
  int64_t valid_size() const override { return valid_.size(); }
  at::Tensor Loss(bool train, const std::vector<int64_t>& ids, const at::Device& device) override {
    datasets::BertBatch b = (train ? train_ : valid_).GetBatch(ids);
    models::BertOutput out = model_->Forward(b.tokens.to(device), b.padding_mask.to(device), b.types.to(device),
                                             b.labels.to(device));
    return models::BertPretrainingLoss(out.lm, b.loss_mask.to(device), out.binary_logits, b.is_random.to(device));
  }

 private:
  std::unique_ptr<models::BertModel> model_;
  datasets::BertDataset train_, valid_;
};

class T5Task : public Task {
 public:
  T5Task(std::unique_ptr<models::T5Model> model, datasets::T5Dataset train, datasets::T5Dataset valid)
      : model_(std::move(model)), train_(std::move(train)), valid_(std::move(valid)) {}
  transformer::MegatronModule& model() override { return *model_; }
  int64_t train_size() const override { return train_.size(); }
  int64_t valid_size() const override { return valid_.size(); }
  at::Tensor Loss(bool train, const std::vector<int64_t>& ids, const at::Device& device) override {
    datasets::T5Batch b = (train ? train_ : valid_).GetBatch(ids);
    at::Tensor per_token = model_->Loss(b.encoder_input.to(device), b.decoder_input.to(device),
                                        b.encoder_mask.to(device), b.labels.to(device));
    const at::Tensor mask = b.loss_mask.to(device);
    return (per_token * mask).sum() / mask.sum().clamp_min(1.0);
  }

 private:
  std::unique_ptr<models::T5Model> model_;
  datasets::T5Dataset train_, valid_;
};

template <typename Dataset>
absl::Status CheckNonEmpty(const Dataset& train, const Dataset& valid, const proto::DataConfig& data) {
  if (train.size() == 0 || valid.size() == 0) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "data.split: \"%s\" leaves %lld train and %lld validation samples; both must be non-empty (BERT needs "
        "documents of at least two sentences)",
        data.split(), static_cast<long long>(train.size()), static_cast<long long>(valid.size())));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<Task>> MakeTask(MaskedLmFamily family, const proto::PretrainRecipe& recipe,
                                               const std::string& base_dir, transformer::TransformerConfig* config) {
  const proto::DataConfig& data = recipe.data();
  if (data.data_prefix().empty()) return absl::InvalidArgumentError("data.data_prefix: required (the .bin/.idx prefix)");
  bool trained = false;
  absl::StatusOr<tokenizers::ByteLevelBPETokenizer> tokenizer = PrepareTokenizer(data, base_dir, &trained);
  if (!tokenizer.ok()) return tokenizer.status();
  const std::string prefix = ResolvePath(base_dir, data.data_prefix());
  if (trained || !utils::PathExists(prefix + ".idx") || !utils::PathExists(prefix + ".bin")) {
    auto documents = ReadCorpusDocuments(data, base_dir, prefix + ".{bin,idx}");
    if (!documents.ok()) return documents.status();
    if (absl::Status s = BuildSentenceDataset(*documents, *tokenizer, prefix); !s.ok()) return s;
  }
  auto opened = datasets::IndexedDataset::Open(prefix);
  if (!opened.ok()) return opened.status();
  auto dataset = std::make_shared<const datasets::IndexedDataset>(std::move(*opened));
  const int64_t v = tokenizer->vocab_size();
  const int specials = family == MaskedLmFamily::kBert ? 4 : 4 + kNumSentinels;
  if (absl::Status s = transformer::FromProto(recipe.model(), static_cast<int>(v) + specials, config); !s.ok()) {
    return s;
  }
  if (config->position_embedding_type == transformer::PositionEmbedding::kLearnedAbsolute &&
      data.seq_length() > config->max_position_embeddings) {
    return absl::InvalidArgumentError(absl::StrFormat("data.seq_length: %d exceeds model.max_position_embeddings %d",
                                                      data.seq_length(), config->max_position_embeddings));
  }
  tensor_parallel::ManualSeed(recipe.training().seed());
  if (family == MaskedLmFamily::kBert) {
    datasets::BertDatasetConfig c;
    c.sequence_length = data.seq_length();
    c.random_seed = static_cast<uint32_t>(data.seed());
    c.split = data.split();
    c.cls_id = v;
    c.sep_id = v + 1;
    c.mask_id = v + 2;
    c.pad_id = v + 3;
    c.random_token_limit = v;
    c.starts_word = WordStarts(*tokenizer);
    auto train = datasets::BertDataset::Build(dataset, c, datasets::Split::kTrain);
    if (!train.ok()) return train.status();
    auto valid = datasets::BertDataset::Build(dataset, c, datasets::Split::kValid);
    if (!valid.ok()) return valid.status();
    if (absl::Status s = CheckNonEmpty(*train, *valid, data); !s.ok()) return s;
    auto model = models::BertModel::Create(*config);
    if (!model.ok()) return model.status();
    return std::unique_ptr<Task>(new BertTask(std::move(*model), std::move(*train), std::move(*valid)));
  }
  datasets::T5DatasetConfig c;
  c.sequence_length = data.seq_length();
  c.decoder_sequence_length =
      1 + 2 * static_cast<int32_t>(std::floor(c.masking.masking_probability * (data.seq_length() - 2)));
  c.random_seed = static_cast<uint32_t>(data.seed());
  c.split = data.split();
  c.bos_id = v;
  c.eos_id = v + 1;
  c.pad_id = v + 2;
  c.mask_id = v + 3;
  for (int k = 0; k < kNumSentinels; ++k) c.sentinel_ids.push_back(v + 4 + k);
  c.starts_word = WordStarts(*tokenizer);
  auto train = datasets::T5Dataset::Build(dataset, c, datasets::Split::kTrain);
  if (!train.ok()) return train.status();
  auto valid = datasets::T5Dataset::Build(dataset, c, datasets::Split::kValid);
  if (!valid.ok()) return valid.status();
  if (absl::Status s = CheckNonEmpty(*train, *valid, data); !s.ok()) return s;
  auto model = models::T5Model::Create(*config);
  if (!model.ok()) return model.status();
  return std::unique_ptr<Task>(new T5Task(std::move(*model), std::move(*train), std::move(*valid)));
}

std::vector<int64_t> Ids(int64_t first, int64_t count, int64_t size) {
  std::vector<int64_t> ids(count);
  for (int64_t k = 0; k < count; ++k) ids[k] = (first + k) % size;
  return ids;
}

}  // namespace

std::vector<std::string> SplitSentences(const std::string& document) {
  std::vector<std::string> out;
  std::string current;
  auto flush = [&] {
    std::string t = Trim(current);
    if (!t.empty()) out.push_back(std::move(t));
    current.clear();
  };
  for (size_t i = 0; i < document.size(); ++i) {
    const char c = document[i];
    if (c == '\n') {
      flush();
      continue;
    }
    current += c;
    if ((c == '.' || c == '?' || c == '!') && i + 1 < document.size() && document[i + 1] == ' ') flush();
  }
  flush();
  return out;
}

absl::StatusOr<MaskedLmResult> PretrainMaskedLm(MaskedLmFamily family, const proto::PretrainRecipe& recipe,
                                                const MaskedLmOptions& options) {
  const auto& t = recipe.training();
  if (t.micro_batch_size() <= 0 || t.global_batch_size() <= 0 || t.global_batch_size() % t.micro_batch_size() != 0) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "training.global_batch_size: %d must be a positive multiple of training.micro_batch_size %d",
        t.global_batch_size(), t.micro_batch_size()));
  }
  if (t.train_iters() < 0 || t.eval_interval() < 0 || t.eval_iters() < 0) {
    return absl::InvalidArgumentError("training.train_iters / eval_interval / eval_iters: must be >= 0");
  }
  if (recipe.has_load_hf()) {
    return absl::UnimplementedError("load_hf: starting BERT/T5 pretraining from HuggingFace weights is not wired yet "
                                    "(models/huggingface/hf_bert.h and hf_t5.h load them into the models)");
  }
  if (recipe.parallel().tensor_model_parallel_size() != 1) {
    return absl::UnimplementedError("parallel.tensor_model_parallel_size: BERT and T5 pretraining is single-process");
  }
  at::Device device(at::kCPU);
  try {
    device = at::Device(t.device());
  } catch (const std::exception&) {
    return absl::InvalidArgumentError(absl::StrCat("training.device: \"", t.device(), "\" is not cpu, cuda or cuda:N"));
  }
  if (t.num_threads() > 0) at::set_num_threads(t.num_threads());
  const Precision precision = t.precision() == proto::BF16 ? Precision::kBf16 : Precision::kFp32;
  transformer::TransformerConfig config;
  absl::StatusOr<std::unique_ptr<Task>> task = MakeTask(family, recipe, options.base_dir, &config);
  if (!task.ok()) return task.status();
  transformer::MegatronModule& model = (*task)->model();
  model.ToDevice(device);

  const auto& o = recipe.optimizer();
  optimizer::AdamW adam(model.NamedParameters(),
                        optimizer::AdamWConfig{o.adam_beta1(), o.adam_beta2(), o.adam_eps(), o.weight_decay()});
  const optimizer::LrSchedule schedule = LrScheduleFromRecipe(o, t.train_iters());

  MaskedLmResult result;
  result.num_parameters = model.NumParameters();
  const char* family_name = family == MaskedLmFamily::kBert ? "BERT" : "T5";
  if (options.show_progress) {
    std::fprintf(stderr, "model: %s, %.2fM parameters (%s) on %s\n", family_name, result.num_parameters / 1e6,
                 config.DebugString().c_str(), device.str().c_str());
    std::fprintf(stderr, "data: %lld train / %lld validation samples of up to %d tokens\n",
                 static_cast<long long>((*task)->train_size()), static_cast<long long>((*task)->valid_size()),
                 recipe.data().seq_length());
  }
  const std::string save_dir =
      recipe.checkpoint().save().empty() ? "" : ResolvePath(options.base_dir, recipe.checkpoint().save());
  const std::string load_dir =
      recipe.checkpoint().load().empty() ? save_dir : ResolvePath(options.base_dir, recipe.checkpoint().load());
  int64_t iteration = 0;
  if (!load_dir.empty()) {
    absl::StatusOr<std::optional<int64_t>> latest = checkpointing::LatestIteration(load_dir);
    if (!latest.ok()) return latest.status();
    if (latest->has_value()) {
      absl::StatusOr<checkpointing::Checkpoint> ckpt = checkpointing::LoadCheckpoint(load_dir, **latest);
      if (!ckpt.ok()) return ckpt.status();
      const std::string where = checkpointing::IterationDirectory(load_dir, **latest);
      if (absl::Status s = model.LoadStateDict(ckpt->model, transformer::LoadMode::kStrict); !s.ok()) {
        return absl::InvalidArgumentError(absl::StrCat(where, "/model.safetensors: ", s.message()));
      }
      if (absl::Status s = adam.LoadStateDict(ckpt->optimizer); !s.ok()) {
        return absl::InvalidArgumentError(absl::StrCat(where, "/optimizer.safetensors: ", s.message()));
      }
      if (absl::Status s = tensor_parallel::SetRngState(ckpt->rng); !s.ok()) return s;
      iteration = ckpt->iteration;
      if (options.show_progress) {
        std::fprintf(stderr, "resumed from %s at iteration %lld\n", where.c_str(), static_cast<long long>(iteration));
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
    AutocastGuard autocast(device.type(), precision);
    double total = 0;
    for (int i = 0; i < t.eval_iters(); ++i) {
      total += (*task)
                   ->Loss(false, Ids(static_cast<int64_t>(i) * t.micro_batch_size(), t.micro_batch_size(),
                                     (*task)->valid_size()),
                          device)
                   .item<double>();
    }
    model.SetTraining(true);
    const double loss = t.eval_iters() > 0 ? total / t.eval_iters() : 0.0;
    result.valid_losses.emplace_back(at_iteration, loss);
    if (tensorboard) tensorboard->AddScalar("lm-loss-validation/lm loss", loss, at_iteration);
    return loss;
  };
  auto save = [&](int64_t at_iteration) -> absl::Status {
    if (save_dir.empty()) return absl::OkStatus();
    return SaveTrainingCheckpoint(save_dir, at_iteration, recipe, model.StateDict(), adam.StateDict());
  };

  model.SetTraining(true);
  const bool do_eval = t.eval_iters() > 0;
  if (do_eval && iteration == 0) {
    const double loss = evaluate(0);
    if (options.show_progress) std::fprintf(stderr, "validation at iteration 0: loss %.4f\n", loss);
  }
  const int64_t micro_batches = t.global_batch_size() / t.micro_batch_size();
  const int64_t last_iteration =
      t.exit_after_iters() > 0 ? std::min<int64_t>(t.exit_after_iters(), t.train_iters()) : t.train_iters();
  std::optional<utils::ProgressBar> bar;
  if (options.show_progress) {
    bar.emplace(recipe.name(), t.train_iters());
    bar->Update(iteration);
  }
  const auto start = Clock::now();
  while (iteration < last_iteration) {
    const double lr = schedule.LearningRate(iteration);
    double train_loss = 0;
    {
      AutocastGuard autocast(device.type(), precision);
      for (int64_t micro = 0; micro < micro_batches; ++micro) {
        const int64_t first = iteration * t.global_batch_size() + micro * t.micro_batch_size();
        at::Tensor loss = (*task)->Loss(true, Ids(first, t.micro_batch_size(), (*task)->train_size()), device);
        (loss / static_cast<double>(micro_batches)).backward();
        train_loss += loss.item<double>() / static_cast<double>(micro_batches);
      }
    }
    const double grad_norm = optimizer::ClipGradNorm(model.Parameters(), o.clip_grad());
    adam.Step(lr);
    adam.ZeroGrad();
    ++iteration;
    result.train_losses.push_back(train_loss);
    if (tensorboard) {
      tensorboard->AddScalar("lm loss", train_loss, iteration);
      tensorboard->AddScalar("learning-rate", lr, iteration);
      tensorboard->AddScalar("grad-norm", grad_norm, iteration);
    }
    if (bar) bar->Update(iteration, absl::StrFormat("loss %.4f | lr %.2e | gnorm %.2f", train_loss, lr, grad_norm));
    const bool last = iteration == last_iteration;
    if (do_eval && ((t.eval_interval() > 0 && iteration % t.eval_interval() == 0) || last)) {
      const double loss = evaluate(iteration);
      if (bar) bar->Println(absl::StrFormat("validation at iteration %lld: loss %.4f", static_cast<long long>(iteration), loss));
    }
    const int save_interval = recipe.checkpoint().save_interval();
    if ((save_interval > 0 && iteration % save_interval == 0) || last) {
      if (absl::Status s = save(iteration); !s.ok()) return s;
    }
  }
  if (bar) bar->Finish();
  const double seconds = std::chrono::duration<double>(Clock::now() - start).count();
  result.final_iteration = iteration;
  if (seconds > 0) {
    result.tokens_per_second = static_cast<double>(iteration - result.start_iteration) * t.global_batch_size() *
                               recipe.data().seq_length() / seconds;
  }
  if (tensorboard) {
    if (absl::Status s = tensorboard->Flush(); !s.ok()) return s;
  }
  return result;
}

int MaskedLmPretrainMain(int argc, char** argv, MaskedLmFamily family, const char* default_recipe) {
  auto command_line = ParseCommandLine(argc, argv);
  if (!command_line.ok()) {
    std::fprintf(stderr, "pretrain: %s\n", std::string(command_line.status().message()).c_str());
    return 2;
  }
  if (command_line->help) {
    std::printf("usage: pretrain [--recipe=PATH] [--field.path=value ...]\n\nPretrains a %s model. Every recipe "
                "field can be overridden, e.g. --training.train_iters=100 --model.num_layers=2.\nRecipe schema: "
                "megatron/core/proto/recipe.proto. Default recipe: %s\n",
                family == MaskedLmFamily::kBert ? "BERT" : "T5", default_recipe);
    return 0;
  }
  // Under `bazel run` the working directory is the runfiles tree (where the default recipe lives); outputs and
  // user paths are relative to the workspace.
  const char* workspace = std::getenv("BUILD_WORKSPACE_DIRECTORY");
  const std::string base_dir = workspace != nullptr ? workspace : ".";
  if (command_line->recipe.empty()) {
    command_line->recipe = default_recipe;
  } else if (command_line->recipe[0] != '/') {
    command_line->recipe = base_dir + "/" + command_line->recipe;
  }
  proto::PretrainRecipe recipe;
  if (absl::Status s = BuildRecipe(*command_line, &recipe); !s.ok()) {
    std::fprintf(stderr, "pretrain: %s\n", std::string(s.message()).c_str());
    return 2;
  }
  std::fprintf(stderr, "pretrain: recipe %s\n", command_line->recipe.c_str());
  MaskedLmOptions options;
  options.base_dir = base_dir;
  absl::StatusOr<MaskedLmResult> result = PretrainMaskedLm(family, recipe, options);
  if (!result.ok()) {
    std::fprintf(stderr, "pretrain: %s\n", std::string(result.status().message()).c_str());
    return 1;
  }
  if (!result->valid_losses.empty()) {
    const double first = result->valid_losses.front().second, last = result->valid_losses.back().second;
    std::printf("validation loss: %.4f (iteration %lld) -> %.4f (iteration %lld), %.1f%% lower\n", first,
                static_cast<long long>(result->valid_losses.front().first), last,
                static_cast<long long>(result->valid_losses.back().first), 100.0 * (first - last) / first);
  }
  std::printf("throughput: %.0f tokens/s (%.2fM parameters)\n", result->tokens_per_second,
              result->num_parameters / 1e6);
  return 0;
}

}  // namespace megatron::training
