// Megatron's indexed dataset (MMIDIDX): tokenized documents in a `.bin` + `.idx` pair, byte-compatible with
// megatron-core's `IndexedDatasetBuilder` / `IndexedDataset` (megatron/core/datasets/indexed_dataset.py), so
// files written here train in Megatron-LM and files preprocessed by Megatron-LM load here.
//
// Layout (little-endian, no padding or alignment anywhere):
//   PREFIX.bin  the tokens of every sequence back to back, each stored as the dataset's dtype
//   PREFIX.idx  offset  size
//               0       9                "MMIDIDX\0\0"
//               9       8   u64          version, always 1
//               17      1   u8           dtype code (TokenDtype below)
//               18      8   u64          S = sequence count
//               26      8   u64          D = document-index count (documents + 1)
//               34      4*S int32        sequence_lengths, in tokens
//               ..      8*S int64        sequence_pointers, byte offsets into .bin
//               ..      8*D int64        document_indices: 0, then the sequence count after each document
//               ..      S   int8         (multimodal datasets only) sequence modes; accepted and ignored
// A document is one or more sequences: document d is sequences [document_indices[d], document_indices[d+1]).
// preprocess_data writes one sequence per document (Megatron's default without --split-sentences), and
// GPTDataset, like Megatron's, treats every *sequence* as a document.
//
// Writing: IndexedDatasetBuilder streams tokens to PREFIX.bin.tmp and keeps the index in memory; Finalize()
// writes PREFIX.idx.tmp and renames .bin before .idx, so a PREFIX.idx on disk always describes a complete .bin
// (readers open the pair through the .idx). An unfinalized builder deletes its temporary files.
//
// Reading: IndexedDataset::Open maps both files read-only and checks magic, version, dtype, the counts against
// the .idx size, the document indices, and that every sequence lies inside the .bin, so a truncated or foreign
// file fails at Open with the file and field named, never later with garbage tokens. The index arrays sit at
// unaligned offsets (34 is not a multiple of 4), so they are read through UnalignedArray (memcpy loads).
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"

namespace megatron::datasets {

// Megatron's numeric dtype codes (indexed_dataset.py: DType).
enum class TokenDtype : uint8_t {
  kUint8 = 1,
  kInt8 = 2,
  kInt16 = 3,
  kInt32 = 4,
  kInt64 = 5,
  kFloat64 = 6,
  kFloat32 = 7,
  kUint16 = 8,
};

// Bytes per token of `dtype`.
int DtypeSize(TokenDtype dtype);
// numpy's name ("uint16", ...), for messages.
const char* DtypeName(TokenDtype dtype);
// The dtype Megatron stores a vocabulary in (DType.optimal_dtype): uint16 below 65500 ids, else int32.
TokenDtype DtypeForVocab(int64_t vocab_size);

// A read-only view of a little-endian array at an arbitrary (possibly unaligned) address.
template <typename T>
class UnalignedArray {
 public:
  UnalignedArray() = default;
  UnalignedArray(const char* data, size_t size) : data_(data), size_(size) {}
  size_t size() const { return size_; }
  bool empty() const { return size_ == 0; }
  T operator[](size_t i) const {
    T value;
    std::memcpy(&value, data_ + i * sizeof(T), sizeof(T));
    return value;
  }
  T back() const { return (*this)[size_ - 1]; }
  std::vector<T> ToVector() const {
    std::vector<T> out(size_);
    if (size_ > 0) std::memcpy(out.data(), data_, size_ * sizeof(T));
    return out;
  }

 private:
  const char* data_ = nullptr;
  size_t size_ = 0;
};

class IndexedDatasetBuilder {
 public:
  // Starts PREFIX.bin.tmp; the pair appears as PREFIX.bin/.idx only at Finalize().
  static absl::StatusOr<IndexedDatasetBuilder> Create(std::string prefix, TokenDtype dtype);

  IndexedDatasetBuilder(IndexedDatasetBuilder&&) noexcept;
  IndexedDatasetBuilder& operator=(IndexedDatasetBuilder&&) noexcept;
  ~IndexedDatasetBuilder();  // removes the temporary files unless finalized

  // Appends one sequence to the current document. Fails (writing nothing) if a token does not fit the dtype.
  absl::Status AddItem(absl::Span<const int32_t> tokens);
  // Closes the current document (Megatron's end_document): it holds the sequences added since the last call.
  void EndDocument();
  // Writes the .idx and moves both files into place. The builder is unusable afterwards.
  absl::Status Finalize();

  int64_t num_sequences() const;
  int64_t num_documents() const;
  int64_t num_tokens() const;

 private:
  struct State;
  explicit IndexedDatasetBuilder(std::unique_ptr<State> state);
  std::unique_ptr<State> state_;
};

class IndexedDataset {
 public:
  // Maps PREFIX.idx and PREFIX.bin and validates them (see the header comment).
  static absl::StatusOr<IndexedDataset> Open(const std::string& prefix);

  IndexedDataset(IndexedDataset&&) noexcept;
  IndexedDataset& operator=(IndexedDataset&&) noexcept;
  ~IndexedDataset();

  const std::string& prefix() const;
  TokenDtype dtype() const;
  // Number of sequences (Megatron's len(IndexedDataset)).
  int64_t size() const;
  // Number of documents: document_indices().size() - 1.
  int64_t num_documents() const;
  // Total tokens over all sequences.
  int64_t num_tokens() const;

  UnalignedArray<int32_t> sequence_lengths() const;
  UnalignedArray<int64_t> sequence_pointers() const;
  UnalignedArray<int64_t> document_indices() const;

  // Tokens [offset, offset + length) of sequence i; length -1 means "to the end of the sequence".
  // Tokens are converted to int32 (token ids always fit; float dtypes are truncated toward zero).
  // Out-of-range arguments are programming errors and throw std::out_of_range naming the dataset.
  std::vector<int32_t> Get(int64_t i, int64_t offset = 0, int64_t length = -1) const;
  // As Get, appending the tokens to `out` as int64 (what GPTDataset assembles samples from).
  void AppendTo(int64_t i, int64_t offset, int64_t length, std::vector<int64_t>* out) const;

 private:
  struct State;
  explicit IndexedDataset(std::unique_ptr<State> state);
  std::unique_ptr<State> state_;
};

}  // namespace megatron::datasets
