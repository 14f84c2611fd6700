// Legacy versus core, side by side: builds a core model (seeded), converts its weights into the legacy tree
// (legacy/checkpoint/convert.h), and prints one table: the largest output difference on one batch, the losses
// after N AdamW steps from the same start on the same random-token batches, step time, tokens/s and peak
// memory (CPU: resident-set growth during the run, from /proc/self/status after resetting the peak through
// /proc/self/clear_refs; CUDA: the caching allocator's peak allocated bytes).
//
//   bazel run //experiments/compare:legacy_vs_core -- --model=gpt|bert|t5 [--device=cpu|cuda] [--steps=N]
//       [--batch=B] [--seq=S] [--layers=L] [--hidden=H] [--heads=A] [--vocab=V] [--bf16]
// --bf16 runs both trees under bf16 parameters (the legacy softmax then takes the fused kernel on a GPU where the
// availability rule allows; the core tree uses its SDPA core attention).
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <functional>
#include <iostream>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>

#include "absl/strings/str_cat.h"
#include "legacy/checkpoint/convert.h"
#include "legacy/model/bert_model.h"
#include "legacy/model/gpt_model.h"
#include "legacy/model/t5_model.h"
#include "megatron/core/models/bert/bert_model.h"
#include "megatron/core/models/gpt/gpt_model.h"
#include "megatron/core/models/T5/t5_model.h"
#include "megatron/core/optimizer/optimizer.h"

#ifdef MEGATRON_COMPARE_CUDA
#include <c10/cuda/CUDACachingAllocator.h>
#include <c10/cuda/CUDAFunctions.h>
#endif

namespace {

using megatron::transformer::MegatronModule;
using megatron::transformer::TransformerConfig;

struct Flags {
  std::string model = "gpt";
  std::string device = "cpu";
  int steps = 20, batch = 8, seq = 128, layers = 4, hidden = 256, heads = 8, vocab = 1024;
  bool bf16 = false;
  std::string only;  // internal: "legacy" or "core" trains that tree alone and prints one RESULT line
};

bool ParseFlags(int argc, char** argv, Flags* f) {
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--bf16") { f->bf16 = true; continue; }
    const size_t eq = arg.find('=');
    if (arg.rfind("--", 0) != 0 || eq == std::string::npos) {
      std::cerr << "legacy_vs_core: expected --name=value, got '" << arg << "'\n";
      return false;
    }
    const std::string name = arg.substr(2, eq - 2), value = arg.substr(eq + 1);
    std::map<std::string, int*> ints = {{"steps", &f->steps},   {"batch", &f->batch}, {"seq", &f->seq},
                                        {"layers", &f->layers}, {"hidden", &f->hidden}, {"heads", &f->heads},
                                        {"vocab", &f->vocab}};
    if (name == "model") {
      f->model = value;
    } else if (name == "only") {
      f->only = value;
    } else if (name == "device") {
      f->device = value;
    } else if (ints.count(name)) {
      try {
        *ints[name] = std::stoi(value);
      } catch (const std::exception&) {
        std::cerr << "legacy_vs_core: --" << name << "=" << value << ": expected an integer\n";
        return false;
      }
    } else {
      std::cerr << "legacy_vs_core: unknown flag --" << name << "\n";
      return false;
    }
  }
  if (f->model != "gpt" && f->model != "bert" && f->model != "t5") {
    std::cerr << "legacy_vs_core: --model=" << f->model << ": expected gpt, bert or t5\n";
    return false;
  }
  if (!f->only.empty() && f->only != "legacy" && f->only != "core") {
    std::cerr << "legacy_vs_core: --only=" << f->only << ": expected legacy or core\n";
    return false;
  }
  if (f->device != "cpu" && f->device != "cuda") {
    std::cerr << "legacy_vs_core: --device=" << f->device << ": expected cpu or cuda\n";
    return false;
  }
  return true;
}

int64_t ProcStatusKb(const std::string& field) {
  std::ifstream in("/proc/self/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind(field + ":", 0) == 0) return std::stoll(line.substr(field.size() + 1));
  }
  return -1;
}

// Peak memory of one run: reset, run, read.
class PeakMemory {
 public:
  explicit PeakMemory(bool cuda) : cuda_(cuda) {}
  void Reset() {
#ifdef MEGATRON_COMPARE_CUDA
    if (cuda_) {
      c10::cuda::CUDACachingAllocator::resetPeakStats(c10::cuda::current_device());
      base_ = c10::cuda::CUDACachingAllocator::getDeviceStats(c10::cuda::current_device())
                  .allocated_bytes[0].current;
      return;
    }
#endif
    std::ofstream("/proc/self/clear_refs") << "5";  // resets VmHWM to the current RSS
    base_ = ProcStatusKb("VmRSS") * 1024;
  }
  // Bytes above the level at Reset.
  int64_t Peak() const {
#ifdef MEGATRON_COMPARE_CUDA
    if (cuda_) {
      return c10::cuda::CUDACachingAllocator::getDeviceStats(c10::cuda::current_device()).allocated_bytes[0].peak -
             base_;
    }
#endif
    return ProcStatusKb("VmHWM") * 1024 - base_;
  }

 private:
  bool cuda_;
  int64_t base_ = 0;
};

struct Batch {
  at::Tensor ids, labels, padding, types, loss_mask, order;
  at::Tensor decoder_ids;  // T5: the decoder side (labels are its targets)
};

struct RunResult {
  double first_loss = 0, last_loss = 0, step_ms = 0, tokens_per_s = 0;
  int64_t peak_bytes = 0;
};

// Trains `model` for the batches with AdamW; `loss_fn` gives the scalar loss of one batch.
RunResult Train(MegatronModule& model, const std::vector<Batch>& batches,
                const std::function<at::Tensor(const Batch&)>& loss_fn, bool cuda, int64_t tokens_per_batch) {
  megatron::optimizer::AdamW adam(model.NamedParameters(), {});
  PeakMemory mem(cuda);
  mem.Reset();
  RunResult r;
  double timed_ms = 0;
  for (size_t i = 0; i < batches.size(); ++i) {
    const auto t0 = std::chrono::steady_clock::now();
    at::Tensor loss = loss_fn(batches[i]);
    loss.backward();
    adam.Step(1e-3);
    adam.ZeroGrad();
    const double value = loss.item<double>();  // synchronises the device
    const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
    if (i == 0) r.first_loss = value;
    r.last_loss = value;
    if (i > 0 || batches.size() == 1) timed_ms += ms;  // the first step warms up (allocator, kernels)
  }
  const double timed_steps = batches.size() > 1 ? batches.size() - 1 : 1;
  r.step_ms = timed_ms / timed_steps;
  r.tokens_per_s = tokens_per_batch / (r.step_ms / 1000.0);
  r.peak_bytes = mem.Peak();
  return r;
}

// Peak memory is per process (glibc keeps freed pages, the caching allocator keeps blocks), so each tree trains
// in a child process of its own: this binary again with --only=<tree>, from the same seeds.
bool RunChild(const Flags& f, const std::string& tree, RunResult* r) {
  char exe[4096];
  const ssize_t n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
  if (n <= 0) return false;
  exe[n] = 0;
  const std::string cmd = absl::StrCat(
      "'", exe, "' --model=", f.model, " --device=", f.device, " --steps=", f.steps, " --batch=", f.batch,
      " --seq=", f.seq, " --layers=", f.layers, " --hidden=", f.hidden, " --heads=", f.heads, " --vocab=", f.vocab,
      f.bf16 ? " --bf16" : "", " --only=", tree);
  FILE* pipe = popen(cmd.c_str(), "r");
  if (pipe == nullptr) return false;
  char line[1024];
  bool ok = false;
  long long peak = 0;
  while (std::fgets(line, sizeof(line), pipe) != nullptr) {
    if (std::sscanf(line, "RESULT %lf %lf %lf %lf %lld", &r->first_loss, &r->last_loss, &r->step_ms,
                    &r->tokens_per_s, &peak) == 5) {
      ok = true;
    } else {
      std::fputs(line, stderr);
    }
  }
  r->peak_bytes = peak;
  return pclose(pipe) == 0 && ok;
}

double MaxAbs(const at::Tensor& a) { return a.detach().abs().max().item<double>(); }

int Main(const Flags& f) {
  const bool cuda = f.device == "cuda";
  const at::Device device = cuda ? at::Device(at::kCUDA, 0) : at::Device(at::kCPU);
  const at::ScalarType dtype = f.bf16 ? at::kBFloat16 : at::kFloat;
  const bool bert = f.model == "bert", t5 = f.model == "t5";
  const auto family = bert ? megatron::legacy::ModelFamily::kBert
                      : t5 ? megatron::legacy::ModelFamily::kT5
                           : megatron::legacy::ModelFamily::kGpt;

  TransformerConfig config;
  config.num_layers = f.layers;
  config.hidden_size = f.hidden;
  config.num_attention_heads = f.heads;
  config.num_query_groups = f.heads;
  config.kv_channels = f.hidden / f.heads;
  config.ffn_hidden_size = 4 * f.hidden;
  config.vocab_size = f.vocab;
  config.max_position_embeddings = f.seq;
  config.hidden_dropout = 0.0;  // the two trees draw dropout masks differently; compare deterministic runs
  config.attention_dropout = 0.0;
  if (bert || t5) config.attn_mask_type = megatron::transformer::AttnMask::kPadding;
  megatron::legacy::LegacyOptions options;
  options.bf16 = f.bf16;

  at::manual_seed(1234);
  std::unique_ptr<MegatronModule> core, old;
  if (t5) {
    auto c = megatron::models::T5Model::Create(config);
    auto l = megatron::legacy::T5Model::Create(config, options);
    if (!c.ok() || !l.ok()) {
      std::cerr << (c.ok() ? l.status() : c.status()) << "\n";
      return 1;
    }
    core = std::move(*c);
    old = std::move(*l);
  } else if (bert) {
    auto c = megatron::models::BertModel::Create(config);
    auto l = megatron::legacy::BertModel::Create(config, options);
    if (!c.ok() || !l.ok()) {
      std::cerr << (c.ok() ? l.status() : c.status()) << "\n";
      return 1;
    }
    core = std::move(*c);
    old = std::move(*l);
  } else {
    auto c = megatron::models::GPTModel::Create(config);
    auto l = megatron::legacy::GPTModel::Create(config, options);
    if (!c.ok() || !l.ok()) {
      std::cerr << (c.ok() ? l.status() : c.status()) << "\n";
      return 1;
    }
    core = std::move(*c);
    old = std::move(*l);
  }
  auto converted = megatron::legacy::CoreToLegacy(core->StateDict(), family);
  if (!converted.ok()) {
    std::cerr << converted.status() << "\n";
    return 1;
  }
  if (auto s = old->LoadStateDict(*converted, megatron::transformer::LoadMode::kStrict); !s.ok()) {
    std::cerr << s << "\n";
    return 1;
  }
  for (MegatronModule* m : {core.get(), old.get()}) {
    m->ToDevice(device);
    if (f.bf16) {
      at::NoGradGuard no_grad;
      for (auto& p : m->Parameters()) p.set_data(p.to(dtype));
    }
  }

  // The same random batches for both trees.
  at::manual_seed(99);
  std::vector<Batch> batches;
  for (int i = 0; i < std::max(1, f.steps); ++i) {
    Batch b;
    const auto ids = at::randint(0, f.vocab, {f.batch, f.seq + 1}, at::kLong);
    b.ids = ids.narrow(1, 0, f.seq).contiguous().to(device);
    b.labels = ids.narrow(1, 1, f.seq).contiguous().to(device);
    if (t5) {
      // Encoder: every other sample padded to three quarters; decoder: half the encoder length, all real.
      at::Tensor padding = at::ones({f.batch, f.seq}, at::kLong);
      for (int s = 1; s < f.batch; s += 2) padding[s].narrow(0, 3 * f.seq / 4, f.seq - 3 * f.seq / 4).zero_();
      b.padding = padding.to(device);
      const auto dec = at::randint(0, f.vocab, {f.batch, f.seq / 2 + 1}, at::kLong);
      b.decoder_ids = dec.narrow(1, 0, f.seq / 2).contiguous().to(device);
      b.labels = dec.narrow(1, 1, f.seq / 2).contiguous().to(device);
    }
    if (bert) {
      // Every other sample padded to three quarters (BERT compares real tokens only; see bert_model.h).
      at::Tensor padding = at::ones({f.batch, f.seq}, at::kLong);
      for (int s = 1; s < f.batch; s += 2) padding[s].narrow(0, 3 * f.seq / 4, f.seq - 3 * f.seq / 4).zero_();
      b.padding = padding.to(device);
      b.types = at::randint(0, 2, {f.batch, f.seq}, at::kLong).to(device);
      b.loss_mask = at::rand({f.batch, f.seq}).lt(0.15).logical_and(padding.eq(1)).to(at::kFloat).to(device);
      b.order = at::randint(0, 2, {f.batch}, at::kLong).to(device);
    }
    batches.push_back(b);
  }

  auto core_gpt = dynamic_cast<megatron::models::GPTModel*>(core.get());
  auto old_gpt = dynamic_cast<megatron::legacy::GPTModel*>(old.get());
  auto core_bert = dynamic_cast<megatron::models::BertModel*>(core.get());
  auto old_bert = dynamic_cast<megatron::legacy::BertModel*>(old.get());
  auto core_t5 = dynamic_cast<megatron::models::T5Model*>(core.get());
  auto old_t5 = dynamic_cast<megatron::legacy::T5Model*>(old.get());

  std::function<at::Tensor(const Batch&)> core_loss, old_loss;
  if (t5) {
    core_loss = [&](const Batch& b) { return core_t5->Loss(b.ids, b.decoder_ids, b.padding, b.labels).mean(); };
    old_loss = [&](const Batch& b) { return old_t5->Loss(b.ids, b.decoder_ids, b.padding, b.labels).mean(); };
  } else if (bert) {
    core_loss = [&](const Batch& b) {
      auto o = core_bert->Forward(b.ids, b.padding, b.types, b.labels);
      return megatron::models::BertPretrainingLoss(o.lm, b.loss_mask, o.binary_logits, b.order);
    };
    old_loss = [&](const Batch& b) {
      auto o = old_bert->Forward(b.ids, b.padding, b.types, b.labels);
      return megatron::models::BertPretrainingLoss(o.lm, b.loss_mask, o.binary_logits, b.order);
    };
  } else {
    core_loss = [&](const Batch& b) { return core_gpt->Loss(b.ids, {}, b.labels).mean(); };
    old_loss = [&](const Batch& b) { return old_gpt->Loss(b.ids, {}, {}, b.labels).mean(); };
  }
  // Tokens per step: the encoder's plus (T5) the decoder's.
  const int64_t tokens = static_cast<int64_t>(f.batch) * (t5 ? f.seq + f.seq / 2 : f.seq);
  if (!f.only.empty()) {
    const bool legacy_tree = f.only == "legacy";
    if (!legacy_tree) old.reset();  // only this tree's memory in this process
    if (legacy_tree) core.reset();
    const RunResult r = legacy_tree ? Train(*old, batches, old_loss, cuda, tokens)
                                    : Train(*core, batches, core_loss, cuda, tokens);
    std::printf("RESULT %.9g %.9g %.9g %.9g %lld\n", r.first_loss, r.last_loss, r.step_ms, r.tokens_per_s,
                static_cast<long long>(r.peak_bytes));
    return 0;
  }

  // Output difference on the first batch, before training.
  double out_diff = 0, out_scale = 0;
  {
    at::NoGradGuard no_grad;
    const Batch& b = batches[0];
    at::Tensor a, c;
    if (t5) {
      a = old_t5->Logits(b.ids, b.decoder_ids, b.padding).to(at::kFloat);
      c = core_t5->Logits(b.ids, b.decoder_ids, b.padding).to(at::kFloat);
    } else if (bert) {
      const at::Tensor real = b.padding.eq(1);
      a = old_bert->Forward(b.ids, b.padding, b.types).lm.index({real}).to(at::kFloat);
      c = core_bert->Forward(b.ids, b.padding, b.types).lm.index({real}).to(at::kFloat);
    } else {
      a = old_gpt->Logits(b.ids).to(at::kFloat);
      c = core_gpt->Logits(b.ids, {}).to(at::kFloat);
    }
    out_diff = MaxAbs(a - c);
    out_scale = MaxAbs(c);
  }

  const int64_t num_parameters = core->NumParameters();
  core.reset();
  old.reset();
  RunResult rl, rc;
  if (!RunChild(f, "legacy", &rl) || !RunChild(f, "core", &rc)) {
    std::cerr << "legacy_vs_core: a training run failed (its output is above)\n";
    return 1;
  }

  std::printf("legacy vs core: %s, %d layers, hidden %d, %d heads, vocab %d, batch %d x seq %d, %s, %s, %d AdamW "
              "steps (lr 1e-3), %lld parameters\n",
              f.model.c_str(), f.layers, f.hidden, f.heads, f.vocab, f.batch, f.seq, f.device.c_str(),
              f.bf16 ? "bf16" : "fp32", f.steps, static_cast<long long>(num_parameters));
  std::printf("max |output difference| before training: %.3e (relative to max |output| %.3e: %.3e)\n", out_diff,
              out_scale, out_diff / std::max(out_scale, 1e-30));
  std::printf("| %-26s | %14s | %14s | %12s |\n", "", "legacy", "core", "difference");
  std::printf("|%s|%s|%s|%s|\n", std::string(28, '-').c_str(), std::string(16, '-').c_str(),
              std::string(16, '-').c_str(), std::string(14, '-').c_str());
  std::printf("| %-26s | %14.6f | %14.6f | %12.3e |\n", "loss at step 1", rl.first_loss, rc.first_loss,
              rl.first_loss - rc.first_loss);
  std::printf("| %-26s | %14.6f | %14.6f | %12.3e |\n", absl::StrCat("loss at step ", f.steps).c_str(),
              rl.last_loss, rc.last_loss, rl.last_loss - rc.last_loss);
  std::printf("| %-26s | %14.2f | %14.2f | %11.2fx |\n", "step time (ms)", rl.step_ms, rc.step_ms,
              rl.step_ms / rc.step_ms);
  std::printf("| %-26s | %14.0f | %14.0f | %11.2fx |\n", "tokens/s", rl.tokens_per_s, rc.tokens_per_s,
              rc.tokens_per_s / rl.tokens_per_s);
  std::printf("| %-26s | %14.1f | %14.1f | %11.2fx |\n",
              cuda ? "peak CUDA allocated (MiB)" : "peak RSS growth (MiB)", rl.peak_bytes / 1048576.0,
              rc.peak_bytes / 1048576.0,
              rc.peak_bytes > 0 ? static_cast<double>(rl.peak_bytes) / rc.peak_bytes : 0.0);
  std::printf("(step time: mean over steps 2..%d; ratio columns are legacy/core for time and memory, core/legacy "
              "for tokens/s)\n",
              f.steps);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  Flags f;
  if (!ParseFlags(argc, argv, &f)) return 2;
  return Main(f);
}
