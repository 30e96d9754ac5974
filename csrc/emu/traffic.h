// The checked build's traffic counts (cuda_emu.cpp's only): a lane's accesses, grouped into warp-wide
// requests, counted per access site and per allocation. Included once, inside cuda_emu.cpp's
// anonymous namespace.
#pragma once

// One memory access of a lane: where in the code (pc), where in memory, how many bytes.
struct Access {
  uintptr_t pc, addr, base;  // base: the global allocation's id (shared memory: 0)
  uint64_t alloc_bytes;
  uint32_t size;
  bool store, shared;
};

// Per access site (pc): warp-wide requests, the 32-byte sectors they touch and the bytes their lanes
// asked for (global); the wavefronts they take and would take without bank conflicts (shared).
struct SiteStats {
  bool store = false, shared = false;
  uint64_t requests = 0, sectors = 0, bytes = 0, wavefronts = 0, ideal = 0;
  void add(const SiteStats& o) {
    requests += o.requests;
    sectors += o.sectors;
    bytes += o.bytes;
    wavefronts += o.wavefronts;
    ideal += o.ideal;
  }
};

// The distinct sectors a launch reads and writes of one global allocation.
struct AllocTraffic {
  uint64_t bytes = 0;
  std::unordered_set<uint64_t> load, store;
};

struct Traffic {
  std::unordered_map<uintptr_t, SiteStats> sites;
  std::unordered_map<uintptr_t, AllocTraffic> allocs;  // by the allocation's id
  void merge(Traffic& o) {
    for (auto& [pc, s] : o.sites) {
      auto& t = sites[pc];
      t.store = s.store;
      t.shared = s.shared;
      t.add(s);
    }
    for (auto& [base, a] : o.allocs) {
      auto& t = allocs[base];
      t.bytes = a.bytes;
      t.load.merge(a.load);
      t.store.merge(a.store);
    }
    o.sites.clear();
    o.allocs.clear();
  }
};

// The requests of one warp between two points where all its live lanes wait: the k-th access of
// a lane at site pc joins the k-th accesses of the other lanes at pc (one warp-wide instruction).
void count_requests(std::vector<std::vector<Access>*>& lanes, Traffic& t) {
  struct Item {
    uintptr_t pc;
    uint32_t occ;
    const Access* a;
  };
  std::vector<Item> items;
  for (auto* v : lanes) {
    std::unordered_map<uintptr_t, uint32_t> occ;
    for (const auto& a : *v) items.push_back({a.pc, occ[a.pc]++, &a});
  }
  std::sort(items.begin(), items.end(),
            [](const Item& x, const Item& y) { return x.pc != y.pc ? x.pc < y.pc : x.occ < y.occ; });
  std::vector<std::pair<uintptr_t, uintptr_t>> ranges;
  std::vector<uint64_t> units;
  for (size_t i = 0; i < items.size();) {
    size_t j = i;
    ranges.clear();
    while (j < items.size() && items[j].pc == items[i].pc && items[j].occ == items[i].occ) {
      ranges.emplace_back(items[j].a->addr, items[j].a->addr + items[j].a->size);
      ++j;
    }
    const Access& first = *items[i].a;
    // Distinct bytes asked for: the union of the lanes' ranges.
    std::sort(ranges.begin(), ranges.end());
    uint64_t bytes = 0;
    uintptr_t covered = 0;
    for (auto [lo, hi] : ranges) {
      lo = std::max(lo, covered);
      if (hi > lo) bytes += hi - lo;
      covered = std::max(covered, hi);
    }
    SiteStats& s = t.sites[first.pc];
    s.store = first.store;
    s.shared = first.shared;
    s.requests += 1;
    s.bytes += bytes;
    units.clear();
    if (!first.shared) {
      for (size_t k = i; k < j; ++k) {
        const Access& a = *items[k].a;
        AllocTraffic& at = t.allocs[a.base];
        at.bytes = a.alloc_bytes;
        for (uintptr_t sec = a.addr >> 5; sec <= (a.addr + a.size - 1) >> 5; ++sec) {
          units.push_back(sec);
          (a.store ? at.store : at.load).insert(sec);
        }
      }
      std::sort(units.begin(), units.end());
      units.erase(std::unique(units.begin(), units.end()), units.end());
      s.sectors += units.size();
    } else {
      // 32 banks of 4-byte words: the lanes' distinct words per bank, at most one per wavefront.
      for (auto [lo, hi] : ranges)
        for (uintptr_t w = lo >> 2; w <= (hi - 1) >> 2; ++w) units.push_back(w);
      std::sort(units.begin(), units.end());
      units.erase(std::unique(units.begin(), units.end()), units.end());
      int per_bank[32] = {};
      int worst = 0;
      for (auto w : units) worst = std::max(worst, ++per_bank[w & 31]);
      const uint64_t ideal = (units.size() * 4 + 127) / 128;
      s.ideal += ideal;
      s.wavefronts += std::max<uint64_t>(worst, ideal);
    }
    i = j;
  }
  for (auto* v : lanes) v->clear();
}

