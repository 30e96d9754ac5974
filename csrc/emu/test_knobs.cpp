// hdas_emu::set_test_knobs(index64, device_tables, chunk_positions): the emulated build's tests set
// runtime.cuh's TestKnobs to reach the launchers' other paths on small tensors (the int64_t index
// math, tables in device memory, reductions in many chunks); the shipped build has no such op.
#if !defined(HDAS_CUDA_EMU)
#error "built by csrc/emu/build.py only"
#endif
#include <torch/library.h>

#include "../cuda/runtime.cuh"

namespace {

void set_test_knobs(bool index64, bool device_tables, int64_t chunk_positions) {
  TORCH_CHECK_VALUE(chunk_positions >= 0, "set_test_knobs: chunk_positions must be >= 0, got ", chunk_positions);
  hdas::cuda::test_knobs() = {index64, device_tables, chunk_positions};
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(HDAS_OPS_NAMESPACE, m) {
  m.def("set_test_knobs(bool index64, bool device_tables, int chunk_positions) -> ()");
}

TORCH_LIBRARY_IMPL(HDAS_OPS_NAMESPACE, CatchAll, m) { m.impl("set_test_knobs", &set_test_knobs); }
