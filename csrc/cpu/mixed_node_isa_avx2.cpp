// The CPU kernels of hdas::mixed_node compiled for AVX2 + FMA: see mixed_node_kernel.h. Every
// header is included before the target pragma, so only this file's own kernels (in namespace
// isa_avx2, symbols of their own) are AVX2 code; nothing shared with the baseline build is.
#include "mixed_node_kernel.h"

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <limits>
#include <string>
#include <type_traits>
#include <vector>

#pragma GCC push_options
#pragma GCC target("avx2,fma")
#define HDAS_CPU_ISA isa_avx2
#include "mixed_node_kernel_impl.h"
#pragma GCC pop_options

namespace hdas::cpu {
bool use_avx2() {
  static const bool ok = [] {
    const char* isa = std::getenv("HDAS_CPU_ISA");
    if (isa != nullptr && std::string(isa) == "base") return false;
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  }();
  return ok;
}
}  // namespace hdas::cpu

#else
// No AVX2 kernels in this build: the dispatcher always takes the baseline ones.
namespace hdas::cpu {
namespace isa_avx2 {
void forward(const MixedNode&, const at::Tensor&, bool, bool, double, at::Tensor&, at::Tensor&, at::Tensor&,
             at::Tensor&) {
  TORCH_CHECK(false, "hdas: no AVX2 kernels in this build");
}
void backward(const MixedNode&, const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&, bool,
              bool, std::vector<at::Tensor>&, std::vector<at::Tensor>&, at::Tensor&) {
  TORCH_CHECK(false, "hdas: no AVX2 kernels in this build");
}
}  // namespace isa_avx2
bool use_avx2() { return false; }
}  // namespace hdas::cpu
#endif
