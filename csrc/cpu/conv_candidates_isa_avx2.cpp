// The CPU kernels of hdas::conv_candidates compiled for AVX2 + FMA, as mixed_node_isa_avx2.cpp does:
// every header before the target pragma, so only this file's own kernels are AVX2 code.
#include "conv_candidates_kernel.h"

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <type_traits>
#include <vector>

#pragma GCC push_options
#pragma GCC target("avx2,fma")
#pragma GCC optimize("fp-contract=fast")  // a*b + c as one FMA (ISO C++ mode turns contraction off)
#define HDAS_CPU_ISA isa_avx2
#include "conv_candidates_kernel_impl.h"
#pragma GCC pop_options

#else
// No AVX2 kernels in this build: use_avx2() is false and these are never called.
namespace hdas::cpu::isa_avx2 {
void conv_forward(const ConvCandidates&, bool, double, ConvStats&, std::vector<at::Tensor>&,
                  std::vector<at::Tensor>&) {
  TORCH_CHECK(false, "hdas: no AVX2 kernels in this build");
}
void conv_output(const ConvCandidates&, const ConvStats&, const std::vector<at::Tensor>&,
                 const std::vector<at::Tensor>&, std::vector<at::Tensor>&) {
  TORCH_CHECK(false, "hdas: no AVX2 kernels in this build");
}
void conv_backward(const ConvCandidates&, const std::vector<at::Tensor>&, bool, const at::Tensor&, const at::Tensor&,
                   const std::vector<at::Tensor>&, const std::vector<at::Tensor>&, std::array<bool, 4>, ConvGrads&) {
  TORCH_CHECK(false, "hdas: no AVX2 kernels in this build");
}
}  // namespace hdas::cpu::isa_avx2
#endif
