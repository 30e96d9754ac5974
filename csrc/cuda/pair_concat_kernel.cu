// The CUDA backend of hdas::pair_concat: checks, allocations and launches of the kernels of
// pair_concat_device.cuh on the current stream. Compiled by nvcc for the shipped ops, and as C++ by
// the emulated build (csrc/emu/pair_concat_emu.cpp, with runtime.cuh's emulated launch).
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <torch/library.h>

#include "../mixed_node.h"
#include "../pair_concat.h"
#include "pair_concat_device.cuh"
#include "runtime.cuh"

namespace hdas::cuda {
namespace {

template <typename T>
States<T> states_of(const PairConcat& pc, std::vector<at::Tensor>* grads) {
  TORCH_CHECK_VALUE(pc.T <= kMaxStates, "hdas::pair_concat (CUDA): at most ", kMaxStates, " states, got ", pc.T);
  States<T> s{};
  for (int64_t t = 0; t < pc.T; ++t) {
    s.p[t] = pc.states[t].const_data_ptr<T>();
    s.g[t] = grads ? (*grads)[t].data_ptr<T>() : nullptr;
    s.first[t] = std::find(pc.first.begin(), pc.first.end(), t) != pc.first.end();
    s.second[t] = std::find(pc.second.begin(), pc.second.end(), t) != pc.second.end();
  }
  return s;
}

void forward(const PairConcat& pc, const at::Tensor& u, const at::Tensor& v, at::Tensor& out) {
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, out.scalar_type(), "pair_concat_forward_cuda", [&] {
    using A = at::opmath_type<scalar_t>;
    launch(forward_kernel<scalar_t, A>, grid_for(pc.N * pc.C * pc.HW), kThreads, 0, states_of<scalar_t>(pc, nullptr),
           static_cast<int>(pc.T), pc.N, pc.C, pc.HW, u.const_data_ptr<A>(), v.const_data_ptr<A>(),
           out.data_ptr<scalar_t>());
  });
}

void backward(const PairConcat& pc, const at::Tensor& grad, const at::Tensor& u, const at::Tensor& v,
              std::vector<at::Tensor>& grad_states, at::Tensor& dots) {
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, grad.scalar_type(), "pair_concat_backward_cuda", [&] {
    using A = at::opmath_type<scalar_t>;
    launch(backward_kernel<scalar_t, A>, plane_blocks(pc.N * pc.C, "hdas::pair_concat_backward"), kThreads, 0,
           states_of<scalar_t>(pc, &grad_states), static_cast<int>(pc.T), pc.C, pc.HW, grad.const_data_ptr<scalar_t>(),
           u.const_data_ptr<A>(), v.const_data_ptr<A>(), dots.data_ptr<A>());
  });
}

at::Tensor forward_cuda(const std::vector<at::Tensor>& states, const at::Tensor& weights, c10::IntArrayRef pairs) {
  const char* op = "hdas::pair_concat";
  TORCH_CHECK_VALUE(!states.empty(), op, ": states must be a non-empty list of tensors");
  const DeviceGuard guard(states[0].device());
  const auto pc = make_pair_concat(states, weights, pairs, op);
  const auto w = weights.to(op_math(pc.states[0].scalar_type()));
  const auto [u, v] = PairMembers::of(pc, w.device()).weights(w);
  auto out = at::empty({pc.N, 2 * pc.C, pc.H, pc.W}, pc.states[0].options());
  forward(pc, u, v, out);
  return out.contiguous(output_format(states[0]));
}

std::tuple<std::vector<at::Tensor>, at::Tensor> backward_cuda(const at::Tensor& grad_out,
                                                              const std::vector<at::Tensor>& states,
                                                              const at::Tensor& weights, c10::IntArrayRef pairs) {
  const char* op = "hdas::pair_concat_backward";
  TORCH_CHECK_VALUE(!states.empty(), op, ": states must be a non-empty list of tensors");
  const DeviceGuard guard(states[0].device());
  const auto all = make_pair_concat(states, weights, pairs, op);
  check_pair_concat_grad(all, grad_out, op);
  std::vector<int64_t> slot;
  const auto pc = referenced(all, slot);
  const auto acc = op_math(pc.states[0].scalar_type());
  const auto w = weights.to(acc);
  const auto members = PairMembers::of(pc, w.device());
  const auto [u, v] = members.weights(w);
  std::vector<at::Tensor> grads;
  for (const auto& s : pc.states) grads.push_back(at::empty_like(s));
  auto dots = at::empty({pc.N * pc.C, 2 * pc.T}, pc.states[0].options().dtype(acc));
  backward(pc, grad_out.to(pc.states[0].scalar_type()).contiguous(), u, v, grads, dots);
  const auto grad_w = members.weight_grad(dots.sum(0)).to(weights.scalar_type());
  return {state_grads(states, slot, grads, output_format(states[0])), grad_w};
}

}  // namespace

TORCH_LIBRARY_IMPL(HDAS_OPS_NAMESPACE, HDAS_DISPATCH_KEY, m) {
  m.impl("pair_concat", &forward_cuda);
  m.impl("pair_concat_backward", &backward_cuda);
}

}  // namespace hdas::cuda
