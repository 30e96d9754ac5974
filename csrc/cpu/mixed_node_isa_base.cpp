// The CPU kernels of hdas::mixed_node for the x86-64 baseline (any CPU): see mixed_node_kernel.h.
#define HDAS_CPU_ISA isa_base
#include "mixed_node_kernel_impl.h"
