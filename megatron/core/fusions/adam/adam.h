// Multi-tensor AdamW: one step over a whole list of parameters in one kernel launch (Megatron's FusedAdam /
// apex multi_tensor_adam in adam_w_mode), with fp32 master weights and fp32 states.
//
// Semantics (adam_params.h): for every tensor i and element k,
//   m = b1 m + (1-b1) g;  v = b2 v + (1-b2) g^2;  p *= 1 - lr wd (only if decay[i]);
//   p -= lr/(1-b1^t) * m / (sqrt(v)/sqrt(1-b2^t) + eps);  model_copy = p rounded to the copy's dtype.
// That is optimizer::AdamW's update; the caller passes decay[i] = (param.dim() > 1), as AdamW does.
//
// Tensors: params, exp_avgs, exp_avg_sqs float32 (updated in place); grads one dtype for the whole list (float32,
//   bfloat16 or float16), read only; model_copies empty or one per tensor, one dtype (bfloat16 or float16), written.
//   Tensor i of every list has the same number of elements; all contiguous, all on one device. Any sizes (zero,
//   one, primes), any number of tensors; views need not be 16-byte aligned (the kernel then takes a scalar path).
// Aliasing: no two tensors may overlap. Stream: CUDA tensors run adam_kernel.cu on the current stream when
//   :adam_cuda is linked (one launch, plus one small host-to-device copy of the chunk table); CPU tensors run the
//   reference, which computes every element in float64 and rounds the results back (also CPU training's path).
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <vector>

#include "megatron/core/fusions/adam/adam_params.h"

namespace megatron::fusions {

struct AdamWTensorLists {
  std::vector<at::Tensor> params;        // fp32 master weights, updated
  std::vector<at::Tensor> grads;         // read
  std::vector<at::Tensor> exp_avgs;      // fp32, updated
  std::vector<at::Tensor> exp_avg_sqs;   // fp32, updated
  std::vector<at::Tensor> model_copies;  // empty, or bf16/fp16 copies of the updated params, written
  std::vector<uint8_t> decay;            // 1: apply weight decay to tensor i
};

// One AdamW step over every tensor of `lists`.
void MultiTensorAdamW(const AdamWTensorLists& lists, const AdamWStepParams& params);

// ---- Building blocks (tests, the CUDA glue) ----

void MultiTensorAdamWReference(const AdamWTensorLists& lists, const AdamWStepParams& params);
// Checks the list lengths, dtypes, element counts, contiguity and devices; allow_float64 admits float64
// params/states/grads (the reference only).
void CheckAdamWInputs(const AdamWTensorLists& lists, bool allow_float64);

using AdamWStepFn = void (*)(const AdamWTensorLists&, const AdamWStepParams&);
void RegisterCudaAdamWImpl(AdamWStepFn step);
bool HasCudaAdamWImpl();

}  // namespace megatron::fusions
