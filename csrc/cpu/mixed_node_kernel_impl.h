// Kernel bodies of hdas::mixed_node on the CPU, channel by channel. A pool BN's statistics span one
// channel over the whole batch, so a thread that owns a channel can pool each (n, c) plane once,
// keep the channel's pooled planes in its scratch, and finish the statistics, the weighted sum
// (forward) or the weight gradients and the input gradients (backward) without a second pooling
// pass, a cross-thread reduction or any ATen op between the passes.
//
// Included once per instruction set with HDAS_CPU_ISA naming the namespace (see mixed_node_kernel.h):
// every function here and in the plane headers gets its own symbols per set.
#pragma once

#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <type_traits>
#include <vector>

#include "mixed_node_kernel.h"
#include "plane_math.h"
#include "pool_plane.h"
#include "scratch.h"

namespace hdas::cpu::HDAS_CPU_ISA {
namespace {

template <typename T>
std::vector<const T*> ptrs(const std::vector<at::Tensor>& ts) {
  std::vector<const T*> out;
  for (const auto& t : ts) out.push_back(t.const_data_ptr<T>());
  return out;
}

// nullptr for an undefined tensor (the gradient slot of an "add" extra, never written).
template <typename T>
std::vector<T*> mut_ptrs(std::vector<at::Tensor>& ts) {
  std::vector<T*> out;
  for (auto& t : ts) out.push_back(t.defined() ? t.data_ptr<T>() : nullptr);
  return out;
}

// Whether T is its own accumulation type, so that kernels can accumulate in the tensors.
template <typename T, typename A>
constexpr bool kDirect = std::is_same_v<T, A>;

// Geometry of one mixed channel's planes: plane (n, c) of an [N, C, h, w] tensor starts at
// (n*C + c)*h*w. With G channel groups (partial channels) the inputs, the output and grad_out have
// Cx = C*G channels: mixed channel c is input channel c and output channel c*G; extras keep C.
struct Geometry {
  int64_t N, C, Cx, G, H, W, s, Ho, Wo, hw, L;
  explicit Geometry(const MixedNode& nd)
      : N(nd.N), C(nd.C), Cx(nd.Cx), G(nd.G), H(nd.H), W(nd.W), s(nd.stride), Ho(nd.Ho), Wo(nd.Wo),
        hw(nd.H * nd.W), L(nd.plane_out()) {}
  int64_t in(int64_t n, int64_t c) const { return (n * Cx + c) * hw; }
  int64_t out(int64_t n, int64_t c) const { return (n * Cx + c * G) * L; }
  int64_t ext(int64_t n, int64_t c) const { return (n * C + c) * L; }
};

template <typename T, typename A>
void pool_into(int64_t code, const T* x, const Geometry& g, const A* inv_cnt, A* tmp, A* out) {
  if (code == kMaxPool)
    pool_plane<true>(x, g.H, g.W, g.s, g.Ho, g.Wo, inv_cnt, tmp, out);
  else
    pool_plane<false>(x, g.H, g.W, g.s, g.Ho, g.Wo, inv_cnt, tmp, out);
}

// The 'none' primitive is x*0, not 0: NaN and inf in x reach the output as in DARTS' Zero op.
// acc[o] += coef * (x[i(o)] * 0), i(o) the input element output o sits on.
template <typename T, typename A>
void none_add(const Geometry& g, A coef, const T* __restrict x, A* __restrict acc) {
  if (g.s == 1) {
    for (int64_t i = 0; i < g.L; ++i) acc[i] += coef * (static_cast<A>(x[i]) * A(0));
    return;
  }
  for (int64_t oh = 0; oh < g.Ho; ++oh)
    for (int64_t ow = 0; ow < g.Wo; ++ow)
      acc[oh * g.Wo + ow] += coef * (static_cast<A>(x[oh * g.s * g.W + ow * g.s]) * A(0));
}

// sum_o grad[o] * (x[i(o)] * 0): the weight gradient of 'none'.
template <typename T, typename A>
A none_dot(const Geometry& g, const A* __restrict grad, const T* __restrict x) {
  if (g.s == 1) return lane_sum<A>(g.L, [grad, x](int64_t i) { return grad[i] * (static_cast<A>(x[i]) * A(0)); });
  A total = 0;
  for (int64_t oh = 0; oh < g.Ho; ++oh)
    for (int64_t ow = 0; ow < g.Wo; ++ow)
      total += grad[oh * g.Wo + ow] * (static_cast<A>(x[oh * g.s * g.W + ow * g.s]) * A(0));
  return total;
}

// ---- forward ---------------------------------------------------------------------------------

// Statistics: [E, Q, C] in A. Batch statistics (mean, invstd, unbiased variance) are written here;
// in eval, mean/invstd are read from the running statistics.
template <typename A>
struct Stats {
  bool bn = false, batch = false;
  A eps = 0;
  A *mean = nullptr, *invstd = nullptr, *var_u = nullptr;
};

template <typename T, typename A>
void forward_kernel(const MixedNode& nd, const A* wp, const Stats<A>& st, T* op) {
  const Geometry g(nd);
  const auto xs = ptrs<T>(nd.inputs);
  const auto ex = ptrs<T>(nd.extras);
  const auto inv_cnt = inverse_counts<A>(g.H, g.W, g.s, g.Ho, g.Wo);
  const Stat M = static_cast<Stat>(nd.count());
  at::parallel_for(0, g.C, 1, [&](int64_t begin, int64_t end) {
    A* tmp = scratch<A, 0>(g.H * std::max(g.W, g.Wo));
    A* pool = scratch<A, 1>(g.N * g.L);
    A* acc_buf = scratch<A, 2>(kDirect<T, A> ? 0 : g.N * g.L);
    for (int64_t c = begin; c < end; ++c) {
      // Plane n's accumulator: the output plane itself when it holds A (float, double).
      auto acc_at = [&](int64_t n) -> A* {
        if constexpr (kDirect<T, A>) return op + g.out(n, c);
        else return &acc_buf[n * g.L];
      };
      for (int64_t n = 0; n < g.N; ++n) std::fill(acc_at(n), acc_at(n) + g.L, A(0));
      for (int64_t e = 0; e < nd.E; ++e) {
        const T* x = xs[e];
        for (int64_t p = 0; p < nd.P; ++p) {
          const int64_t code = nd.prims[p];
          const A coef = wp[e * nd.P + p];
          if (code == kNone) {
            for (int64_t n = 0; n < g.N; ++n) none_add(g, coef, x + g.in(n, c), acc_at(n));
          } else if (code == kSkip) {
            for (int64_t n = 0; n < g.N; ++n) axpy(g.L, coef, x + g.in(n, c), acc_at(n));
          } else if (code == kExtra || code == kAdd) {
            const T* y = ex[e * nd.K + nd.extra_slot[p]];
            const A a = code == kAdd ? A(1) : coef;
            for (int64_t n = 0; n < g.N; ++n) axpy(g.L, a, y + g.ext(n, c), acc_at(n));
          } else {
            for (int64_t n = 0; n < g.N; ++n) pool_into(code, x + g.in(n, c), g, inv_cnt.data(), tmp, &pool[n * g.L]);
            A a = coef, mu = 0;
            if (st.bn) {
              const int64_t k = (e * nd.Q + nd.pool_slot[p]) * g.C + c;
              if (st.batch) {
                // Two passes, each summed plane by plane: exact mean, then squared deviations.
                Stat s = 0, m2 = 0;
                for (int64_t n = 0; n < g.N; ++n) s += stat_sum(g.L, &pool[n * g.L]);
                const Stat mean = s / M;
                for (int64_t n = 0; n < g.N; ++n) m2 += stat_sum_sq_dev(g.L, &pool[n * g.L], mean);
                st.mean[k] = static_cast<A>(mean);
                st.invstd[k] = static_cast<A>(1 / std::sqrt(m2 / M + st.eps));
                st.var_u[k] = static_cast<A>(m2 / (M - 1));
              }
              a = coef * st.invstd[k];
              mu = st.mean[k];
            }
            for (int64_t n = 0; n < g.N; ++n) axmy(g.L, a, &pool[n * g.L], mu, acc_at(n));
          }
        }
      }
      if constexpr (!kDirect<T, A>)
        for (int64_t n = 0; n < g.N; ++n) convert(g.L, acc_at(n), op + g.out(n, c));
    }
  });
}

// ---- backward --------------------------------------------------------------------------------
//
// With y_p the output of primitive p on edge e and G = grad_out, for channel c:
//   grad_w[e, p] += sum G * y_p          (for a pool with BN: invstd * sum G*(pool - mean))
//   d loss / d pool = a*G + b*(pool - mean) + d   (a = w*invstd; b, d the batch-statistics terms, else 0)
// and grad_inputs[e] collects w_skip*G plus each pool's transpose applied to that.

template <typename T, typename A>
void backward_kernel(const MixedNode& nd, const T* gp, const A* wp, const A* mp, const A* ip, bool batch_stats,
                     std::vector<T*>& gxs, std::vector<T*>& gex, A* gw_part /* [C, E*P] */) {
  const Geometry g(nd);
  const auto xs = ptrs<T>(nd.inputs);
  const auto ex = ptrs<T>(nd.extras);
  const auto inv_cnt = inverse_counts<A>(g.H, g.W, g.s, g.Ho, g.Wo);
  const Stat M = static_cast<Stat>(nd.count());
  const int64_t EP = nd.E * nd.P, NL = g.N * g.L;
  at::parallel_for(0, g.C, 1, [&](int64_t begin, int64_t end) {
    A* grad_buf = scratch<A, 3>(kDirect<T, A> ? 0 : NL);
    // One edge's pools and max-pool argmax choices (argmax_plane's ci and ti) per pool and plane,
    // and its primitives' gradient coefficients.
    const int64_t TL = g.H * g.Wo;
    A* pools = scratch<A, 4>(nd.Q * NL);
    int32_t* ci = scratch<int32_t, 0>(nd.Q * NL);
    int32_t* ti = scratch<int32_t, 1>(nd.Q * g.N * TL);
    A* a = scratch<A, 5>(nd.P);
    A* b = scratch<A, 6>(nd.P);
    A* d = scratch<A, 7>(nd.P);
    A* m = scratch<A, 12>(nd.P);  // the BatchNorm's mean: dy = a * g + b * (y - m) + d, centred for float32
    A* tmp = scratch<A, 8>(g.H * std::max(g.W, g.Wo));
    A* tv = scratch<A, 9>(TL);
    A* dpool = scratch<A, 10>(g.L);
    A* gx_buf = scratch<A, 11>(kDirect<T, A> ? 0 : g.hw);
    for (int64_t c = begin; c < end; ++c) {
      // grad_out's plane n in A: the tensor itself when it holds A, else a converted copy.
      auto grad_at = [&](int64_t n) -> const A* {
        if constexpr (kDirect<T, A>) return gp + g.out(n, c);
        else return &grad_buf[n * g.L];
      };
      Stat sg = 0;
      for (int64_t n = 0; n < g.N; ++n) {
        if constexpr (!kDirect<T, A>) convert(g.L, gp + g.out(n, c), &grad_buf[n * g.L]);
        sg += stat_sum(g.L, grad_at(n));
      }
      // Edge by edge (its pools, argmax choices and input planes stay in cache between the two
      // passes): pass 1, every primitive's sum G*y over the channel (pools kept), then its
      // coefficients; pass 2, the edge's input gradient, plane by plane.
      for (int64_t e = 0; e < nd.E; ++e) {
        const T* x = xs[e];
        for (int64_t p = 0; p < nd.P; ++p) {
          const int64_t code = nd.prims[p], j = e * nd.P + p;
          const A wep = wp[j];
          const bool normed = mp && nd.pool_slot[p] >= 0;
          const int64_t stat = normed ? (e * nd.Q + nd.pool_slot[p]) * g.C + c : 0;
          const A mu = normed ? mp[stat] : A(0);
          Stat total = 0;
          if (code == kAdd) {
            // Weighted by the caller; its gradient is grad_out, passed on by the autograd formula.
          } else if (code == kNone) {
            for (int64_t n = 0; n < g.N; ++n) total += none_dot(g, grad_at(n), x + g.in(n, c));
          } else if (code == kSkip) {
            for (int64_t n = 0; n < g.N; ++n) total += dot(g.L, grad_at(n), x + g.in(n, c));
          } else if (code == kExtra) {
            const int64_t k = e * nd.K + nd.extra_slot[p];
            for (int64_t n = 0; n < g.N; ++n)
              total += scale_and_dot(g.L, wep, grad_at(n), ex[k] + g.ext(n, c), gex[k] + g.ext(n, c));
          } else {
            const int64_t q = nd.pool_slot[p];
            for (int64_t n = 0; n < g.N; ++n) {
              A* pv = &pools[q * NL + n * g.L];
              if (code == kMaxPool)
                argmax_plane(x + g.in(n, c), g.H, g.W, g.s, g.Ho, g.Wo, tv, &ti[(q * g.N + n) * TL], pv,
                             &ci[q * NL + n * g.L]);
              else
                pool_into(code, x + g.in(n, c), g, inv_cnt.data(), tmp, pv);
              const A* gn = grad_at(n);
              total += lane_sum<Stat>(g.L, [gn, pv, mu](int64_t i) { return static_cast<Stat>(gn[i]) * (pv[i] - mu); });
            }
          }
          a[p] = wep;
          b[p] = d[p] = 0;
          m[p] = mu;
          if (normed) {
            const A is = ip[stat];
            total *= is;  // sum of G * BN output
            a[p] = wep * is;
            if (batch_stats) {
              b[p] = static_cast<A>(-a[p] * is * total / M);
              d[p] = static_cast<A>(-a[p] * sg / M);
            }
          }
          gw_part[c * EP + j] = static_cast<A>(total);
        }
        for (int64_t n = 0; n < g.N; ++n) {
          const A* gn = grad_at(n);
          A* gx;
          if constexpr (kDirect<T, A>) gx = gxs[e] + g.in(n, c);
          else gx = gx_buf;
          std::fill(gx, gx + g.hw, A(0));
          for (int64_t p = 0; p < nd.P; ++p) {
            const int64_t code = nd.prims[p];
            if (code == kSkip) {
              axpy(g.L, a[p], gn, gx);
            } else if (code == kMaxPool || code == kAvgPool) {
              const int64_t q = nd.pool_slot[p], off = q * NL + n * g.L;
              const A* pv = &pools[off];
              if (code == kMaxPool) {
                for (int64_t o = 0; o < g.L; ++o) dpool[o] = a[p] * gn[o] + b[p] * (pv[o] - m[p]) + d[p];
                argmax_transpose_add(dpool, &ci[off], &ti[(q * g.N + n) * TL], g.H, g.W, g.s, g.Ho, g.Wo,
                                     tv, gx);
              } else {
                for (int64_t o = 0; o < g.L; ++o) dpool[o] = (a[p] * gn[o] + b[p] * (pv[o] - m[p]) + d[p]) * inv_cnt[o];
                window_sum_transpose_add(dpool, g.H, g.W, g.s, g.Ho, g.Wo, tmp, gx);
              }
            }
          }
          if constexpr (!kDirect<T, A>) convert(g.hw, gx, gxs[e] + g.in(n, c));
        }
      }
    }
  });
}

}  // namespace

void forward(const MixedNode& node, const at::Tensor& w, bool bn, bool batch_stats, double eps, at::Tensor& mean,
             at::Tensor& invstd, at::Tensor& var_u, at::Tensor& out) {
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, out.scalar_type(), "mixed_node_forward", [&] {
    using A = at::opmath_type<scalar_t>;
    Stats<A> st;
    st.bn = bn;
    st.batch = batch_stats;
    st.eps = static_cast<A>(eps);
    if (bn) {
      st.mean = mean.data_ptr<A>();
      st.invstd = invstd.data_ptr<A>();
      if (batch_stats) st.var_u = var_u.data_ptr<A>();
    }
    forward_kernel<scalar_t, A>(node, w.const_data_ptr<A>(), st, out.data_ptr<scalar_t>());
  });
}

void backward(const MixedNode& node, const at::Tensor& grad, const at::Tensor& w, const at::Tensor& mean,
              const at::Tensor& invstd, bool bn, bool batch_stats, std::vector<at::Tensor>& grad_inputs,
              std::vector<at::Tensor>& grad_extras, at::Tensor& gw_part) {
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, grad.scalar_type(), "mixed_node_backward", [&] {
    using A = at::opmath_type<scalar_t>;
    auto gxs = mut_ptrs<scalar_t>(grad_inputs);
    auto gex = mut_ptrs<scalar_t>(grad_extras);
    backward_kernel<scalar_t, A>(node, grad.const_data_ptr<scalar_t>(), w.const_data_ptr<A>(),
                                 bn ? mean.const_data_ptr<A>() : nullptr, bn ? invstd.const_data_ptr<A>() : nullptr,
                                 batch_stats, gxs, gex, gw_part.data_ptr<A>());
  });
}

}  // namespace hdas::cpu::HDAS_CPU_ISA
