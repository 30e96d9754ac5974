// The checked build's global memory (build.py --checked): while the library is loaded, every CPU
// allocation of torch comes from this allocator, which puts a redzone either side of it, fills it
// with the emulator's poison pattern and has the emulator track it until it is freed. A kernel then
// reads poison where nothing (kernel or host) has written since the allocation: the launchers'
// outputs and scratch buffers come from at::empty, so they are poisoned before every launch that
// fills them.
#if !defined(HDAS_CUDA_EMU) || !defined(HDAS_EMU_CHECKED)
#error "built by csrc/emu/build.py --checked only"
#endif
#include <c10/core/Allocator.h>
#include <c10/core/CPUAllocator.h>

#include "cuda_emu.h"

namespace {

constexpr size_t kRedzone = 4096;  // catches an index off by up to a few rows of a small plane

struct Tracked {
  c10::DataPtr inner;
  void* data;
};

void free_tracked(void* p) {
  auto* t = static_cast<Tracked*>(p);
  hdas::emu::untrack_allocation(t->data);
  delete t;
}

class TrackingAllocator final : public c10::Allocator {
 public:
  explicit TrackingAllocator(c10::Allocator* base) : base_(base) {}
  c10::DataPtr allocate(size_t n) override {
    auto inner = base_->allocate(n + 2 * kRedzone);
    auto* raw = static_cast<unsigned char*>(inner.get());
    void* data = raw + kRedzone;
    hdas::emu::poison(raw, n + 2 * kRedzone);
    hdas::emu::track_allocation(data, n, kRedzone);
    return {data, new Tracked{std::move(inner), data}, &free_tracked, c10::Device(c10::DeviceType::CPU)};
  }
  void copy_data(void* dest, const void* src, std::size_t count) const override {
    default_copy_data(dest, src, count);
  }

 private:
  c10::Allocator* base_;
};

struct Install {
  Install() {
    static TrackingAllocator allocator(c10::GetCPUAllocator());
    c10::SetCPUAllocator(&allocator, /*priority=*/100);
  }
} install;

}  // namespace
