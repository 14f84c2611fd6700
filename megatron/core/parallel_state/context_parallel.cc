#include "megatron/core/parallel_state/context_parallel.h"

#include <cstdio>
#include <cstdlib>

#include "absl/strings/str_cat.h"

namespace megatron::parallel_state {

absl::StatusOr<int64_t> ContextParallelPadding(int64_t seq_len, const PaddingOptions& o) {
  if (seq_len < 0) return absl::InvalidArgumentError(absl::StrCat("sequence length ", seq_len, " is negative"));
  if (o.cp < 1 || o.tp < 1) {
    return absl::InvalidArgumentError(absl::StrCat("context_parallel_size ", o.cp, " and tensor_model_parallel_size ",
                                                   o.tp, " must be >= 1"));
  }
  if (o.sequence_parallel && o.decoder_tp_comm_overlap) {
    if (o.decoder_seq_len < seq_len) {
      return absl::InvalidArgumentError(absl::StrCat("decoder_seq_len ", o.decoder_seq_len,
                                                     " is shorter than the sequence (", seq_len,
                                                     "); TP comm overlap needs the fixed decoder length"));
    }
    return o.decoder_seq_len - seq_len;
  }
  int64_t factor = 1;
  if (o.sequence_parallel && o.cp > 1) {
    factor = static_cast<int64_t>(o.tp) * o.cp * 2;
  } else if (o.cp > 1) {
    factor = static_cast<int64_t>(o.cp) * 2;
  } else if (o.sequence_parallel) {
    factor = o.tp;
  } else if (o.fp8) {
    factor = o.mxfp8 ? 32 : 16;
  }
  return (seq_len + factor - 1) / factor * factor - seq_len;
}

std::vector<int64_t> ZigzagPositions(int64_t seq_len, int cp, int cp_rank) {
  if (cp < 1 || cp_rank < 0 || cp_rank >= cp || seq_len % (2 * cp) != 0) {
    std::fprintf(stderr, "ZigzagPositions: seq_len %lld must be divisible by 2*CP (CP %d), rank %d in [0, CP)\n",
                 static_cast<long long>(seq_len), cp, cp_rank);
    std::abort();
  }
  const int64_t chunk = seq_len / (2 * cp);
  std::vector<int64_t> out;
  out.reserve(2 * chunk);
  for (int64_t c : {static_cast<int64_t>(cp_rank), static_cast<int64_t>(2 * cp - 1 - cp_rank)}) {
    for (int64_t i = 0; i < chunk; ++i) out.push_back(c * chunk + i);
  }
  return out;
}

}  // namespace megatron::parallel_state
