// Device code of hdas::mixed_node: geometry, pools and the kernels. Torch-free (see device.cuh):
// included by the launcher mixed_node_kernel.cu for nvcc and by the emulated build for g++.
// Tensors arrive contiguous in one layout (NCHW or channels_last); pools are recomputed from the
// inputs wherever they are needed.
#pragma once

#include <cstdint>

#include "../mixed_node_codes.h"
#include "device.cuh"

namespace hdas::cuda {

// Mixed channel c of the inputs and the output. With G channel groups (partial channels) the inputs,
// the output and grad_out have Cx = C*G channels: mixed channel c is input channel c and output
// channel c*G; the extras (and their gradients) have the C mixed channels. G = 1: Cx = C.
struct Geo {
  int64_t N, C, H, W, Ho, Wo, s;
  bool cl;  // channels_last
  int64_t Cx, G;
  __device__ int64_t in(int64_t n, int64_t c, int64_t h, int64_t w) const {
    return cl ? ((n * H + h) * W + w) * Cx + c : ((n * Cx + c) * H + h) * W + w;
  }
  __device__ int64_t out(int64_t n, int64_t c, int64_t h, int64_t w) const {
    return cl ? ((n * Ho + h) * Wo + w) * Cx + c * G : ((n * Cx + c * G) * Ho + h) * Wo + w;
  }
  __device__ int64_t ext(int64_t n, int64_t c, int64_t h, int64_t w) const {
    return cl ? ((n * Ho + h) * Wo + w) * C + c : ((n * C + c) * Ho + h) * Wo + w;
  }
  // Mixed output element at linear position i of the extras' memory order.
  __device__ void decode_out(int64_t i, int64_t& n, int64_t& c, int64_t& h, int64_t& w) const {
    if (cl) { c = i % C; i /= C; w = i % Wo; i /= Wo; h = i % Ho; n = i / Ho; }
    else { w = i % Wo; i /= Wo; h = i % Ho; i /= Ho; c = i % C; n = i / C; }
  }
  // Mixed input element at linear position i of an [N, C, H, W] tensor's memory order.
  __device__ void decode_in(int64_t i, int64_t& n, int64_t& c, int64_t& h, int64_t& w) const {
    if (cl) { c = i % C; i /= C; w = i % W; i /= W; h = i % H; n = i / H; }
    else { w = i % W; i /= W; h = i % H; i /= H; c = i % C; n = i / C; }
  }
};

// The primitives: P codes and their pool and extra slots (-1 where none), in device memory.
struct Meta {
  int E, P, Q, K;
  const int64_t* prim;
  const int64_t* pool_slot;
  const int64_t* extra_slot;
};

// The data pointers of E or E*K tensors, in device memory.
template <typename T>
struct Ptrs {
  T* const* p;
};

__device__ inline int64_t lo(int64_t o, int64_t s) { return o * s - 1 > 0 ? o * s - 1 : 0; }
__device__ inline int64_t hi(int64_t o, int64_t s, int64_t n) { return o * s + 1 < n - 1 ? o * s + 1 : n - 1; }

// 3x3 pool at output (n, c, oh, ow); max follows PyTorch (NaN wins), average excludes padding.
template <typename A, typename T>
__device__ A pool_at(bool is_max, const T* x, const Geo& g, int64_t n, int64_t c, int64_t oh, int64_t ow) {
  const int64_t h0 = lo(oh, g.s), h1 = hi(oh, g.s, g.H), w0 = lo(ow, g.s), w1 = hi(ow, g.s, g.W);
  A m = is_max ? -INFINITY : A(0);
  for (int64_t h = h0; h <= h1; ++h)
    for (int64_t w = w0; w <= w1; ++w) {
      const A v = static_cast<A>(x[g.in(n, c, h, w)]);
      if (is_max) m = (v > m || v != v) ? v : m;
      else m += v;
    }
  return is_max ? m : m / static_cast<A>((h1 - h0 + 1) * (w1 - w0 + 1));
}

// (h, w) that max_pool2d selects for output (oh, ow), packed as h * W + w.
template <typename A, typename T>
__device__ int64_t argmax_at(const T* x, const Geo& g, int64_t n, int64_t c, int64_t oh, int64_t ow) {
  const int64_t h0 = lo(oh, g.s), h1 = hi(oh, g.s, g.H), w0 = lo(ow, g.s), w1 = hi(ow, g.s, g.W);
  A m = -INFINITY;
  int64_t best = h0 * g.W + w0;
  for (int64_t h = h0; h <= h1; ++h)
    for (int64_t w = w0; w <= w1; ++w) {
      const A v = static_cast<A>(x[g.in(n, c, h, w)]);
      if (v > m || v != v) { m = v; best = h * g.W + w; }
    }
  return best;
}

// One block per (n, c) plane: mean and M2 of every (edge, pool) over the plane.
template <typename T, typename A>
__global__ void pool_stats_kernel(Ptrs<const T> xs, Geo g, Meta mt, A* partial) {
  __shared__ A smem[32];
  const int64_t plane = blockIdx.x, n = plane / g.C, c = plane % g.C, L = g.Ho * g.Wo;
  for (int e = 0; e < mt.E; ++e)
    for (int p = 0; p < mt.P; ++p) {
      const int q = mt.pool_slot[p];
      if (q < 0) continue;
      const bool is_max = mt.prim[p] == kMaxPool;
      A sum = 0;
      for (int64_t i = threadIdx.x; i < L; i += blockDim.x)
        sum += pool_at<A>(is_max, xs.p[e], g, n, c, i / g.Wo, i % g.Wo);
      const A mean = block_sum(sum, smem) / static_cast<A>(L);
      A m2 = 0;
      for (int64_t i = threadIdx.x; i < L; i += blockDim.x) {
        const A d = pool_at<A>(is_max, xs.p[e], g, n, c, i / g.Wo, i % g.Wo) - mean;
        m2 += d * d;
      }
      m2 = block_sum(m2, smem);
      if (threadIdx.x == 0) {
        A* o = partial + (plane * mt.E * mt.Q + e * mt.Q + q) * 2;
        o[0] = mean;
        o[1] = m2;
      }
    }
}

// One thread per (e*Q + q, c): Chan et al.'s pairwise combination of the N planes' (mean, M2),
// stable where a sum / sum of squares is not. Every plane has L values.
template <typename A>
__global__ void combine_stats_kernel(const A* partial, int64_t N, int64_t C, int64_t EQ, int64_t L, A eps, A* mean,
                                     A* invstd, A* var_u) {
  for (int64_t j = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; j < EQ * C; j += int64_t(gridDim.x) * blockDim.x) {
    const int64_t eq = j / C, c = j % C;
    auto plane = [&](int64_t n) { return partial + ((n * C + c) * EQ + eq) * 2; };
    A m = 0;
    for (int64_t n = 0; n < N; ++n) m += plane(n)[0];
    m /= static_cast<A>(N);
    A m2 = 0, spread = 0;
    for (int64_t n = 0; n < N; ++n) {
      const A d = plane(n)[0] - m;
      m2 += plane(n)[1];
      spread += d * d;
    }
    m2 += spread * static_cast<A>(L);
    const A count = static_cast<A>(N * L);
    mean[j] = m;
    invstd[j] = A(1) / sqrt(m2 / count + eps);
    var_u[j] = m2 / (count - A(1));
  }
}

template <typename T, typename A>
__global__ void apply_kernel(Ptrs<const T> xs, Ptrs<const T> ex, Geo g, Meta mt, const A* w, const A* mean,
                             const A* invstd, T* out) {
  const int64_t total = g.N * g.C * g.Ho * g.Wo;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < total; i += int64_t(gridDim.x) * blockDim.x) {
    int64_t n, c, oh, ow;
    g.decode_out(i, n, c, oh, ow);
    A acc = 0;
    for (int e = 0; e < mt.E; ++e)
      for (int p = 0; p < mt.P; ++p) {
        const int code = mt.prim[p];
        A coef = w[e * mt.P + p];
        if (code == kNone) {
          acc += coef * (static_cast<A>(xs.p[e][g.in(n, c, oh * g.s, ow * g.s)]) * A(0));
        } else if (code == kSkip) {
          acc += coef * static_cast<A>(xs.p[e][g.in(n, c, oh, ow)]);
        } else if (code == kExtra || code == kAdd) {
          acc += (code == kAdd ? A(1) : coef) * static_cast<A>(ex.p[e * mt.K + mt.extra_slot[p]][i]);
        } else {
          const A v = pool_at<A>(code == kMaxPool, xs.p[e], g, n, c, oh, ow);
          if (mean != nullptr) {
            const int64_t k = (e * mt.Q + mt.pool_slot[p]) * g.C + c;
            coef *= invstd[k];
            acc += coef * (v - mean[k]);
          } else {
            acc += coef * v;
          }
        }
      }
    out[g.out(n, c, oh, ow)] = static_cast<T>(acc);
  }
}

// One block per (n, c) plane: plane sums of grad * op_p(x_e), and of grad; grad of the extras.
template <typename T, typename A>
__global__ void backward_reduce_kernel(Ptrs<const T> xs, Ptrs<const T> ex, Ptrs<T> gex, const T* grad, Geo g,
                                       Meta mt, const A* w, A* partial) {
  __shared__ A smem[32];
  const int64_t plane = blockIdx.x, n = plane / g.C, c = plane % g.C, L = g.Ho * g.Wo;
  const int64_t S = mt.E * mt.P + 1;
  A sg = 0;
  for (int64_t i = threadIdx.x; i < L; i += blockDim.x)
    sg += static_cast<A>(grad[g.out(n, c, i / g.Wo, i % g.Wo)]);
  sg = block_sum(sg, smem);
  if (threadIdx.x == 0) partial[plane * S + S - 1] = sg;
  for (int e = 0; e < mt.E; ++e)
    for (int p = 0; p < mt.P; ++p) {
      const int code = mt.prim[p];
      A sum = 0;
      // An "add" extra: weighted by the caller, its gradient is grad_out (passed on in Python).
      for (int64_t i = threadIdx.x; code != kAdd && i < L; i += blockDim.x) {
        const int64_t oh = i / g.Wo, ow = i % g.Wo, o = g.out(n, c, oh, ow);
        const A gv = static_cast<A>(grad[o]);
        if (code == kNone) {
          sum += gv * (static_cast<A>(xs.p[e][g.in(n, c, oh * g.s, ow * g.s)]) * A(0));
        } else if (code == kSkip) {
          sum += gv * static_cast<A>(xs.p[e][g.in(n, c, oh, ow)]);
        } else if (code == kExtra) {
          const int k = e * mt.K + mt.extra_slot[p];
          const int64_t y = g.ext(n, c, oh, ow);
          sum += gv * static_cast<A>(ex.p[k][y]);
          gex.p[k][y] = static_cast<T>(w[e * mt.P + p] * gv);
        } else {
          sum += gv * pool_at<A>(code == kMaxPool, xs.p[e], g, n, c, oh, ow);
        }
      }
      sum = block_sum(sum, smem);
      if (threadIdx.x == 0) partial[plane * S + e * mt.P + p] = sum;
    }
}

// One block per (e, p): grad_w[e, p] and A, B, D over the channels (see mixed_node.h).
template <typename A>
__global__ void finalize_kernel(const A* sums, Geo g, Meta mt, const A* w, const A* mean, const A* invstd,
                                bool batch_stats, A* grad_w, A* Ap, A* Bp, A* Dp) {
  __shared__ A smem[32];
  const int e = blockIdx.x / mt.P, p = blockIdx.x % mt.P, q = mt.pool_slot[p];
  const int64_t S = mt.E * mt.P + 1;
  const A M = static_cast<A>(g.N * g.Ho * g.Wo), wep = w[e * mt.P + p];
  A total = 0;
  for (int64_t c = threadIdx.x; c < g.C; c += blockDim.x) {
    const A sgp = sums[c * S + e * mt.P + p], sg = sums[c * S + S - 1];
    const int64_t j = (int64_t(e) * mt.P + p) * g.C + c;
    if (q >= 0 && mean != nullptr) {
      const int64_t k = (int64_t(e) * mt.Q + q) * g.C + c;
      const A mu = mean[k], is = invstd[k], k1 = wep * is, gy = is * (sgp - mu * sg);
      total += gy;
      Ap[j] = k1;
      Bp[j] = batch_stats ? -k1 * is * gy / M : A(0);
      Dp[j] = batch_stats ? -k1 * sg / M + k1 * mu * is * gy / M : A(0);
    } else {
      total += sgp;
      Ap[j] = wep;
      Bp[j] = 0;
      Dp[j] = 0;
    }
  }
  total = block_sum(total, smem);
  if (threadIdx.x == 0) grad_w[e * mt.P + p] = total;
}

// One thread per input element (n, c, h, w): gathers from every output window that covers it.
template <typename T, typename A>
__global__ void backward_input_kernel(Ptrs<const T> xs, Ptrs<T> gxs, const T* grad, Geo g, Meta mt, const A* Ap,
                                      const A* Bp, const A* Dp) {
  const int64_t total = g.N * g.C * g.H * g.W;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < total; i += int64_t(gridDim.x) * blockDim.x) {
    int64_t n, c, h, w;
    g.decode_in(i, n, c, h, w);
    const int64_t at = g.in(n, c, h, w);
    const int64_t oh0 = h == 0 ? 0 : (h + g.s - 2) / g.s, oh1 = min((h + 1) / g.s, g.Ho - 1);
    const int64_t ow0 = w == 0 ? 0 : (w + g.s - 2) / g.s, ow1 = min((w + 1) / g.s, g.Wo - 1);
    for (int e = 0; e < mt.E; ++e) {
      const T* x = xs.p[e];
      A gx = 0;
      for (int p = 0; p < mt.P; ++p) {
        const int code = mt.prim[p];
        const int64_t j = (int64_t(e) * mt.P + p) * g.C + c;
        const A a = Ap[j], b = Bp[j], d = Dp[j];
        if (code == kSkip) {
          gx += a * static_cast<A>(grad[g.out(n, c, h, w)]);
        } else if (code == kMaxPool) {
          const A xv = static_cast<A>(x[at]);
          for (int64_t oh = oh0; oh <= oh1; ++oh)
            for (int64_t ow = ow0; ow <= ow1; ++ow)
              if (argmax_at<A>(x, g, n, c, oh, ow) == h * g.W + w)
                gx += a * static_cast<A>(grad[g.out(n, c, oh, ow)]) + b * xv + d;
        } else if (code == kAvgPool) {
          for (int64_t oh = oh0; oh <= oh1; ++oh)
            for (int64_t ow = ow0; ow <= ow1; ++ow) {
              A dp = a * static_cast<A>(grad[g.out(n, c, oh, ow)]) + d;
              if (b != A(0)) dp += b * pool_at<A>(false, x, g, n, c, oh, ow);
              const int64_t cnt = (hi(oh, g.s, g.H) - lo(oh, g.s) + 1) * (hi(ow, g.s, g.W) - lo(ow, g.s) + 1);
              gx += dp / static_cast<A>(cnt);
            }
        }
      }
      gxs.p[e][at] = static_cast<T>(gx);
    }
  }
}

}  // namespace hdas::cuda
