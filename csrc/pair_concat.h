// hdas::pair_concat -- the distribution search's stage output
//   out = sum_k w[k] * cat(states[i_k], states[j_k], dim=1)
// written straight into one [N, 2C, H, W] buffer. By linearity it equals
//   out[:, :C] = sum_t u[t] * states[t],  out[:, C:] = sum_t v[t] * states[t]
// with u[t] = sum_{k: i_k = t} w[k] and v[t] = sum_{k: j_k = t} w[k], which is what the kernels
// compute (one read of each referenced state, one write of the output).
#pragma once

#include <ATen/ATen.h>

#include <vector>

namespace hdas {

struct PairConcat {
  std::vector<at::Tensor> states;  // T x [N, C, H, W], contiguous NCHW
  std::vector<int64_t> first, second;  // pair members i_k, j_k
  int64_t T = 0, K = 0, N = 0, C = 0, HW = 0;
};

PairConcat make_pair_concat(const std::vector<at::Tensor>& states, const at::Tensor& weights,
                            c10::IntArrayRef pairs, const char* op);

struct PairConcatKernels {
  // out halves from u, v ([T] op-math tensors).
  void (*forward)(const PairConcat& pc, const at::Tensor& u, const at::Tensor& v, at::Tensor& out);
  // grad_states[t] = u[t] * g[:, :C] + v[t] * g[:, C:];  dots[n*C + c, t] / [.., T + t] =
  // plane sums of g[:, :C] * states[t] and g[:, C:] * states[t].
  void (*backward)(const PairConcat& pc, const at::Tensor& grad, const at::Tensor& u, const at::Tensor& v,
                   std::vector<at::Tensor>& grad_states, at::Tensor& dots);
};

at::Tensor pair_concat_forward(const PairConcatKernels& k, const std::vector<at::Tensor>& states,
                               const at::Tensor& weights, c10::IntArrayRef pairs);
std::tuple<std::vector<at::Tensor>, at::Tensor> pair_concat_backward(
    const PairConcatKernels& k, const at::Tensor& grad_out, const std::vector<at::Tensor>& states,
    const at::Tensor& weights, c10::IntArrayRef pairs);

}  // namespace hdas
