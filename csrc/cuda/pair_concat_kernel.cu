// CUDA kernels of hdas::pair_concat (contiguous NCHW), on the current stream.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <torch/library.h>

#include "../mixed_node.h"
#include "../pair_concat.h"
#include "common.cuh"

namespace hdas::cuda {
namespace {

constexpr int kMaxStates = 32;

template <typename T>
struct States {
  const T* p[kMaxStates];
  T* g[kMaxStates];
  bool first[kMaxStates], second[kMaxStates];
};

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

template <typename T, typename A>
__global__ void forward_kernel(States<T> st, int T_, int64_t N, int64_t C, int64_t HW, const A* u, const A* v,
                               T* out) {
  const int64_t total = N * C * HW;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < total; i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t n = i / (C * HW), r = i % (C * HW);
    A a = 0, b = 0;
    for (int t = 0; t < T_; ++t) {
      if (!st.first[t] && !st.second[t]) continue;
      const A x = static_cast<A>(st.p[t][i]);
      if (st.first[t]) a += u[t] * x;
      if (st.second[t]) b += v[t] * x;
    }
    out[n * 2 * C * HW + r] = static_cast<T>(a);
    out[n * 2 * C * HW + C * HW + r] = static_cast<T>(b);
  }
}

// One block per (n, c) plane.
template <typename T, typename A>
__global__ void backward_kernel(States<T> st, int T_, int64_t C, int64_t HW, const T* grad, const A* u, const A* v,
                                A* dots) {
  __shared__ A smem[32];
  const int64_t plane = blockIdx.x, n = plane / C, c = plane % C;
  const T* g1 = grad + (n * 2 * C + c) * HW;
  const T* g2 = g1 + C * HW;
  for (int t = 0; t < T_; ++t) {
    const T* s = st.p[t] + plane * HW;
    T* gs = st.g[t] + plane * HW;
    A d1 = 0, d2 = 0;
    for (int64_t i = threadIdx.x; i < HW; i += blockDim.x) {
      const A a = static_cast<A>(g1[i]), b = static_cast<A>(g2[i]), x = static_cast<A>(s[i]);
      d1 += a * x;
      d2 += b * x;
      gs[i] = static_cast<T>(u[t] * a + v[t] * b);
    }
    d1 = block_sum(d1, smem);
    d2 = block_sum(d2, smem);
    if (threadIdx.x == 0) {
      dots[plane * 2 * T_ + t] = d1;
      dots[plane * 2 * T_ + T_ + t] = d2;
    }
  }
}

void forward(const PairConcat& pc, const at::Tensor& u, const at::Tensor& v, at::Tensor& out) {
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, out.scalar_type(), "pair_concat_forward_cuda", [&] {
    using A = at::opmath_type<scalar_t>;
    forward_kernel<scalar_t, A><<<grid_for(pc.N * pc.C * pc.HW), kThreads, 0, c10::cuda::getCurrentCUDAStream()>>>(
        states_of<scalar_t>(pc, nullptr), static_cast<int>(pc.T), pc.N, pc.C, pc.HW, u.const_data_ptr<A>(),
        v.const_data_ptr<A>(), out.data_ptr<scalar_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
}

void backward(const PairConcat& pc, const at::Tensor& grad, const at::Tensor& u, const at::Tensor& v,
              std::vector<at::Tensor>& grad_states, at::Tensor& dots) {
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, grad.scalar_type(), "pair_concat_backward_cuda", [&] {
    using A = at::opmath_type<scalar_t>;
    const unsigned blocks = plane_blocks(pc.N * pc.C, "hdas::pair_concat_backward");
    backward_kernel<scalar_t, A><<<blocks, kThreads, 0, c10::cuda::getCurrentCUDAStream()>>>(
        states_of<scalar_t>(pc, &grad_states), static_cast<int>(pc.T), pc.C, pc.HW, grad.const_data_ptr<scalar_t>(),
        u.const_data_ptr<A>(), v.const_data_ptr<A>(), dots.data_ptr<A>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
}

at::Tensor forward_cuda(const std::vector<at::Tensor>& states, const at::Tensor& weights, c10::IntArrayRef pairs) {
  const char* op = "hdas::pair_concat";
  TORCH_CHECK_VALUE(!states.empty(), op, ": states must be a non-empty list of tensors");
  const c10::cuda::CUDAGuard guard(states[0].device());
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
  const c10::cuda::CUDAGuard guard(states[0].device());
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

TORCH_LIBRARY_IMPL(hdas, CUDA, m) {
  m.impl("pair_concat", &forward_cuda);
  m.impl("pair_concat_backward", &backward_cuda);
}

}  // namespace hdas::cuda
