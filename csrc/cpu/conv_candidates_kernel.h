// The CPU kernels of hdas::conv_candidates, compiled once per instruction set like mixed_node's
// (conv_candidates_isa_base.cpp, conv_candidates_isa_avx2.cpp; bodies in
// conv_candidates_kernel_impl.h). conv_candidates_kernel.cpp checks, allocates and calls the set
// the CPU supports (mixed_node_kernel.h's use_avx2()).
//
// Tensors the kernels take are contiguous NCHW; z1, z2 and dc are [N, C, Ho, Wo] in the op-math
// type A (float, or double for double); statistics and coefficients [Z, C] or [B, C] in A.
#pragma once

#include <ATen/ATen.h>

#include <vector>

#include "../conv_candidates.h"

namespace hdas::cpu {

#define HDAS_DECLARE_CONV_KERNELS(ISA)                                                                        \
  namespace ISA {                                                                                             \
  /* z1 (every branch) and, with z2 non-empty, z2 (separable branches); batch statistics into stats */       \
  /* when batch_stats, else BN1 normalises with stats.mean/invstd. */                                        \
  void conv_forward(const ConvCandidates& cc, bool batch_stats, double eps, ConvStats& stats,                 \
                    std::vector<at::Tensor>& z1, std::vector<at::Tensor>& z2);                               \
  /* out[e] = sum_b weights[b] * BN_b(z_b) over edge e's branches. */                                        \
  void conv_output(const ConvCandidates& cc, const ConvStats& stats, const std::vector<at::Tensor>& z1,      \
                   const std::vector<at::Tensor>& z2, std::vector<at::Tensor>& out);                         \
  /* Every gradient `needs` asks for, into grads (allocated by the caller). */                               \
  void conv_backward(const ConvCandidates& cc, const std::vector<at::Tensor>& grad_out, bool batch_stats,     \
                     const at::Tensor& mean, const at::Tensor& invstd, const std::vector<at::Tensor>& z1,    \
                     const std::vector<at::Tensor>& z2, std::array<bool, 4> needs, ConvGrads& grads);        \
  }

HDAS_DECLARE_CONV_KERNELS(isa_base)
HDAS_DECLARE_CONV_KERNELS(isa_avx2)

}  // namespace hdas::cpu
