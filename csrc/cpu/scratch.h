// Per-thread scratch buffers of the CPU kernels.
#pragma once

#include <cstdint>
#include <vector>

#ifndef HDAS_CPU_ISA
#define HDAS_CPU_ISA isa_base
#endif

namespace hdas::cpu::HDAS_CPU_ISA {

// Per-thread scratch buffer number kSlot, kept between calls and grown as needed: a call then
// allocates nothing, so it takes no page faults and zero-fills nothing (every pass writes the
// scratch it later reads).
template <typename U, int kSlot>
U* scratch(int64_t n) {
  thread_local std::vector<U> buf;
  if (static_cast<int64_t>(buf.size()) < n) buf.resize(n);
  return buf.data();
}

}  // namespace hdas::cpu::HDAS_CPU_ISA
