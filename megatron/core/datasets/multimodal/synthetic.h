// The embedded default multimodal dataset: synthetic scenes of 1-3 shapes (circle, square, triangle) in four
// colours on a 3x3 grid of a plain background, with captions, single questions (VQA) and short multi-turn
// conversations. Answers are single words from small vocabularies, so a tiny LLaVA learns them on CPU in
// minutes and exact-match accuracy against the chance level is a clear signal.
//
// Question types and answers (AnswerVocabulary; chance = 1 / |answers|):
//   count   "How many shapes are there?"                                   one two three
//   colour  "What colour is the circle?" (that shape occurs once)          red green blue yellow
//   shape   "What shape is the red one?" (that colour occurs once)         circle square triangle
//   column  "Is the red circle on the left, in the centre or on the right?" left centre right
//   row     "Is the red circle at the top, in the middle or at the bottom?" top middle bottom
//   exists  "Is there a blue square?" (half present, half absent)         yes no
// Captions name every shape with its cell, row by row: "a red circle at top left and a blue square at centre."
//
// Splits: a scene's content (shapes, colours, cells) decides its split by a hash, so no held-out scene appears
// in training (the images also differ by a random jitter of each shape's position). Everything is a pure
// function of the config (std::mt19937 with the seed), so the dataset is identical on every machine.
//
// WriteSyntheticDataset(dir) writes:
//   train-000000.tar ...   valid-000000.tar ...   (sample.h shards: <key>.png + <key>.json)
//   tokenizer.json         byte-level BPE trained on the training conversations, with ChatSpecialTokens()
//   dataset.json           the config, sample counts, question types with answers and chance levels,
//                          the caption prompt and system message the tokenizer was trained with
#pragma once

#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "megatron/core/datasets/image/image.h"
#include "megatron/core/datasets/multimodal/sample.h"

namespace megatron::datasets::multimodal {

struct SyntheticDatasetConfig {
  int image_size = 64;          // square images, divisible into the 3x3 grid
  int num_train = 3000;
  int num_valid = 300;
  int samples_per_shard = 1000;
  uint32_t seed = 1234;
  int tokenizer_vocab_size = 512;
  std::string system_message = "Answer the questions.";
  std::string caption_prompt = "Describe the image.";
};

enum class ShapeKind { kCircle, kSquare, kTriangle };

struct SceneShape {
  ShapeKind kind;
  int colour;  // index into Colours()
  int row;     // 0..2, top to bottom
  int col;     // 0..2, left to right
};

struct Scene {
  std::vector<SceneShape> shapes;  // distinct cells, sorted row-major
};

const std::vector<std::string>& Colours();
const std::vector<std::string>& ShapeNames();
const std::vector<std::string>& QuestionTypes();
// The answers a question type can have; empty for an unknown type.
const std::vector<std::string>& AnswerVocabulary(const std::string& question_type);
// 1 / |AnswerVocabulary(type)| (uniform guessing); 0 for an unknown type.
double ChanceAccuracy(const std::string& question_type);

// Lower-cased, trimmed, trailing '.' dropped: what exact-match scoring compares.
std::string NormalizeAnswer(const std::string& text);

// Exact-match accuracy per question type against the chance level, for evaluations on the held-out split.
class AnswerTally {
 public:
  // Compares NormalizeAnswer(prediction) with NormalizeAnswer(answer).
  void Add(const std::string& question_type, const std::string& prediction, const std::string& answer);

  struct Row {
    std::string type;  // a question type, or "all"
    int64_t correct = 0, total = 0;
    double accuracy = 0, chance = 0;  // "all": chance is the mean chance over the questions asked
  };
  // Types in QuestionTypes() order (then unknown types by name), those with questions only, then "all".
  std::vector<Row> Rows() const;
  // A printable table of Rows().
  std::string Table() const;

 private:
  std::vector<std::pair<std::string, bool>> results_;
};

struct QuestionAnswer {
  std::string type, question, answer;
};

Scene RandomScene(std::mt19937& rng);
// Shapes drawn with up to +-2 px of jitter from rng.
image::Image RenderScene(const Scene& scene, int image_size, std::mt19937& rng);
std::string Caption(const Scene& scene);
// Every question that has a well-defined answer for the scene ("exists" both ways).
std::vector<QuestionAnswer> AllQuestions(const Scene& scene);
// Which split a scene belongs to: true for held-out (about 1 scene content in 8).
bool IsHeldOut(const Scene& scene);

// The samples of a split ("train" or "valid"), keys "<split>_0000000".. in order.
std::vector<MultimodalSample> GenerateSyntheticSplit(const SyntheticDatasetConfig& config, bool held_out);

// The texts the tokenizer is trained on: the training split's conversations rendered with the chat template.
std::vector<std::string> SyntheticTokenizerCorpus(const SyntheticDatasetConfig& config,
                                                  const std::vector<MultimodalSample>& train);

// Writes the whole dataset into dir (created if missing); see above. dataset.json is written last, so its
// presence marks a complete dataset.
absl::Status WriteSyntheticDataset(const std::string& dir, const SyntheticDatasetConfig& config);

// What recipes call at start: writes the dataset unless dir/dataset.json already records the same config.
// Sets *written (if given) to whether it wrote.
absl::Status EnsureSyntheticDataset(const std::string& dir, const SyntheticDatasetConfig& config,
                                    bool* written = nullptr);

}  // namespace megatron::datasets::multimodal
