// The primitive codes of hdas::mixed_node (see mixed_node.h). Torch-free: the device code
// (cuda/*.cuh) includes it in the shipped CUDA build and in the emulated one (csrc/emu).
#pragma once

#include <cstdint>

namespace hdas {

enum Prim : int64_t { kNone = 0, kMaxPool = 1, kAvgPool = 2, kSkip = 3, kExtra = 4, kAdd = 5 };

}  // namespace hdas
