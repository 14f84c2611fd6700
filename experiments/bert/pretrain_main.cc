// bazel run //experiments/bert:pretrain [-- --recipe=PATH] [--field.path=value ...]
//
// Pretrains a core BERT model from a recipe (default: recipes/fortunes_tiny.textproto, embedded as data); see
// megatron/core/training/pretrain_masked_lm.h for the data and the loop.
#include "megatron/core/training/pretrain_masked_lm.h"

int main(int argc, char** argv) {
  return megatron::training::MaskedLmPretrainMain(argc, argv, megatron::training::MaskedLmFamily::kBert,
                                                  "experiments/bert/recipes/fortunes_tiny.textproto");
}
