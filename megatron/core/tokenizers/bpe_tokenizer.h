// Byte-level BPE tokenizer (GPT-2 / RoBERTa / Llama-3 style) that reads and writes HuggingFace `tokenizer.json`.
//
// Encoding matches the HuggingFace `tokenizers` library for a tokenizer.json with:
//   pre_tokenizer ByteLevel(add_prefix_space=false, use_regex=true)  -- the GPT-2 split regex
//   model BPE (no dropout, no unk token, byte fallback off), decoder ByteLevel, added (special) tokens.
// Added tokens such as "<|endoftext|>" are matched verbatim in the input before pre-tokenization, as HF does.
//
// Training follows the classic BPE recipe: pre-tokenize, count words, start from the 256-byte alphabet, merge
// the most frequent adjacent pair until the vocabulary is full. Ties between equally frequent pairs are broken
// deterministically (lexicographically smallest pair), so training is reproducible.
//
// Details (the implementation lives in bpe_tokenizer.cc; the reference behaviour is pinned by
// bpe_tokenizer_test.cc against fixtures written by testdata/make_fixtures.py with HF `tokenizers`):
//   * Pre-tokenization is the GPT-2 regex
//       's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
//     hand-written over UTF-8 code points. \p{L}, \p{N} and \s come from unicode_tables.inc (Unicode 16.0.0,
//     what HF's Oniguruma uses; regenerate with gen_unicode_tables.py). Bytes that are not valid UTF-8 are
//     carried through as single "other" characters, so no input byte is ever dropped (Decode then shows
//     ill-formed UTF-8 as U+FFFD, as HF does).
//   * Added tokens: the ones with normalized=false (all special tokens) are split out first, then the
//     normalized=true ones, each by leftmost-longest verbatim match, as HF's AddedVocabulary does.
//     lstrip/rstrip/single_word added tokens are rejected at Load.
//   * BPE applies the lowest-ranked merge first (leftmost on ties), exactly HF's merge order; a byte whose token
//     is missing from the vocab is dropped (HF without unk_token). Results for short words are cached;
//     a tokenizer (and its copies, which share state) may be used from several threads.
//   * Decode maps each token back through the byte-level alphabet (a token with characters outside that
//     alphabet, e.g. an added token with a space, contributes its own UTF-8), includes special tokens, skips
//     unknown ids, and replaces ill-formed UTF-8 with U+FFFD per maximal subpart -- HF's
//     decode(ids, skip_special_tokens=False).
//   * Load accepts: normalizer null; pre_tokenizer ByteLevel(add_prefix_space=false, use_regex=true);
//     decoder ByteLevel; post_processor null or ByteLevel; model BPE without dropout, unk_token,
//     continuing_subword_prefix, end_of_word_suffix or byte_fallback; merges as "a b" strings or ["a", "b"]
//     pairs; model.ignore_merges honoured; truncation and padding null. Anything else (e.g. Llama-3's
//     Split-regex pre_tokenizer) is an error naming the file and the field.
//   * Save writes the layout current `tokenizers` writes (vocab in id order, merges as pairs) to path.tmp,
//     fsyncs and renames it over path.
//   * Train splits the special tokens out of the documents before counting words (they never take part in
//     merges), gives them ids 0..k-1, then the 256 byte tokens in GPT-2's order, then one id per merge (a merge
//     whose string already exists reuses its id, as HF does). Ties compare the pair's two token strings as
//     written in tokenizer.json, bytewise; merging stops at vocab_size or when the best pair is seen fewer than
//     min_frequency times. Pair counts are updated incrementally (pair -> count, pair -> words holding it), so
//     a merge costs the words it touches, not a recount: ~0.3 s for 2.5 MB of English to vocab 8192 at -O2.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"

namespace megatron::tokenizers {

struct BpeTrainerOptions {
  int vocab_size = 8192;  // total, including the 256 byte tokens and special tokens
  int min_frequency = 2;  // pairs seen fewer times are never merged
  std::vector<std::string> special_tokens = {"<|endoftext|>"};
};

class ByteLevelBPETokenizer {
 public:
  // Trains on documents (any iterable of text). Special tokens get the first ids, in the given order.
  static absl::StatusOr<ByteLevelBPETokenizer> Train(const std::vector<std::string>& documents,
                                                     const BpeTrainerOptions& options);

  // Loads a HuggingFace tokenizer.json. Errors name the file and the offending field.
  static absl::StatusOr<ByteLevelBPETokenizer> Load(const std::string& path);

  // Writes a tokenizer.json that HuggingFace `tokenizers` loads (written atomically).
  absl::Status Save(const std::string& path) const;

  std::vector<int32_t> Encode(std::string_view text) const;
  std::string Decode(const std::vector<int32_t>& ids) const;

  int vocab_size() const;                        // number of ids, special tokens included
  int num_merges() const;                        // number of BPE merge rules
  int32_t token_to_id(std::string_view token) const;  // -1 when unknown
  const std::string& id_to_token(int32_t id) const;
  // The end-of-document id ("<|endoftext|>"), or -1 if the tokenizer has none.
  int32_t eod_id() const;

 private:
  struct Impl;
  std::shared_ptr<const Impl> impl_;
};

}  // namespace megatron::tokenizers
