// The CUDA backend of hdas::conv_candidates compiled as C++ for the emulator: the shipped launcher
// cuda/conv_candidates_kernel.cu itself, with runtime.cuh's emulated launch. Its ops register as
// hdas_emu::conv_candidates and hdas_emu::conv_candidates_backward for CPU tensors.
#if !defined(HDAS_CUDA_EMU)
#error "built by csrc/emu/build.py only"
#endif
#include "../cuda/conv_candidates_kernel.cu"
