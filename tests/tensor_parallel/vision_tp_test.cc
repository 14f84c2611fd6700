// The vision encoder (CLIP and SigLIP) and the multimodal projector (mlp with a norm, affine) under tensor
// parallelism on 2 and 4 forked Gloo ranks, in fp64: outputs and every gradient (assembled from the shards) equal
// the single-process modules built from the same seed within 1e-10 relative.
#include <ATen/Parallel.h>
#include <ATen/TensorOperators.h>

#include <map>
#include <string>

#include "absl/strings/match.h"
#include "gtest/gtest.h"
#include "megatron/core/distributed/multi_process_testing.h"
#include "megatron/core/models/vision/clip_vit_model.h"
#include "megatron/core/models/vision/multimodal_projector.h"
#include "megatron/core/tensor_parallel/mappings.h"
#include "megatron/core/tensor_parallel/random.h"
#include "tests/tensor_parallel/tp_test_util.h"

namespace megatron::tensor_parallel {
namespace {

using distributed::DistributedContext;
using distributed::Group;
using models::vision::CLIPViTModel;
using models::vision::MultimodalProjector;
using models::vision::ProjectorConfig;
using models::vision::ProjectorType;
using models::vision::VisionConfig;
using models::vision::VisionSubtype;
using testing::ExpectClose;
using testing::RandnOnAllRanks;
using testing::ToDouble;
using transformer::ModelParallel;

constexpr uint64_t kWeightSeed = 2468;

// The full gradient of `name` from this rank's shard (row-parallel weights are split on dim 1, column-parallel
// weights and biases on dim 0, everything else is replicated).
at::Tensor FullGrad(const std::string& name, const at::Tensor& shard, Group& g, bool affine) {
  const auto ends = [&](const char* suffix) { return absl::EndsWith(name, suffix); };
  if (ends("linear_proj.weight") || ends("linear_fc2.weight")) return AllGatherAlong(shard, 1, g, "test");
  if (ends("linear_qkv.weight") || ends("linear_qkv.bias") || ends("linear_fc1.weight") ||
      ends("linear_fc1.bias") || (affine && (name == "encoder.weight" || name == "encoder.bias"))) {
    return AllGatherAlong(shard, 0, g, "test");
  }
  return shard;
}

void CompareGrads(const transformer::MegatronModule& tp, const transformer::MegatronModule& ref, Group& g,
                  bool affine, const std::string& what) {
  std::map<std::string, at::Tensor> ref_params;
  for (const auto& [name, p] : ref.NamedParameters()) ref_params[name] = p;
  const auto params = tp.NamedParameters();
  ASSERT_EQ(params.size(), ref_params.size()) << what;
  for (const auto& [name, p] : params) {
    auto it = ref_params.find(name);
    ASSERT_NE(it, ref_params.end()) << what << name;
    ASSERT_TRUE(p.grad().defined()) << what << name << " has no gradient";
    ExpectClose(FullGrad(name, p.grad(), g, affine), it->second.grad(), what + name + " grad");
  }
}

void Encoder(Group& g, VisionSubtype subtype) {
  const std::string what = std::string(models::vision::VisionSubtypeName(subtype)) + " TP=" +
                           std::to_string(g.size()) + ": ";
  VisionConfig c = models::vision::MakeVisionConfig(
      subtype, /*num_layers=*/2, /*hidden_size=*/16, /*num_attention_heads=*/4, /*ffn_hidden_size=*/24,
      subtype == VisionSubtype::kClip ? transformer::Activation::kQuickGelu : transformer::Activation::kGeluTanh,
      1e-5, /*patch_dim=*/4, /*img_h=*/8, /*img_w=*/12);
  auto build = [&](const ModelParallel& parallel) {
    ManualSeed(kWeightSeed);
    auto m = CLIPViTModel::Create(c, parallel);
    EXPECT_TRUE(m.ok()) << m.status();
    ToDouble(**m);
    return std::move(*m);
  };
  auto ref = build({});
  // Sequence parallelism is requested but, as in Megatron, never applied to the vision encoder.
  auto tp = build({&g, /*sequence_parallel=*/true});
  const at::Tensor images = RandnOnAllRanks({2, 3, 8, 12}, 11);
  const at::Tensor probe = RandnOnAllRanks({2, c.seq_length(), 16}, 12);
  const at::Tensor ref_out = ref->Forward(images);
  (ref_out * probe).sum().backward();
  const at::Tensor out = tp->Forward(images);
  ExpectClose(out.detach(), ref_out.detach(), what + "output");
  (out * probe).sum().backward();
  CompareGrads(*tp, *ref, g, /*affine=*/false, what);
}

void Projector(Group& g, ProjectorType type) {
  const bool affine = type == ProjectorType::kAffine;
  const std::string what = std::string(affine ? "affine" : "mlp") + " TP=" + std::to_string(g.size()) + ": ";
  ProjectorConfig c{.projector_type = type, .input_size = 12, .ffn_hidden_size = 20, .hidden_size = 8,
                    .activation = transformer::Activation::kGelu, .add_bias_linear = true, .layernorm = !affine};
  auto build = [&](const ModelParallel& parallel) {
    ManualSeed(kWeightSeed);
    auto m = MultimodalProjector::Create(c, parallel);
    EXPECT_TRUE(m.ok()) << m.status();
    ToDouble(**m);
    return std::move(*m);
  };
  auto ref = build({});
  auto tp = build({&g});
  const at::Tensor x = RandnOnAllRanks({5, 2, 12}, 21);
  const at::Tensor probe = RandnOnAllRanks({5, 2, 8}, 22);
  const at::Tensor ref_out = ref->Forward(x);
  (ref_out * probe).sum().backward();
  const at::Tensor out = tp->Forward(x);
  ExpectClose(out.detach(), ref_out.detach(), what + "output");
  (out * probe).sum().backward();
  CompareGrads(*tp, *ref, g, affine, what);
}

void VisionTensorParallel(DistributedContext& ctx) {
  at::set_num_threads(1);
  for (VisionSubtype s : {VisionSubtype::kClip, VisionSubtype::kSiglip}) Encoder(ctx.world(), s);
  for (ProjectorType t : {ProjectorType::kMlp, ProjectorType::kAffine}) Projector(ctx.world(), t);
}

void DivisibilityErrors(DistributedContext& ctx) {
  VisionConfig c = models::vision::ClipVitL14Config(336);
  c.transformer.num_attention_heads = 6;  // not divisible by 4 ranks (refused before any weight is built)
  c.transformer.num_query_groups = 6;
  c.transformer.kv_channels = 16;
  auto m = CLIPViTModel::Create(c, {&ctx.world()});
  ASSERT_FALSE(m.ok());
  EXPECT_TRUE(absl::StrContains(m.status().message(), "vision_model.num_attention_heads")) << m.status();
  ProjectorConfig p{.input_size = 8, .ffn_hidden_size = 6, .hidden_size = 8};
  auto proj = MultimodalProjector::Create(p, {&ctx.world()});
  ASSERT_FALSE(proj.ok());
  EXPECT_TRUE(absl::StrContains(proj.status().message(), "projector.ffn_hidden_size")) << proj.status();
}

TEST(VisionTensorParallel, TwoRanks) { distributed::RunMultiProcess(2, VisionTensorParallel); }
TEST(VisionTensorParallel, FourRanks) { distributed::RunMultiProcess(4, VisionTensorParallel); }
TEST(VisionTensorParallel, DivisibilityErrorsNameTheField) { distributed::RunMultiProcess(4, DivisibilityErrors); }

}  // namespace
}  // namespace megatron::tensor_parallel
