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

#define HDAS_PAIR_DISPATCH(TYPE, NAME, ...) \
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, TYPE, NAME, __VA_ARGS__)

// One call's table (PairLayout's slots) over the referenced states pc.states, their gradients'
// buffers (backward) and the pair members, renumbered over those states (see referenced()).
struct Call {
  DeviceTable table;
  Slots slots;
  PairLayout layout;

  Call(const PairConcat& pc, const std::vector<at::Tensor>* grads = nullptr)
      : layout{static_cast<int>(pc.T), static_cast<int>(pc.K)} {
    std::vector<int64_t> role(pc.T, 0);
    for (auto r : pc.first) role[r] |= 1;
    for (auto r : pc.second) role[r] |= 2;
    table.add_data(pc.states);
    if (grads) table.add_data(*grads);
    else table.add_null(pc.T);
    table.add(role);
    table.add(pc.first);
    table.add(pc.second);
    slots = table.slots(pc.states[0].device());
  }
};

template <typename I>
PairGeo<I> geo(const PairConcat& pc, at::MemoryFormat format) {
  const int64_t inner = format == at::MemoryFormat::ChannelsLast ? pc.C : pc.C * pc.HW;
  return {static_cast<I>(pc.N * pc.C * pc.HW), Div<I>(static_cast<I>(inner))};
}

constexpr int64_t kPerBlock = kPairPer * kThreads;

at::Tensor forward_cuda(const std::vector<at::Tensor>& states, const at::Tensor& weights, c10::IntArrayRef pairs) {
  const char* op = "hdas::pair_concat";
  const auto format = output_format(states.at(0));
  const auto all = make_pair_concat(states, weights, pairs, op, format);
  check_device(all.states[0], op);
  const DeviceGuard guard(all.states[0].device());
  std::vector<int64_t> slot;
  const auto pc = referenced(all, slot);  // the others are never read
  const auto acc = op_math(pc.states[0].scalar_type());
  const auto w = weights.to(acc).contiguous();
  auto out = at::empty({pc.N, 2 * pc.C, pc.H, pc.W}, pc.states[0].options().memory_format(format));
  const Call call(pc);
  const int64_t numel = pc.N * pc.C * pc.HW;
  HDAS_PAIR_DISPATCH(out.scalar_type(), "pair_concat_forward_cuda", [&] {
    using A = at::opmath_type<scalar_t>;
    dispatch_index(out.numel(), [&](auto index) {
      using I = decltype(index);
      launch(forward_kernel<scalar_t, A, I>, blocks_for(numel, kPerBlock, op), kThreads, 0, call.slots,
             call.layout, geo<I>(pc, format), w.const_data_ptr<A>(), out.data_ptr<scalar_t>());
    });
  });
  return out;
}

std::tuple<std::vector<at::Tensor>, at::Tensor> backward_cuda(const at::Tensor& grad_out,
                                                              const std::vector<at::Tensor>& states,
                                                              const at::Tensor& weights, c10::IntArrayRef pairs) {
  const char* op = "hdas::pair_concat_backward";
  const auto format = output_format(states.at(0));
  const auto all = make_pair_concat(states, weights, pairs, op, format);
  check_pair_concat_grad(all, grad_out, op);
  check_device(all.states[0], op);
  const DeviceGuard guard(all.states[0].device());
  std::vector<int64_t> slot;
  const auto pc = referenced(all, slot);
  const auto acc = op_math(pc.states[0].scalar_type());
  const auto w = weights.to(acc).contiguous();
  const auto grad = grad_out.to(pc.states[0].scalar_type()).contiguous(format);
  std::vector<at::Tensor> grads;
  for (const auto& s : pc.states) grads.push_back(at::empty_like(s));
  const Call call(pc, &grads);
  const int64_t numel = pc.N * pc.C * pc.HW;
  const unsigned blocks = blocks_for(numel, kPerBlock, op);
  auto partial = at::empty({blocks, 2 * pc.T}, w.options());
  auto grad_w = at::empty({pc.K}, w.options());
  HDAS_PAIR_DISPATCH(grad.scalar_type(), "pair_concat_backward_cuda", [&] {
    using A = at::opmath_type<scalar_t>;
    dispatch_index(grad.numel(), [&](auto index) {
      using I = decltype(index);
      launch(backward_kernel<scalar_t, A, I>, blocks, kThreads, 0, call.slots, call.layout, geo<I>(pc, format),
             grad.const_data_ptr<scalar_t>(), w.const_data_ptr<A>(), partial.data_ptr<A>());
    });
    launch(weight_grad_kernel<A>, static_cast<unsigned>(pc.K), kThreads, 0, call.slots, call.layout,
           partial.const_data_ptr<A>(), static_cast<int64_t>(blocks), grad_w.data_ptr<A>());
  });
  return {state_grads(states, slot, grads, format), grad_w.to(weights.scalar_type())};
}

}  // namespace

TORCH_LIBRARY_IMPL(HDAS_OPS_NAMESPACE, HDAS_DISPATCH_KEY, m) {
  m.impl("pair_concat", &forward_cuda);
  m.impl("pair_concat_backward", &backward_cuda);
}

}  // namespace hdas::cuda
