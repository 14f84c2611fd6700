// GPT pretraining: the loop behind `bazel run //experiments/gpt:pretrain` (Megatron's pretrain_gpt.py +
// training/training.py).
//
// Per iteration: global_batch_size / micro_batch_size micro-batches, each loss = sum(loss * mask) / sum(mask)
// scaled by 1/num_micro_batches and back-propagated (gradient accumulation); then gradient clipping, AdamW with
// the scheduled learning rate, and logging (progress bar, TensorBoard). Validation every eval_interval
// iterations and at the end; checkpoints every save_interval and at the end; a text sample at the end.
//
// Distributed (PretrainOptions::distributed): ranks form a TP x CP x DP x PP grid (ParallelLayout, recipe.parallel);
// each DP rank takes its slice of every global batch (sample iteration*gbs + dp_rank*gbs/DP + micro*mbs), each CP
// rank its zigzag tokens of it. The micro-batches run through pipeline_parallel::ForwardBackward (1F1B, or the
// interleaved schedule with VP chunks per stage; without a pipeline, forward and backward per micro-batch); the
// last stage computes the loss (the masked mean over all CP ranks' tokens, / micro-batches) and sends its value to
// the other stages. Gradients: averaged over DP x CP bucket by bucket while backward runs
// (distributed::DataParallelGrads), SP parameters' summed over TP, tied embeddings summed over the embedding
// group; the clipping norm is the global one over tp x pp (and DP shards with the distributed optimizer,
// optimizer::DistributedAdamW). Losses equal the single-process run's up to summation order. Rank 0 alone
// prepares the data (others wait), writes TensorBoard and progress; with TP, PP or CP > 1 it generates the sample from
// the whole model of the final checkpoint (so only when checkpoint.save is set). Impossible
// layouts fail before the model is built. A vocabulary that TP does not divide is padded with rows past every
// token id (these rows change the softmax, so such a run is not the TP=1 run to the last digit).
//
// Checkpoints are layout-independent (models/gpt/gpt_checkpoint.h): every rank writes the pieces of the global
// (TP=1, PP=1) tensors it owns, so a run saved at one layout (TP, PP, VP, CP, DP, with or without the distributed
// optimizer) resumes at any other. Resuming restores parameters, AdamW state, the iteration and, when TP/PP/VP/CP
// are unchanged, each rank's RNG state; batches are a pure function of the iteration, so a resumed run follows the
// uninterrupted run's loss trajectory (exactly at the same layout, up to summation order at another).
// checkpoint.strict=false loads the tensors that match and prints what it did not load.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "megatron/core/proto/recipe.pb.h"

namespace megatron::distributed {
class DistributedContext;
}

namespace megatron::training {

struct PretrainOptions {
  std::string base_dir = ".";  // relative recipe paths are resolved against this
  bool show_progress = true;  // on rank 0 only when distributed
  // Multi-process run (CPU, Gloo): recipe.parallel gives TP (and SP), PP (and VP), CP; DP = world / (TP·CP·PP).
  // Every rank calls PretrainGpt with the same recipe. Null: single process (recipe.parallel must then be all 1).
  distributed::DistributedContext* distributed = nullptr;
};

struct PretrainResult {
  int64_t start_iteration = 0;           // > 0 when resumed
  int64_t final_iteration = 0;
  std::vector<double> train_losses;      // one per iteration run by this call
  std::vector<double> grad_norms;        // global gradient norm before clipping, one per iteration
  std::vector<std::pair<int64_t, double>> valid_losses;  // (iteration, loss), including iteration 0 if fresh
  std::string sample;                    // generated text (empty if no sample was asked for)
  double tokens_per_second = 0;          // whole run, evaluation and checkpointing included
  double steady_tokens_per_second = 0;   // training iterations after the first 10% (at least 1) only
  int64_t num_parameters = 0;
  // Training FLOPs per token, 6 N + 12 L h s (PaLM appendix B: weights plus attention scores), for MFU.
  double flops_per_token = 0;
};

absl::StatusOr<PretrainResult> PretrainGpt(const proto::PretrainRecipe& recipe, const PretrainOptions& options);

}  // namespace megatron::training
