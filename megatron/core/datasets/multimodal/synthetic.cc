#include "megatron/core/datasets/multimodal/synthetic.h"

#include <algorithm>
#include <cctype>
#include <cstdio>
#include <map>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "megatron/core/datasets/multimodal/chat_template.h"
#include "megatron/core/tokenizers/bpe_tokenizer.h"
#include "megatron/core/utils/file_io.h"
#include "nlohmann/json.hpp"

namespace megatron::datasets::multimodal {
namespace {

// Saturated colours far apart in RGB, so a tiny vision encoder tells them apart easily.
constexpr uint8_t kColourRgb[4][3] = {{220, 40, 40}, {40, 170, 60}, {40, 80, 220}, {230, 200, 40}};
constexpr uint8_t kBackground = 235;

const char* kCellNames[3][3] = {{"top left", "top", "top right"},
                                {"left", "centre", "right"},
                                {"bottom left", "bottom", "bottom right"}};
const std::vector<std::string> kColumnAnswers = {"left", "centre", "right"};
const std::vector<std::string> kRowAnswers = {"top", "middle", "bottom"};
const std::vector<std::string> kCountAnswers = {"one", "two", "three"};
const std::vector<std::string> kYesNo = {"yes", "no"};

int Uniform(std::mt19937& rng, int n) { return std::uniform_int_distribution<int>(0, n - 1)(rng); }

std::string Name(const SceneShape& s) { return absl::StrCat(Colours()[s.colour], " ", ShapeNames()[static_cast<int>(s.kind)]); }

std::string Signature(const Scene& scene) {
  std::string sig;
  for (const SceneShape& s : scene.shapes) absl::StrAppend(&sig, s.row, s.col, static_cast<int>(s.kind), s.colour, ";");
  return sig;
}

std::vector<Turn> TrainingTurns(const MultimodalSample& s, const SyntheticDatasetConfig& config) {
  std::vector<Turn> turns = {{Role::kSystem, config.system_message}};
  switch (s.kind) {
    case SampleKind::kCaption:
      turns.push_back({Role::kUser, absl::StrCat(kImageToken, "\n", config.caption_prompt)});
      turns.push_back({Role::kAssistant, s.caption});
      break;
    case SampleKind::kVqa:
      turns.push_back({Role::kUser, absl::StrCat(kImageToken, "\n", s.question)});
      turns.push_back({Role::kAssistant, s.answer});
      break;
    case SampleKind::kConversation:
      turns.insert(turns.end(), s.conversation.begin(), s.conversation.end());
      break;
  }
  return turns;
}

}  // namespace

const std::vector<std::string>& Colours() {
  static const std::vector<std::string> v = {"red", "green", "blue", "yellow"};
  return v;
}

const std::vector<std::string>& ShapeNames() {
  static const std::vector<std::string> v = {"circle", "square", "triangle"};
  return v;
}

const std::vector<std::string>& QuestionTypes() {
  static const std::vector<std::string> v = {"count", "colour", "shape", "column", "row", "exists"};
  return v;
}

const std::vector<std::string>& AnswerVocabulary(const std::string& type) {
  static const std::vector<std::string> empty;
  if (type == "count") return kCountAnswers;
  if (type == "colour") return Colours();
  if (type == "shape") return ShapeNames();
  if (type == "column") return kColumnAnswers;
  if (type == "row") return kRowAnswers;
  if (type == "exists") return kYesNo;
  return empty;
}

double ChanceAccuracy(const std::string& type) {
  const size_t n = AnswerVocabulary(type).size();
  return n == 0 ? 0.0 : 1.0 / static_cast<double>(n);
}

std::string NormalizeAnswer(const std::string& text) {
  size_t b = 0, e = text.size();
  while (b < e && std::isspace(static_cast<unsigned char>(text[b]))) ++b;
  while (e > b && (std::isspace(static_cast<unsigned char>(text[e - 1])) || text[e - 1] == '.')) --e;
  std::string out = text.substr(b, e - b);
  for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

void AnswerTally::Add(const std::string& type, const std::string& prediction, const std::string& answer) {
  results_.push_back({type, NormalizeAnswer(prediction) == NormalizeAnswer(answer)});
}

std::vector<AnswerTally::Row> AnswerTally::Rows() const {
  std::vector<std::string> types = QuestionTypes();
  for (const auto& [t, ok] : results_) {
    if (std::find(types.begin(), types.end(), t) == types.end()) types.push_back(t);
  }
  std::vector<Row> rows;
  Row all{"all"};
  for (const std::string& t : types) {
    Row r{t};
    for (const auto& [type, ok] : results_) {
      if (type != t) continue;
      ++r.total;
      r.correct += ok;
    }
    if (r.total == 0) continue;
    r.accuracy = static_cast<double>(r.correct) / r.total;
    r.chance = ChanceAccuracy(t);
    all.correct += r.correct;
    all.total += r.total;
    all.chance += r.chance * r.total;
    rows.push_back(r);
  }
  if (all.total > 0) {
    all.accuracy = static_cast<double>(all.correct) / all.total;
    all.chance /= all.total;
  }
  rows.push_back(all);
  return rows;
}

std::string AnswerTally::Table() const {
  std::string out = "question type   correct / total   accuracy   chance\n";
  for (const Row& r : Rows()) {
    char line[128];
    std::snprintf(line, sizeof(line), "%-14s %8lld / %-6lld %9.1f%% %7.1f%%\n", r.type.c_str(),
                  static_cast<long long>(r.correct), static_cast<long long>(r.total), 100 * r.accuracy,
                  100 * r.chance);
    out += line;
  }
  return out;
}

Scene RandomScene(std::mt19937& rng) {
  Scene scene;
  const int n = 1 + Uniform(rng, 3);
  std::vector<int> cells = {0, 1, 2, 3, 4, 5, 6, 7, 8};
  for (int i = 0; i < n; ++i) {  // partial Fisher-Yates: n distinct cells
    std::swap(cells[i], cells[i + Uniform(rng, 9 - i)]);
  }
  std::sort(cells.begin(), cells.begin() + n);
  for (int i = 0; i < n; ++i) {
    scene.shapes.push_back({static_cast<ShapeKind>(Uniform(rng, 3)), Uniform(rng, 4), cells[i] / 3, cells[i] % 3});
  }
  return scene;
}

image::Image RenderScene(const Scene& scene, int size, std::mt19937& rng) {
  image::Image img(size, size, kBackground);
  const double cell = size / 3.0;
  const double r = cell * 0.36;
  for (const SceneShape& s : scene.shapes) {
    const double cx = (s.col + 0.5) * cell + (Uniform(rng, 5) - 2);
    const double cy = (s.row + 0.5) * cell + (Uniform(rng, 5) - 2);
    for (int y = 0; y < size; ++y) {
      for (int x = 0; x < size; ++x) {
        const double dx = x + 0.5 - cx, dy = y + 0.5 - cy;
        bool inside = false;
        switch (s.kind) {
          case ShapeKind::kCircle: inside = dx * dx + dy * dy <= r * r; break;
          case ShapeKind::kSquare: inside = std::abs(dx) <= 0.85 * r && std::abs(dy) <= 0.85 * r; break;
          case ShapeKind::kTriangle:  // apex up, base at cy + r
            inside = dy >= -r && dy <= r && std::abs(dx) <= (dy + r) / 2.0;
            break;
        }
        if (inside) std::copy(kColourRgb[s.colour], kColourRgb[s.colour] + 3, img.at(y, x));
      }
    }
  }
  return img;
}

std::string Caption(const Scene& scene) {
  std::vector<std::string> parts;
  for (const SceneShape& s : scene.shapes) parts.push_back(absl::StrCat("a ", Name(s), " at ", kCellNames[s.row][s.col]));
  std::string text = parts.back();
  if (parts.size() > 1) {
    text = absl::StrCat(absl::StrJoin(parts.begin(), parts.end() - 1, ", "), " and ", parts.back());
  }
  return text + ".";
}

std::vector<QuestionAnswer> AllQuestions(const Scene& scene) {
  std::vector<QuestionAnswer> qs;
  qs.push_back({"count", "How many shapes are there?", kCountAnswers[scene.shapes.size() - 1]});
  std::map<int, int> kind_count, colour_count;
  std::map<std::pair<int, int>, int> combo_count;
  for (const SceneShape& s : scene.shapes) {
    ++kind_count[static_cast<int>(s.kind)];
    ++colour_count[s.colour];
    ++combo_count[{static_cast<int>(s.kind), s.colour}];
  }
  for (const SceneShape& s : scene.shapes) {
    const std::string& shape = ShapeNames()[static_cast<int>(s.kind)];
    const std::string& colour = Colours()[s.colour];
    if (kind_count[static_cast<int>(s.kind)] == 1) {
      qs.push_back({"colour", absl::StrCat("What colour is the ", shape, "?"), colour});
    }
    if (colour_count[s.colour] == 1) qs.push_back({"shape", absl::StrCat("What shape is the ", colour, " one?"), shape});
    if (combo_count[{static_cast<int>(s.kind), s.colour}] == 1) {
      qs.push_back({"column", absl::StrCat("Is the ", Name(s), " on the left, in the centre or on the right?"),
                    kColumnAnswers[s.col]});
      qs.push_back({"row", absl::StrCat("Is the ", Name(s), " at the top, in the middle or at the bottom?"),
                    kRowAnswers[s.row]});
      qs.push_back({"exists", absl::StrCat("Is there a ", Name(s), "?"), "yes"});
    }
  }
  for (int k = 0; k < 3; ++k) {
    for (int c = 0; c < 4; ++c) {
      if (combo_count.count({k, c}) == 0) {
        qs.push_back({"exists", absl::StrCat("Is there a ", Colours()[c], " ", ShapeNames()[k], "?"), "no"});
      }
    }
  }
  return qs;
}

bool IsHeldOut(const Scene& scene) {
  uint64_t h = 1469598103934665603ull;  // FNV-1a: a fixed hash, the same on every platform
  for (char c : Signature(scene)) h = (h ^ static_cast<unsigned char>(c)) * 1099511628211ull;
  return h % 8 == 0;
}

namespace {

// One question of a random type (types first, so rare types are not drowned by "exists" questions).
QuestionAnswer PickQuestion(const std::vector<QuestionAnswer>& all, std::mt19937& rng,
                            const std::vector<std::string>& exclude) {
  std::vector<std::string> types;
  for (const std::string& t : QuestionTypes()) {
    const bool available = std::any_of(all.begin(), all.end(), [&](const QuestionAnswer& q) {
      return q.type == t && std::find(exclude.begin(), exclude.end(), q.question) == exclude.end();
    });
    if (available) types.push_back(t);
  }
  const std::string type = types[Uniform(rng, static_cast<int>(types.size()))];
  std::vector<const QuestionAnswer*> of_type;
  for (const QuestionAnswer& q : all) {
    if (q.type != type || std::find(exclude.begin(), exclude.end(), q.question) != exclude.end()) continue;
    of_type.push_back(&q);
  }
  if (type == "exists") {  // balance yes / no
    const bool want_yes = Uniform(rng, 2) == 0;
    std::vector<const QuestionAnswer*> side;
    for (const QuestionAnswer* q : of_type) {
      if ((q->answer == "yes") == want_yes) side.push_back(q);
    }
    if (!side.empty()) of_type = side;
  }
  return *of_type[Uniform(rng, static_cast<int>(of_type.size()))];
}

}  // namespace

std::vector<MultimodalSample> GenerateSyntheticSplit(const SyntheticDatasetConfig& config, bool held_out) {
  std::mt19937 rng(config.seed);
  const int wanted = held_out ? config.num_valid : config.num_train;
  const std::string prefix = held_out ? "valid" : "train";
  std::vector<MultimodalSample> samples;
  while (static_cast<int>(samples.size()) < wanted) {
    const Scene scene = RandomScene(rng);
    image::Image img = RenderScene(scene, config.image_size, rng);
    // Scenes of the other split are skipped before any further draws; each split's stream is deterministic.
    if (IsHeldOut(scene) != held_out) continue;
    const std::vector<QuestionAnswer> all = AllQuestions(scene);
    MultimodalSample s;
    const int kind = static_cast<int>(samples.size()) % 3;
    if (kind == 0) {
      s.kind = SampleKind::kCaption;
      s.caption = Caption(scene);
    } else if (kind == 1) {
      s.kind = SampleKind::kVqa;
      const QuestionAnswer q = PickQuestion(all, rng, {});
      s.question = q.question;
      s.answer = q.answer;
      s.question_types = {q.type};
    } else {
      s.kind = SampleKind::kConversation;
      const int turns = 2 + Uniform(rng, 2);
      std::vector<std::string> asked;
      for (int t = 0; t < turns; ++t) {
        const QuestionAnswer q = PickQuestion(all, rng, asked);
        asked.push_back(q.question);
        s.conversation.push_back({Role::kUser, t == 0 ? absl::StrCat(kImageToken, "\n", q.question) : q.question});
        s.conversation.push_back({Role::kAssistant, q.answer});
        s.question_types.push_back(q.type);
      }
    }
    char key[32];
    std::snprintf(key, sizeof(key), "%s_%07d", prefix.c_str(), static_cast<int>(samples.size()));
    s.key = key;
    s.images.push_back(std::move(img));
    // The reference caption on every sample, so an eval can score captions of any held-out image.
    s.metadata_json = nlohmann::json{{"scene_caption", Caption(scene)}, {"num_shapes", scene.shapes.size()}}.dump();
    samples.push_back(std::move(s));
  }
  return samples;
}

std::vector<std::string> SyntheticTokenizerCorpus(const SyntheticDatasetConfig& config,
                                                  const std::vector<MultimodalSample>& train) {
  std::vector<std::string> docs;
  for (const MultimodalSample& s : train) docs.push_back(RenderChatML(TrainingTurns(s, config), false));
  return docs;
}

namespace {

nlohmann::json ConfigJson(const SyntheticDatasetConfig& c) {
  return {{"image_size", c.image_size},         {"num_train", c.num_train},
          {"num_valid", c.num_valid},           {"samples_per_shard", c.samples_per_shard},
          {"seed", c.seed},                     {"tokenizer_vocab_size", c.tokenizer_vocab_size},
          {"system_message", c.system_message}, {"caption_prompt", c.caption_prompt}};
}

}  // namespace

absl::Status EnsureSyntheticDataset(const std::string& dir, const SyntheticDatasetConfig& config, bool* written) {
  if (written != nullptr) *written = false;
  absl::StatusOr<std::string> existing = utils::ReadFile(absl::StrCat(dir, "/dataset.json"));
  if (existing.ok()) {
    const nlohmann::json info = nlohmann::json::parse(*existing, nullptr, /*allow_exceptions=*/false);
    if (!info.is_discarded() && info.is_object() && info.contains("config") && info["config"] == ConfigJson(config)) {
      return absl::OkStatus();
    }
  }
  if (written != nullptr) *written = true;
  return WriteSyntheticDataset(dir, config);
}

absl::Status WriteSyntheticDataset(const std::string& dir, const SyntheticDatasetConfig& config) {
  if (config.image_size < 12 || config.num_train <= 0 || config.num_valid <= 0 || config.samples_per_shard <= 0) {
    return absl::InvalidArgumentError(absl::StrCat("synthetic dataset: need image_size >= 12 and positive sample "
                                                   "counts, got image_size ", config.image_size, ", num_train ",
                                                   config.num_train, ", num_valid ", config.num_valid,
                                                   ", samples_per_shard ", config.samples_per_shard));
  }
  absl::Status st = utils::MakeDirectories(dir);
  if (!st.ok()) return st;
  nlohmann::json info;
  for (const bool held_out : {false, true}) {
    const std::vector<MultimodalSample> samples = GenerateSyntheticSplit(config, held_out);
    const std::string prefix = held_out ? "valid" : "train";
    // Shards of an earlier, larger dataset would otherwise survive next to the new ones.
    if (absl::StatusOr<std::vector<std::string>> old = ListShards(dir, prefix); old.ok()) {
      for (const std::string& shard : *old) std::remove(shard.c_str());
    }
    int shards = 0;
    for (size_t begin = 0; begin < samples.size(); begin += config.samples_per_shard, ++shards) {
      const size_t end = std::min(samples.size(), begin + config.samples_per_shard);
      st = WriteShard(absl::StrCat(dir, "/", ShardName(prefix, shards)),
                      std::vector<MultimodalSample>(samples.begin() + begin, samples.begin() + end));
      if (!st.ok()) return st;
    }
    info["splits"][prefix] = {{"samples", samples.size()}, {"shards", shards}};
    if (!held_out) {
      tokenizers::BpeTrainerOptions options;
      options.vocab_size = config.tokenizer_vocab_size;
      options.special_tokens = ChatSpecialTokens();
      absl::StatusOr<tokenizers::ByteLevelBPETokenizer> tok =
          tokenizers::ByteLevelBPETokenizer::Train(SyntheticTokenizerCorpus(config, samples), options);
      if (!tok.ok()) return tok.status();
      st = tok->Save(absl::StrCat(dir, "/tokenizer.json"));
      if (!st.ok()) return st;
      info["tokenizer"] = {{"file", "tokenizer.json"}, {"vocab_size", tok->vocab_size()}};
    }
  }
  info["config"] = ConfigJson(config);
  info["image_size"] = config.image_size;
  info["seed"] = config.seed;
  info["system_message"] = config.system_message;
  info["caption_prompt"] = config.caption_prompt;
  for (const std::string& t : QuestionTypes()) {
    info["question_types"][t] = {{"answers", AnswerVocabulary(t)}, {"chance", ChanceAccuracy(t)}};
  }
  info["colours"] = Colours();
  info["shapes"] = ShapeNames();
  return utils::WriteFileAtomically(absl::StrCat(dir, "/dataset.json"), info.dump(2) + "\n");
}

}  // namespace megatron::datasets::multimodal
