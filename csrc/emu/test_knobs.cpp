// hdas_emu::set_test_knobs(index64, device_tables, chunk_positions): the emulated build's tests set
// runtime.cuh's TestKnobs to reach the launchers' other paths on small tensors (the int64_t index
// math, tables in device memory, reductions in many chunks); the shipped build has no such op.
// hdas_emu::emulator_mode() says which emulator build and modes the launches run under;
// hdas_emu::traffic(start) starts counting memory traffic (checked build) or returns what was counted,
// one JSON object per launch and line (benchmarks/gpu_model.py).
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

std::string emulator_mode() { return hdas::emu::describe_mode(); }

std::string traffic(bool start) {
  TORCH_CHECK(hdas::emu::checked_build(), "traffic: counting memory traffic needs the checked build "
              "(python csrc/emu/build.py --checked)");
  if (start) {
    hdas::emu::profile_start();
    return "";
  }
  return hdas::emu::profile_take();
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(HDAS_OPS_NAMESPACE, m) {
  m.def("set_test_knobs(bool index64, bool device_tables, int chunk_positions) -> ()");
  m.def("emulator_mode() -> str");
  m.def("traffic(bool start) -> str");
}

TORCH_LIBRARY_IMPL(HDAS_OPS_NAMESPACE, CatchAll, m) {
  m.impl("set_test_knobs", &set_test_knobs);
  m.impl("emulator_mode", &emulator_mode);
  m.impl("traffic", &traffic);
}
