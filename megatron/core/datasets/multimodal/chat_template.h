// The chat template: ChatML, as Qwen2 uses it (Megatron's "qwen2p0"/"chatml" prompt formats):
//
//   <|im_start|>system\nAnswer the questions.<|im_end|>\n
//   <|im_start|>user\n<image>\nWhat colour is the circle?<|im_end|>\n
//   <|im_start|>assistant\nred<|im_end|>\n
//
// Loss only on assistant turns (research notes §4.7, MegatronMultimodalTokenizer.tokenize_conversation): the
// target copies the tokens, then system and user turns become IGNORE_INDEX (-100), and so do the first
// assistant_prefix_len tokens of each assistant turn ("<|im_start|>assistant\n"; 3 tokens with Qwen2's
// tokenizer). The answer, "<|im_end|>" and the closing "\n" are trained, so the model learns to stop.
// An <image> inside an assistant turn is an error. Each turn is tokenized on its own and the concatenation is
// checked against the tokenization of the whole rendering (Megatron checks the same), which holds because every
// turn starts and ends at a special token.
//
// Special tokens the tokenizer must hold, each as one id (ByteLevelBPETokenizer::Train(special_tokens =
// ChatSpecialTokens()) makes them): <|endoftext|> (end of document and padding, as in Qwen2), <|im_start|>,
// <|im_end|>, <image> (one placeholder per image; the LLaVA model expands it into tiles x tokens-per-tile
// embeddings).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "megatron/core/datasets/multimodal/sample.h"
#include "megatron/core/tokenizers/bpe_tokenizer.h"

namespace megatron::datasets::multimodal {

inline constexpr int64_t kIgnoreIndex = -100;  // Megatron's IGNORE_INDEX
inline constexpr char kImageToken[] = "<image>";
inline constexpr char kImStart[] = "<|im_start|>";
inline constexpr char kImEnd[] = "<|im_end|>";
inline constexpr char kEndOfText[] = "<|endoftext|>";

// The special tokens above, in the order the synthetic tokenizer gives them ids 0..3.
std::vector<std::string> ChatSpecialTokens();

// The ChatML text of turns (no tokenizer needed); add_generation_prompt appends "<|im_start|>assistant\n".
std::string RenderChatML(const std::vector<Turn>& turns, bool add_generation_prompt);

struct TokenizedConversation {
  std::vector<int64_t> tokens;
  std::vector<int64_t> target;  // tokens, with kIgnoreIndex where no loss is taken
};

class ChatTemplate {
 public:
  // Fails (naming the token) if the tokenizer lacks one of ChatSpecialTokens() as a single id.
  static absl::StatusOr<ChatTemplate> Create(const tokenizers::ByteLevelBPETokenizer& tokenizer);

  // The ChatML text; add_generation_prompt appends "<|im_start|>assistant\n".
  std::string Render(const std::vector<Turn>& turns, bool add_generation_prompt) const;

  // Tokens and target (see above). Errors on an <image> in an assistant turn.
  absl::StatusOr<TokenizedConversation> Tokenize(const std::vector<Turn>& turns) const;

  // Tokens of Render(turns, /*add_generation_prompt=*/true): the prompt for generation.
  std::vector<int64_t> EncodePrompt(const std::vector<Turn>& turns) const;

  std::vector<int64_t> Encode(const std::string& text) const;
  std::string Decode(const std::vector<int64_t>& ids) const;

  const tokenizers::ByteLevelBPETokenizer& tokenizer() const { return tokenizer_; }
  int64_t image_token_id() const { return image_id_; }
  int64_t im_start_id() const { return im_start_id_; }
  int64_t im_end_id() const { return im_end_id_; }  // generation stops here
  int64_t pad_id() const { return eod_id_; }
  int64_t eod_id() const { return eod_id_; }
  int assistant_prefix_len() const { return assistant_prefix_len_; }

 private:
  explicit ChatTemplate(const tokenizers::ByteLevelBPETokenizer& tokenizer) : tokenizer_(tokenizer) {}

  tokenizers::ByteLevelBPETokenizer tokenizer_;  // copies share the trained state
  int64_t image_id_ = -1, im_start_id_ = -1, im_end_id_ = -1, eod_id_ = -1;
  int assistant_prefix_len_ = 0;
};

}  // namespace megatron::datasets::multimodal
