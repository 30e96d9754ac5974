// The CPU kernels of hdas::mixed_node, compiled once per instruction set: isa_base (the x86-64
// baseline, any CPU; mixed_node_isa_base.cpp) and isa_avx2 (AVX2 + FMA, 8 floats a vector instead
// of SSE's 4; mixed_node_isa_avx2.cpp). mixed_node_kernel.cpp checks the arguments, allocates, and
// calls the set the CPU supports, chosen once at run time.
#pragma once

#include <ATen/ATen.h>

#include <vector>

#include "../mixed_node.h"

namespace hdas::cpu {

#define HDAS_DECLARE_CPU_KERNELS(ISA)                                                                      \
  namespace ISA {                                                                                          \
  /* out's mixed channels (NCHW); batch statistics into mean/invstd/var_u when bn && batch_stats, */       \
  /* else read from them. */                                                                               \
  void forward(const MixedNode& node, const at::Tensor& w, bool bn, bool batch_stats, double eps,          \
               at::Tensor& mean, at::Tensor& invstd, at::Tensor& var_u, at::Tensor& out);                  \
  /* grad_inputs' mixed channels, grad_extras (undefined at "add" slots, left alone), gw_part [C, E*P]. */ \
  void backward(const MixedNode& node, const at::Tensor& grad, const at::Tensor& w, const at::Tensor& mean, \
                const at::Tensor& invstd, bool bn, bool batch_stats, std::vector<at::Tensor>& grad_inputs,   \
                std::vector<at::Tensor>& grad_extras, at::Tensor& gw_part);                                  \
  }

HDAS_DECLARE_CPU_KERNELS(isa_base)
HDAS_DECLARE_CPU_KERNELS(isa_avx2)

// Whether this build has the AVX2 kernels (GCC on x86-64) and this CPU runs them; the environment
// variable HDAS_CPU_ISA=base forces the baseline kernels (tests run both).
bool use_avx2();

}  // namespace hdas::cpu
