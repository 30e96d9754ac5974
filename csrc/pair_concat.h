// hdas::pair_concat -- the distribution search's stage output
//   out = sum_k w[k] * cat(states[i_k], states[j_k], dim=1)
// written straight into one [N, 2C, H, W] buffer. By linearity it equals
//   out[:, :C] = sum_t u[t] * states[t],  out[:, C:] = sum_t v[t] * states[t]
// with u[t] = sum_{k: i_k = t} w[k] and v[t] = sum_{k: j_k = t} w[k], which is what the kernels
// compute (one read of each referenced state, one write of the output).
//
// This header and pair_concat.cpp hold the schema, the argument checks and the steps both backends
// share (u and v, the referenced states, the weight and state gradients from the kernels' sums);
// each backend allocates and launches in its own file (cpu/pair_concat_kernel.cpp,
// cuda/pair_concat_kernel.cu), as for mixed_node.
#pragma once

#include <ATen/ATen.h>

#include <vector>

#include "ops_namespace.h"

namespace hdas {

struct PairConcat {
  std::vector<at::Tensor> states;  // T x [N, C, H, W], contiguous in the layout the backend asked for
  std::vector<int64_t> first, second;  // pair members i_k, j_k
  int64_t T = 0, K = 0, N = 0, C = 0, H = 0, W = 0, HW = 0;
};

// Checks every argument (c10::ValueError / c10::TypeError naming it) and fills a PairConcat with the
// states in `format`.
PairConcat make_pair_concat(const std::vector<at::Tensor>& states, const at::Tensor& weights,
                            c10::IntArrayRef pairs, const char* op,
                            at::MemoryFormat format = at::MemoryFormat::Contiguous);
// The backward's grad_out: [N, 2C, H, W] on the states' device.
void check_pair_concat_grad(const PairConcat& pc, const at::Tensor& grad_out, const char* op);

// The states some pair references, with the pairs renumbered over them; slot[t] is state t's
// position there, or -1. The backward passes only these to the kernels: the others get zero
// gradients without being read.
PairConcat referenced(const PairConcat& pc, std::vector<int64_t>& slot);

// The pair members as index tensors on the weights' device (the CPU backend's u, v and weight
// gradient; the CUDA kernels compute them from the pair members in their launch parameters).
struct PairMembers {
  at::Tensor first, second;  // [K] int64
  int64_t T;
  // Index tensors built from pc (on a GPU copied from pinned memory without blocking).
  static PairMembers of(const PairConcat& pc, const at::Device& device);
  // u, v ([T], w's dtype and device): no host round trip for the weights.
  std::pair<at::Tensor, at::Tensor> weights(const at::Tensor& w) const;
  // grad_w[k] = sums[i_k] + sums[T + j_k], for sums [2T] over the kernels' plane dot products.
  at::Tensor weight_grad(const at::Tensor& sums) const;
};

// grad_states of all states in `format`: the referenced states' gradients (grads, by slot), zeros elsewhere.
std::vector<at::Tensor> state_grads(const std::vector<at::Tensor>& states, const std::vector<int64_t>& slot,
                                    const std::vector<at::Tensor>& grads, at::MemoryFormat format);

}  // namespace hdas
