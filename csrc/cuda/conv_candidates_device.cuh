// Kernels of hdas::conv_candidates on CUDA: the depthwise convolutions (forward, and backward to the
// input and to the weights), the BatchNorm statistics, normalisation-and-mix and BatchNorm backward.
// Torch-free (nvcc, or g++ over csrc/emu). Every tensor is NCHW contiguous in the op-math type A
// (float, or double for double); the launcher (conv_candidates_kernel.cu) runs the pointwise
// convolutions as batched GEMMs between them.
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
  __device__ A operator()(A v, int64_t c) const {
    if (mean != nullptr) v = (v - mean[c]) * scale[c];
    if (shift != nullptr) v += shift[c];
    return relu && v < A(0) ? A(0) : v;
  }
};

// out[nc, oh, ow] = sum_{u,v} w[c, u, v] * m(in)[nc, oh*s - p + u*d, ow*s - p + v*d] (zero outside).
template <typename A>
__global__ void __launch_bounds__(kThreads) dw_forward_kernel(DwGeo g, const A* __restrict__ in, ChannelMap<A> m,
                                                              const A* __restrict__ w, A* __restrict__ out) {
  const int64_t total = g.NC * g.Ho * g.Wo;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < total; i += int64_t(blockDim.x) * gridDim.x) {
    const int ow = static_cast<int>(i % g.Wo);
    const int64_t t = i / g.Wo;
    const int oh = static_cast<int>(t % g.Ho);
    const int64_t nc = t / g.Ho;
    const A* plane = in + nc * g.H * g.W;
    const int64_t c = nc % g.C;
    const A* wc = w + c * g.k * g.k;
    A acc = 0;
    for (int u = 0; u < g.k; ++u) {
      const int ih = oh * g.s - g.p + u * g.d;
      if (ih < 0 || ih >= g.H) continue;
      for (int v = 0; v < g.k; ++v) {
        const int iw = ow * g.s - g.p + v * g.d;
        if (iw >= 0 && iw < g.W) acc += wc[u * g.k + v] * m(plane[ih * g.W + iw], c);
      }
    }
    out[i] = acc;
  }
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
  A acc = 0;
  for (int64_t j = threadIdx.x; j < N * L; j += blockDim.x) {
    const int64_t n = j / L, pos = j % L;
    const int oh = static_cast<int>(pos / g.Wo), ow = static_cast<int>(pos % g.Wo);
    const int ih = oh * g.s - g.p + u * g.d, iw = ow * g.s - g.p + v * g.d;
    if (ih >= 0 && ih < g.H && iw >= 0 && iw < g.W) {
      const int64_t nc = n * g.C + c;
      acc += gout[nc * L + pos] * m(in[(nc * g.H + ih) * g.W + iw], c);
    }
  }
  const A total = block_sum(acc, smem);
  if (threadIdx.x == 0) gw[blockIdx.x] = total;
}

// Batch statistics of z [N, C, L], one block per channel, in two passes (mean, then the sum of
// squared deviations): mean, invstd = 1 / sqrt(biased var + eps), var_u (unbiased).
template <typename A>
__global__ void __launch_bounds__(kThreads) bn_stats_kernel(const A* __restrict__ z, int64_t N, int64_t C, int64_t L,
                                                            A eps, A* mean, A* invstd, A* var_u) {
  HDAS_SHARED(A, smem, [32]);
  const int64_t c = blockIdx.x, M = N * L;
  A s = 0;
  for (int64_t j = threadIdx.x; j < M; j += blockDim.x) s += z[((j / L) * C + c) * L + j % L];
  const A mu = block_sum(s, smem) / static_cast<A>(M);
  A m2 = 0;
  for (int64_t j = threadIdx.x; j < M; j += blockDim.x) {
    const A dv = z[((j / L) * C + c) * L + j % L] - mu;
    m2 += dv * dv;
  }
  m2 = block_sum(m2, smem);
  if (threadIdx.x == 0) {
    mean[c] = mu;
    invstd[c] = A(1) / sqrt(m2 / static_cast<A>(M) + eps);
    var_u[c] = m2 / static_cast<A>(M - 1);
  }
}

// out = m(z) (accumulate: out + m(z)) over z [N, C, L]: a branch's last BatchNorm with its mixing
// weight folded into scale and shift, summed into its edge's output.
template <typename A>
__global__ void __launch_bounds__(kThreads) bn_apply_kernel(const A* __restrict__ z, int64_t C, int64_t L,
                                                            int64_t total, ChannelMap<A> m, A* __restrict__ out,
                                                            bool accumulate) {
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < total; i += int64_t(blockDim.x) * gridDim.x) {
    const A y = m(z[i], (i / L) % C);
    out[i] = accumulate ? out[i] + y : y;
  }
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
  __device__ A zhat(A z, int64_t c) const { return (z - mean[c]) * invstd[c]; }
  __device__ A grad(A g, A z, int64_t c) const {
    if (!relu_mask) return g;
    A y = (z - mean[c]) * a[c];
    if (beta != nullptr) y += beta[c];
    return y > A(0) ? g : A(0);
  }
};

// S1 = sum g, S2 = sum g * zhat for channel blockIdx.x (g masked as b says).
template <typename A>
__global__ void __launch_bounds__(kThreads) bn_backward_reduce_kernel(const A* __restrict__ g, const A* __restrict__ z,
                                                                      int64_t N, int64_t C, int64_t L, BnGrad<A> b,
                                                                      A* s1, A* s2) {
  HDAS_SHARED(A, smem, [32]);
  const int64_t c = blockIdx.x, M = N * L;
  A t1 = 0, t2 = 0;
  for (int64_t j = threadIdx.x; j < M; j += blockDim.x) {
    const int64_t i = ((j / L) * C + c) * L + j % L;
    const A zh = b.zhat(z[i], c);
    const A gi = b.grad(g[i], z[i], c);
    t1 += gi;
    t2 += gi * zh;
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
                                                                     int64_t C, int64_t L, int64_t total, BnGrad<A> b,
                                                                     const A* __restrict__ s1, const A* __restrict__ s2,
                                                                     A inv_count, bool batch, A* __restrict__ dz) {
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < total; i += int64_t(blockDim.x) * gridDim.x) {
    const int64_t c = (i / L) % C;
    const A zh = b.zhat(z[i], c);
    const A gi = b.grad(g[i], z[i], c);
    dz[i] = b.a[c] * (batch ? gi - s1[c] * inv_count - zh * s2[c] * inv_count : gi);
  }
}

}  // namespace hdas::cuda::conv
