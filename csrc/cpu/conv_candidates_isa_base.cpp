// The CPU kernels of hdas::conv_candidates for the x86-64 baseline (any CPU): see conv_candidates_kernel.h.
#define HDAS_CPU_ISA isa_base
#include "conv_candidates_kernel_impl.h"
