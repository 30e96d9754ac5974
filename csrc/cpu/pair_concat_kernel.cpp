// CPU kernels of hdas::pair_concat, by (n, c) plane.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include "../mixed_node.h"
#include "../pair_concat.h"

namespace hdas::cpu {
namespace {

void forward(const PairConcat& pc, const at::Tensor& u, const at::Tensor& v, at::Tensor& out) {
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, out.scalar_type(), "pair_concat_forward", [&] {
    using A = at::opmath_type<scalar_t>;
    const A *up = u.const_data_ptr<A>(), *vp = v.const_data_ptr<A>();
    scalar_t* op = out.data_ptr<scalar_t>();
    const int64_t HW = pc.HW;
    at::parallel_for(0, pc.N * pc.C, 1, [&](int64_t begin, int64_t end) {
      std::vector<A> a(HW), b(HW);
      for (int64_t plane = begin; plane < end; ++plane) {
        const int64_t n = plane / pc.C, c = plane % pc.C;
        std::fill(a.begin(), a.end(), A(0));
        std::fill(b.begin(), b.end(), A(0));
        for (int64_t t = 0; t < pc.T; ++t) {
          const bool in_first = std::find(pc.first.begin(), pc.first.end(), t) != pc.first.end();
          const bool in_second = std::find(pc.second.begin(), pc.second.end(), t) != pc.second.end();
          if (!in_first && !in_second) continue;
          const scalar_t* s = pc.states[t].const_data_ptr<scalar_t>() + plane * HW;
          const A ut = up[t], vt = vp[t];
          for (int64_t i = 0; i < HW; ++i) {
            const A x = static_cast<A>(s[i]);
            if (in_first) a[i] += ut * x;
            if (in_second) b[i] += vt * x;
          }
        }
        scalar_t* o1 = op + (n * 2 * pc.C + c) * HW;
        scalar_t* o2 = o1 + pc.C * HW;
        for (int64_t i = 0; i < HW; ++i) {
          o1[i] = static_cast<scalar_t>(a[i]);
          o2[i] = static_cast<scalar_t>(b[i]);
        }
      }
    });
  });
}

void backward(const PairConcat& pc, const at::Tensor& grad, const at::Tensor& u, const at::Tensor& v,
              std::vector<at::Tensor>& grad_states, at::Tensor& dots) {
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, grad.scalar_type(), "pair_concat_backward", [&] {
    using A = at::opmath_type<scalar_t>;
    const A *up = u.const_data_ptr<A>(), *vp = v.const_data_ptr<A>();
    const scalar_t* gp = grad.const_data_ptr<scalar_t>();
    A* dp = dots.data_ptr<A>();
    const int64_t HW = pc.HW;
    at::parallel_for(0, pc.N * pc.C, 1, [&](int64_t begin, int64_t end) {
      for (int64_t plane = begin; plane < end; ++plane) {
        const int64_t n = plane / pc.C, c = plane % pc.C;
        const scalar_t* g1 = gp + (n * 2 * pc.C + c) * HW;
        const scalar_t* g2 = g1 + pc.C * HW;
        for (int64_t t = 0; t < pc.T; ++t) {
          const scalar_t* s = pc.states[t].const_data_ptr<scalar_t>() + plane * HW;
          scalar_t* gs = grad_states[t].data_ptr<scalar_t>() + plane * HW;
          const A ut = up[t], vt = vp[t];
          A d1 = 0, d2 = 0;
          for (int64_t i = 0; i < HW; ++i) {
            const A a = static_cast<A>(g1[i]), b = static_cast<A>(g2[i]), x = static_cast<A>(s[i]);
            d1 += a * x;
            d2 += b * x;
            gs[i] = static_cast<scalar_t>(ut * a + vt * b);
          }
          dp[plane * 2 * pc.T + t] = d1;
          dp[plane * 2 * pc.T + pc.T + t] = d2;
        }
      }
    });
  });
}

at::Tensor forward_cpu(const std::vector<at::Tensor>& states, const at::Tensor& weights, c10::IntArrayRef pairs) {
  const auto pc = make_pair_concat(states, weights, pairs, "hdas::pair_concat");
  const auto w = weights.to(op_math(pc.states[0].scalar_type()));
  const auto [u, v] = PairMembers::of(pc, w.device()).weights(w);
  auto out = at::empty({pc.N, 2 * pc.C, pc.H, pc.W}, pc.states[0].options());
  forward(pc, u, v, out);
  return out.contiguous(output_format(states[0]));
}

std::tuple<std::vector<at::Tensor>, at::Tensor> backward_cpu(const at::Tensor& grad_out,
                                                             const std::vector<at::Tensor>& states,
                                                             const at::Tensor& weights, c10::IntArrayRef pairs) {
  const char* op = "hdas::pair_concat_backward";
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

TORCH_LIBRARY_IMPL(hdas, CPU, m) {
  m.impl("pair_concat", &forward_cpu);
  m.impl("pair_concat_backward", &backward_cpu);
}

}  // namespace hdas::cpu
