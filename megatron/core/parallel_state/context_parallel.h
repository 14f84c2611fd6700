// Context-parallel sequence arithmetic (pure functions, no torch): which tokens a CP rank holds and how much
// padding a sequence needs.
//
// Zigzag split (Megatron's get_batch_on_this_cp_rank): the sequence is cut into 2·CP equal chunks and CP rank r
// holds chunks r and 2·CP − 1 − r, in that order, so that under a causal mask every rank does the same amount of
// attention work. E.g. s = 8, CP = 2: rank 0 holds positions [0 1 | 6 7], rank 1 holds [2 3 | 4 5].
//
// Padding (research notes §1.8, Megatron's multimodal context_parallel.get_padding): the number of pad tokens
// that makes seq_len divisible by the factor the layout needs, chosen by the first matching case:
//   sequence parallel and decoder TP comm overlap -> decoder_seq_len − seq_len (the caller's fixed length)
//   sequence parallel and CP > 1                  -> factor TP·CP·2
//   CP > 1                                        -> factor CP·2
//   sequence parallel                             -> factor TP
//   FP8                                           -> factor 32 for MXFP8, else 16
//   otherwise                                     -> factor 1
// (Megatron's TP·CP·2 over-pads 2x for even TP, CP·lcm(2, TP) would do; kept for shape compatibility.)
#ifndef MEGATRON_CORE_PARALLEL_STATE_CONTEXT_PARALLEL_H_
#define MEGATRON_CORE_PARALLEL_STATE_CONTEXT_PARALLEL_H_

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"

namespace megatron::parallel_state {

struct PaddingOptions {
  int cp = 1;
  int tp = 1;
  bool sequence_parallel = false;
  bool decoder_tp_comm_overlap = false;
  int64_t decoder_seq_len = 0;  // required with sequence_parallel && decoder_tp_comm_overlap
  bool fp8 = false;
  bool mxfp8 = false;  // the FP8 recipe is MXFP8
};

// InvalidArgument for a negative seq_len, sizes < 1, or a decoder_seq_len shorter than seq_len.
absl::StatusOr<int64_t> ContextParallelPadding(int64_t seq_len, const PaddingOptions& options);

// Global positions of the tokens CP rank cp_rank holds, in its local order (chunk r, then chunk 2·CP − 1 − r).
// seq_len must be divisible by 2·CP (aborts otherwise: validate with CheckDivisibility or pad first).
std::vector<int64_t> ZigzagPositions(int64_t seq_len, int cp, int cp_rank);

}  // namespace megatron::parallel_state

#endif  // MEGATRON_CORE_PARALLEL_STATE_CONTEXT_PARALLEL_H_
