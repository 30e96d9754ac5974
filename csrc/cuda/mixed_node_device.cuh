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
};

// (n, c, h, w) of linear position i of an [N, C, Hd, Wd] tensor (C: the mixed channels) in its memory
// order (NCHW or channels_last), with Div's multiply-shift in 32-bit index math.
template <typename I>
struct Decode {
  Div<I> c, h, w;
  bool cl;
  __device__ void operator()(I i, int64_t& n, int64_t& cc, int64_t& hh, int64_t& ww) const {
    I q;
    if (cl) {
      q = c.div(i), cc = i - q * c.d, i = q;
      q = w.div(i), ww = i - q * w.d, i = q;
      q = h.div(i), hh = i - q * h.d, n = q;
    } else {
      q = w.div(i), ww = i - q * w.d, i = q;
      q = h.div(i), hh = i - q * h.d, i = q;
      q = c.div(i), cc = i - q * c.d, n = q;
    }
  }
};

// The primitives: P codes and their pool and extra slots (-1 where none), at these offsets of the
// call's Slots.
struct Meta {
  int E, P, Q, K;
  int prims, pools, extras;
  __device__ int prim(const Slots& t, int p) const { return static_cast<int>(t.at(prims + p)); }
  __device__ int pool_slot(const Slots& t, int p) const { return static_cast<int>(t.at(pools + p)); }
  __device__ int extra_slot(const Slots& t, int p) const { return static_cast<int>(t.at(extras + p)); }
};

// The data pointers of E or E*K tensors, from this offset of the call's Slots on.
template <typename T>
struct Ptrs {
  int at;
  __device__ T* operator()(const Slots& t, int i) const { return t.ptr<T>(at + i); }
};

__device__ inline int64_t lo(int64_t o, int64_t s) { return o * s - 1 > 0 ? o * s - 1 : 0; }
__device__ inline int64_t hi(int64_t o, int64_t s, int64_t n) { return o * s + 1 < n - 1 ? o * s + 1 : n - 1; }
__device__ inline int64_t clamp_to(int64_t v, int64_t n) { return v < 0 ? 0 : (v < n ? v : n - 1); }

// The window loops below run the same nine steps in every lane, each reading a position clamped into
// the plane and ignoring it when it lies outside: the lanes of a warp read in step (no divergence at
// the plane's edges), which is also what the emulator's traffic counts take as one request.

// 3x3 pool at output (n, c, oh, ow); max follows PyTorch (NaN wins), average excludes padding. A max
// pool also gives arg, the position max_pool2d's gradient goes to (the first maximum in row-major
// order, the last NaN), as (h - h0) * 3 + (w - w0) within the window. Selects, not branches, keep
// the lanes in step; callers that drop arg (the overload below) let the compiler drop its updates.
template <typename A, typename T>
__device__ A pool_at(bool is_max, const T* x, const Geo& g, int64_t n, int64_t c, int64_t oh, int64_t ow,
                     uint8_t& arg) {
  const int64_t h0 = lo(oh, g.s), w0 = lo(ow, g.s);
  A m = is_max ? -INFINITY : A(0);
  arg = 0;
  for (int dh = -1; dh <= 1; ++dh) {
    const int64_t h = oh * g.s + dh;
    for (int dw = -1; dw <= 1; ++dw) {
      const int64_t w = ow * g.s + dw;
      const A v = static_cast<A>(x[g.in(n, c, clamp_to(h, g.H), clamp_to(w, g.W))]);
      const bool inside = h >= 0 && h < g.H && w >= 0 && w < g.W;
      if (is_max) {
        const bool take = inside && (v > m || v != v);
        m = take ? v : m;
        arg = take ? static_cast<uint8_t>((h - h0) * 3 + (w - w0)) : arg;
      } else {
        m += inside ? v : A(0);
      }
    }
  }
  if (is_max) return m;
  return m / static_cast<A>((hi(oh, g.s, g.H) - h0 + 1) * (hi(ow, g.s, g.W) - w0 + 1));
}

template <typename A, typename T>
__device__ A pool_at(bool is_max, const T* x, const Geo& g, int64_t n, int64_t c, int64_t oh, int64_t ow) {
  uint8_t arg;
  return pool_at<A>(is_max, x, g, n, c, oh, ow, arg);
}

// What backward_reduce_kernel keeps per mixed output o (at Geo::ext) of every pool (e, q) for
// backward_input_kernel, so that it reads one value per covering window instead of recomputing the
// window: a max pool's argmax (pool_at's), an average pool's value in the inputs' type (with batch
// statistics only, the one case its input gradient needs it; avg is null otherwise; eager PyTorch
// keeps the pool's output in that type too).
template <typename T>
struct Kept {
  uint8_t* arg;
  T* avg;
  int64_t per;  // outputs of one pool
  __device__ int64_t at(const Meta& mt, int e, int q, int64_t o) const { return (int64_t(e) * mt.Q + q) * per + o; }
};

// How the reduction kernels split the planes: each warp reduces one chunk of `chunk` consecutive
// output positions of `cw` planes (channels c0 .. c0 + cw - 1 of one sample n), its lanes side by side
// along memory: along the positions of a plane in NCHW (lane = plane * streams + stream), along the
// channels in channels_last (lane = stream * cw + plane). A lane reads every streams-th position of
// its chunk; the lanes of one plane are summed by shuffles, no barrier, no shared memory, and each
// chunk's sums land in partial[n, s, c] for a kernel after it to combine.
template <typename I>
struct Units {
  int cw, streams;  // cw * streams = 32
  I chunk, S, tiles;  // positions per chunk, chunks per plane, channel tiles (ceil(C / cw))
  Div<I> wo;           // decodes a position into (oh, ow)
  bool cl;
  __device__ int stream() const {
    const int lane = threadIdx.x & 31;
    return cl ? lane / cw : lane % streams;
  }
  // This lane's (n, c, chunk s, first position, end), false for a lane past C or past the units.
  __device__ bool unit(int64_t warp_id, const Geo& g, int64_t& n, int64_t& c, I& s, I& i0, I& i1) const {
    const int lane = threadIdx.x & 31;
    const int plane = cl ? lane % cw : lane / streams;
    const I tile = static_cast<I>(warp_id % tiles);
    const int64_t rest = warp_id / tiles;
    s = static_cast<I>(rest % S);
    n = rest / S;
    c = int64_t(tile) * cw + plane;
    i0 = s * chunk + stream();
    const I L = static_cast<I>(g.Ho * g.Wo);
    i1 = s * chunk + chunk < L ? s * chunk + chunk : L;
    return n < g.N && c < g.C;
  }
  // Sum of v over the lanes of this lane's plane (those that differ in the stream's lane bits), in
  // every one of them.
  template <typename A>
  __device__ A plane_sum(A v) const {
    for (int o = 16; o > 0; o >>= 1)
      if (cl ? o >= cw : o < streams) v += __shfl_xor_sync(kFull, v, o);
    return v;
  }
  __device__ bool writer() const { return stream() == 0; }
  __device__ I count(I s, I L) const { return (s * chunk + chunk < L ? s * chunk + chunk : L) - s * chunk; }
};

__device__ inline int64_t warp_index() { return int64_t(blockIdx.x) * (blockDim.x >> 5) + (threadIdx.x >> 5); }

// Per chunk of positions: the mean and M2 of every (edge, pool) over its positions, in one pass
// over the pools (sums of the values' differences from the chunk's first value, which keeps the
// one-pass sums of squares well conditioned).
template <typename T, typename A, typename I>
__global__ void __launch_bounds__(kThreads, kMinBlocks)
    pool_stats_kernel(const __grid_constant__ Slots t, Ptrs<const T> xs, Geo g, Meta mt, Units<I> u, A* partial) {
  int64_t n, c;
  I s, i0, i1;
  const bool live = u.unit(warp_index(), g, n, c, s, i0, i1);
  if (__all_sync(kFull, !live)) return;
  const I L = static_cast<I>(g.Ho * g.Wo);
  const I first = s * u.chunk;
  const A cnt = static_cast<A>(u.count(s, L));
  for (int e = 0; e < mt.E; ++e)
    for (int p = 0; p < mt.P; ++p) {
      const int q = mt.pool_slot(t, p);
      if (q < 0) continue;
      const bool is_max = mt.prim(t, p) == kMaxPool;
      A s1 = 0, s2 = 0, k = 0;
      if (live) {
        const I fh = u.wo.div(first);
        k = pool_at<A>(is_max, xs(t, e), g, n, c, fh, first - fh * u.wo.d);
        for (I i = i0; i < i1; i += u.streams) {
          const I oh = u.wo.div(i);
          const A d = pool_at<A>(is_max, xs(t, e), g, n, c, oh, i - oh * u.wo.d) - k;
          s1 += d;
          s2 += d * d;
        }
      }
      s1 = u.plane_sum(s1);
      s2 = u.plane_sum(s2);
      if (live && u.writer()) {  // partial[n, s, e*Q + q, {mean, M2}, c]: the writers' c side by side
        A* o = partial + (((n * u.S + s) * (mt.E * mt.Q) + e * mt.Q + q) * 2) * g.C + c;
        o[0] = k + s1 / cnt;
        o[g.C] = s2 - s1 * s1 / cnt;
      }
    }
}

template <typename T, typename A, typename I>
__global__ void __launch_bounds__(kThreads, kMinBlocks)
    apply_kernel(const __grid_constant__ Slots t, Ptrs<const T> xs, Ptrs<const T> ex, Geo g, Decode<I> dec, Meta mt,
                 const A* w, const A* mean, const A* invstd, T* out) {
  const int64_t total = g.N * g.C * g.Ho * g.Wo;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < total; i += int64_t(gridDim.x) * blockDim.x) {
    int64_t n, c, oh, ow;
    dec(static_cast<I>(i), n, c, oh, ow);
    A acc = 0;
    for (int e = 0; e < mt.E; ++e)
      for (int p = 0; p < mt.P; ++p) {
        const int code = mt.prim(t, p);
        A coef = w[e * mt.P + p];
        if (code == kNone) {
          acc += coef * (static_cast<A>(xs(t, e)[g.in(n, c, oh * g.s, ow * g.s)]) * A(0));
        } else if (code == kSkip) {
          acc += coef * static_cast<A>(xs(t, e)[g.in(n, c, oh, ow)]);
        } else if (code == kExtra || code == kAdd) {
          acc += (code == kAdd ? A(1) : coef) * static_cast<A>(ex(t, e * mt.K + mt.extra_slot(t, p))[i]);
        } else {
          const A v = pool_at<A>(code == kMaxPool, xs(t, e), g, n, c, oh, ow);
          if (mean != nullptr) {
            const int64_t k = (e * mt.Q + mt.pool_slot(t, p)) * g.C + c;
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

// Per chunk of positions (Units): the sums of grad * op_p(x_e) and of grad, into partial[n, s, e*P + p
// (the sum of grad last), c]; the extras' gradients; the pools' Kept values.
template <typename T, typename A, typename I>
__global__ void __launch_bounds__(kThreads, kMinBlocks)
    backward_reduce_kernel(const __grid_constant__ Slots t, Ptrs<const T> xs, Ptrs<const T> ex, Ptrs<T> gex,
                           const T* grad, Geo g, Meta mt, Units<I> u, const A* w, A* partial, Kept<T> kept) {
  int64_t n, c;
  I s, i0, i1;
  const bool live = u.unit(warp_index(), g, n, c, s, i0, i1);
  if (__all_sync(kFull, !live)) return;
  const int64_t S = mt.E * mt.P + 1;
  A* out = partial + (n * u.S + s) * S * g.C + c;  // out[k * C]: sum k of channel c
  A sg = 0;
  for (I i = i0; live && i < i1; i += u.streams) {
    const I oh = u.wo.div(i);
    sg += static_cast<A>(grad[g.out(n, c, oh, i - oh * u.wo.d)]);
  }
  sg = u.plane_sum(sg);
  if (live && u.writer()) out[(S - 1) * g.C] = sg;
  for (int e = 0; e < mt.E; ++e)
    for (int p = 0; p < mt.P; ++p) {
      const int code = mt.prim(t, p);
      A sum = 0;
      // An "add" extra: weighted by the caller, its gradient is grad_out (passed on in Python).
      for (I i = i0; live && code != kAdd && i < i1; i += u.streams) {
        const I oh = u.wo.div(i), ow = i - oh * u.wo.d;
        const int64_t o = g.out(n, c, oh, ow), y = g.ext(n, c, oh, ow);  // grad_out's, the extras'
        const A gv = static_cast<A>(grad[o]);
        if (code == kNone) {
          sum += gv * (static_cast<A>(xs(t, e)[g.in(n, c, oh * g.s, ow * g.s)]) * A(0));
        } else if (code == kSkip) {
          sum += gv * static_cast<A>(xs(t, e)[g.in(n, c, oh, ow)]);
        } else if (code == kExtra) {
          const int k = e * mt.K + mt.extra_slot(t, p);
          sum += gv * static_cast<A>(ex(t, k)[y]);
          gex(t, k)[y] = static_cast<T>(w[e * mt.P + p] * gv);
        } else if (code == kMaxPool) {
          uint8_t arg;
          sum += gv * pool_at<A>(true, xs(t, e), g, n, c, oh, ow, arg);
          kept.arg[kept.at(mt, e, mt.pool_slot(t, p), y)] = arg;
        } else {
          const A v = pool_at<A>(false, xs(t, e), g, n, c, oh, ow);
          sum += gv * v;
          if (kept.avg != nullptr) kept.avg[kept.at(mt, e, mt.pool_slot(t, p), y)] = static_cast<T>(v);
        }
      }
      sum = u.plane_sum(sum);
      if (live && u.writer()) out[(e * mt.P + p) * g.C] = sum;
    }
}

// One block per (e, p): grad_w[e, p] and A, B, D over the channels (see mixed_node.h), from the plane
// sums [E*P + 1, C].
template <typename A>
__global__ void finalize_kernel(const __grid_constant__ Slots t, const A* sums, Geo g, Meta mt, const A* w,
                                const A* mean, const A* invstd, bool batch_stats, A* grad_w, A* Ap, A* Bp, A* Dp) {
  HDAS_SHARED(A, smem, [32]);
  const int e = blockIdx.x / mt.P, p = blockIdx.x % mt.P, q = mt.pool_slot(t, p);
  const int64_t S = mt.E * mt.P + 1;
  const A M = static_cast<A>(g.N * g.Ho * g.Wo), wep = w[e * mt.P + p];
  A total = 0;
  for (int64_t c = threadIdx.x; c < g.C; c += blockDim.x) {
    const A sgp = sums[(e * mt.P + p) * g.C + c], sg = sums[(S - 1) * g.C + c];
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

// One thread per input element (n, c, h, w): gathers from every output window that covers it (a max
// pool's through the argmax that backward_reduce_kernel kept). The covering windows are at most 3x3
// (stride 1) or 2x2 (stride 2) from (oh0, ow0); every lane steps through all of them, reading clamped
// positions and ignoring those outside (see pool_at), and reads grad_out once per window.
template <typename T, typename A, typename I>
__global__ void __launch_bounds__(kThreads, kMinBlocks)
    backward_input_kernel(const __grid_constant__ Slots t, Ptrs<const T> xs, Ptrs<T> gxs, const T* grad, Geo g,
                          Decode<I> dec, Meta mt, const A* Ap, const A* Bp, const A* Dp, Kept<T> kept) {
  const int64_t total = g.N * g.C * g.H * g.W;
  const int K = g.s == 1 ? 3 : 2;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < total; i += int64_t(gridDim.x) * blockDim.x) {
    int64_t n, c, h, w;
    dec(static_cast<I>(i), n, c, h, w);
    const int64_t at = g.in(n, c, h, w);
    const int64_t oh0 = h == 0 ? 0 : (h + g.s - 2) / g.s, oh1 = min((h + 1) / g.s, g.Ho - 1);
    const int64_t ow0 = w == 0 ? 0 : (w + g.s - 2) / g.s, ow1 = min((w + 1) / g.s, g.Wo - 1);
    for (int e = 0; e < mt.E; ++e) {
      const T* x = xs(t, e);
      A gx = 0;
      for (int p = 0; p < mt.P; ++p)
        if (mt.prim(t, p) == kSkip) gx += Ap[(int64_t(e) * mt.P + p) * g.C + c] * static_cast<A>(grad[g.out(n, c, h, w)]);
      A xv = 0;
      for (int p = 0; p < mt.P; ++p) xv = mt.prim(t, p) == kMaxPool ? static_cast<A>(x[at]) : xv;
      for (int i_ = 0; i_ < K; ++i_)
        for (int j_ = 0; j_ < K; ++j_) {
          const int64_t oh = oh0 + i_, ow = ow0 + j_;
          const bool covers = oh <= oh1 && ow <= ow1;
          const int64_t ohc = covers ? oh : oh0, owc = covers ? ow : ow0;  // some window that covers (h, w)
          const A gv = static_cast<A>(grad[g.out(n, c, ohc, owc)]);
          const int64_t y = g.ext(n, c, ohc, owc);
          for (int p = 0; p < mt.P; ++p) {
            const int code = mt.prim(t, p);
            if (code != kMaxPool && code != kAvgPool) continue;
            const int64_t j = (int64_t(e) * mt.P + p) * g.C + c;
            const A a = Ap[j], b = Bp[j], d = Dp[j];
            const int64_t kq = kept.at(mt, e, mt.pool_slot(t, p), y);
            if (code == kMaxPool) {
              const int k = kept.arg[kq];
              if (covers && lo(oh, g.s) + k / 3 == h && lo(ow, g.s) + k % 3 == w) gx += a * gv + b * xv + d;
            } else {
              A dp = a * gv + d;
              if (kept.avg != nullptr) dp += b * static_cast<A>(kept.avg[kq]);
              const int64_t cnt = (hi(ohc, g.s, g.H) - lo(ohc, g.s) + 1) * (hi(owc, g.s, g.W) - lo(owc, g.s) + 1);
              gx += covers ? dp / static_cast<A>(cnt) : A(0);
            }
          }
        }
      gxs(t, e)[at] = static_cast<T>(gx);
    }
  }
}

}  // namespace hdas::cuda
