// One LLaVA checkpoint from a language-model and a vision-encoder checkpoint: Megatron's
// examples/multimodal/combine_state_dicts.py as driven by combine_lm_vision_checkpoints.sh, behind
// `bazel run //tools:combine_checkpoints`.
//
//   language model  our GPT checkpoint (megatron/core/checkpointing: the latest iteration of a directory,
//                   core names embedding.* / decoder.* / output_layer.*)
//   vision encoder  our checkpoint of a CLIPViTModel (bare names conv1.*, decoder.*, ..., or a LLaVA
//                   checkpoint's vision_model.* part), or a HuggingFace CLIP/SigLIP directory (config.json +
//                   safetensors, through models/huggingface/hf_vision.h)
//   output          <dir>/iter_0000001 with language_model.* and vision_model.* and no vision_projection.*
//                   (iteration 1 and latest_checkpointed_iteration.txt "1", as the Megatron script writes them)
//
// The projector is absent, as in Megatron: a LLaVA run starts from the output with checkpoint.load=<dir>,
// checkpoint.finetune=true and model.allow_missing_vision_projection_checkpoint=true, and its projector keeps
// the fresh initialisation of the model build.
//
// Every tensor is checked against the model the LLaVA recipe builds (BuildLlavaModel: the same vocabulary padding,
// layer count and shapes that pretrain will load into), so a mismatch is reported here, naming the tensor, rather
// than at the start of training. Wrong inputs are refused before anything is written: a missing directory, a
// checkpoint of another family (BERT/T5 encoder.*, a legacy-tree language_model.*, a whole LLaVA checkpoint as the
// language model), or a vision config.json that disagrees with the recipe (the field is named).
//
// Tensor parallelism: checkpoints of our tensor-/pipeline-parallel runs (format 2: pieces written per rank under
// their global names) are read as whole tensors by checkpointing::LoadCheckpoint, so they combine like
// single-process ones and the output is layout-independent (combine_checkpoints_test: a TP=2-sharded language
// model). A Megatron-style sharded directory (iter_N/mp_rank_NN/) is refused with an error saying so; Megatron's
// script combines each TP rank's shards separately.
#pragma once

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "megatron/core/proto/llava.pb.h"
#include "megatron/core/training/llava.h"

namespace megatron::training {

struct CombineCheckpointsOptions {
  std::string language_model;  // checkpoint directory (latest iteration)
  std::string vision_model;    // checkpoint directory, or a HuggingFace directory with config.json
  std::string output;          // must not hold a checkpoint yet
};

struct CombineCheckpointsResult {
  int64_t language_model_iteration = 0;
  int64_t language_model_tensors = 0;
  int64_t vision_model_tensors = 0;
  std::string vision_source;  // "checkpoint <dir> iteration N" or "HuggingFace <model_type> <dir>"
  std::string output_directory;  // <output>/iter_0000001
};

// Paths in `options` are used as given; the recipe's data paths are resolved against run.base_dir (the data is
// prepared, as pretrain would, to know the tokenizer's vocabulary and so the embedding shape).
absl::StatusOr<CombineCheckpointsResult> CombineLlavaCheckpoints(const proto::LlavaRecipe& recipe,
                                                                 const CombineCheckpointsOptions& options,
                                                                 const LlavaRunOptions& run);

}  // namespace megatron::training
