// Kernels of hdas::conv_candidates on CUDA: the forward's depthwise-then-pointwise convolution with
// its BatchNorm statistics (one kernel per half), the pointwise weight's gradient with the depthwise
// output recomputed on chip, the depthwise convolution's gradients to its input and its weights,
// normalisation-and-mix and BatchNorm backward. Torch-free (nvcc, or g++ over csrc/emu). Every
// tensor is NCHW contiguous in the op-math type A (float, or double for double); the backward's
// pointwise convolutions are batched GEMMs in the launcher (conv_candidates_kernel.cu).
#pragma once

#include "device.cuh"

namespace hdas::cuda::conv {

// One depthwise convolution's geometry: planes of H x W in, Ho x Wo out, k x k taps with dilation d,
// padding p, stride s; NC planes (image-major, C channels each).
struct DwGeo {
  int64_t NC, C;
  int H, W, Ho, Wo, k, d, p, s;
};

// A per-channel map of a value: relu?((v - mean[c]) * scale[c] + shift[c]), each step present when
// its pointer is (or relu set). The depthwise kernels read their input through it: the candidates'
// leading ReLU (relu only) and a separable convolution's BN1 + ReLU between its halves, so that
// neither relu(x) nor the second half's input is ever written to memory. The mix uses it too.
template <typename A>
struct ChannelMap {
  const A* mean = nullptr;
  const A* scale = nullptr;
  const A* shift = nullptr;
  bool relu = false;
  // The map of one channel, its parameters read once (a kernel applies it to many values).
  struct Of {
    A mean = 0, scale = 1, shift = 0;
    bool norm = false, shifted = false, relu = false;
    __device__ A operator()(A v) const {
      if (norm) v = (v - mean) * scale;
      if (shifted) v += shift;
      return relu && v < A(0) ? A(0) : v;
    }
  };
  __device__ Of of(int64_t c) const {
    Of f;
    f.norm = mean != nullptr, f.shifted = shift != nullptr, f.relu = relu;
    if (f.norm) f.mean = mean[c], f.scale = scale[c];
    if (f.shifted) f.shift = shift[c];
    return f;
  }
};

// The depthwise convolution of m(in) for image n, channel c at output position q (row oh, column
// ow): sum_{u,v} dw[c, u, v] * m_c(in[n, c, oh*s - p + u*d, ow*s - p + v*d]) (zero outside).
template <typename A>
__device__ __forceinline__ A dw_at(const DwGeo& g, const A* __restrict__ in, const ChannelMap<A>& m,
                                   const A* __restrict__ dw, int64_t n, int c, int q) {
  const auto f = m.of(c);
  const A* plane = in + (n * g.C + c) * g.H * g.W;
  const A* wc = dw + c * g.k * g.k;
  const int oh = q / g.Wo, ow = q % g.Wo;
  A acc = 0;
  for (int u = 0; u < g.k; ++u) {
    const int ih = oh * g.s - g.p + u * g.d;
    if (ih < 0 || ih >= g.H) continue;
    for (int v = 0; v < g.k; ++v) {
      const int iw = ow * g.s - g.p + v * g.d;
      if (iw >= 0 && iw < g.W) acc += wc[u * g.k + v] * f(plane[ih * g.W + iw]);
    }
  }
  return acc;
}

// The gradient of the input: gin[nc, ih, iw] = sum over the taps (u, v) that read (ih, iw) of
// w[c, u, v] * gout[nc, oh, ow]; a gather, so no atomics. Accumulate: added to gin (the branches
// of one input sum their gradients in place).
template <typename A, bool Accumulate>
__global__ void __launch_bounds__(kThreads) dw_backward_input_kernel(DwGeo g, const A* __restrict__ gout,
                                                                     const A* __restrict__ w, A* __restrict__ gin) {
  const int64_t total = g.NC * g.H * g.W;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < total; i += int64_t(blockDim.x) * gridDim.x) {
    const int iw = static_cast<int>(i % g.W);
    const int64_t t = i / g.W;
    const int ih = static_cast<int>(t % g.H);
    const int64_t nc = t / g.H;
    const A* plane = gout + nc * g.Ho * g.Wo;
    const A* wc = w + (nc % g.C) * g.k * g.k;
    A acc = 0;
    for (int u = 0; u < g.k; ++u) {
      const int sh = ih + g.p - u * g.d;  // oh * s
      if (sh < 0 || sh % g.s != 0 || sh / g.s >= g.Ho) continue;
      for (int v = 0; v < g.k; ++v) {
        const int sw = iw + g.p - v * g.d;
        if (sw >= 0 && sw % g.s == 0 && sw / g.s < g.Wo) acc += wc[u * g.k + v] * plane[(sh / g.s) * g.Wo + sw / g.s];
      }
    }
    gin[i] = Accumulate ? gin[i] + acc : acc;
  }
}

// The gradient of the weights: one block per (c, u, v), summing gout * m(in) over the images and
// the output positions.
template <typename A>
__global__ void __launch_bounds__(kThreads) dw_backward_weight_kernel(DwGeo g, const A* __restrict__ gout,
                                                                      const A* __restrict__ in, ChannelMap<A> m,
                                                                      A* __restrict__ gw) {
  HDAS_SHARED(A, smem, [32]);
  const int64_t kk = int64_t(g.k) * g.k;
  const int64_t c = blockIdx.x / kk;
  const int u = static_cast<int>((blockIdx.x % kk) / g.k), v = static_cast<int>(blockIdx.x % g.k);
  const int64_t L = int64_t(g.Ho) * g.Wo, N = g.NC / g.C;
  const auto f = m.of(c);
  A acc = 0;
  for (int64_t j = threadIdx.x; j < N * L; j += blockDim.x) {
    const int64_t n = j / L, pos = j % L;
    const int oh = static_cast<int>(pos / g.Wo), ow = static_cast<int>(pos % g.Wo);
    const int ih = oh * g.s - g.p + u * g.d, iw = ow * g.s - g.p + v * g.d;
    if (ih >= 0 && ih < g.H && iw >= 0 && iw < g.W) {
      const int64_t nc = n * g.C + c;
      acc += gout[nc * L + pos] * f(in[(nc * g.H + ih) * g.W + iw]);
    }
  }
  const A total = block_sum(acc, smem);
  if (threadIdx.x == 0) gw[blockIdx.x] = total;
}

// The fused forward's tile: kTileP consecutive output positions of one image by kTileCo output
// channels, 16 x 16 threads each holding 4 x 4 of them; the input channels in chunks of kChunk.
constexpr int kTileP = 64, kTileCo = 64, kChunk = 16;
static_assert(kThreads == 256 && kTileP == 4 * 16 && kTileCo == 4 * 16, "16 x 16 threads, 4 x 4 outputs each");

// A depthwise convolution of m(in) and the pointwise convolution pw [C, C] after it, one tile per
// block: z[n, co, q] = sum_ci pw[co, ci] * dw_at(ci, q). The depthwise outputs of a chunk of input
// channels go to shared memory, never to global memory. With partial, each tile's mean and M2 of z
// per channel over its positions go to partial[(n * S + s) * 2 * C + {0, C} + co] (S tiles a plane;
// combine_stats_kernel's layout with one statistic), so z is not read again for its statistics.
template <typename A>
__global__ void __launch_bounds__(kThreads, kMinBlocks)
    dw_pointwise_kernel(DwGeo g, const A* __restrict__ in, ChannelMap<A> m, const A* __restrict__ dw,
                        const A* __restrict__ pw, A* __restrict__ z, A* __restrict__ partial) {
  HDAS_SHARED(A, d, [kChunk][kTileP]);    // depthwise outputs: [input channel][position]
  HDAS_SHARED(A, wt, [kTileCo][kChunk]);  // pw rows of the tile's output channels
  // Plane positions and channels fit in int (DwGeo's planes are int; channels are far fewer).
  const int C = static_cast<int>(g.C), L = g.Ho * g.Wo, S = (L + kTileP - 1) / kTileP, T = (C + kTileCo - 1) / kTileCo;
  const int64_t n = blockIdx.x / (int64_t(S) * T);
  const int s = static_cast<int>(blockIdx.x / T % S), co0 = static_cast<int>(blockIdx.x % T) * kTileCo;
  const int q0 = s * kTileP, valid = min(kTileP, L - q0);
  const int tx = threadIdx.x % 16, ty = threadIdx.x / 16;  // positions q0 + tx + 16 j, channels co0 + ty + 16 i
  A acc[4][4] = {};
  for (int c0 = 0; c0 < C; c0 += kChunk) {
#pragma unroll 1
    for (int j = threadIdx.x; j < kChunk * kTileP; j += kThreads) {
      const int c = c0 + j / kTileP, p = j % kTileP;
      A v = 0;
      if (c < C && p < valid) v = dw_at(g, in, m, dw, n, c, q0 + p);
      d[j / kTileP][p] = v;
    }
    for (int j = threadIdx.x; j < kTileCo * kChunk; j += kThreads) {
      const int co = co0 + j / kChunk, c = c0 + j % kChunk;
      wt[j / kChunk][j % kChunk] = co < C && c < C ? pw[int64_t(co) * C + c] : A(0);
    }
    __syncthreads();
#pragma unroll
    for (int c = 0; c < kChunk; ++c) {
      A dv[4], wv[4];
      for (int j = 0; j < 4; ++j) dv[j] = d[c][tx + 16 * j];
      for (int i = 0; i < 4; ++i) wv[i] = wt[ty + 16 * i][c];
      for (int i = 0; i < 4; ++i)
        for (int j = 0; j < 4; ++j) acc[i][j] += wv[i] * dv[j];
    }
    __syncthreads();  // the next chunk overwrites d and wt
  }
  for (int i = 0; i < 4; ++i) {
    const int co = co0 + ty + 16 * i;
    A* zc = z + (n * C + co) * L + q0;
    for (int j = 0; j < 4; ++j)
      if (co < C && tx + 16 * j < valid) zc[tx + 16 * j] = acc[i][j];
    if (partial == nullptr) continue;
    // the 16 lanes of a half-warp hold channel co's row: sums over lane offsets 8, 4, 2, 1
    A sum = 0, m2 = 0;
    for (int j = 0; j < 4; ++j) sum += acc[i][j];  // 0 past the plane (d is)
    for (int o = 8; o > 0; o >>= 1) sum += __shfl_xor_sync(kFull, sum, o);
    const A mean = sum / static_cast<A>(valid);
    for (int j = 0; j < 4; ++j) m2 += tx + 16 * j < valid ? (acc[i][j] - mean) * (acc[i][j] - mean) : A(0);
    for (int o = 8; o > 0; o >>= 1) m2 += __shfl_xor_sync(kFull, m2, o);
    if (tx == 0 && co < C) {
      A* out = partial + (n * S + s) * 2 * C + co;
      out[0] = mean;
      out[C] = m2;
    }
  }
}

// The pointwise weight's gradient, gpw[co, ci] = sum over images and positions of dz[n, co, q] *
// dw_at(ci, q): the depthwise output recomputed on chip (never written, as in the forward). A block
// holds 64 x 64 of (co, ci), 4 x 4 a thread, and sums over tiles of kTileQ positions, tiles
// blockIdx.x, + gridDim.x, ...; its sums go to partial[blockIdx.x][co][ci] (blockIdx.y: the (co, ci)
// block), which the launcher sums over blockIdx.x.
constexpr int kTileQ = 32;
template <typename A>
__global__ void __launch_bounds__(kThreads, kMinBlocks)
    dw_pointwise_weight_kernel(DwGeo g, const A* __restrict__ in, ChannelMap<A> m, const A* __restrict__ dw,
                               const A* __restrict__ dz, A* __restrict__ partial) {
  HDAS_SHARED(A, e, [kTileCo][kTileQ + 1]);   // depthwise outputs [ci][position]; the pad keeps the
  HDAS_SHARED(A, gz, [kTileCo][kTileQ + 1]);  // column reads below free of bank conflicts
  const int C = static_cast<int>(g.C), L = g.Ho * g.Wo, S = (L + kTileQ - 1) / kTileQ, T = (C + kTileCo - 1) / kTileCo;
  const int co0 = static_cast<int>(blockIdx.y) / T * kTileCo, ci0 = static_cast<int>(blockIdx.y) % T * kTileCo;
  const int tx = threadIdx.x % 16, ty = threadIdx.x / 16;  // channels ci0 + tx + 16 j, co0 + ty + 16 i
  const int64_t tiles = g.NC / g.C * S;
  A acc[4][4] = {};
  for (int64_t t = blockIdx.x; t < tiles; t += gridDim.x) {
    const int64_t n = t / S;
    const int q0 = static_cast<int>(t % S) * kTileQ, valid = min(kTileQ, L - q0);
#pragma unroll 1
    for (int j = threadIdx.x; j < kTileCo * kTileQ; j += kThreads) {
      const int r = j / kTileQ, p = j % kTileQ, ci = ci0 + r, co = co0 + r;
      A v = 0;
      if (ci < C && p < valid) v = dw_at(g, in, m, dw, n, ci, q0 + p);
      e[r][p] = v;
      gz[r][p] = co < C && p < valid ? dz[(n * C + co) * L + q0 + p] : A(0);
    }
    __syncthreads();
#pragma unroll 8
    for (int p = 0; p < kTileQ; ++p) {
      A ev[4], gv[4];
      for (int j = 0; j < 4; ++j) ev[j] = e[tx + 16 * j][p];
      for (int i = 0; i < 4; ++i) gv[i] = gz[ty + 16 * i][p];
      for (int i = 0; i < 4; ++i)
        for (int j = 0; j < 4; ++j) acc[i][j] += gv[i] * ev[j];
    }
    __syncthreads();  // the next tile overwrites e and gz
  }
  A* out = partial + int64_t(blockIdx.x) * C * C;
  for (int i = 0; i < 4; ++i)
    for (int j = 0; j < 4; ++j) {
      const int co = co0 + ty + 16 * i, ci = ci0 + tx + 16 * j;
      if (co < C && ci < C) out[int64_t(co) * C + ci] = acc[i][j];
    }
}

// The element-wise passes over z [N, C, L] run one block per chunk of kPlaneChunk positions of one
// plane nc, so that a thread reads its channel's parameters once, not with every element.
constexpr int kPlaneChunk = 4 * kThreads;
struct PlaneChunk {
  int64_t nc, q0, q1;  // positions q0 .. q1 - 1 of plane nc
};
__device__ inline PlaneChunk plane_chunk(int64_t L) {
  const int64_t chunks = (L + kPlaneChunk - 1) / kPlaneChunk, q0 = blockIdx.x % chunks * kPlaneChunk;
  return {blockIdx.x / chunks, q0, q0 + kPlaneChunk < L ? q0 + kPlaneChunk : L};
}

// An edge's output from up to kMixMax of its branches: out = sum_b m_b(z_b) (accumulate: out + that),
// m_b a branch's last BatchNorm with its mixing weight folded into scale and shift; one pass, so
// the output is written once, not read and written again per branch.
constexpr int kMixMax = 8;
template <typename A>
struct Mix {
  int count = 0;
  const A* z[kMixMax] = {};
  ChannelMap<A> m[kMixMax];
};
template <typename A>
__global__ void __launch_bounds__(kThreads) mix_kernel(Mix<A> mix, int64_t C, int64_t L, A* __restrict__ out,
                                                       bool accumulate) {
  static_assert(kPlaneChunk == 4 * kThreads, "4 positions a thread");
  const PlaneChunk pc = plane_chunk(L);
  const int64_t c = pc.nc % C, i0 = pc.nc * L + pc.q0 + threadIdx.x, end = pc.nc * L + pc.q1;
  A y[4] = {};
  for (int b = 0; b < mix.count; ++b) {  // branch by branch, in order: the sum's rounding as before
    const auto f = mix.m[b].of(c);
    for (int r = 0; r < 4; ++r)
      if (i0 + r * kThreads < end) y[r] += f(mix.z[b][i0 + r * kThreads]);
  }
  for (int r = 0; r < 4; ++r)
    if (i0 + r * kThreads < end) out[i0 + r * kThreads] = accumulate ? out[i0 + r * kThreads] + y[r] : y[r];
}

// A BatchNorm's backward over z [N, C, L] and the gradient g of its output (times a scale folded into
// a). relu_mask (a separable convolution's first BatchNorm, whose a is invstd * gamma, the scale its
// ChannelMap applies in the forward): g counts only where the forward's ReLU passed, decided by the
// same arithmetic as there.
template <typename A>
struct BnGrad {
  const A *mean, *invstd;
  const A* beta = nullptr;  // the affine shift, or null
  const A* a = nullptr;     // dz = a * (g - S1/M - zhat * S2/M): invstd * gamma * weight
  bool relu_mask = false;
  // One channel's, its parameters read once.
  struct Of {
    A mean, invstd, a, beta = 0;
    bool shifted, relu_mask;
    __device__ A zhat(A z) const { return (z - mean) * invstd; }
    __device__ A grad(A g, A z) const {
      if (!relu_mask) return g;
      A y = (z - mean) * a;
      if (shifted) y += beta;
      return y > A(0) ? g : A(0);
    }
  };
  __device__ Of of(int64_t c) const {
    Of f{mean[c], invstd[c], a[c]};
    f.shifted = beta != nullptr, f.relu_mask = relu_mask;
    if (f.shifted) f.beta = beta[c];
    return f;
  }
};

// S1 = sum g, S2 = sum g * zhat for channel blockIdx.x (g masked as b says).
template <typename A>
__global__ void __launch_bounds__(kThreads) bn_backward_reduce_kernel(const A* __restrict__ g, const A* __restrict__ z,
                                                                      int64_t N, int64_t C, int64_t L, BnGrad<A> b,
                                                                      A* s1, A* s2) {
  HDAS_SHARED(A, smem, [32]);
  const int64_t c = blockIdx.x, M = N * L;
  const auto f = b.of(c);
  A t1 = 0, t2 = 0;
  for (int64_t j = threadIdx.x; j < M; j += blockDim.x) {
    const int64_t i = ((j / L) * C + c) * L + j % L;
    const A gi = f.grad(g[i], z[i]);
    t1 += gi;
    t2 += gi * f.zhat(z[i]);
  }
  t1 = block_sum(t1, smem);
  t2 = block_sum(t2, smem);
  if (threadIdx.x == 0) {
    s1[c] = t1;
    s2[c] = t2;
  }
}

// dz = a * (g - S1/M - zhat * S2/M) with batch statistics, a * g with running ones.
template <typename A>
__global__ void __launch_bounds__(kThreads) bn_backward_apply_kernel(const A* __restrict__ g, const A* __restrict__ z,
                                                                     int64_t C, int64_t L, BnGrad<A> b,
                                                                     const A* __restrict__ s1, const A* __restrict__ s2,
                                                                     A inv_count, bool batch, A* __restrict__ dz) {
  const PlaneChunk pc = plane_chunk(L);
  const int64_t c = pc.nc % C;
  const auto f = b.of(c);
  const A m1 = s1[c] * inv_count, m2 = s2[c] * inv_count;
  for (int64_t i = pc.nc * L + pc.q0 + threadIdx.x; i < pc.nc * L + pc.q1; i += kThreads) {
    const A gi = f.grad(g[i], z[i]);
    dz[i] = f.a * (batch ? gi - m1 - f.zhat(z[i]) * m2 : gi);
  }
}

}  // namespace hdas::cuda::conv
