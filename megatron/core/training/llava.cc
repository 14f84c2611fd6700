#include "megatron/core/training/llava.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <map>
#include <numeric>
#include <optional>
#include <random>
#include <set>

#include <ATen/Parallel.h>
#include <ATen/TensorOperators.h>
#include <ATen/core/grad_mode.h>
#include <ATen/ops/argmax.h>
#include <ATen/ops/multinomial.h>
#include <ATen/ops/softmax.h>
#include <ATen/ops/tensor.h>
#include <ATen/ops/topk.h>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "megatron/core/checkpointing/checkpoint.h"
#include "megatron/core/datasets/multimodal/synthetic.h"
#include "megatron/core/models/vision/vision_proto.h"
#include "megatron/core/optimizer/optimizer.h"
#include "megatron/core/tensor_parallel/random.h"
#include "megatron/core/training/autocast.h"
#include "megatron/core/training/gpt_data.h"
#include "megatron/core/training/recipe.h"
#include "megatron/core/training/trainer_common.h"
#include "megatron/core/training/tensorboard_writer.h"
#include "megatron/core/utils/progress_bar.h"

namespace megatron::training {
namespace {

namespace mm = datasets::multimodal;
using Clock = std::chrono::steady_clock;

absl::StatusOr<at::Device> ParseLlavaDevice(const std::string& name) {
  try {
    return at::Device(name);
  } catch (const c10::Error&) {
    return absl::InvalidArgumentError(absl::StrCat("training.device: \"", name, "\" is not a device (cpu, cuda, cuda:N)"));
  }
}

std::string Normalize(const std::string& text) { return datasets::multimodal::NormalizeAnswer(text); }

double TokenF1(const std::string& prediction, const std::string& reference) {
  std::vector<std::string> p = absl::StrSplit(Normalize(prediction), ' ', absl::SkipEmpty());
  std::vector<std::string> r = absl::StrSplit(Normalize(reference), ' ', absl::SkipEmpty());
  if (p.empty() || r.empty()) return p.empty() && r.empty() ? 1.0 : 0.0;
  std::multiset<std::string> pool(r.begin(), r.end());
  int common = 0;
  for (const std::string& w : p) {
    auto it = pool.find(w);
    if (it != pool.end()) {
      ++common;
      pool.erase(it);
    }
  }
  if (common == 0) return 0.0;
  const double precision = static_cast<double>(common) / p.size(), recall = static_cast<double>(common) / r.size();
  return 2 * precision * recall / (precision + recall);
}

bool KindSelected(const proto::LlavaDataConfig& data, mm::SampleKind kind) {
  if (data.sample_kinds_size() == 0) return true;
  for (const std::string& k : data.sample_kinds()) {
    if (k == mm::SampleKindName(kind)) return true;
  }
  return false;
}

absl::Status CheckSampleKinds(const proto::LlavaDataConfig& data) {
  for (const std::string& k : data.sample_kinds()) {
    if (k != "caption" && k != "vqa" && k != "conversation") {
      return absl::InvalidArgumentError(
          absl::StrCat("data.sample_kinds: \"", k, "\" is not one of caption, vqa, conversation"));
    }
  }
  return absl::OkStatus();
}

// Every text of a sample, for tokenizer training.
void CollectTexts(const mm::MultimodalSample& s, const proto::LlavaDataConfig& data, std::vector<std::string>* out) {
  out->push_back(s.caption);
  out->push_back(s.question);
  out->push_back(s.answer);
  for (const mm::Turn& t : s.conversation) out->push_back(t.content);
  (void)data;
}

}  // namespace

absl::StatusOr<models::multimodal::LlavaConfig> LlavaConfigFromRecipe(const proto::LlavaRecipe& recipe,
                                                                      int tokenizer_vocab_size,
                                                                      int64_t image_token_id) {
  namespace vision = models::vision;
  models::multimodal::LlavaConfig c;
  const proto::LlavaModelConfig& m = recipe.model();
  if (absl::Status s = transformer::FromProto(m.language_model(), tokenizer_vocab_size, &c.language); !s.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("model.language_model: ", s.message()));
  }
  if (absl::Status s = vision::VisionConfigFromProto(m.vision_model(), &c.vision); !s.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("model.", s.message()));
  }
  c.drop_vision_class_token = m.drop_vision_class_token() && c.vision.add_class_token;
  c.pixel_shuffle = m.pixel_shuffle();
  if (absl::Status s = vision::ProjectorConfigFromProto(
          m.projector(), c.vision.transformer.hidden_size * (c.pixel_shuffle ? 4 : 1), c.language.hidden_size,
          &c.projector);
      !s.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("model.", s.message()));
  }
  c.image_token_index = image_token_id;
  c.language_max_sequence_length = recipe.data().seq_length();
  if (c.language.position_embedding_type == transformer::PositionEmbedding::kLearnedAbsolute &&
      recipe.data().seq_length() > c.language.max_position_embeddings) {
    return absl::InvalidArgumentError(absl::StrFormat("data.seq_length: %d exceeds model.language_model."
                                                      "max_position_embeddings %d",
                                                      recipe.data().seq_length(), c.language.max_position_embeddings));
  }
  if (absl::Status s = c.Validate(); !s.ok()) return absl::InvalidArgumentError(absl::StrCat("model: ", s.message()));
  return c;
}

absl::StatusOr<std::unique_ptr<LlavaData>> LlavaData::Prepare(const proto::LlavaRecipe& recipe,
                                                              const std::string& base_dir, bool show_progress) {
  const proto::LlavaDataConfig& d = recipe.data();
  if (absl::Status s = CheckSampleKinds(d); !s.ok()) return s;
  auto data = std::unique_ptr<LlavaData>(new LlavaData());
  data->recipe_ = recipe;
  data->base_dir_ = base_dir;
  const std::string dir = ResolvePath(base_dir, d.dir());
  // The synthetic dataset is (re)written when the directory has no shards, or holds an earlier synthetic dataset
  // (dataset.json) of another configuration (EnsureSyntheticDataset compares them); other data is never touched.
  const bool has_shards = mm::ListShards(dir, d.train_prefix()).ok();
  if (!has_shards || (d.make_synthetic() && std::filesystem::exists(dir + "/dataset.json"))) {
    if (!d.make_synthetic()) {
      return absl::NotFoundError(absl::StrCat("data.dir: no shards \"", d.train_prefix(), "-*.tar\" in ", dir,
                                              " (set data.make_synthetic=true for the embedded dataset)"));
    }
    if (d.train_prefix() != "train" || d.valid_prefix() != "valid") {
      return absl::InvalidArgumentError("data.make_synthetic: the synthetic dataset's shards are train-*/valid-*; "
                                        "leave data.train_prefix and data.valid_prefix at their defaults");
    }
    mm::SyntheticDatasetConfig options;
    options.num_train = d.synthetic_train_samples();
    options.num_valid = d.synthetic_valid_samples();
    options.image_size = d.image_size();
    options.seed = static_cast<uint32_t>(d.seed());
    options.tokenizer_vocab_size = d.tokenizer_vocab_size();
    options.system_message = d.system_message();
    options.caption_prompt = d.caption_prompt();
    bool written = false;
    if (absl::Status s = mm::EnsureSyntheticDataset(dir, options, &written); !s.ok()) return s;
    if (show_progress && written) {
      std::fprintf(stderr, "data: generated the synthetic shapes dataset in %s\n", dir.c_str());
    }
  }
  for (auto [prefix, out] : {std::pair{d.train_prefix(), &data->train_raw_}, std::pair{d.valid_prefix(), &data->valid_raw_}}) {
    absl::StatusOr<std::vector<std::string>> shards = mm::ListShards(dir, prefix);
    if (!shards.ok()) return absl::NotFoundError(absl::StrCat("data.dir: ", shards.status().message()));
    for (const std::string& shard : *shards) {
      absl::StatusOr<std::vector<mm::MultimodalSample>> samples = mm::ReadShard(shard);
      if (!samples.ok()) return samples.status();
      for (auto& s : *samples) out->push_back(std::move(s));
    }
  }

  // Tokenizer: the recipe's file, or one trained on the training text and saved there.
  const std::string tokenizer_path =
      d.has_tokenizer() ? ResolvePath(base_dir, d.tokenizer()) : dir + "/tokenizer.json";
  absl::StatusOr<tokenizers::ByteLevelBPETokenizer> tokenizer = absl::NotFoundError("");
  if (std::filesystem::exists(tokenizer_path)) {
    tokenizer = tokenizers::ByteLevelBPETokenizer::Load(tokenizer_path);
  } else {
    std::vector<std::string> texts = {d.system_message(), d.caption_prompt()};
    for (const auto& s : data->train_raw_) CollectTexts(s, d, &texts);
    tokenizers::BpeTrainerOptions options;
    options.vocab_size = d.tokenizer_vocab_size();
    options.special_tokens = mm::ChatSpecialTokens();
    tokenizer = tokenizers::ByteLevelBPETokenizer::Train(texts, options);
    if (tokenizer.ok()) {
      if (absl::Status s = tokenizer->Save(tokenizer_path); !s.ok()) return s;
      if (show_progress) {
        std::fprintf(stderr, "data: trained a %d-id tokenizer -> %s\n", tokenizer->vocab_size(), tokenizer_path.c_str());
      }
    }
  }
  if (!tokenizer.ok()) return tokenizer.status();
  absl::StatusOr<mm::ChatTemplate> chat = mm::ChatTemplate::Create(*tokenizer);
  if (!chat.ok()) return absl::InvalidArgumentError(absl::StrCat(tokenizer_path, ": ", chat.status().message()));
  data->encoder_ = std::make_unique<mm::TaskEncoder>(*chat, mm::TaskEncoderConfig{});
  return data;
}

absl::Status LlavaData::Configure(const models::multimodal::LlavaConfig& config, bool show_progress) {
  const proto::LlavaDataConfig& d = recipe_.data();
  mm::TaskEncoderConfig tc;
  tc.decoder_seq_length = d.seq_length();
  tc.tokens_per_tile = static_cast<int>(config.img_seq_len());
  if (config.vision.img_h != config.vision.img_w) {
    return absl::InvalidArgumentError("model.vision_model: img_h and img_w must be equal for the tile processor");
  }
  tc.tile_processor = datasets::image::TileProcessor(
      config.vision.img_h, config.vision.model_subtype == models::vision::VisionSubtype::kSiglip
                               ? datasets::image::Statistics::kSiglip
                               : datasets::image::Statistics::kClip);
  tc.system_message = d.system_message();
  tc.caption_prompt = d.caption_prompt();
  encoder_ = std::make_unique<mm::TaskEncoder>(encoder_->chat(), tc);
  train_.clear();
  valid_.clear();
  int skipped = 0;
  for (auto [raw, out] : {std::pair{&train_raw_, &train_}, std::pair{&valid_raw_, &valid_}}) {
    for (const mm::MultimodalSample& s : *raw) {
      if (!KindSelected(d, s.kind)) continue;
      absl::StatusOr<mm::EncodedSample> e = encoder_->Encode(s);
      if (absl::IsFailedPrecondition(e.status())) {  // nothing to train on within seq_length
        ++skipped;
        continue;
      }
      if (!e.ok()) return e.status();
      out->push_back(std::move(*e));
    }
  }
  if (train_.empty()) {
    return absl::InvalidArgumentError(absl::StrCat("data.sample_kinds: no training sample of the selected kinds in ",
                                                   ResolvePath(base_dir_, d.dir())));
  }
  if (show_progress) {
    std::fprintf(stderr, "data: %zu train / %zu validation samples (%s), %d skipped (no target within %d positions)\n",
                 train_.size(), valid_.size(),
                 d.sample_kinds_size() == 0 ? "all kinds" : absl::StrJoin(d.sample_kinds(), ", ").c_str(), skipped,
                 d.seq_length());
  }
  return absl::OkStatus();
}

mm::MultimodalBatch LlavaData::Train(int64_t first, int count) const {
  const int64_t n = num_train();
  std::vector<mm::EncodedSample> batch;
  int64_t cached_epoch = -1;
  std::vector<int64_t> order;
  for (int64_t i = first; i < first + count; ++i) {
    const int64_t epoch = i / n;
    if (epoch != cached_epoch) {  // a seeded permutation per epoch
      order.resize(n);
      std::iota(order.begin(), order.end(), 0);
      std::mt19937_64 rng(static_cast<uint64_t>(recipe_.data().seed()) * 1000003 + epoch);
      std::shuffle(order.begin(), order.end(), rng);
      cached_epoch = epoch;
    }
    batch.push_back(train_[order[i % n]]);
  }
  return encoder_->Batch(batch);
}

mm::MultimodalBatch LlavaData::Valid(int64_t first, int count) const {
  std::vector<mm::EncodedSample> batch;
  for (int64_t i = first; i < first + count; ++i) batch.push_back(valid_[i % valid_.size()]);
  return encoder_->Batch(batch);
}

namespace {

struct DeviceBatch {
  at::Tensor images, tokens, labels, loss_mask, num_image_tiles;
};

DeviceBatch ToDevice(const mm::MultimodalBatch& b, const at::Device& device) {
  DeviceBatch d;
  d.images = b.images.numel() > 0 ? b.images.to(device) : at::Tensor();
  d.tokens = b.tokens.to(device);
  d.labels = b.labels.to(device);
  d.loss_mask = b.loss_mask.to(device);
  d.num_image_tiles = b.num_image_tiles.to(at::kLong);
  return d;
}

// Megatron's loss: per-token sum over the (expanded) loss mask / its count.
at::Tensor MaskedLoss(const models::multimodal::LlavaOutput& out) {
  const at::Tensor mask = out.loss_mask.to(at::kFloat);
  return (out.output * mask).sum() / mask.sum().clamp_min(1.0);
}

// The latest checkpoint of `dir`, loaded into the model (and optimizer/RNG when given). nullopt: none there.
absl::StatusOr<std::optional<int64_t>> LoadLatest(const std::string& dir, models::multimodal::LLaVAModel& model,
                                                  optimizer::AdamW* adam, bool allow_missing_projector = false,
                                                  bool* projector_missing = nullptr) {
  absl::StatusOr<std::optional<int64_t>> latest = checkpointing::LatestIteration(dir);
  if (!latest.ok()) return latest.status();
  if (!latest->has_value()) return std::optional<int64_t>();
  absl::StatusOr<checkpointing::Checkpoint> ckpt = checkpointing::LoadCheckpoint(
      dir, **latest, adam != nullptr ? checkpointing::LoadParts::kAll : checkpointing::LoadParts::kModelOnly);
  if (!ckpt.ok()) return ckpt.status();
  const std::string where = checkpointing::IterationDirectory(dir, **latest);
  bool missing = false;
  if (allow_missing_projector) {
    // Megatron's allow_missing_vision_projection_checkpoint: the projector keeps its initialisation; every other
    // tensor is still required (the load stays strict).
    for (const auto& [name, p] : model.NamedParameters()) {
      if (absl::StartsWith(name, "vision_projection.")) missing |= ckpt->model.emplace(name, p.detach().cpu()).second;
    }
  }
  if (projector_missing != nullptr) *projector_missing = missing;
  if (absl::Status s = model.LoadStateDict(ckpt->model, transformer::LoadMode::kStrict); !s.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(where, "/model.safetensors: ", s.message()));
  }
  if (adam != nullptr) {
    if (absl::Status s = adam->LoadStateDict(ckpt->optimizer); !s.ok()) {
      return absl::InvalidArgumentError(absl::StrCat(where, "/optimizer.safetensors: ", s.message()));
    }
    if (absl::Status s = tensor_parallel::SetRngState(ckpt->rng); !s.ok()) return s;
  }
  return std::optional<int64_t>(ckpt->iteration);
}

}  // namespace

absl::StatusOr<std::unique_ptr<models::multimodal::LLaVAModel>> BuildLlavaModel(const proto::LlavaRecipe& recipe,
                                                                                LlavaData& data, bool show_progress) {
  absl::StatusOr<models::multimodal::LlavaConfig> config =
      LlavaConfigFromRecipe(recipe, data.tokenizer().vocab_size(), data.chat().image_token_id());
  if (!config.ok()) return config.status();
  if (absl::Status s = data.Configure(*config, show_progress); !s.ok()) return s;
  tensor_parallel::ManualSeed(static_cast<uint64_t>(recipe.training().seed()));
  return models::multimodal::LLaVAModel::Create(*config);
}

absl::StatusOr<LlavaTrainResult> TrainLlava(const proto::LlavaRecipe& recipe, const LlavaRunOptions& options) {
  const auto& t = recipe.training();
  if (t.micro_batch_size() <= 0 || t.global_batch_size() % t.micro_batch_size() != 0) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "training.global_batch_size: %d is not a positive multiple of training.micro_batch_size %d",
        t.global_batch_size(), t.micro_batch_size()));
  }
  absl::StatusOr<at::Device> device = ParseLlavaDevice(t.device());
  if (!device.ok()) return device.status();
  if (t.num_threads() > 0) at::set_num_threads(t.num_threads());
  const bool show = options.show_progress;
  const Precision precision = t.precision() == proto::BF16 ? Precision::kBf16 : Precision::kFp32;

  absl::StatusOr<std::unique_ptr<LlavaData>> data = LlavaData::Prepare(recipe, options.base_dir, show);
  if (!data.ok()) return data.status();
  absl::StatusOr<std::unique_ptr<models::multimodal::LLaVAModel>> created = BuildLlavaModel(recipe, **data, show);
  if (!created.ok()) return created.status();
  models::multimodal::LLaVAModel& model = **created;

  // Starting weights: this run's own checkpoint (resume) wins; else checkpoint.load (another stage's, weights only
  // with finetune).
  const std::string save_dir =
      recipe.checkpoint().save().empty() ? "" : ResolvePath(options.base_dir, recipe.checkpoint().save());
  const std::string load_dir =
      recipe.checkpoint().load().empty() ? "" : ResolvePath(options.base_dir, recipe.checkpoint().load());
  const auto& m = recipe.model();
  model.Freeze(m.freeze_language_model(), m.freeze_vision_model(), m.freeze_projector());
  // On the device before the optimizer creates its state next to the parameters (checkpoints load across devices).
  model.ToDevice(*device);
  std::vector<std::pair<std::string, at::Tensor>> trainable;
  std::vector<at::Tensor> trainable_params;
  LlavaTrainResult result;
  result.num_parameters = model.NumParameters();
  for (const auto& [name, p] : model.NamedParameters()) {
    if (!p.requires_grad()) continue;
    trainable.emplace_back(name, p);
    trainable_params.push_back(p);
    result.num_trainable_parameters += p.numel();
  }
  if (trainable.empty()) return absl::InvalidArgumentError("model: every part is frozen; nothing to train");
  const auto& o = recipe.optimizer();
  optimizer::AdamW adam(trainable, optimizer::AdamWConfig{o.adam_beta1(), o.adam_beta2(), o.adam_eps(),
                                                          o.weight_decay()});
  const optimizer::LrSchedule schedule = LrScheduleFromRecipe(o, t.train_iters());
  int64_t iteration = 0;
  std::optional<int64_t> resumed;
  if (!save_dir.empty()) {
    absl::StatusOr<std::optional<int64_t>> r = LoadLatest(save_dir, model, &adam);
    if (!r.ok()) return r.status();
    resumed = *r;
  }
  if (resumed) {
    iteration = *resumed;
    if (show) std::fprintf(stderr, "resumed from %s at iteration %lld\n", save_dir.c_str(), static_cast<long long>(iteration));
  } else if (!load_dir.empty()) {
    bool projector_missing = false;
    absl::StatusOr<std::optional<int64_t>> r =
        LoadLatest(load_dir, model, recipe.checkpoint().finetune() ? nullptr : &adam,
                   m.allow_missing_vision_projection_checkpoint(), &projector_missing);
    if (!r.ok()) return r.status();
    if (!r->has_value()) {
      return absl::NotFoundError(absl::StrCat("checkpoint.load: no checkpoint in ", load_dir,
                                              " (run the previous stage first)"));
    }
    if (!recipe.checkpoint().finetune()) iteration = **r;
    if (show) {
      std::fprintf(stderr, "loaded %s (iteration %lld)%s%s\n", load_dir.c_str(), static_cast<long long>(**r),
                   recipe.checkpoint().finetune() ? ", weights only" : "",
                   projector_missing ? "; it has no projector, which keeps its fresh initialisation" : "");
    }
  }
  result.start_iteration = iteration;
  if (show) {
    std::fprintf(stderr, "model: LLaVA, %.2fM parameters, %.2fM trainable (language model %s, vision %s, projector %s), "
                 "%lld embeddings per tile, on %s, %s\n",
                 result.num_parameters / 1e6, result.num_trainable_parameters / 1e6,
                 m.freeze_language_model() ? "frozen" : "trained", m.freeze_vision_model() ? "frozen" : "trained",
                 m.freeze_projector() ? "frozen" : "trained",
                 static_cast<long long>(model.config().img_seq_len()), device->str().c_str(),
                 precision == Precision::kBf16 ? "bf16" : "fp32");
  }

  std::unique_ptr<TensorBoardWriter> tensorboard;
  if (recipe.has_tensorboard_dir()) {
    auto tb = TensorBoardWriter::Open(ResolvePath(options.base_dir, recipe.tensorboard_dir()));
    if (!tb.ok()) return tb.status();
    tensorboard = std::move(*tb);
  }
  const int64_t micro_batches = t.global_batch_size() / t.micro_batch_size();
  auto evaluate = [&](int64_t at_iteration) {
    model.SetTraining(false);
    at::NoGradGuard no_grad;
    AutocastGuard autocast(device->type(), precision);
    double total = 0;
    for (int i = 0; i < t.eval_iters(); ++i) {
      DeviceBatch b = ToDevice((*data)->Valid(static_cast<int64_t>(i) * t.micro_batch_size(), t.micro_batch_size()),
                               *device);
      total += MaskedLoss(model.Forward(b.images, b.tokens, b.labels, b.loss_mask, b.num_image_tiles)).item<double>();
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
  const bool do_eval = t.eval_iters() > 0 && (*data)->num_valid() > 0;
  if (do_eval && iteration == result.start_iteration) {
    const double loss = evaluate(iteration);
    if (show) std::fprintf(stderr, "validation at iteration %lld: loss %.4f\n", static_cast<long long>(iteration), loss);
  }
  const int64_t last_iteration =
      t.exit_after_iters() > 0 ? std::min<int64_t>(t.exit_after_iters(), t.train_iters()) : t.train_iters();
  std::optional<utils::ProgressBar> bar;
  if (show) {
    bar.emplace(recipe.name(), t.train_iters());
    bar->Update(iteration);
  }
  const auto start = Clock::now();
  int64_t samples = 0, tokens = 0;
  while (iteration < last_iteration) {
    const double lr = schedule.LearningRate(iteration);
    double loss_sum = 0;
    {
      AutocastGuard autocast(device->type(), precision);
      for (int64_t micro = 0; micro < micro_batches; ++micro) {
        const int64_t first = iteration * t.global_batch_size() + micro * t.micro_batch_size();
        DeviceBatch b = ToDevice((*data)->Train(first, t.micro_batch_size()), *device);
        models::multimodal::LlavaOutput out = model.Forward(b.images, b.tokens, b.labels, b.loss_mask,
                                                            b.num_image_tiles);
        at::Tensor loss = MaskedLoss(out);
        (loss / static_cast<double>(micro_batches)).backward();
        loss_sum += loss.item<double>();
        samples += b.tokens.size(0);
        tokens += out.output.numel();
      }
    }
    const double grad_norm = optimizer::ClipGradNorm(trainable_params, o.clip_grad());
    adam.Step(lr);
    adam.ZeroGrad();
    ++iteration;
    const double train_loss = loss_sum / static_cast<double>(micro_batches);
    result.train_losses.push_back(train_loss);
    const double seconds = std::chrono::duration<double>(Clock::now() - start).count();
    if (tensorboard) {
      tensorboard->AddScalar("lm loss", train_loss, iteration);
      tensorboard->AddScalar("learning-rate", lr, iteration);
      tensorboard->AddScalar("grad-norm", grad_norm, iteration);
    }
    if (bar) {
      bar->Update(iteration, absl::StrFormat("loss %.4f | lr %.2e | gnorm %.2f | %.1f samples/s", train_loss, lr,
                                            grad_norm, seconds > 0 ? samples / seconds : 0.0));
    }
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
  result.samples_per_second = seconds > 0 ? samples / seconds : 0;
  result.tokens_per_second = seconds > 0 ? tokens / seconds : 0;
  result.final_iteration = iteration;
  if (tensorboard) {
    if (absl::Status s = tensorboard->Flush(); !s.ok()) return s;
  }
  return result;
}

absl::StatusOr<LoadedLlava> LoadLlava(const proto::LlavaRecipe& recipe, const LlavaRunOptions& options) {
  LoadedLlava out;
  absl::StatusOr<std::unique_ptr<LlavaData>> data = LlavaData::Prepare(recipe, options.base_dir, options.show_progress);
  if (!data.ok()) return data.status();
  out.data = std::move(*data);
  absl::StatusOr<std::unique_ptr<models::multimodal::LLaVAModel>> model =
      BuildLlavaModel(recipe, *out.data, options.show_progress);
  if (!model.ok()) return model.status();
  out.model = std::move(*model);
  const std::string dir = ResolvePath(options.base_dir, !recipe.checkpoint().save().empty()
                                                            ? recipe.checkpoint().save()
                                                            : recipe.checkpoint().load());
  if (dir.empty() || dir == options.base_dir + "/") {
    return absl::InvalidArgumentError("checkpoint.save: the recipe names no checkpoint to load");
  }
  absl::StatusOr<std::optional<int64_t>> it =
      LoadLatest(dir, *out.model, nullptr, recipe.model().allow_missing_vision_projection_checkpoint());
  if (!it.ok()) return it.status();
  if (!it->has_value()) {
    return absl::NotFoundError(absl::StrCat("checkpoint.save: no checkpoint in ", dir, " (train it first)"));
  }
  out.iteration = **it;
  absl::StatusOr<at::Device> device = ParseLlavaDevice(recipe.training().device());
  if (!device.ok()) return device.status();
  out.model->ToDevice(*device);
  out.model->SetTraining(false);
  return out;
}

std::string GenerateLlava(const LoadedLlava& llava, const datasets::image::Image& image, const std::string& prompt,
                          const LlavaGenerateOptions& options) {
  at::NoGradGuard no_grad;
  const mm::TaskEncoder& encoder = llava.data->encoder();
  std::vector<mm::Turn> turns;
  if (!encoder.config().system_message.empty()) turns.push_back({mm::Role::kSystem, encoder.config().system_message});
  turns.push_back({mm::Role::kUser, absl::StrCat(mm::kImageToken, "\n", prompt)});
  const std::vector<int64_t> ids = encoder.chat().EncodePrompt(turns);
  const models::multimodal::LLaVAModel& model = *llava.model;
  const at::Device device = model.Parameters()[0].device();
  const at::Tensor tiles = encoder.ImageTiles(image).to(device);
  const at::Tensor input = at::tensor(ids, at::kLong).view({1, static_cast<int64_t>(ids.size())}).to(device);
  const at::Tensor num_tiles = at::tensor(std::vector<int64_t>{tiles.size(0)}, at::kLong);
  transformer::KVCache cache(model.config().language.num_layers);
  at::Tensor logits = model.Forward(tiles, input, {}, {}, num_tiles, &cache).output.select(1, -1);  // [1, V]
  std::mt19937_64 rng(options.seed);
  std::vector<int64_t> out;
  const int64_t vocab = encoder.chat().tokenizer().vocab_size();
  for (int step = 0; step < options.max_new_tokens; ++step) {
    at::Tensor l = logits.to(at::kFloat).narrow(-1, 0, vocab);  // padded rows are never generated
    int64_t next;
    if (options.greedy) {
      next = l.argmax(-1).item<int64_t>();
    } else {
      l = l / options.temperature;
      if (options.top_k > 0) {
        auto [values, indices] = l.topk(std::min<int64_t>(options.top_k, vocab), -1);
        at::Tensor probs = at::softmax(values, -1);
        const double u = std::uniform_real_distribution<double>(0, 1)(rng);
        at::Tensor cdf = probs.cumsum(-1);
        int64_t pick = (cdf < u).sum().item<int64_t>();
        pick = std::min<int64_t>(pick, values.size(-1) - 1);
        next = indices[0][pick].item<int64_t>();
      } else {
        at::Tensor cdf = at::softmax(l, -1).cumsum(-1);
        const double u = std::uniform_real_distribution<double>(0, 1)(rng);
        next = std::min<int64_t>((cdf < u).sum().item<int64_t>(), vocab - 1);
      }
    }
    if (next == encoder.chat().im_end_id() || next == encoder.chat().eod_id()) break;
    out.push_back(next);
    if (cache.seq_len >= model.config().language.max_position_embeddings &&
        model.config().language.position_embedding_type == transformer::PositionEmbedding::kLearnedAbsolute) {
      break;
    }
    logits = model.language_model().Logits(at::tensor(std::vector<int64_t>{next}, at::kLong).view({1, 1}).to(device),
                                           {}, &cache).select(1, -1);
  }
  return std::string(absl::StripAsciiWhitespace(encoder.chat().Decode(out)));
}

absl::StatusOr<LlavaEvalResult> EvalLlava(const LoadedLlava& llava, int max_samples, int max_new_tokens,
                                          bool show_progress) {
  const auto& samples = llava.data->valid_samples();
  // Chance level per question type: one over the number of distinct answers of that type in the split.
  std::map<std::string, std::set<std::string>> answers_of_type;
  for (const auto& s : samples) {
    if (s.kind == mm::SampleKind::kVqa) {
      answers_of_type[s.question_types.empty() ? "other" : s.question_types[0]].insert(Normalize(s.answer));
    }
  }
  struct Tally {
    int64_t n = 0;
    double correct = 0, f1 = 0;
  };
  std::map<std::string, Tally> vqa;
  Tally all_vqa, caption;
  int64_t evaluated = 0;
  const int64_t total = std::min<int64_t>(max_samples, samples.size());
  std::optional<utils::ProgressBar> bar;
  if (show_progress) bar.emplace("eval", total);
  LlavaGenerateOptions options;
  options.max_new_tokens = max_new_tokens;
  for (const auto& s : samples) {
    if (evaluated >= total) break;
    ++evaluated;
    if (bar) bar->Update(evaluated);
    if (s.images.empty()) continue;
    auto ask = [&](const std::string& type, const std::string& question, const std::string& answer) {
      const std::string prediction = GenerateLlava(llava, s.images[0], question, options);
      const double hit = Normalize(prediction) == Normalize(answer) ? 1.0 : 0.0;
      vqa[type].n++;
      vqa[type].correct += hit;
      all_vqa.n++;
      all_vqa.correct += hit;
    };
    if (s.kind == mm::SampleKind::kVqa) {
      ask(s.question_types.empty() ? "other" : s.question_types[0], s.question, s.answer);
    } else if (s.kind == mm::SampleKind::kConversation) {
      // Every question of a held-out conversation, asked on its own about the image (a single-turn VQA).
      size_t question = 0;
      for (size_t t = 0; t + 1 < s.conversation.size(); ++t) {
        if (s.conversation[t].role != mm::Role::kUser || s.conversation[t + 1].role != mm::Role::kAssistant) continue;
        std::string text = s.conversation[t].content;
        const std::string image_prefix = absl::StrCat(mm::kImageToken, "\n");
        if (absl::StartsWith(text, image_prefix)) text = text.substr(image_prefix.size());
        ask(question < s.question_types.size() ? s.question_types[question] : "other", text,
            s.conversation[t + 1].content);
        ++question;
      }
    } else if (s.kind == mm::SampleKind::kCaption) {
      const std::string prediction =
          GenerateLlava(llava, s.images[0], llava.data->encoder().config().caption_prompt, options);
      caption.n++;
      caption.correct += Normalize(prediction) == Normalize(s.caption) ? 1.0 : 0.0;
      caption.f1 += TokenF1(prediction, s.caption);
    }
  }
  if (bar) bar->Finish();
  LlavaEvalResult result;
  double chance_sum = 0;
  for (const auto& [type, tally] : vqa) {
    // The answer vocabulary of the synthetic dataset when the type is one of its; else the distinct answers seen.
    const double known = mm::ChanceAccuracy(type);
    const double chance = known > 0 ? known : 1.0 / std::max<size_t>(1, answers_of_type[type].size());
    chance_sum += chance * tally.n;
    result.rows.push_back({"vqa/" + type, tally.n, tally.correct / std::max<int64_t>(1, tally.n), chance, 0});
  }
  if (all_vqa.n > 0) {
    result.rows.push_back({"vqa (all)", all_vqa.n, all_vqa.correct / all_vqa.n, chance_sum / all_vqa.n, 0});
  }
  if (caption.n > 0) {
    result.rows.push_back({"caption", caption.n, caption.correct / caption.n, 0, caption.f1 / caption.n});
  }
  result.table = absl::StrFormat("%-18s %8s %10s %10s %10s\n", "task", "samples", "accuracy", "chance", "token F1");
  for (const LlavaEvalRow& r : result.rows) {
    result.table += absl::StrFormat("%-18s %8d %9.1f%% %9.1f%% %10s\n", r.task, r.count, 100 * r.accuracy,
                                    100 * r.chance, r.task == "caption" ? absl::StrFormat("%.3f", r.token_f1) : "-");
  }
  return result;
}

}  // namespace megatron::training
