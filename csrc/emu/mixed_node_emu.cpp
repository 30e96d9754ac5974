// The CUDA backend of hdas::mixed_node compiled as C++ for the emulator: the shipped launcher
// cuda/mixed_node_kernel.cu itself, with runtime.cuh's emulated launch. Its ops register as
// hdas_emu::mixed_node and hdas_emu::mixed_node_backward for CPU tensors (csrc/emu/build.py defines
// HDAS_CUDA_EMU and HDAS_OPS_NAMESPACE=hdas_emu).
#if !defined(HDAS_CUDA_EMU)
#error "built by csrc/emu/build.py only"
#endif
#include "../cuda/mixed_node_kernel.cu"
