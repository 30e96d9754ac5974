// Kernels of hdas::conv_candidates on CUDA: the depthwise convolutions (forward, and backward to the
// input and to the weights) and the BatchNorm statistics. Torch-free (nvcc, or g++ over csrc/emu).
// Every tensor is NCHW contiguous in the op-math type A (float, or double for double); the launcher
// (conv_candidates_kernel.cu) runs the pointwise convolutions as batched GEMMs between them.
#pragma once

#include "device.cuh"

namespace hdas::cuda::conv {

// One depthwise convolution's geometry: planes of H x W in, Ho x Wo out, k x k taps with dilation d,
// padding p, stride s; NC planes (image-major, C channels each).
struct DwGeo {
  int64_t NC, C;
  int H, W, Ho, Wo, k, d, p, s;
};

// out[nc, oh, ow] = sum_{u,v} w[c, u, v] * in[nc, oh*s - p + u*d, ow*s - p + v*d] (zero outside).
template <typename A>
__global__ void __launch_bounds__(kThreads) dw_forward_kernel(DwGeo g, const A* __restrict__ in,
                                                              const A* __restrict__ w, A* __restrict__ out) {
  const int64_t total = g.NC * g.Ho * g.Wo;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < total; i += int64_t(blockDim.x) * gridDim.x) {
    const int ow = static_cast<int>(i % g.Wo);
    const int64_t t = i / g.Wo;
    const int oh = static_cast<int>(t % g.Ho);
    const int64_t nc = t / g.Ho;
    const A* plane = in + nc * g.H * g.W;
    const A* wc = w + (nc % g.C) * g.k * g.k;
    A acc = 0;
    for (int u = 0; u < g.k; ++u) {
      const int ih = oh * g.s - g.p + u * g.d;
      if (ih < 0 || ih >= g.H) continue;
      for (int v = 0; v < g.k; ++v) {
        const int iw = ow * g.s - g.p + v * g.d;
        if (iw >= 0 && iw < g.W) acc += wc[u * g.k + v] * plane[ih * g.W + iw];
      }
    }
    out[i] = acc;
  }
}

// The gradient of the input: gin[nc, ih, iw] = sum over the taps (u, v) that read (ih, iw) of
// w[c, u, v] * gout[nc, oh, ow]; a gather, so no atomics.
template <typename A>
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
    gin[i] = acc;
  }
}

// The gradient of the weights: one block per (c, u, v), summing gout * in over the images and the
// output positions.
template <typename A>
__global__ void __launch_bounds__(kThreads) dw_backward_weight_kernel(DwGeo g, const A* __restrict__ gout,
                                                                      const A* __restrict__ in, A* __restrict__ gw) {
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
      acc += gout[nc * L + pos] * in[(nc * g.H + ih) * g.W + iw];
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

}  // namespace hdas::cuda::conv
