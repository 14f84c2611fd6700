// Exports every parity fixture through our HF adapters (load into the core model, then save as HF), for
// verify_hf_export.py to load with transformers:
//   bazel run //tests/hf_parity:export_fixtures -- /tmp/hf_exports && python3 tests/hf_parity/verify_hf_export.py /tmp/hf_exports
// Vision models are exported twice: with the pooler-only tensors (<name>/) and without them (<name>_bare/).
#include <iostream>
#include <string>

#include "megatron/core/models/gpt/gpt_model.h"
#include "megatron/core/models/huggingface/hf_export.h"
#include "megatron/core/models/huggingface/hf_loader.h"
#include "megatron/core/models/huggingface/hf_vision.h"
#include "megatron/core/proto/recipe.pb.h"

namespace hf = megatron::models::huggingface;

int main(int argc, char** argv) {
  if (argc != 2) {
    std::cerr << "usage: export_fixtures OUTPUT_DIR\n";
    return 2;
  }
  const std::string out = argv[1];
  const std::string testdata = "tests/hf_parity/testdata/";
  auto fail = [](const absl::Status& s) {
    std::cerr << s << "\n";
    return 1;
  };
  for (const std::string name : {"gpt2", "llama", "qwen2"}) {
    auto info = hf::ReadHfModelInfo(testdata + name, megatron::proto::ModelConfig());
    if (!info.ok()) return fail(info.status());
    auto model = megatron::models::GPTModel::Create(info->config);
    if (!model.ok()) return fail(model.status());
    if (absl::Status s = hf::LoadHfWeights(testdata + name, **model); !s.ok()) return fail(s);
    if (absl::Status s = hf::SaveHfLanguageModel(**model, info->model_type, out + "/" + name); !s.ok()) return fail(s);
    std::cout << "exported " << name << " -> " << out << "/" << name << "\n";
  }
  for (const std::string name : {"clip_vision", "siglip_vision"}) {
    auto m = hf::LoadHfVisionModel(testdata + name);
    if (!m.ok()) return fail(m.status());
    if (absl::Status s = hf::SaveHfVisionModel(*m->model, out + "/" + name, m->extras); !s.ok()) return fail(s);
    if (absl::Status s = hf::SaveHfVisionModel(*m->model, out + "/" + name + "_bare"); !s.ok()) return fail(s);
    std::cout << "exported " << name << " -> " << out << "/" << name << "{,_bare}\n";
  }
  return 0;
}
