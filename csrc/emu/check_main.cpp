// emu_check: the emulated CUDA ops (launchers, emulator and kernels, registered as hdas_emu::*) on
// sampled cases, forward and backward, in a program of its own (libtorch, no Python), so that the
// sanitizers see everything: csrc/emu/build.py --sanitize asan|tsan --run builds and runs it. Values
// are checked by python_tests/test_cuda_emulated.py; this program looks for memory errors, undefined
// behaviour and data races.
//   emu_check [--cases N]   (the first N cases; all by default)
// The emulator's modes (HDAS_EMU_SEED, HDAS_EMU_BLOCKS, HDAS_EMU_BARRIER) apply as in the library.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <ATen/core/dispatch/Dispatcher.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "../mixed_node_codes.h"
#include "cuda_emu.h"

namespace {

using hdas::kAdd;
using hdas::kAvgPool;
using hdas::kExtra;
using hdas::kMaxPool;
using hdas::kNone;
using hdas::kSkip;

struct NodeCase {
  int E;
  std::vector<int64_t> prims, shape;
  int stride;
  const char* mode;  // "batch", "running", "no_bn"
  bool channels_last;
  at::ScalarType dtype;
  int64_t groups = 1;  // > 1: partial channels (the inputs and the output have shape[1] * groups channels)
};

struct PairCase {
  int T;
  std::vector<int64_t> pairs, shape;
  bool channels_last;
  at::ScalarType dtype;
};

std::vector<c10::IValue> call(const char* name, std::vector<c10::IValue> args) {
  const auto op = c10::Dispatcher::singleton().findSchemaOrThrow(name, "");
  op.callBoxed(&args);
  return args;
}

at::Tensor randn(std::vector<int64_t> shape, const NodeCase& c) {
  auto t = at::randn(shape, at::TensorOptions().dtype(at::kDouble)).to(c.dtype);
  return c.channels_last ? t.contiguous(at::MemoryFormat::ChannelsLast) : t;
}

void run(const NodeCase& c) {
  const int64_t N = c.shape[0], C = c.shape[1], H = c.shape[2], W = c.shape[3], Cx = C * c.groups;
  const int64_t Ho = (H - 1) / c.stride + 1, Wo = (W - 1) / c.stride + 1;
  int64_t K = 0, Q = 0;
  for (auto p : c.prims) {
    K += p == kExtra || p == kAdd;
    Q += p == kMaxPool || p == kAvgPool;
  }
  std::vector<at::Tensor> xs, extras;
  for (int e = 0; e < c.E; ++e) xs.push_back(randn({N, Cx, H, W}, c));
  for (int64_t k = 0; k < c.E * K; ++k) extras.push_back(randn({N, C, Ho, Wo}, c));
  const auto w = at::rand({c.E, static_cast<int64_t>(c.prims.size())}, at::TensorOptions().dtype(c.dtype));
  const bool running = std::strcmp(c.mode, "running") == 0, pool_bn = std::strcmp(c.mode, "no_bn") != 0;
  c10::IValue rm, rv;
  if (running) {
    rm = at::randn({c.E, Q, C}, at::TensorOptions().dtype(c.dtype));
    rv = at::rand({c.E, Q, C}, at::TensorOptions().dtype(c.dtype)) + 0.5;
  }
  auto fwd = call("hdas_emu::mixed_node",
                  {xs, w, c.prims, extras, int64_t(c.stride), pool_bn, !running, rm, rv, 1e-5, c.groups});
  const auto grad = randn({N, Cx, Ho, Wo}, c);
  call("hdas_emu::mixed_node_backward", {grad, xs, w, c.prims, extras, int64_t(c.stride), pool_bn, !running,
                                         fwd[1].toTensor(), fwd[2].toTensor(), c.groups});
}

void run(const PairCase& c) {
  const NodeCase like{0, {}, c.shape, 1, "", c.channels_last, c.dtype};
  std::vector<at::Tensor> states;
  for (int t = 0; t < c.T; ++t) states.push_back(randn(c.shape, like));
  const auto w = at::rand({static_cast<int64_t>(c.pairs.size() / 2)}, at::TensorOptions().dtype(c.dtype));
  call("hdas_emu::pair_concat", {states, w, c.pairs});
  const auto grad = randn({c.shape[0], 2 * c.shape[1], c.shape[2], c.shape[3]}, like);
  call("hdas_emu::pair_concat_backward", {grad, states, w, c.pairs});
}

struct ConvCase {
  std::vector<int64_t> kinds, edges, shape;  // kinds: conv_candidates_codes.h
  int stride;
  bool batch_stats, affine, lean, channels_last;
  at::ScalarType dtype;
};

void run(const ConvCase& c) {
  const NodeCase like{0, {}, c.shape, 1, "", c.channels_last, c.dtype};
  const int64_t C = c.shape[1], B = static_cast<int64_t>(c.kinds.size());
  const auto opts = at::TensorOptions().dtype(c.dtype);
  std::vector<at::Tensor> dw1, pw1, dw2, pw2;
  for (auto kind : c.kinds) {
    const int64_t k = kind == 1 || kind == 3 ? 5 : kind == 4 ? 7 : 3;
    dw1.push_back(at::randn({C, 1, k, k}, opts));
    pw1.push_back(at::randn({C, C, 1, 1}, opts));
    if (kind == 0 || kind == 1 || kind == 4) {
      dw2.push_back(at::randn({C, 1, k, k}, opts));
      pw2.push_back(at::randn({C, C, 1, 1}, opts));
    }
  }
  const int64_t Z = B + static_cast<int64_t>(dw2.size());
  c10::List<std::optional<at::Tensor>> gamma, beta;
  for (int64_t z = 0; c.affine && z < Z; ++z) {
    gamma.push_back(at::rand({C}, opts) + 0.5);
    beta.push_back(at::randn({C}, opts));
  }
  c10::IValue rm, rv;
  if (!c.batch_stats) {
    rm = at::randn({Z, C}, opts);
    rv = at::rand({Z, C}, opts) + 0.5;
  }
  const auto x = randn(c.shape, like);
  const auto w = at::rand({B}, opts);
  auto fwd = call("hdas_emu::conv_candidates", {x, c.kinds, c.edges, w, dw1, pw1, dw2, pw2, gamma, beta,
                                                int64_t(c.stride), c.batch_stats, rm, rv, 1e-5});
  std::vector<at::Tensor> grads;
  for (const auto& o : fwd[0].toTensorList()) grads.push_back(at::randn_like(o));
  const auto saved = c.lean ? std::vector<at::Tensor>{} : fwd[1].toTensorVector();
  call("hdas_emu::conv_candidates_backward",
       {grads, x, c.kinds, c.edges, w, dw1, pw1, dw2, pw2, gamma, beta, int64_t(c.stride), c.batch_stats, saved,
        fwd[2].toTensor(), fwd[3].toTensor(), std::vector<bool>{true, true, true, true}});
}

}  // namespace

int main(int argc, char** argv) {
  size_t limit = SIZE_MAX;
  for (int i = 1; i + 1 < argc; ++i)
    if (std::string(argv[i]) == "--cases") limit = std::strtoul(argv[i + 1], nullptr, 10);
  at::set_num_threads(1);  // ATen's own threads are not the subject here
  at::manual_seed(0);
  const std::vector<int64_t> all6{kNone, kMaxPool, kAdd, kAvgPool, kExtra, kSkip};
  const std::vector<NodeCase> nodes{
      {2, all6, {2, 3, 5, 4}, 1, "batch", false, at::kFloat},
      {2, {kNone, kMaxPool, kAdd, kAvgPool, kExtra}, {2, 3, 7, 5}, 2, "running", true, at::kDouble},
      {3, {kMaxPool, kAvgPool}, {1, 2, 1, 4}, 2, "batch", false, at::kHalf},
      {1, {kMaxPool, kAvgPool, kSkip, kNone}, {4, 3, 2, 2}, 1, "no_bn", true, at::kBFloat16},
      {17, {kMaxPool, kExtra, kAvgPool, kAdd, kSkip}, {1, 2, 3, 4}, 1, "batch", true, at::kFloat},
      {2, all6, {2, 40, 6, 6}, 1, "batch", true, at::kFloat},  // two channel tiles of a warp's 32 lanes
      {1, all6, {2, 3, 30, 20}, 1, "batch", false, at::kFloat},  // 600 positions: two chunks per plane
      {1, all6, {2, 3, 4, 6}, 1, "batch", false, at::kFloat, 4},  // partial channels
      {1, {kNone, kMaxPool, kAdd, kAvgPool, kExtra}, {2, 2, 6, 4}, 2, "running", true, at::kDouble, 2},
  };
  // Flat pair lists referencing all of 40 and of 70 states: pair_concat's group loop (32 states at a
  // time) and its barriers run two and three times.
  std::vector<int64_t> all40, all70;
  for (int64_t k = 0; k < 40; k += 2) all40.insert(all40.end(), {k, k + 1});
  all40.insert(all40.end(), {39, 0, 5, 33});
  for (int64_t k = 0; k < 35; ++k) all70.insert(all70.end(), {k, 69 - k});
  all70.insert(all70.end(), {69, 0, 40, 40});
  const std::vector<PairCase> pairs{
      {5, {1, 2, 2, 3, 0, 4}, {2, 3, 4, 5}, false, at::kFloat},
      {33, {0, 32, 5, 5, 31, 7}, {1, 2, 3, 3}, false, at::kDouble},  // 5 of 33 states referenced
      {4, {3, 1}, {2, 2, 2, 2}, true, at::kHalf},
      {40, all40, {1, 2, 3, 3}, false, at::kFloat},
      {70, all70, {2, 3, 2, 3}, true, at::kFloat},
      {4, {0, 1, 2, 3, 1, 2}, {2, 8, 12, 12}, false, at::kFloat},  // 2304 elements: three blocks
  };
  const std::vector<ConvCase> convs{
      {{0, 1, 2, 3}, {0, 0, 1, 1}, {2, 3, 5, 4}, 1, true, false, false, false, at::kFloat},
      {{0, 3, 4}, {0, 1, 1}, {2, 3, 7, 5}, 2, false, true, false, true, at::kDouble},
      {{1, 2}, {0, 0}, {3, 2, 1, 1}, 2, true, true, true, false, at::kHalf},
      {{0, 2}, {0, 1}, {2, 20, 9, 9}, 1, true, false, false, false, at::kFloat},  // two chunks, two tiles
  };
  size_t done = 0;
  for (const auto& c : nodes)
    if (done < limit) {
      run(c);
      std::printf("emu_check: mixed_node case %zu ok\n", ++done);
    }
  for (const auto& c : pairs)
    if (done < limit) {
      run(c);
      std::printf("emu_check: pair_concat case %zu ok\n", ++done);
    }
  for (const auto& c : convs)
    if (done < limit) {
      run(c);
      std::printf("emu_check: conv_candidates case %zu ok\n", ++done);
    }
  // The launchers' other paths (runtime.cuh's TestKnobs): int64 index math, tables in device memory,
  // reductions in chunks of 3 positions.
  if (done < limit) {
    call("hdas_emu::set_test_knobs", {true, true, int64_t(3)});
    run(nodes[0]);
    run(pairs[0]);
    call("hdas_emu::set_test_knobs", {false, false, int64_t(0)});
    std::printf("emu_check: case %zu (forced paths) ok\n", ++done);
  }
  std::printf("emu_check: %zu cases ran (%s)\n", done, hdas::emu::describe_mode());
  return 0;
}
