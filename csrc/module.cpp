// The Python module hdas_ext._C: importing it registers the hdas ops (TORCH_LIBRARY in the other
// translation units) and exposes the facts of this build.
#include <ATen/Parallel.h>
#include <torch/extension.h>
#include <torch/version.h>

#include "cpu/mixed_node_kernel.h"
#include "cuda/arch_check.h"

#ifndef HDAS_VERSION
#define HDAS_VERSION "unknown"
#endif
#ifndef HDAS_CUDA_ARCHS
#define HDAS_CUDA_ARCHS ""
#endif

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "hdas_ext native ops (torch.ops.hdas.*)";
  m.attr("__version__") = HDAS_VERSION;
  m.attr("torch_version") = TORCH_VERSION;
#ifdef HDAS_WITH_CUDA
  m.attr("with_cuda") = true;
#else
  m.attr("with_cuda") = false;
#endif
  m.attr("cuda_archs") = HDAS_CUDA_ARCHS;  // "sm_75 ... compute_120": SASS and PTX built ("" without CUDA)
  m.def("cuda_arch_error", &hdas::cuda_arch_error, pybind11::arg("major"), pybind11::arg("minor"),
        pybind11::arg("built") = HDAS_CUDA_ARCHS,
        "'' when a build of these architectures runs on a GPU of this compute capability, else the error "
        "the CUDA launchers raise there (the rules of csrc/cuda/arch_check.h)");
#ifdef _OPENMP
  m.attr("with_openmp") = true;
#else
  m.attr("with_openmp") = false;
#endif
  m.def("cpu_isa", [] { return hdas::cpu::use_avx2() ? "avx2" : "base"; },
        "the instruction set of the CPU kernels this process runs (HDAS_CPU_ISA=base forces the baseline)");
  m.def("num_threads", &at::get_num_threads, "intra-op threads at::parallel_for uses now");
  m.def("parallel_info", &at::get_parallel_info, "ATen's description of its parallel backend");
}
