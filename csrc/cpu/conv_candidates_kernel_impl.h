// Kernel bodies of hdas::conv_candidates on the CPU, image by image. A BatchNorm's statistics span
// the batch, so each BatchNorm is a pass boundary: the forward runs the first halves of every
// branch (pass 1, statistics of z1), the second halves of the separable ones (pass 2, statistics of
// z2) and the mixed output (pass 3); the backward the final BatchNorms' sums (B1), the second halves
// backwards (B2, sums of the first BatchNorms), and the first halves backwards into the input (B3).
// Within a pass a thread owns an image: the padded relu(x) of all its channels, each branch's
// depthwise output and the pointwise GEMM's operand stay in its cache, and the BatchNorm
// statistics are taken while the pointwise output is there. Only z1, z2 (and the backward's dc)
// travel between passes through memory; depthwise outputs and ReLUs are recomputed where needed.
//
// Per-image partial statistics and weight gradients are combined in image order afterwards: the
// results do not depend on the number of threads.
//
// Included once per instruction set with HDAS_CPU_ISA naming the namespace.
#pragma once

#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <type_traits>
#include <vector>

#include "conv_candidates_kernel.h"
#include "plane_math.h"
#include "depthwise_plane.h"
#include "scratch.h"
#include "small_gemm.h"

namespace hdas::cpu::HDAS_CPU_ISA {
namespace conv {

template <typename A>
inline A relu(A v) { return v < A(0) ? A(0) : v; }  // NaN stays NaN, as torch.relu

template <typename A>
std::vector<A*> mut(std::vector<at::Tensor>& ts) {
  std::vector<A*> out;
  for (auto& t : ts) out.push_back(t.defined() ? t.data_ptr<A>() : nullptr);
  return out;
}

template <typename A>
std::vector<const A*> cptr(const std::vector<at::Tensor>& ts) {
  std::vector<const A*> out;
  for (const auto& t : ts) out.push_back(t.defined() ? t.const_data_ptr<A>() : nullptr);
  return out;
}

// The geometry of one call.
struct Geo {
  int64_t N, C, H, W, s, Ho, Wo, L, HW;
  PaddedPlane g1, g2;  // relu(x) at the stride; the second halves' inputs at stride 1
  explicit Geo(const ConvCandidates& cc)
      : N(cc.N), C(cc.C), H(cc.H), W(cc.W), s(cc.stride), Ho(cc.Ho), Wo(cc.Wo), L(cc.Ho * cc.Wo), HW(cc.H * cc.W),
        g1(cc.H, cc.W, kMaxConvPad, cc.stride), g2(cc.Ho, cc.Wo, kMaxConvPad, 1) {}
};

inline Taps taps(const ConvBranch& br, bool first) {
  return first ? Taps{br.k, br.dilation, br.pad} : Taps{br.k, 1, (br.k - 1) / 2};
}

// The affine normalisation of one BatchNorm channel: y = (z - mean) * scale + shift.
template <typename A>
struct Norm {
  A mean, scale, shift;
};

template <typename A>
Norm<A> norm(const A* mean, const A* invstd, const A* gamma, const A* beta, int64_t c) {
  const A sc = gamma ? gamma[c] * invstd[c] : invstd[c];
  return {mean[c], sc, beta ? beta[c] : A(0)};
}

// A padded plane set (C planes) with zero borders, in scratch slot kSlot.
template <typename A, int kSlot>
A* padded(const PaddedPlane& g, int64_t C) {
  A* p = scratch<A, kSlot>(C * g.size());
  std::fill(p, p + C * g.size(), A(0));
  return p;
}

// relu(BN1(z1)) of image n's channels into the padded planes D (the second halves' input).
template <typename A>
void second_input(const Geo& q, const A* z1n, const A* mean, const A* invstd, const A* gamma, const A* beta, A* D) {
  for (int64_t c = 0; c < q.C; ++c) {
    const Norm<A> nm = norm(mean, invstd, gamma, beta, c);
    fill_interior(q.g2, z1n + c * q.L, D + c * q.g2.size(),
                  [nm](A v) { return relu((v - nm.mean) * nm.scale + nm.shift); });
  }
}

// mean and sum of squared deviations of each channel of one image's [C, L] block.
template <typename A>
void image_stats(const Geo& q, const A* z, Stat* pmean, Stat* pm2) {
  for (int64_t c = 0; c < q.C; ++c) {
    const A* p = z + c * q.L;
    const Stat mu = stat_sum(q.L, p) / static_cast<Stat>(q.L);
    pmean[c] = mu;
    pm2[c] = stat_sum_sq_dev(q.L, p, mu);
  }
}

// Batch statistics of the slots `slots` from per-image partials [N, Z, C] (Chan's combination of
// equal-sized parts, in image order).
template <typename A>
void finish_stats(const Geo& q, int64_t Z, const std::vector<int64_t>& slots, const Stat* pmean, const Stat* pm2,
                  A eps, A* mean, A* invstd, A* var_u) {
  const Stat M = static_cast<Stat>(q.N * q.L);
  for (int64_t z : slots)
    for (int64_t c = 0; c < q.C; ++c) {
      Stat mu = 0;
      for (int64_t n = 0; n < q.N; ++n) mu += pmean[(n * Z + z) * q.C + c];
      mu /= static_cast<Stat>(q.N);
      Stat m2 = 0, dev = 0;
      for (int64_t n = 0; n < q.N; ++n) {
        const Stat d = pmean[(n * Z + z) * q.C + c] - mu;
        m2 += pm2[(n * Z + z) * q.C + c];
        dev += d * d;
      }
      m2 += dev * static_cast<Stat>(q.L);
      mean[z * q.C + c] = static_cast<A>(mu);
      invstd[z * q.C + c] = static_cast<A>(1 / std::sqrt(m2 / M + eps));
      var_u[z * q.C + c] = static_cast<A>(m2 / (M - 1));
    }
}

// ---- forward -----------------------------------------------------------------------------------

template <typename T, typename A>
void forward_kernel(const ConvCandidates& cc, bool batch_stats, A eps, A* mean, A* invstd, A* var_u,
                    std::vector<A*>& z1, std::vector<A*>& z2) {
  const Geo q(cc);
  const int64_t C = q.C, Z = cc.Z;
  const T* x = cc.x.const_data_ptr<T>();
  const auto dw1 = cptr<A>(cc.dw1), pw1 = cptr<A>(cc.pw1), dw2 = cptr<A>(cc.dw2), pw2 = cptr<A>(cc.pw2);
  const auto gamma = cptr<A>(cc.gamma), beta = cptr<A>(cc.beta);
  std::vector<Stat> pmean(batch_stats ? q.N * Z * C : 0), pm2(pmean.size());

  // Pass 1: every branch's first half.
  at::parallel_for(0, q.N, 1, [&](int64_t begin, int64_t end) {
    A* R = padded<A, 0>(q.g1, C);
    A* a = scratch<A, 1>(C * q.L);
    for (int64_t n = begin; n < end; ++n) {
      for (int64_t c = 0; c < C; ++c)
        fill_interior(q.g1, x + (n * C + c) * q.HW, R + c * q.g1.size(), [](T v) { return relu(static_cast<A>(v)); });
      for (int64_t b = 0; b < cc.B; ++b) {
        const ConvBranch& br = cc.branches[b];
        const Taps t = taps(br, true);
        for (int64_t c = 0; c < C; ++c)
          dw_forward(q.g1, t, R + c * q.g1.size(), dw1[b] + c * t.k * t.k, q.Ho, q.Wo, a + c * q.L);
        A* z = z1[b] + n * C * q.L;
        mm(C, C, q.L, pw1[b], a, z);
        if (batch_stats) {
          const int64_t slot = br.sep >= 0 ? br.slot1 : br.slot;
          image_stats(q, z, &pmean[(n * Z + slot) * C], &pm2[(n * Z + slot) * C]);
        }
      }
    }
  });
  std::vector<int64_t> first_slots, last_slots;
  for (const auto& br : cc.branches) {
    first_slots.push_back(br.sep >= 0 ? br.slot1 : br.slot);
    if (br.sep >= 0) last_slots.push_back(br.slot);
  }
  if (batch_stats) finish_stats(q, Z, first_slots, pmean.data(), pm2.data(), eps, mean, invstd, var_u);
  if (cc.S == 0) return;

  // Pass 2: the separable branches' second halves.
  at::parallel_for(0, q.N, 1, [&](int64_t begin, int64_t end) {
    A* D = padded<A, 2>(q.g2, C);
    A* e = scratch<A, 3>(C * q.L);
    for (int64_t n = begin; n < end; ++n)
      for (const ConvBranch& br : cc.branches) {
        if (br.sep < 0) continue;
        const Taps t = taps(br, false);
        const A* m = mean + br.slot1 * C;
        second_input(q, z1[&br - cc.branches.data()] + n * C * q.L, m, invstd + br.slot1 * C, gamma[br.slot1],
                     beta[br.slot1], D);
        for (int64_t c = 0; c < C; ++c)
          dw_forward(q.g2, t, D + c * q.g2.size(), dw2[br.sep] + c * t.k * t.k, q.Ho, q.Wo, e + c * q.L);
        A* z = z2[br.sep] + n * C * q.L;
        mm(C, C, q.L, pw2[br.sep], e, z);
        if (batch_stats) image_stats(q, z, &pmean[(n * Z + br.slot) * C], &pm2[(n * Z + br.slot) * C]);
      }
  });
  if (batch_stats) finish_stats(q, Z, last_slots, pmean.data(), pm2.data(), eps, mean, invstd, var_u);
}

// The last BatchNorm's input of branch b: z2 for a separable branch, else z1.
template <typename A>
const A* last_z(const ConvBranch& br, int64_t b, const std::vector<const A*>& z1, const std::vector<const A*>& z2) {
  return br.sep >= 0 ? z2[br.sep] : z1[b];
}

template <typename T, typename A>
void output_kernel(const ConvCandidates& cc, const A* mean, const A* invstd, const std::vector<const A*>& z1,
                   const std::vector<const A*>& z2, std::vector<T*>& out) {
  const Geo q(cc);
  const auto gamma = cptr<A>(cc.gamma), beta = cptr<A>(cc.beta);
  const A* w = cc.weights.const_data_ptr<A>();
  at::parallel_for(0, q.N * q.C, 1, [&](int64_t begin, int64_t end) {
    A* acc = scratch<A, 4>(q.L);
    for (int64_t plane = begin; plane < end; ++plane) {
      const int64_t c = plane % q.C;
      for (int64_t e = 0; e < cc.E; ++e) {
        std::fill(acc, acc + q.L, A(0));
        for (int64_t b = 0; b < cc.B; ++b) {
          const ConvBranch& br = cc.branches[b];
          if (br.edge != e) continue;
          const Norm<A> nm = norm(mean + br.slot * q.C, invstd + br.slot * q.C, gamma[br.slot], beta[br.slot], c);
          const A a = w[b] * nm.scale, sh = w[b] * nm.shift, mu = nm.mean;
          const A* __restrict z = last_z(br, b, z1, z2) + plane * q.L;
          for (int64_t i = 0; i < q.L; ++i) acc[i] += (z[i] - mu) * a + sh;
        }
        convert(q.L, acc, out[e] + plane * q.L);
      }
    }
  });
}

// ---- backward ----------------------------------------------------------------------------------
//
// For a BatchNorm y = (z - mean) * invstd * gamma + beta, weighted by w, and the gradient g of
// w * y: S1 = sum g, S2 = sum g * (z - mean) * invstd over a channel, and
//   dz = a*g + b*z + d,  a = w*gamma*invstd;  b = -a*invstd*S2/M, d = -a*S1/M - b*mean (batch
//   statistics; 0 with running ones);  grad w += gamma*S2 + beta*S1;  grad gamma = w*S2, beta = w*S1.

// dz = a * g + b * (z - m) + d: centred on the batch mean (m), as b * z + (d - b * m) would cancel
// in float32 wherever a channel's mean is large against its spread.
template <typename A>
struct Coef {
  std::vector<A> a, b, d, m;  // [slot, C]
  void resize(int64_t n) { a.assign(n, 0); b.assign(n, 0); d.assign(n, 0); m.assign(n, 0); }
};

// The coefficients of slot z from S1, S2 (sums over the batch, [C]); the affine gradients into gg/gb.
template <typename A>
void bn_backward_coef(const Geo& q, int64_t z, A w, bool batch_stats, const A* mean, const A* invstd, const A* gamma,
                      const A* beta, const Stat* S1, const Stat* S2, Coef<A>& k, A* grad_w, A* gg, A* gb) {
  const Stat M = static_cast<Stat>(q.N * q.L);
  Stat gw = 0;
  for (int64_t c = 0; c < q.C; ++c) {
    const Stat gm = gamma ? gamma[c] : A(1), is = invstd[z * q.C + c];
    gw += gm * S2[c] + (beta ? beta[c] * S1[c] : Stat(0));
    if (gg) gg[c] = static_cast<A>(w * S2[c]);
    if (gb) gb[c] = static_cast<A>(w * S1[c]);
    const Stat a = w * gm * is;
    const int64_t i = z * q.C + c;
    k.a[i] = static_cast<A>(a);
    if (batch_stats) {
      k.b[i] = static_cast<A>(-a * is * S2[c] / M);
      k.d[i] = static_cast<A>(-a * S1[c] / M);
      k.m[i] = mean[i];
    }
  }
  if (grad_w) *grad_w = static_cast<A>(gw);
}

template <typename T, typename A>
void backward_kernel(const ConvCandidates& cc, const std::vector<const T*>& g, bool batch_stats, const A* mean,
                     const A* invstd, const std::vector<const A*>& z1, const std::vector<const A*>& z2,
                     std::array<bool, 4> needs, ConvGrads& grads) {
  const Geo q(cc);
  const int64_t C = q.C, L = q.L, B = cc.B, S = cc.S, Z = cc.Z, E = cc.E, CL = C * L;
  const bool need_x = needs[0], need_conv = needs[2];
  const auto dw1 = cptr<A>(cc.dw1), pw1 = cptr<A>(cc.pw1), dw2 = cptr<A>(cc.dw2), pw2 = cptr<A>(cc.pw2);
  const auto gamma = cptr<A>(cc.gamma), beta = cptr<A>(cc.beta);
  const A* w = cc.weights.const_data_ptr<A>();
  const auto opts = cc.x.options().dtype(c10::CppTypeToScalarType<A>::value);

  // B1: per image, S1 of every edge's gradient and S2 (uncentred by invstd) of every branch.
  std::vector<Stat> ps1(q.N * E * C), ps2(q.N * B * C);
  at::parallel_for(0, q.N, 1, [&](int64_t begin, int64_t end) {
    for (int64_t n = begin; n < end; ++n) {
      for (int64_t e = 0; e < E; ++e)
        for (int64_t c = 0; c < C; ++c) {
          const T* gp = g[e] + n * CL + c * L;
          ps1[(n * E + e) * C + c] = stat_sum(L, gp);
        }
      for (int64_t b = 0; b < B; ++b) {
        const ConvBranch& br = cc.branches[b];
        for (int64_t c = 0; c < C; ++c) {
          const T* gp = g[br.edge] + n * CL + c * L;
          const A* zp = last_z(br, b, z1, z2) + n * CL + c * L;
          const Stat mu = mean[br.slot * C + c];
          ps2[(n * B + b) * C + c] =
              lane_sum<Stat>(L, [gp, zp, mu](int64_t i) { return static_cast<Stat>(gp[i]) * (zp[i] - mu); });
        }
      }
    }
  });
  Coef<A> k;
  k.resize(Z * C);
  std::vector<Stat> s1(C), s2(C);
  A* gwp = grads.weights.defined() ? grads.weights.data_ptr<A>() : nullptr;
  for (int64_t b = 0; b < B; ++b) {
    const ConvBranch& br = cc.branches[b];
    for (int64_t c = 0; c < C; ++c) {
      Stat a1 = 0, a2 = 0;
      for (int64_t n = 0; n < q.N; ++n) {
        a1 += ps1[(n * E + br.edge) * C + c];
        a2 += ps2[(n * B + b) * C + c];
      }
      s1[c] = a1;
      s2[c] = a2 * invstd[br.slot * C + c];
    }
    A* gg = grads.gamma[br.slot].defined() ? grads.gamma[br.slot].data_ptr<A>() : nullptr;
    A* gb = grads.beta[br.slot].defined() ? grads.beta[br.slot].data_ptr<A>() : nullptr;
    bn_backward_coef(q, br.slot, w[b], batch_stats, mean, invstd, gamma[br.slot], beta[br.slot], s1.data(), s2.data(),
                     k, gwp ? gwp + b : nullptr, gg, gb);
  }
  if (!need_x && !need_conv && !(needs[3] && S > 0)) return;

  // Per-image partial weight gradients, summed in image order at the end.
  at::Tensor gdw1, gpw1, gdw2, gpw2;
  std::vector<int64_t> off1(B), off2(S);
  int64_t taps1 = 0, taps2 = 0;
  for (int64_t b = 0; b < B; ++b) {
    const ConvBranch& br = cc.branches[b];
    off1[b] = taps1;
    taps1 += C * br.k * br.k;
    if (br.sep >= 0) {
      off2[br.sep] = taps2;
      taps2 += C * br.k * br.k;
    }
  }
  if (need_conv) {
    gdw1 = at::zeros({q.N, taps1}, opts);
    gpw1 = at::empty({q.N, B, C, C}, opts);
    gdw2 = at::zeros({q.N, taps2}, opts);
    gpw2 = at::empty({q.N, S, C, C}, opts);
  }
  A* gdw1p = need_conv ? gdw1.data_ptr<A>() : nullptr;
  A* gpw1p = need_conv ? gpw1.data_ptr<A>() : nullptr;
  A* gdw2p = need_conv ? gdw2.data_ptr<A>() : nullptr;
  A* gpw2p = need_conv ? gpw2.data_ptr<A>() : nullptr;

  // B2: the separable branches' second halves backwards, to dc (the gradient of BN1's output
  // after the ReLU's mask) and the first BatchNorms' sums.
  std::vector<at::Tensor> dc;
  std::vector<Stat> pc1(q.N * S * C), pc2(q.N * S * C);
  if (S > 0) {
    for (int64_t j = 0; j < S; ++j) dc.push_back(at::empty({q.N, C, q.Ho, q.Wo}, opts));
    const auto dcp = mut<A>(dc);
    at::parallel_for(0, q.N, 1, [&](int64_t begin, int64_t end) {
      A* D = padded<A, 0>(q.g2, C);
      A* dD = scratch<A, 1>(C * q.g2.size());
      A* df = scratch<A, 2>(CL);
      A* e = scratch<A, 3>(CL);
      A* de = scratch<A, 4>(CL);
      for (int64_t n = begin; n < end; ++n)
        for (int64_t b = 0; b < B; ++b) {
          const ConvBranch& br = cc.branches[b];
          if (br.sep < 0) continue;
          const int64_t j = br.sep, s = br.slot, s1i = br.slot1;
          const Taps t = taps(br, false);
          const T* gn = g[br.edge] + n * CL;
          const A* zn = z2[j] + n * CL;
          for (int64_t c = 0; c < C; ++c) {
            const A a = k.a[s * C + c], bb = k.b[s * C + c], d = k.d[s * C + c], m = k.m[s * C + c];
            const T* gp = gn + c * L;
            const A* zp = zn + c * L;
            A* o = df + c * L;
            for (int64_t i = 0; i < L; ++i) o[i] = a * static_cast<A>(gp[i]) + bb * (zp[i] - m) + d;
          }
          const A* z1n = z1[b] + n * CL;
          second_input(q, z1n, mean + s1i * C, invstd + s1i * C, gamma[s1i], beta[s1i], D);
          if (need_conv) {
            for (int64_t c = 0; c < C; ++c)
              dw_forward(q.g2, t, D + c * q.g2.size(), dw2[j] + c * t.k * t.k, q.Ho, q.Wo, e + c * L);
            mm_nt(C, C, L, df, e, gpw2p + (n * S + j) * C * C);
          }
          mm_t(C, C, L, pw2[j], df, de);
          std::fill(dD, dD + C * q.g2.size(), A(0));
          for (int64_t c = 0; c < C; ++c) {
            const A* wc = dw2[j] + c * t.k * t.k;
            dw_transpose_add(q.g2, t, de + c * L, wc, q.Ho, q.Wo, dD + c * q.g2.size());
            if (need_conv)
              dw_weight_grad_add(q.g2, t, de + c * L, D + c * q.g2.size(), q.Ho, q.Wo,
                                 gdw2p + n * taps2 + off2[j] + c * t.k * t.k);
            const Norm<A> nm = norm(mean + s1i * C, invstd + s1i * C, gamma[s1i], beta[s1i], c);
            const A* zp = z1n + c * L;
            A* o = dcp[j] + n * CL + c * L;
            read_interior(q.g2, dD + c * q.g2.size(), o, [zp, nm](A v, int64_t i) {
              return (zp[i] - nm.mean) * nm.scale + nm.shift > A(0) ? v : A(0);
            });
            pc1[(n * S + j) * C + c] = stat_sum(L, o);
            const A mu = nm.mean;
            pc2[(n * S + j) * C + c] =
                lane_sum<Stat>(L, [o, zp, mu](int64_t i) { return static_cast<Stat>(o[i]) * (zp[i] - mu); });
          }
        }
    });
    for (int64_t b = 0; b < B; ++b) {
      const ConvBranch& br = cc.branches[b];
      if (br.sep < 0) continue;
      for (int64_t c = 0; c < C; ++c) {
        Stat a1 = 0, a2 = 0;
        for (int64_t n = 0; n < q.N; ++n) {
          a1 += pc1[(n * S + br.sep) * C + c];
          a2 += pc2[(n * S + br.sep) * C + c];
        }
        s1[c] = a1;
        s2[c] = a2 * invstd[br.slot1 * C + c];
      }
      A* gg = grads.gamma[br.slot1].defined() ? grads.gamma[br.slot1].data_ptr<A>() : nullptr;
      A* gb = grads.beta[br.slot1].defined() ? grads.beta[br.slot1].data_ptr<A>() : nullptr;
      bn_backward_coef(q, br.slot1, A(1), batch_stats, mean, invstd, gamma[br.slot1], beta[br.slot1], s1.data(),
                       s2.data(), k, static_cast<A*>(nullptr), gg, gb);
    }
  }

  // B3: every branch's first half backwards, into relu(x)'s padded planes, then x.
  if (need_x || need_conv) {
    const auto dcp = cptr<A>(dc);
    const T* x = cc.x.const_data_ptr<T>();
    T* gx = need_x ? grads.x.data_ptr<T>() : nullptr;
    at::parallel_for(0, q.N, 1, [&](int64_t begin, int64_t end) {
      A* R = padded<A, 5>(q.g1, C);
      A* dR = scratch<A, 6>(C * q.g1.size());
      A* dz = scratch<A, 7>(CL);
      A* a = scratch<A, 8>(CL);
      A* da = scratch<A, 9>(CL);
      A* gxa = scratch<A, 10>(std::is_same_v<T, A> ? 0 : q.HW);
      for (int64_t n = begin; n < end; ++n) {
        for (int64_t c = 0; c < C; ++c)
          fill_interior(q.g1, x + (n * C + c) * q.HW, R + c * q.g1.size(), [](T v) { return relu(static_cast<A>(v)); });
        std::fill(dR, dR + C * q.g1.size(), A(0));
        for (int64_t b = 0; b < B; ++b) {
          const ConvBranch& br = cc.branches[b];
          const Taps t = taps(br, true);
          const int64_t s = br.sep >= 0 ? br.slot1 : br.slot;
          const A* zn = z1[b] + n * CL;
          for (int64_t c = 0; c < C; ++c) {
            const A ka = k.a[s * C + c], kb = k.b[s * C + c], kd = k.d[s * C + c], km = k.m[s * C + c];
            const A* zp = zn + c * L;
            A* o = dz + c * L;
            if (br.sep >= 0) {
              const A* dp = dcp[br.sep] + n * CL + c * L;
              for (int64_t i = 0; i < L; ++i) o[i] = ka * dp[i] + kb * (zp[i] - km) + kd;
            } else {
              const T* gp = g[br.edge] + n * CL + c * L;
              for (int64_t i = 0; i < L; ++i) o[i] = ka * static_cast<A>(gp[i]) + kb * (zp[i] - km) + kd;
            }
          }
          if (need_conv) {
            for (int64_t c = 0; c < C; ++c)
              dw_forward(q.g1, t, R + c * q.g1.size(), dw1[b] + c * t.k * t.k, q.Ho, q.Wo, a + c * L);
            mm_nt(C, C, L, dz, a, gpw1p + (n * B + b) * C * C);
          }
          mm_t(C, C, L, pw1[b], dz, da);
          for (int64_t c = 0; c < C; ++c) {
            const A* wc = dw1[b] + c * t.k * t.k;
            if (need_x) dw_transpose_add(q.g1, t, da + c * L, wc, q.Ho, q.Wo, dR + c * q.g1.size());
            if (need_conv)
              dw_weight_grad_add(q.g1, t, da + c * L, R + c * q.g1.size(), q.Ho, q.Wo,
                                 gdw1p + n * taps1 + off1[b] + c * t.k * t.k);
          }
        }
        if (!need_x) continue;
        for (int64_t c = 0; c < C; ++c) {
          const T* xp = x + (n * C + c) * q.HW;
          auto mask = [xp](A v, int64_t i) { return static_cast<A>(xp[i]) > A(0) ? v : A(0); };
          if constexpr (std::is_same_v<T, A>) {
            read_interior(q.g1, dR + c * q.g1.size(), gx + (n * C + c) * q.HW, mask);
          } else {
            read_interior(q.g1, dR + c * q.g1.size(), gxa, mask);
            convert(q.HW, gxa, gx + (n * C + c) * q.HW);
          }
        }
      }
    });
  }
  if (!need_conv) return;
  const auto sum1 = gdw1.sum(0), sum2 = gdw2.sum(0), p1 = gpw1.sum(0), p2 = gpw2.sum(0);
  for (int64_t b = 0; b < B; ++b) {
    const ConvBranch& br = cc.branches[b];
    const int64_t kk = br.k * br.k;
    grads.dw1[b].copy_(sum1.narrow(0, off1[b], C * kk).view(grads.dw1[b].sizes()));
    grads.pw1[b].copy_(p1[b].view(grads.pw1[b].sizes()));
    if (br.sep >= 0) {
      grads.dw2[br.sep].copy_(sum2.narrow(0, off2[br.sep], C * kk).view(grads.dw2[br.sep].sizes()));
      grads.pw2[br.sep].copy_(p2[br.sep].view(grads.pw2[br.sep].sizes()));
    }
  }
}

}  // namespace conv

void conv_forward(const ConvCandidates& cc, bool batch_stats, double eps, ConvStats& stats,
                  std::vector<at::Tensor>& z1, std::vector<at::Tensor>& z2) {
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, cc.x.scalar_type(), "conv_candidates_forward", [&] {
    using A = at::opmath_type<scalar_t>;
    auto zp1 = conv::mut<A>(z1), zp2 = conv::mut<A>(z2);
    A* var_u = batch_stats ? stats.var_u.data_ptr<A>() : nullptr;
    conv::forward_kernel<scalar_t, A>(cc, batch_stats, static_cast<A>(eps), stats.mean.data_ptr<A>(),
                                      stats.invstd.data_ptr<A>(), var_u, zp1, zp2);
  });
}

void conv_output(const ConvCandidates& cc, const ConvStats& stats, const std::vector<at::Tensor>& z1,
                 const std::vector<at::Tensor>& z2, std::vector<at::Tensor>& out) {
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, cc.x.scalar_type(), "conv_candidates_output", [&] {
    using A = at::opmath_type<scalar_t>;
    auto op = conv::mut<scalar_t>(out);
    conv::output_kernel<scalar_t, A>(cc, stats.mean.const_data_ptr<A>(), stats.invstd.const_data_ptr<A>(),
                                     conv::cptr<A>(z1), conv::cptr<A>(z2), op);
  });
}

void conv_backward(const ConvCandidates& cc, const std::vector<at::Tensor>& grad_out, bool batch_stats,
                   const at::Tensor& mean, const at::Tensor& invstd, const std::vector<at::Tensor>& z1,
                   const std::vector<at::Tensor>& z2, std::array<bool, 4> needs, ConvGrads& grads) {
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, cc.x.scalar_type(), "conv_candidates_backward", [&] {
    using A = at::opmath_type<scalar_t>;
    conv::backward_kernel<scalar_t, A>(cc, conv::cptr<scalar_t>(grad_out), batch_stats, mean.const_data_ptr<A>(),
                                       invstd.const_data_ptr<A>(), conv::cptr<A>(z1), conv::cptr<A>(z2), needs,
                                       grads);
  });
}

}  // namespace hdas::cpu::HDAS_CPU_ISA
