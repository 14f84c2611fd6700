#include "megatron/core/datasets/indexed_dataset.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <limits>
#include <stdexcept>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/escaping.h"

namespace megatron::datasets {
namespace {

static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "MMIDIDX files are little-endian; so is this code");

constexpr char kMagic[9] = {'M', 'M', 'I', 'D', 'I', 'D', 'X', '\0', '\0'};
constexpr uint64_t kVersion = 1;
constexpr size_t kHeaderSize = 9 + 8 + 1 + 8 + 8;  // 34

std::string ErrnoText() { return std::strerror(errno); }

bool ValidDtypeCode(uint8_t code) { return code >= 1 && code <= 8; }

// Converts `n` stored tokens at `src` to T. Float dtypes truncate toward zero (static_cast), which is exact
// for every value a tokenizer writes.
template <typename T>
void ConvertTokens(TokenDtype dtype, const char* src, size_t n, T* dst) {
  auto run = [&](auto tag) {
    using S = decltype(tag);
    for (size_t k = 0; k < n; ++k) {
      S v;
      std::memcpy(&v, src + k * sizeof(S), sizeof(S));
      dst[k] = static_cast<T>(v);
    }
  };
  switch (dtype) {
    case TokenDtype::kUint8: return run(uint8_t{});
    case TokenDtype::kInt8: return run(int8_t{});
    case TokenDtype::kInt16: return run(int16_t{});
    case TokenDtype::kInt32: return run(int32_t{});
    case TokenDtype::kInt64: return run(int64_t{});
    case TokenDtype::kFloat64: return run(double{});
    case TokenDtype::kFloat32: return run(float{});
    case TokenDtype::kUint16: return run(uint16_t{});
  }
}

// The inclusive range of token values `dtype` stores exactly; float dtypes take any int32 (as numpy would).
std::pair<int64_t, int64_t> DtypeRange(TokenDtype dtype) {
  switch (dtype) {
    case TokenDtype::kUint8: return {0, 255};
    case TokenDtype::kInt8: return {-128, 127};
    case TokenDtype::kInt16: return {-32768, 32767};
    case TokenDtype::kUint16: return {0, 65535};
    default: return {std::numeric_limits<int32_t>::min(), std::numeric_limits<int32_t>::max()};
  }
}

// A read-only memory map of a whole file; empty files map to nothing.
class MappedFile {
 public:
  static absl::StatusOr<MappedFile> Open(const std::string& path) {
    int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) return absl::NotFoundError(absl::StrCat(path, ": cannot open: ", ErrnoText()));
    struct stat st;
    if (::fstat(fd, &st) != 0) {
      std::string err = ErrnoText();
      ::close(fd);
      return absl::InternalError(absl::StrCat(path, ": cannot stat: ", err));
    }
    MappedFile file;
    file.size_ = static_cast<size_t>(st.st_size);
    if (file.size_ > 0) {
      void* p = ::mmap(nullptr, file.size_, PROT_READ, MAP_SHARED, fd, 0);
      if (p == MAP_FAILED) {
        std::string err = ErrnoText();
        ::close(fd);
        return absl::InternalError(absl::StrCat(path, ": cannot mmap ", file.size_, " bytes: ", err));
      }
      file.data_ = static_cast<const char*>(p);
    }
    ::close(fd);  // the mapping keeps the file alive
    return file;
  }

  MappedFile() = default;
  MappedFile(MappedFile&& o) noexcept : data_(std::exchange(o.data_, nullptr)), size_(std::exchange(o.size_, 0)) {}
  MappedFile& operator=(MappedFile&& o) noexcept {
    if (this != &o) {
      Unmap();
      data_ = std::exchange(o.data_, nullptr);
      size_ = std::exchange(o.size_, 0);
    }
    return *this;
  }
  ~MappedFile() { Unmap(); }

  const char* data() const { return data_; }
  size_t size() const { return size_; }

 private:
  void Unmap() {
    if (data_ != nullptr) ::munmap(const_cast<char*>(data_), size_);
    data_ = nullptr;
  }
  const char* data_ = nullptr;
  size_t size_ = 0;
};

template <typename T>
T ReadAt(const char* p) {
  T v;
  std::memcpy(&v, p, sizeof(T));
  return v;
}

absl::Status WriteAll(std::FILE* f, const void* data, size_t n, const std::string& path) {
  if (n > 0 && std::fwrite(data, 1, n, f) != n) {
    return absl::InternalError(absl::StrCat(path, ": write failed: ", ErrnoText()));
  }
  return absl::OkStatus();
}

// Flushes, fsyncs and closes; the caller owns no handle afterwards whatever the outcome.
absl::Status CloseDurably(std::FILE* f, const std::string& path) {
  bool ok = std::fflush(f) == 0 && ::fsync(::fileno(f)) == 0;
  std::string err = ok ? "" : ErrnoText();
  if (std::fclose(f) != 0 && ok) {
    ok = false;
    err = ErrnoText();
  }
  if (!ok) return absl::InternalError(absl::StrCat(path, ": cannot flush to disk: ", err));
  return absl::OkStatus();
}

}  // namespace

int DtypeSize(TokenDtype dtype) {
  switch (dtype) {
    case TokenDtype::kUint8:
    case TokenDtype::kInt8: return 1;
    case TokenDtype::kInt16:
    case TokenDtype::kUint16: return 2;
    case TokenDtype::kInt32:
    case TokenDtype::kFloat32: return 4;
    case TokenDtype::kInt64:
    case TokenDtype::kFloat64: return 8;
  }
  return 0;
}

const char* DtypeName(TokenDtype dtype) {
  switch (dtype) {
    case TokenDtype::kUint8: return "uint8";
    case TokenDtype::kInt8: return "int8";
    case TokenDtype::kInt16: return "int16";
    case TokenDtype::kInt32: return "int32";
    case TokenDtype::kInt64: return "int64";
    case TokenDtype::kFloat64: return "float64";
    case TokenDtype::kFloat32: return "float32";
    case TokenDtype::kUint16: return "uint16";
  }
  return "?";
}

TokenDtype DtypeForVocab(int64_t vocab_size) {
  return vocab_size < 65500 ? TokenDtype::kUint16 : TokenDtype::kInt32;
}

// ---------------------------------------------------------------------------------------------------------
// Builder

struct IndexedDatasetBuilder::State {
  std::string prefix;
  TokenDtype dtype;
  std::string bin_tmp, idx_tmp;
  std::FILE* bin = nullptr;
  std::vector<int32_t> sequence_lengths;
  std::vector<int64_t> document_indices{0};
  int64_t num_tokens = 0;
  bool finalized = false;
  std::vector<char> scratch;

  ~State() {
    if (bin != nullptr) std::fclose(bin);
    if (!finalized) {
      std::remove(bin_tmp.c_str());
      std::remove(idx_tmp.c_str());
    }
  }
};

IndexedDatasetBuilder::IndexedDatasetBuilder(std::unique_ptr<State> state) : state_(std::move(state)) {}
IndexedDatasetBuilder::IndexedDatasetBuilder(IndexedDatasetBuilder&&) noexcept = default;
IndexedDatasetBuilder& IndexedDatasetBuilder::operator=(IndexedDatasetBuilder&&) noexcept = default;
IndexedDatasetBuilder::~IndexedDatasetBuilder() = default;

absl::StatusOr<IndexedDatasetBuilder> IndexedDatasetBuilder::Create(std::string prefix, TokenDtype dtype) {
  if (!ValidDtypeCode(static_cast<uint8_t>(dtype))) {
    return absl::InvalidArgumentError(
        absl::StrCat(prefix, ": invalid dtype code ", static_cast<int>(dtype)));
  }
  auto state = std::make_unique<State>();
  state->prefix = std::move(prefix);
  state->dtype = dtype;
  state->bin_tmp = state->prefix + ".bin.tmp";
  state->idx_tmp = state->prefix + ".idx.tmp";
  state->bin = std::fopen(state->bin_tmp.c_str(), "wb");
  if (state->bin == nullptr) {
    return absl::NotFoundError(absl::StrCat(state->bin_tmp, ": cannot create: ", ErrnoText()));
  }
  return IndexedDatasetBuilder(std::move(state));
}

absl::Status IndexedDatasetBuilder::AddItem(absl::Span<const int32_t> tokens) {
  State& s = *state_;
  if (s.finalized || s.bin == nullptr) {
    return absl::FailedPreconditionError(absl::StrCat(s.prefix, ": AddItem after Finalize"));
  }
  if (tokens.size() > static_cast<size_t>(std::numeric_limits<int32_t>::max())) {
    return absl::InvalidArgumentError(absl::StrCat(s.prefix, ".bin: sequence ", s.sequence_lengths.size(), " has ",
                                                   tokens.size(), " tokens; the .idx stores lengths as int32"));
  }
  const auto [lo, hi] = DtypeRange(s.dtype);
  for (size_t k = 0; k < tokens.size(); ++k) {
    if (tokens[k] < lo || tokens[k] > hi) {
      return absl::OutOfRangeError(absl::StrCat(s.prefix, ".bin: token ", tokens[k], " at position ", k,
                                                " of sequence ", s.sequence_lengths.size(), " does not fit ",
                                                DtypeName(s.dtype), " [", lo, ", ", hi, "]"));
    }
  }
  const size_t itemsize = DtypeSize(s.dtype);
  s.scratch.resize(tokens.size() * itemsize);
  char* out = s.scratch.data();
  for (size_t k = 0; k < tokens.size(); ++k) {
    const int32_t t = tokens[k];
    switch (s.dtype) {
      case TokenDtype::kUint8: { uint8_t v = static_cast<uint8_t>(t); std::memcpy(out + k, &v, 1); break; }
      case TokenDtype::kInt8: { int8_t v = static_cast<int8_t>(t); std::memcpy(out + k, &v, 1); break; }
      case TokenDtype::kInt16: { int16_t v = static_cast<int16_t>(t); std::memcpy(out + 2 * k, &v, 2); break; }
      case TokenDtype::kUint16: { uint16_t v = static_cast<uint16_t>(t); std::memcpy(out + 2 * k, &v, 2); break; }
      case TokenDtype::kInt32: std::memcpy(out + 4 * k, &t, 4); break;
      case TokenDtype::kInt64: { int64_t v = t; std::memcpy(out + 8 * k, &v, 8); break; }
      case TokenDtype::kFloat32: { float v = static_cast<float>(t); std::memcpy(out + 4 * k, &v, 4); break; }
      case TokenDtype::kFloat64: { double v = t; std::memcpy(out + 8 * k, &v, 8); break; }
    }
  }
  absl::Status st = WriteAll(s.bin, s.scratch.data(), s.scratch.size(), s.bin_tmp);
  if (!st.ok()) return st;
  s.sequence_lengths.push_back(static_cast<int32_t>(tokens.size()));
  s.num_tokens += static_cast<int64_t>(tokens.size());
  return absl::OkStatus();
}

void IndexedDatasetBuilder::EndDocument() {
  state_->document_indices.push_back(static_cast<int64_t>(state_->sequence_lengths.size()));
}

absl::Status IndexedDatasetBuilder::Finalize() {
  State& s = *state_;
  if (s.finalized || s.bin == nullptr) {
    return absl::FailedPreconditionError(absl::StrCat(s.prefix, ": Finalize called twice"));
  }
  std::FILE* bin = std::exchange(s.bin, nullptr);
  absl::Status st = CloseDurably(bin, s.bin_tmp);
  if (!st.ok()) return st;

  // Same field order and widths as megatron-core's _IndexWriter.
  std::FILE* idx = std::fopen(s.idx_tmp.c_str(), "wb");
  if (idx == nullptr) return absl::NotFoundError(absl::StrCat(s.idx_tmp, ": cannot create: ", ErrnoText()));
  const uint64_t sequence_count = s.sequence_lengths.size();
  const uint64_t document_count = s.document_indices.size();
  const uint8_t code = static_cast<uint8_t>(s.dtype);
  std::vector<int64_t> pointers(sequence_count);
  int64_t pointer = 0;
  for (size_t i = 0; i < sequence_count; ++i) {
    pointers[i] = pointer;
    pointer += static_cast<int64_t>(s.sequence_lengths[i]) * DtypeSize(s.dtype);
  }
  for (auto [data, n] : std::initializer_list<std::pair<const void*, size_t>>{
           {kMagic, sizeof(kMagic)},
           {&kVersion, sizeof(kVersion)},
           {&code, 1},
           {&sequence_count, 8},
           {&document_count, 8},
           {s.sequence_lengths.data(), 4 * sequence_count},
           {pointers.data(), 8 * sequence_count},
           {s.document_indices.data(), 8 * document_count}}) {
    st = WriteAll(idx, data, n, s.idx_tmp);
    if (!st.ok()) {
      std::fclose(idx);
      return st;
    }
  }
  st = CloseDurably(idx, s.idx_tmp);
  if (!st.ok()) return st;

  // .bin first: an .idx in place always describes a complete .bin.
  const std::string bin_path = s.prefix + ".bin", idx_path = s.prefix + ".idx";
  if (std::rename(s.bin_tmp.c_str(), bin_path.c_str()) != 0) {
    return absl::InternalError(absl::StrCat(bin_path, ": cannot rename from ", s.bin_tmp, ": ", ErrnoText()));
  }
  if (std::rename(s.idx_tmp.c_str(), idx_path.c_str()) != 0) {
    return absl::InternalError(absl::StrCat(idx_path, ": cannot rename from ", s.idx_tmp, ": ", ErrnoText()));
  }
  s.finalized = true;
  return absl::OkStatus();
}

int64_t IndexedDatasetBuilder::num_sequences() const { return state_->sequence_lengths.size(); }
int64_t IndexedDatasetBuilder::num_documents() const { return state_->document_indices.size() - 1; }
int64_t IndexedDatasetBuilder::num_tokens() const { return state_->num_tokens; }

// ---------------------------------------------------------------------------------------------------------
// Reader

struct IndexedDataset::State {
  std::string prefix;
  MappedFile idx, bin;
  TokenDtype dtype;
  int itemsize;
  int64_t sequence_count;
  int64_t document_count;  // entries of document_indices
  int64_t num_tokens = 0;
  size_t lengths_offset, pointers_offset, documents_offset;
};

IndexedDataset::IndexedDataset(std::unique_ptr<State> state) : state_(std::move(state)) {}
IndexedDataset::IndexedDataset(IndexedDataset&&) noexcept = default;
IndexedDataset& IndexedDataset::operator=(IndexedDataset&&) noexcept = default;
IndexedDataset::~IndexedDataset() = default;

absl::StatusOr<IndexedDataset> IndexedDataset::Open(const std::string& prefix) {
  auto s = std::make_unique<State>();
  s->prefix = prefix;
  const std::string idx_path = prefix + ".idx", bin_path = prefix + ".bin";
  absl::StatusOr<MappedFile> idx = MappedFile::Open(idx_path);
  if (!idx.ok()) return idx.status();
  absl::StatusOr<MappedFile> bin = MappedFile::Open(bin_path);
  if (!bin.ok()) return bin.status();
  s->idx = std::move(*idx);
  s->bin = std::move(*bin);
  const char* p = s->idx.data();
  const size_t idx_size = s->idx.size();
  const size_t bin_size = s->bin.size();

  if (idx_size < kHeaderSize) {
    return absl::DataLossError(absl::StrCat(idx_path, ": truncated: ", idx_size,
                                            " bytes, shorter than the 34-byte MMIDIDX header"));
  }
  if (std::memcmp(p, kMagic, sizeof(kMagic)) != 0) {
    return absl::DataLossError(absl::StrCat(idx_path, ": bad magic \"", absl::CHexEscape(std::string(p, 9)),
                                            "\": not a Megatron MMIDIDX index (expected \"MMIDIDX\\000\\000\")"));
  }
  const uint64_t version = ReadAt<uint64_t>(p + 9);
  if (version != kVersion) {
    return absl::DataLossError(absl::StrCat(idx_path, ": unsupported version ", version, " (expected 1)"));
  }
  const uint8_t code = ReadAt<uint8_t>(p + 17);
  if (!ValidDtypeCode(code)) {
    return absl::DataLossError(absl::StrCat(idx_path, ": unknown dtype code ", static_cast<int>(code),
                                            " (Megatron's codes are 1..8)"));
  }
  s->dtype = static_cast<TokenDtype>(code);
  s->itemsize = DtypeSize(s->dtype);
  const uint64_t sequence_count = ReadAt<uint64_t>(p + 18);
  const uint64_t document_count = ReadAt<uint64_t>(p + 26);
  // Compare in a width that cannot overflow: a corrupt count may be near 2^64.
  const unsigned __int128 needed = static_cast<unsigned __int128>(kHeaderSize) +
                                   static_cast<unsigned __int128>(sequence_count) * 12 +
                                   static_cast<unsigned __int128>(document_count) * 8;
  if (needed > idx_size) {
    return absl::DataLossError(absl::StrCat(
        idx_path, ": truncated: header says ", sequence_count, " sequences and ", document_count,
        " document indices (needs ", static_cast<uint64_t>(needed), " bytes) but file holds ", idx_size, " bytes"));
  }
  // Multimodal datasets append one int8 mode per sequence; text datasets end exactly here.
  if (idx_size != needed && idx_size != needed + sequence_count) {
    return absl::DataLossError(absl::StrCat(idx_path, ": ", idx_size - static_cast<uint64_t>(needed),
                                            " unexpected bytes after the document indices (header says ",
                                            sequence_count, " sequences and ", document_count,
                                            " document indices)"));
  }
  s->sequence_count = static_cast<int64_t>(sequence_count);
  s->document_count = static_cast<int64_t>(document_count);
  s->lengths_offset = kHeaderSize;
  s->pointers_offset = s->lengths_offset + 4 * sequence_count;
  s->documents_offset = s->pointers_offset + 8 * sequence_count;

  IndexedDataset ds(std::move(s));
  const State& st = *ds.state_;
  const auto docs = ds.document_indices();
  if (docs.empty() || docs[0] != 0) {
    return absl::DataLossError(absl::StrCat(idx_path, ": document_indices must start with 0"));
  }
  for (size_t d = 1; d < docs.size(); ++d) {
    if (docs[d] < docs[d - 1] || docs[d] > st.sequence_count) {
      return absl::DataLossError(absl::StrCat(idx_path, ": document_indices[", d, "] = ", docs[d],
                                              " is out of order or beyond the ", st.sequence_count,
                                              " sequences"));
    }
  }
  if (docs.back() != st.sequence_count) {
    return absl::DataLossError(absl::StrCat(idx_path, ": document_indices ends at sequence ", docs.back(),
                                            " but the header says ", st.sequence_count, " sequences"));
  }
  const auto lengths = ds.sequence_lengths();
  const auto pointers = ds.sequence_pointers();
  int64_t tokens = 0;
  for (int64_t i = 0; i < st.sequence_count; ++i) {
    const int64_t length = lengths[i], pointer = pointers[i];
    if (length < 0 || pointer < 0) {
      return absl::DataLossError(absl::StrCat(idx_path, ": sequence ", i, " has negative length ", length,
                                              " or pointer ", pointer));
    }
    if (static_cast<uint64_t>(pointer) > bin_size ||
        static_cast<uint64_t>(length) * st.itemsize > bin_size - static_cast<uint64_t>(pointer)) {
      return absl::DataLossError(absl::StrCat(
          bin_path, ": truncated: ", idx_path, " places sequence ", i, " of ", st.sequence_count,
          " at bytes [", pointer, ", ", pointer + length * st.itemsize, ") but the file holds ", bin_size,
          " bytes"));
    }
    tokens += length;
  }
  ds.state_->num_tokens = tokens;
  return ds;
}

const std::string& IndexedDataset::prefix() const { return state_->prefix; }
TokenDtype IndexedDataset::dtype() const { return state_->dtype; }
int64_t IndexedDataset::size() const { return state_->sequence_count; }
int64_t IndexedDataset::num_documents() const { return state_->document_count - 1; }
int64_t IndexedDataset::num_tokens() const { return state_->num_tokens; }

UnalignedArray<int32_t> IndexedDataset::sequence_lengths() const {
  return {state_->idx.data() + state_->lengths_offset, static_cast<size_t>(state_->sequence_count)};
}
UnalignedArray<int64_t> IndexedDataset::sequence_pointers() const {
  return {state_->idx.data() + state_->pointers_offset, static_cast<size_t>(state_->sequence_count)};
}
UnalignedArray<int64_t> IndexedDataset::document_indices() const {
  return {state_->idx.data() + state_->documents_offset, static_cast<size_t>(state_->document_count)};
}

namespace {

// Resolves (i, offset, length) to a byte address, or throws: these are programming errors, not data errors.
const char* Locate(const std::string& prefix, const char* bin, int64_t count, UnalignedArray<int32_t> lengths,
                   UnalignedArray<int64_t> pointers, int itemsize, int64_t i, int64_t offset, int64_t* length) {
  if (i < 0 || i >= count) {
    throw std::out_of_range(absl::StrCat(prefix, ": sequence ", i, " out of range [0, ", count, ")"));
  }
  const int64_t n = lengths[i];
  if (*length < 0) *length = n - offset;
  if (offset < 0 || *length < 0 || offset + *length > n) {
    throw std::out_of_range(absl::StrCat(prefix, ": tokens [", offset, ", ", offset + *length, ") of sequence ",
                                         i, " which has ", n));
  }
  return bin + pointers[i] + offset * itemsize;
}

}  // namespace

std::vector<int32_t> IndexedDataset::Get(int64_t i, int64_t offset, int64_t length) const {
  const State& s = *state_;
  const char* src = Locate(s.prefix, s.bin.data(), s.sequence_count, sequence_lengths(), sequence_pointers(),
                           s.itemsize, i, offset, &length);
  std::vector<int32_t> out(length);
  ConvertTokens(s.dtype, src, length, out.data());
  return out;
}

void IndexedDataset::AppendTo(int64_t i, int64_t offset, int64_t length, std::vector<int64_t>* out) const {
  const State& s = *state_;
  const char* src = Locate(s.prefix, s.bin.data(), s.sequence_count, sequence_lengths(), sequence_pointers(),
                           s.itemsize, i, offset, &length);
  const size_t start = out->size();
  out->resize(start + length);
  ConvertTokens(s.dtype, src, length, out->data() + start);
}

}  // namespace megatron::datasets
