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

// One call's device table: whether each state is some pair's first / second member, the pair
// members themselves (index tensors for u, v and the weight gradient, views of the same copy), and
// the states' and (backward) their gradients' data pointers.
struct Call {
  DeviceTable table;
  int64_t first = 0, second = 0, members = 0, states = 0, grads = 0;  // offsets in table
  int64_t T, K;

  Call(const PairConcat& pc, const std::vector<at::Tensor>* grad_states = nullptr) : T(pc.T), K(pc.K) {
    std::vector<int64_t> in_first(T, 0), in_second(T, 0);
    for (auto t : pc.first) in_first[t] = 1;
    for (auto t : pc.second) in_second[t] = 1;
    first = table.add(in_first);
    second = table.add(in_second);
    members = table.add(pc.first);
    table.add(pc.second);
    states = table.add_data(pc.states);
    if (grad_states) grads = table.add_data(*grad_states);
    table.upload(pc.states[0].device());
  }
  PairMembers pair_members() const {
    return {table.tensor().narrow(0, members, K), table.tensor().narrow(0, members + K, K), T};
  }
  template <typename S>
  States<S> view(bool backward) const {
    return {table.pointers<const S>(states), backward ? table.pointers<S>(grads) : nullptr, table.codes(first),
            table.codes(second)};
  }
};

void forward(const PairConcat& pc, const Call& call, const at::Tensor& u, const at::Tensor& v, at::Tensor& out) {
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, out.scalar_type(), "pair_concat_forward_cuda", [&] {
    using A = at::opmath_type<scalar_t>;
    launch(forward_kernel<scalar_t, A>, grid_for(pc.N * pc.C * pc.HW), kThreads, 0, call.view<scalar_t>(false),
           static_cast<int>(pc.T), pc.N, pc.C, pc.HW, u.const_data_ptr<A>(), v.const_data_ptr<A>(),
           out.data_ptr<scalar_t>());
  });
}

void backward(const PairConcat& pc, const Call& call, const at::Tensor& grad, const at::Tensor& u,
              const at::Tensor& v, at::Tensor& dots) {
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, grad.scalar_type(), "pair_concat_backward_cuda", [&] {
    using A = at::opmath_type<scalar_t>;
    launch(backward_kernel<scalar_t, A>, plane_blocks(pc.N * pc.C, "hdas::pair_concat_backward"), kThreads, 0,
           call.view<scalar_t>(true), static_cast<int>(pc.T), pc.C, pc.HW, grad.const_data_ptr<scalar_t>(),
           u.const_data_ptr<A>(), v.const_data_ptr<A>(), dots.data_ptr<A>());
  });
}

at::Tensor forward_cuda(const std::vector<at::Tensor>& states, const at::Tensor& weights, c10::IntArrayRef pairs) {
  const char* op = "hdas::pair_concat";
  const auto pc = make_pair_concat(states, weights, pairs, op);
  check_device(pc.states[0], op);
  const DeviceGuard guard(pc.states[0].device());
  const auto w = weights.to(op_math(pc.states[0].scalar_type()));
  const Call call(pc);
  const auto [u, v] = call.pair_members().weights(w);
  auto out = at::empty({pc.N, 2 * pc.C, pc.H, pc.W}, pc.states[0].options());
  forward(pc, call, u, v, out);
  return out.contiguous(output_format(states[0]));
}

std::tuple<std::vector<at::Tensor>, at::Tensor> backward_cuda(const at::Tensor& grad_out,
                                                              const std::vector<at::Tensor>& states,
                                                              const at::Tensor& weights, c10::IntArrayRef pairs) {
  const char* op = "hdas::pair_concat_backward";
  const auto all = make_pair_concat(states, weights, pairs, op);
  check_pair_concat_grad(all, grad_out, op);
  check_device(all.states[0], op);
  const DeviceGuard guard(all.states[0].device());
  std::vector<int64_t> slot;
  const auto pc = referenced(all, slot);
  const auto acc = op_math(pc.states[0].scalar_type());
  const auto w = weights.to(acc);
  std::vector<at::Tensor> grads;
  for (const auto& s : pc.states) grads.push_back(at::empty_like(s));
  const Call call(pc, &grads);
  const auto members = call.pair_members();
  const auto [u, v] = members.weights(w);
  auto dots = at::empty({pc.N * pc.C, 2 * pc.T}, pc.states[0].options().dtype(acc));
  backward(pc, call, grad_out.to(pc.states[0].scalar_type()).contiguous(), u, v, dots);
  const auto grad_w = members.weight_grad(dots.sum(0)).to(weights.scalar_type());
  return {state_grads(states, slot, grads, output_format(states[0])), grad_w};
}

}  // namespace

TORCH_LIBRARY_IMPL(HDAS_OPS_NAMESPACE, HDAS_DISPATCH_KEY, m) {
  m.impl("pair_concat", &forward_cuda);
  m.impl("pair_concat_backward", &backward_cuda);
}

}  // namespace hdas::cuda
