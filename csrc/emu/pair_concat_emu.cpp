// The CUDA backend of hdas::pair_concat compiled as C++ for the emulator: the shipped launcher
// cuda/pair_concat_kernel.cu itself, with runtime.cuh's emulated launch. Its ops register as
// hdas_emu::pair_concat and hdas_emu::pair_concat_backward for CPU tensors (csrc/emu/build.py defines
// HDAS_CUDA_EMU and HDAS_OPS_NAMESPACE=hdas_emu).
#if !defined(HDAS_CUDA_EMU)
#error "built by csrc/emu/build.py only"
#endif
#include "../cuda/pair_concat_kernel.cu"
