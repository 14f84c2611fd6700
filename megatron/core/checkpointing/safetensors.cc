#include "megatron/core/checkpointing/safetensors.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <ATen/ops/empty.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <limits>
#include <set>
#include <tuple>
#include <utility>

#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "megatron/core/utils/file_io.h"

// The format is little-endian and we copy bytes verbatim.
static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "safetensors I/O assumes a little-endian host");

namespace megatron::checkpointing {
namespace {

// The reference implementation refuses larger headers (a corrupt length must not make us allocate GBs).
constexpr uint64_t kMaxHeaderBytes = 100'000'000;
constexpr char kMetadataKey[] = "__metadata__";

struct DtypeName {
  const char* name;
  at::ScalarType dtype;
};
constexpr DtypeName kDtypes[] = {
    {"F64", at::kDouble},
    {"F32", at::kFloat},
    {"F16", at::kHalf},
    {"BF16", at::kBFloat16},
    {"I64", at::kLong},
    {"I32", at::kInt},
    {"I16", at::kShort},
    {"I8", at::kChar},
    {"U8", at::kByte},
    {"BOOL", at::kBool},
    {"F8_E4M3", at::kFloat8_e4m3fn},
    {"F8_E5M2", at::kFloat8_e5m2},
};
// Valid safetensors dtypes that we do not load (reported as Unimplemented rather than as corruption).
constexpr const char* kUnsupportedDtypes[] = {"U16", "U32",     "U64",     "F8_E8M0",
                                              "F4",  "F6_E2M3", "F6_E3M2", "C64"};

absl::Status FormatError(const std::string& path, const std::string& detail) {
  return absl::DataLossError(absl::StrCat("safetensors file '", path, "': ", detail));
}

absl::Status TensorError(const std::string& path, const std::string& name, const std::string& detail) {
  return FormatError(path, absl::StrCat("tensor '", name, "': ", detail));
}

class ScopedFd {
 public:
  explicit ScopedFd(int fd) : fd_(fd) {}
  ~ScopedFd() {
    if (fd_ >= 0) ::close(fd_);
  }
  ScopedFd(const ScopedFd&) = delete;
  ScopedFd& operator=(const ScopedFd&) = delete;
  int get() const { return fd_; }

 private:
  int fd_;
};

// Reads exactly `n` bytes at `offset`; running into EOF is a truncated file.
absl::Status PreadFully(int fd, void* buf, uint64_t n, uint64_t offset, const std::string& path) {
  auto* p = static_cast<char*>(buf);
  while (n > 0) {
    const ssize_t got = ::pread(fd, p, n, static_cast<off_t>(offset));
    if (got < 0) {
      if (errno == EINTR) continue;
      return utils::ErrnoToStatus(errno, "read", path);
    }
    if (got == 0) return FormatError(path, absl::StrCat("unexpected end of file at byte ", offset));
    p += got;
    n -= static_cast<uint64_t>(got);
    offset += static_cast<uint64_t>(got);
  }
  return absl::OkStatus();
}

// nlohmann keeps the last of duplicate keys silently; a duplicated tensor name is a corrupt header.
// Tracks the keys of every open object during parsing.
class DuplicateKeyCheck {
 public:
  bool operator()(int /*depth*/, nlohmann::json::parse_event_t event, nlohmann::json& parsed) {
    using E = nlohmann::json::parse_event_t;
    if (event == E::object_start) {
      open_.emplace_back();
    } else if (event == E::object_end) {
      if (!open_.empty()) open_.pop_back();
    } else if (event == E::key && !open_.empty()) {
      const std::string& key = parsed.get_ref<const std::string&>();
      if (!open_.back().insert(key).second && duplicate_.empty()) duplicate_ = key;
    }
    return true;
  }
  const std::string& duplicate() const { return duplicate_; }

 private:
  std::vector<std::set<std::string>> open_;
  std::string duplicate_;
};

absl::StatusOr<uint64_t> ReadUnsigned(const nlohmann::json& v, const std::string& path,
                                      const std::string& name, const char* field) {
  if (!v.is_number_unsigned()) {
    return TensorError(path, name,
                       absl::StrCat("'", field, "' must hold non-negative integers, got ", v.dump()));
  }
  return v.get<uint64_t>();
}

absl::StatusOr<SafetensorsEntry> ParseEntry(const std::string& path, const std::string& name,
                                            const nlohmann::json& v, uint64_t buffer_size) {
  if (!v.is_object()) return TensorError(path, name, "entry is not a JSON object");
  for (const auto& [key, unused] : v.items()) {
    if (key != "dtype" && key != "shape" && key != "data_offsets") {
      return TensorError(path, name, absl::StrCat("unknown field '", key, "'"));
    }
  }
  for (const char* required : {"dtype", "shape", "data_offsets"}) {
    if (!v.contains(required)) return TensorError(path, name, absl::StrCat("missing '", required, "'"));
  }
  SafetensorsEntry entry;
  if (!v["dtype"].is_string()) return TensorError(path, name, "'dtype' is not a string");
  absl::StatusOr<at::ScalarType> dtype = SafetensorsDtypeFromName(v["dtype"].get<std::string>());
  if (!dtype.ok()) {
    return absl::Status(dtype.status().code(), absl::StrCat("safetensors file '", path, "': tensor '", name,
                                                            "': ", dtype.status().message()));
  }
  entry.dtype = *dtype;

  const nlohmann::json& shape = v["shape"];
  if (!shape.is_array()) return TensorError(path, name, "'shape' is not an array");
  uint64_t numel = 1;
  for (const nlohmann::json& d : shape) {
    absl::StatusOr<uint64_t> dim = ReadUnsigned(d, path, name, "shape");
    if (!dim.ok()) return dim.status();
    if (*dim > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()) ||
        __builtin_mul_overflow(numel, *dim, &numel)) {
      return TensorError(path, name, absl::StrCat("shape ", shape.dump(), " overflows"));
    }
    entry.shape.push_back(static_cast<int64_t>(*dim));
  }
  uint64_t nbytes = 0;
  if (__builtin_mul_overflow(numel, uint64_t{c10::elementSize(entry.dtype)}, &nbytes)) {
    return TensorError(path, name, absl::StrCat("shape ", shape.dump(), " overflows"));
  }

  const nlohmann::json& offsets = v["data_offsets"];
  if (!offsets.is_array() || offsets.size() != 2) {
    return TensorError(path, name, absl::StrCat("'data_offsets' must be [begin, end], got ", offsets.dump()));
  }
  absl::StatusOr<uint64_t> begin = ReadUnsigned(offsets[0], path, name, "data_offsets");
  if (!begin.ok()) return begin.status();
  absl::StatusOr<uint64_t> end = ReadUnsigned(offsets[1], path, name, "data_offsets");
  if (!end.ok()) return end.status();
  if (*begin > *end)
    return TensorError(path, name, absl::StrCat("data_offsets ", offsets.dump(), " are reversed"));
  if (*end > buffer_size) {
    return TensorError(path, name,
                       absl::StrCat("data_offsets ", offsets.dump(), " run past the data buffer (",
                                    buffer_size, " bytes; is the file truncated?)"));
  }
  if (*end - *begin != nbytes) {
    return TensorError(path, name,
                       absl::StrCat("data_offsets ", offsets.dump(), " span ", *end - *begin, " bytes but ",
                                    v["dtype"].get<std::string>(), " ", shape.dump(), " needs ", nbytes));
  }
  entry.begin = *begin;
  entry.end = *end;
  return entry;
}

absl::StatusOr<SafetensorsHeader> ParseHeader(const std::string& path, const std::string& json_text,
                                              uint64_t buffer_size) {
  DuplicateKeyCheck dup;
  nlohmann::json root;
  try {
    root = nlohmann::json::parse(json_text, std::ref(dup));
  } catch (const nlohmann::json::exception& e) {
    return FormatError(path, absl::StrCat("header is not valid JSON: ", e.what()));
  }
  if (!dup.duplicate().empty())
    return FormatError(path, absl::StrCat("duplicate key '", dup.duplicate(), "' in header"));
  if (!root.is_object()) return FormatError(path, "header is not a JSON object");

  SafetensorsHeader header;
  for (const auto& [name, value] : root.items()) {
    if (name == kMetadataKey) {
      if (!value.is_object()) return FormatError(path, "__metadata__ is not a JSON object");
      for (const auto& [key, text] : value.items()) {
        if (!text.is_string()) {
          return FormatError(path, absl::StrCat("__metadata__ '", key, "' is not a string: ", text.dump()));
        }
        header.metadata[key] = text.get<std::string>();
      }
      continue;
    }
    absl::StatusOr<SafetensorsEntry> entry = ParseEntry(path, name, value, buffer_size);
    if (!entry.ok()) return entry.status();
    header.tensors.emplace(name, *std::move(entry));
  }

  // The tensors must tile the data buffer exactly, as the reference implementation requires: sorted by
  // offsets, each starts where the previous ended, and the last ends at the end of the file.
  std::vector<std::pair<const std::string*, const SafetensorsEntry*>> order;
  for (const auto& [name, entry] : header.tensors) order.emplace_back(&name, &entry);
  std::sort(order.begin(), order.end(), [](const auto& a, const auto& b) {
    return std::tie(a.second->begin, a.second->end, *a.first) <
           std::tie(b.second->begin, b.second->end, *b.first);
  });
  uint64_t covered = 0;
  const std::string* previous = nullptr;
  for (const auto& [name, entry] : order) {
    if (entry->begin < covered) {
      return TensorError(path, *name,
                         absl::StrCat("data_offsets [", entry->begin, ", ", entry->end, "] overlap tensor '",
                                      previous ? *previous : "", "' (which ends at ", covered, ")"));
    }
    if (entry->begin > covered) {
      return TensorError(path, *name,
                         absl::StrCat("data_offsets [", entry->begin, ", ", entry->end, "] leave a gap of ",
                                      entry->begin - covered, " unused bytes before it"));
    }
    covered = entry->end;
    previous = name;
  }
  if (covered != buffer_size) {
    return FormatError(path, absl::StrCat("tensors cover ", covered, " bytes of a ", buffer_size,
                                          "-byte data buffer (trailing bytes)"));
  }
  return header;
}

absl::StatusOr<SafetensorsHeader> ReadHeaderFromFd(int fd, const std::string& path) {
  struct stat st;
  if (::fstat(fd, &st) != 0) return utils::ErrnoToStatus(errno, "cannot stat", path);
  if (!S_ISREG(st.st_mode))
    return absl::FailedPreconditionError(absl::StrCat("'", path, "' is not a regular file"));
  const uint64_t file_size = static_cast<uint64_t>(st.st_size);
  if (file_size < 8) {
    return FormatError(path,
                       absl::StrCat("file is ", file_size, " bytes, shorter than the 8-byte header length"));
  }
  unsigned char len_bytes[8];
  if (absl::Status s = PreadFully(fd, len_bytes, 8, 0, path); !s.ok()) return s;
  uint64_t header_len = 0;
  for (int i = 0; i < 8; ++i) header_len |= uint64_t{len_bytes[i]} << (8 * i);
  if (header_len > kMaxHeaderBytes) {
    return FormatError(path, absl::StrCat("header length ", header_len, " exceeds the ", kMaxHeaderBytes,
                                          "-byte limit (not a safetensors file?)"));
  }
  if (header_len > file_size - 8) {
    return FormatError(path, absl::StrCat("header length ", header_len, " exceeds the file size ", file_size,
                                          " (truncated file?)"));
  }
  std::string json_text(header_len, '\0');
  if (absl::Status s = PreadFully(fd, json_text.data(), header_len, 8, path); !s.ok()) return s;
  absl::StatusOr<SafetensorsHeader> header = ParseHeader(path, json_text, file_size - 8 - header_len);
  if (header.ok()) header->data_start = 8 + header_len;
  return header;
}

absl::StatusOr<int> OpenForRead(const std::string& path) {
  int fd;
  do {
    fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  } while (fd < 0 && errno == EINTR);
  if (fd < 0) return utils::ErrnoToStatus(errno, "cannot open", path);
  return fd;
}

}  // namespace

absl::StatusOr<std::string> SafetensorsDtypeName(at::ScalarType dtype) {
  for (const DtypeName& d : kDtypes) {
    if (d.dtype == dtype) return std::string(d.name);
  }
  return absl::InvalidArgumentError(
      absl::StrCat("dtype ", c10::toString(dtype), " has no safetensors support here"));
}

absl::StatusOr<at::ScalarType> SafetensorsDtypeFromName(std::string_view name) {
  for (const DtypeName& d : kDtypes) {
    if (name == d.name) return d.dtype;
  }
  for (const char* unsupported : kUnsupportedDtypes) {
    if (name == unsupported) {
      return absl::UnimplementedError(absl::StrCat("dtype ", std::string(name), " is not supported"));
    }
  }
  return absl::DataLossError(absl::StrCat("unknown dtype '", std::string(name), "'"));
}

absl::StatusOr<SafetensorsHeader> ReadSafetensorsHeader(const std::string& path) {
  absl::StatusOr<int> fd = OpenForRead(path);
  if (!fd.ok()) return fd.status();
  ScopedFd closer(*fd);
  return ReadHeaderFromFd(*fd, path);
}

absl::StatusOr<std::map<std::string, at::Tensor>> LoadSafetensors(const std::string& path,
                                                                  SafetensorsMetadata* metadata) {
  absl::StatusOr<int> fd = OpenForRead(path);
  if (!fd.ok()) return fd.status();
  ScopedFd closer(*fd);
  absl::StatusOr<SafetensorsHeader> header = ReadHeaderFromFd(*fd, path);
  if (!header.ok()) return header.status();

  std::map<std::string, at::Tensor> tensors;
  for (const auto& [name, entry] : header->tensors) {
    at::Tensor t = at::empty(entry.shape, at::TensorOptions().dtype(entry.dtype));
    const uint64_t nbytes = entry.end - entry.begin;
    if (nbytes > 0) {
      if (absl::Status s = PreadFully(*fd, t.data_ptr(), nbytes, header->data_start + entry.begin, path);
          !s.ok()) {
        return absl::Status(s.code(), absl::StrCat(s.message(), " (reading tensor '", name, "')"));
      }
    }
    if (entry.dtype == at::kBool) {
      // Any byte other than 0/1 is not a valid C++ bool; libtorch kernels would misbehave on it.
      const auto* b = static_cast<const uint8_t*>(t.data_ptr());
      for (uint64_t i = 0; i < nbytes; ++i) {
        if (b[i] > 1)
          return TensorError(path, name, absl::StrCat("BOOL byte ", i, " is ", int{b[i]}, ", not 0 or 1"));
      }
    }
    tensors.emplace(name, std::move(t));
  }
  if (metadata != nullptr) *metadata = std::move(header->metadata);
  return tensors;
}

absl::StatusOr<at::Tensor> LoadSafetensorsTensor(const std::string& path, const SafetensorsHeader& header,
                                                 const std::string& name, int64_t row_begin, int64_t row_end) {
  auto it = header.tensors.find(name);
  if (it == header.tensors.end()) return FormatError(path, absl::StrCat("no tensor '", name, "'"));
  const SafetensorsEntry& entry = it->second;
  std::vector<int64_t> shape = entry.shape;
  uint64_t begin = entry.begin, nbytes = entry.end - entry.begin;
  if (!shape.empty() && row_end >= 0) {
    if (row_begin < 0 || row_begin > row_end || row_end > shape[0]) {
      return TensorError(path, name, absl::StrCat("rows [", row_begin, ", ", row_end, ") outside [0, ", shape[0], ")"));
    }
    const uint64_t row_bytes = shape[0] == 0 ? 0 : nbytes / static_cast<uint64_t>(shape[0]);
    begin += static_cast<uint64_t>(row_begin) * row_bytes;
    nbytes = static_cast<uint64_t>(row_end - row_begin) * row_bytes;
    shape[0] = row_end - row_begin;
  }
  absl::StatusOr<int> fd = OpenForRead(path);
  if (!fd.ok()) return fd.status();
  ScopedFd closer(*fd);
  at::Tensor t = at::empty(shape, at::TensorOptions().dtype(entry.dtype));
  if (nbytes > 0) {
    if (absl::Status s = PreadFully(*fd, t.data_ptr(), nbytes, header.data_start + begin, path); !s.ok()) {
      return absl::Status(s.code(), absl::StrCat(s.message(), " (reading tensor '", name, "')"));
    }
  }
  if (entry.dtype == at::kBool) {
    const auto* b = static_cast<const uint8_t*>(t.data_ptr());
    for (uint64_t i = 0; i < nbytes; ++i) {
      if (b[i] > 1) return TensorError(path, name, absl::StrCat("BOOL byte ", i, " is ", int{b[i]}, ", not 0 or 1"));
    }
  }
  return t;
}

absl::Status SaveSafetensors(const std::string& path, const std::map<std::string, at::Tensor>& tensors,
                             const SafetensorsMetadata& metadata) {
  struct Item {
    const std::string* name;
    at::Tensor data;  // contiguous CPU
    std::string dtype_name;
    size_t element_size;
    uint64_t nbytes;
  };
  std::vector<Item> items;
  items.reserve(tensors.size());
  for (const auto& [name, tensor] : tensors) {
    auto error = [&](const std::string& detail) {
      return absl::InvalidArgumentError(
          absl::StrCat("cannot save safetensors file '", path, "': tensor '", name, "': ", detail));
    };
    if (name.empty() || name == kMetadataKey) return error("reserved or empty tensor name");
    if (!tensor.defined()) return error("undefined tensor");
    if (tensor.layout() != c10::kStrided) return error("only dense (strided) tensors can be saved");
    absl::StatusOr<std::string> dtype_name = SafetensorsDtypeName(tensor.scalar_type());
    if (!dtype_name.ok()) return error(std::string(dtype_name.status().message()));
    at::Tensor data = tensor;
    if (!data.is_cpu()) data = data.cpu();
    if (!data.is_contiguous()) data = data.contiguous();
    const size_t element_size = c10::elementSize(data.scalar_type());
    items.push_back(
        {&name, data, *dtype_name, element_size, static_cast<uint64_t>(data.numel()) * element_size});
  }
  // Larger elements first, then by name: every tensor starts at a multiple of its element size (the data
  // buffer itself starts 8-aligned), which lets memory-mapping readers use the data in place.
  std::sort(items.begin(), items.end(), [](const Item& a, const Item& b) {
    return std::tie(b.element_size, *a.name) < std::tie(a.element_size, *b.name);
  });

  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  if (!metadata.empty()) {
    nlohmann::ordered_json meta = nlohmann::ordered_json::object();
    for (const auto& [key, value] : metadata) meta[key] = value;
    header[kMetadataKey] = std::move(meta);
  }
  uint64_t offset = 0;
  for (const Item& item : items) {
    header[*item.name] = {{"dtype", item.dtype_name},
                          {"shape", item.data.sizes().vec()},
                          {"data_offsets", {offset, offset + item.nbytes}}};
    offset += item.nbytes;
  }
  std::string prefix(8, '\0');
  try {
    prefix += header.dump();
  } catch (const nlohmann::json::exception& e) {  // e.g. a name or metadata value that is not UTF-8
    return absl::InvalidArgumentError(absl::StrCat("cannot save safetensors file '", path, "': ", e.what()));
  }
  // Space padding (valid JSON whitespace) so the data buffer starts 8-byte aligned.
  while (prefix.size() % 8 != 0) prefix.push_back(' ');
  const uint64_t header_len = prefix.size() - 8;
  for (int i = 0; i < 8; ++i) prefix[i] = static_cast<char>((header_len >> (8 * i)) & 0xFF);

  std::vector<std::string_view> pieces = {prefix};
  for (const Item& item : items) {
    if (item.nbytes > 0) pieces.emplace_back(static_cast<const char*>(item.data.data_ptr()), item.nbytes);
  }
  return utils::WriteFileAtomically(path, pieces);
}

}  // namespace megatron::checkpointing
