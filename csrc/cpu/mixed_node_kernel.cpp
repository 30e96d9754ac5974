// CPU kernels of hdas::mixed_node. Work is split by (n, c) plane with at::parallel_for; each
// plane's pools are computed into thread-local buffers, so nothing edge-sized is ever stored.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include "../mixed_node.h"
#include "plane_math.h"
#include "pool_plane.h"

namespace hdas::cpu {
namespace {

template <typename T>
std::vector<const T*> ptrs(const std::vector<at::Tensor>& ts) {
  std::vector<const T*> out;
  for (const auto& t : ts) out.push_back(t.const_data_ptr<T>());
  return out;
}

// Per-thread scratch: a row-pass buffer, two planes and the argmax buffers.
template <typename A>
struct Scratch {
  std::vector<A> tmp, a, b, tv, mv;
  std::vector<int32_t> ti, idx;
  explicit Scratch(const MixedNode& nd)
      : tmp(nd.H * std::max(nd.W, nd.Wo)),
        a(std::max(nd.plane_out(), nd.H * nd.W)),
        b(std::max(nd.plane_out(), nd.H * nd.W)),
        tv(nd.H * nd.Wo),
        mv(nd.plane_out()),
        ti(nd.H * nd.Wo),
        idx(nd.plane_out()) {}
};

template <typename T, typename A>
void pool_into(int64_t code, const T* x, const MixedNode& nd, const std::vector<A>& inv_cnt, Scratch<A>& s, A* out) {
  if (code == kMaxPool)
    pool_plane<true>(x, nd.H, nd.W, nd.stride, nd.Ho, nd.Wo, inv_cnt.data(), s.tmp.data(), out);
  else
    pool_plane<false>(x, nd.H, nd.W, nd.stride, nd.Ho, nd.Wo, inv_cnt.data(), s.tmp.data(), out);
}

template <typename A>
std::vector<A> node_inverse_counts(const MixedNode& nd) {
  return inverse_counts<A>(nd.H, nd.W, nd.stride, nd.Ho, nd.Wo);
}

// Visits every output position with the input element it sits on (stride-subsampled).
template <typename F>
inline void for_outputs(const MixedNode& nd, F f) {
  for (int64_t oh = 0; oh < nd.Ho; ++oh)
    for (int64_t ow = 0; ow < nd.Wo; ++ow) f(oh * nd.Wo + ow, oh * nd.stride * nd.W + ow * nd.stride);
}

void pool_stats(const MixedNode& nd, at::Tensor& partial) {
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, nd.inputs[0].scalar_type(), "mixed_node_pool_stats", [&] {
    using A = at::opmath_type<scalar_t>;
    const auto xs = ptrs<scalar_t>(nd.inputs);
    const auto inv_cnt = node_inverse_counts<A>(nd);
    A* out = partial.data_ptr<A>();
    const int64_t hw = nd.H * nd.W, L = nd.plane_out();
    at::parallel_for(0, nd.N * nd.C, 1, [&](int64_t begin, int64_t end) {
      Scratch<A> s(nd);
      for (int64_t plane = begin; plane < end; ++plane) {
        A* o = out + plane * nd.E * nd.Q * 2;
        for (int64_t e = 0; e < nd.E; ++e)
          for (int64_t p = 0; p < nd.P; ++p) {
            const int64_t q = nd.pool_slot[p];
            if (q < 0) continue;
            pool_into(nd.prims[p], xs[e] + plane * hw, nd, inv_cnt, s, s.a.data());
            const A mean = sum(L, s.a.data()) / static_cast<A>(L);
            o[(e * nd.Q + q) * 2] = mean;
            o[(e * nd.Q + q) * 2 + 1] = sum_sq_dev(L, s.a.data(), mean);
          }
      }
    });
  });
}

void apply(const MixedNode& nd, const at::Tensor& w, const at::Tensor& mean, const at::Tensor& invstd,
           at::Tensor& out) {
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, nd.inputs[0].scalar_type(), "mixed_node_apply", [&] {
    using A = at::opmath_type<scalar_t>;
    const auto xs = ptrs<scalar_t>(nd.inputs);
    const auto ex = ptrs<scalar_t>(nd.extras);
    const auto inv_cnt = node_inverse_counts<A>(nd);
    const A* wp = w.const_data_ptr<A>();
    const A* mp = mean.defined() ? mean.const_data_ptr<A>() : nullptr;
    const A* ip = invstd.defined() ? invstd.const_data_ptr<A>() : nullptr;
    scalar_t* op = out.data_ptr<scalar_t>();
    const int64_t hw = nd.H * nd.W, L = nd.plane_out();
    at::parallel_for(0, nd.N * nd.C, 1, [&](int64_t begin, int64_t end) {
      Scratch<A> s(nd);
      A* acc = s.b.data();
      for (int64_t plane = begin; plane < end; ++plane) {
        const int64_t c = plane % nd.C;
        std::fill(acc, acc + L, A(0));
        for (int64_t e = 0; e < nd.E; ++e) {
          const scalar_t* x = xs[e] + plane * hw;
          for (int64_t p = 0; p < nd.P; ++p) {
            const int64_t code = nd.prims[p];
            A coef = wp[e * nd.P + p];
            if (code == kNone) {
              // x * 0, not 0: NaN and inf propagate as in DARTS' Zero op.
              for_outputs(nd, [&](int64_t o, int64_t i) { acc[o] += coef * (static_cast<A>(x[i]) * A(0)); });
            } else if (code == kSkip) {
              axpy(L, coef, x, acc);
            } else if (code == kExtra) {
              axpy(L, coef, ex[e * nd.K + nd.extra_slot[p]] + plane * L, acc);
            } else {
              pool_into(code, x, nd, inv_cnt, s, s.a.data());
              A shift = 0;
              if (mp) {
                const int64_t k = (e * nd.Q + nd.pool_slot[p]) * nd.C + c;
                coef *= ip[k];
                shift = -coef * mp[k];
              }
              axpb(L, coef, s.a.data(), shift, acc);
            }
          }
        }
        convert(L, acc, op + plane * L);
      }
    });
  });
}

void backward_reduce(const MixedNode& nd, const at::Tensor& grad, const at::Tensor& w, at::Tensor& partial,
                     std::vector<at::Tensor>& grad_extras) {
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, nd.inputs[0].scalar_type(), "mixed_node_backward_reduce", [&] {
    using A = at::opmath_type<scalar_t>;
    const auto xs = ptrs<scalar_t>(nd.inputs);
    const auto ex = ptrs<scalar_t>(nd.extras);
    std::vector<scalar_t*> gex;
    for (auto& t : grad_extras) gex.push_back(t.data_ptr<scalar_t>());
    const scalar_t* gp = grad.const_data_ptr<scalar_t>();
    const auto inv_cnt = node_inverse_counts<A>(nd);
    const A* wp = w.const_data_ptr<A>();
    A* out = partial.data_ptr<A>();
    const int64_t hw = nd.H * nd.W, L = nd.plane_out(), S = nd.E * nd.P + 1;
    at::parallel_for(0, nd.N * nd.C, 1, [&](int64_t begin, int64_t end) {
      Scratch<A> s(nd);
      A* g = s.b.data();
      for (int64_t plane = begin; plane < end; ++plane) {
        A* o = out + plane * S;
        const scalar_t* gsrc = gp + plane * L;
        convert(L, gsrc, g);
        o[S - 1] = sum(L, g);
        for (int64_t e = 0; e < nd.E; ++e) {
          const scalar_t* x = xs[e] + plane * hw;
          for (int64_t p = 0; p < nd.P; ++p) {
            const int64_t code = nd.prims[p];
            A total = 0;
            if (code == kNone) {
              for_outputs(nd, [&](int64_t oi, int64_t i) { total += g[oi] * (static_cast<A>(x[i]) * A(0)); });
            } else if (code == kSkip) {
              total = dot(L, g, x);
            } else if (code == kExtra) {
              const int64_t k = e * nd.K + nd.extra_slot[p];
              total = scale_and_dot(L, wp[e * nd.P + p], g, ex[k] + plane * L, gex[k] + plane * L);
            } else {
              pool_into(code, x, nd, inv_cnt, s, s.a.data());
              total = dot(L, g, s.a.data());
            }
            o[e * nd.P + p] = total;
          }
        }
      }
    });
  });
}

void finalize(const MixedNode& nd, const at::Tensor& sums, const at::Tensor& w, const at::Tensor& mean,
              const at::Tensor& invstd, bool batch_stats, at::Tensor& grad_w, at::Tensor& A_, at::Tensor& B_,
              at::Tensor& D_) {
  AT_DISPATCH_FLOATING_TYPES(sums.scalar_type(), "mixed_node_finalize", [&] {
    using A = scalar_t;
    const A* sp = sums.const_data_ptr<A>();
    const A* wp = w.const_data_ptr<A>();
    const A* mp = mean.defined() ? mean.const_data_ptr<A>() : nullptr;
    const A* ip = invstd.defined() ? invstd.const_data_ptr<A>() : nullptr;
    A *gw = grad_w.data_ptr<A>(), *a = A_.data_ptr<A>(), *b = B_.data_ptr<A>(), *d = D_.data_ptr<A>();
    const int64_t S = nd.E * nd.P + 1;
    const A M = static_cast<A>(nd.count());
    for (int64_t e = 0; e < nd.E; ++e)
      for (int64_t p = 0; p < nd.P; ++p) {
        const int64_t q = nd.pool_slot[p];
        const A wep = wp[e * nd.P + p];
        A total = 0;
        for (int64_t c = 0; c < nd.C; ++c) {
          const A sgp = sp[c * S + e * nd.P + p], sg = sp[c * S + S - 1];
          const int64_t j = (e * nd.P + p) * nd.C + c;
          if (q >= 0 && mp) {
            const int64_t k = (e * nd.Q + q) * nd.C + c;
            const A mu = mp[k], is = ip[k], k1 = wep * is;
            const A gy = is * (sgp - mu * sg);  // sum over the channel of grad * BN output
            total += gy;
            a[j] = k1;
            if (batch_stats) {
              const A mgy = gy / M;
              b[j] = -k1 * is * mgy;
              d[j] = -k1 * sg / M + k1 * mu * is * mgy;
            } else {
              b[j] = 0;
              d[j] = 0;
            }
          } else {
            total += sgp;
            a[j] = wep;
            b[j] = 0;
            d[j] = 0;
          }
        }
        gw[e * nd.P + p] = total;
      }
  });
}

void backward_input(const MixedNode& nd, const at::Tensor& grad, const at::Tensor& w, const at::Tensor& A_,
                    const at::Tensor& B_, const at::Tensor& D_, std::vector<at::Tensor>& grad_inputs) {
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, nd.inputs[0].scalar_type(), "mixed_node_backward_input", [&] {
    using A = at::opmath_type<scalar_t>;
    const auto xs = ptrs<scalar_t>(nd.inputs);
    std::vector<scalar_t*> gxs;
    for (auto& t : grad_inputs) gxs.push_back(t.data_ptr<scalar_t>());
    const scalar_t* gp = grad.const_data_ptr<scalar_t>();
    const A *ap = A_.const_data_ptr<A>(), *bp = B_.const_data_ptr<A>(), *dp = D_.const_data_ptr<A>();
    const auto inv_cnt = node_inverse_counts<A>(nd);
    const int64_t hw = nd.H * nd.W, L = nd.plane_out();
    at::parallel_for(0, nd.N * nd.C, 1, [&](int64_t begin, int64_t end) {
      Scratch<A> s(nd);
      std::vector<A> g(L), gx(hw);
      for (int64_t plane = begin; plane < end; ++plane) {
        const int64_t c = plane % nd.C;
        convert(L, gp + plane * L, g.data());
        for (int64_t e = 0; e < nd.E; ++e) {
          const scalar_t* x = xs[e] + plane * hw;
          std::fill(gx.begin(), gx.end(), A(0));
          for (int64_t p = 0; p < nd.P; ++p) {
            const int64_t code = nd.prims[p], j = (e * nd.P + p) * nd.C + c;
            const A a = ap[j], b = bp[j], d = dp[j];
            if (code == kSkip) {
              axpy(L, a, g.data(), gx.data());
            } else if (code == kMaxPool) {
              argmax_plane(x, nd.H, nd.W, nd.stride, nd.Ho, nd.Wo, s.tv.data(), s.ti.data(), s.mv.data(), s.idx.data());
              for (int64_t o = 0; o < L; ++o) gx[s.idx[o]] += a * g[o] + b * s.mv[o] + d;
            } else if (code == kAvgPool) {
              A* dpool = s.a.data();
              if (b != A(0)) {
                pool_into(code, x, nd, inv_cnt, s, dpool);
                for (int64_t i = 0; i < L; ++i) dpool[i] = (a * g[i] + b * dpool[i] + d) * inv_cnt[i];
              } else {
                for (int64_t i = 0; i < L; ++i) dpool[i] = (a * g[i] + d) * inv_cnt[i];
              }
              window_sum_transpose_add(dpool, nd.H, nd.W, nd.stride, nd.Ho, nd.Wo, s.tmp.data(), s.b.data(), gx.data());
            }
          }
          convert(hw, gx.data(), gxs[e] + plane * hw);
        }
      }
    });
  });
}

const MixedNodeKernels kKernels{pool_stats, apply, backward_reduce, finalize, backward_input};

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> forward_cpu(
    const std::vector<at::Tensor>& inputs, const at::Tensor& weights, c10::IntArrayRef prims,
    const std::vector<at::Tensor>& extras, int64_t stride, bool pool_bn, bool batch_stats,
    const std::optional<at::Tensor>& running_mean, const std::optional<at::Tensor>& running_var, double eps) {
  return mixed_node_forward(kKernels, at::MemoryFormat::Contiguous, inputs, weights, prims, extras, stride,
                            pool_bn, batch_stats, running_mean, running_var, eps);
}

std::tuple<std::vector<at::Tensor>, at::Tensor, std::vector<at::Tensor>> backward_cpu(
    const at::Tensor& grad_out, const std::vector<at::Tensor>& inputs, const at::Tensor& weights,
    c10::IntArrayRef prims, const std::vector<at::Tensor>& extras, int64_t stride, bool pool_bn, bool batch_stats,
    const at::Tensor& save_mean, const at::Tensor& save_invstd) {
  return mixed_node_backward(kKernels, at::MemoryFormat::Contiguous, grad_out, inputs, weights, prims, extras,
                             stride, pool_bn, batch_stats, save_mean, save_invstd);
}

}  // namespace

TORCH_LIBRARY_IMPL(hdas, CPU, m) {
  m.impl("mixed_node", &forward_cpu);
  m.impl("mixed_node_backward", &backward_cpu);
}

}  // namespace hdas::cpu
