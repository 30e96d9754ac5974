// hdas::conv_candidates -- the convolution candidates of one or more edges that read one input x,
// fused: for every branch b (an edge's separable or dilated convolution, DARTS' sep_conv_kxk and
// dil_conv_kxk), with r = relu(x),
//
//   dil (one half):  z1_b = pw1_b(dw1_b(r))                               y_b = BN_b(z1_b)
//   sep (two):       z1_b = pw1_b(dw1_b(r)), z2_b = pw2_b(dw2_b(relu(BN1_b(z1_b))))   y_b = BN2_b(z2_b)
//
//   out[e] = sum_{b of edge e} weights[b] * y_b
//
// dw: depthwise k x k convolution (dilation 1 or 2, "same" padding; the first at `stride`, the
// second at stride 1), pw: pointwise 1x1 convolution C -> C, BN: BatchNorm2d with optional affine
// parameters (batch statistics or running ones), no bias anywhere. The mixing weight is folded
// into the last BatchNorm of each branch, as DARTS' MixedOp weights it.
//
// BatchNorm slots: branch by branch in module order (sep: BN1 then BN2; dil: its BN), Z in all;
// statistics, running statistics and affine parameters are indexed by slot. The forward returns,
// besides the outputs, the pointwise outputs z1 (every branch) and z2 (separable branches): all the
// backward reads besides x and the parameters (everything else it recomputes per image). With
// `saved` empty the backward recomputes them too (the lean mode), from the statistics it is given.
//
// This header and conv_candidates.cpp hold the schema and the front both backends share (argument
// checks, statistics, the saved tensors); each backend allocates and runs its kernels in its own
// file (cpu/conv_candidates_kernel.cpp, cuda/conv_candidates_kernel.cu).
#pragma once

#include <ATen/ATen.h>

#include <array>
#include <optional>
#include <vector>

#include "conv_candidates_codes.h"
#include "ops_namespace.h"

namespace hdas {

struct ConvBranch {
  int64_t kind = 0, k = 3, dilation = 1, pad = 1, edge = 0;
  int64_t sep = -1;     // index among the separable branches (dw2, pw2, z2), or -1
  int64_t slot1 = -1;   // BatchNorm slot of a separable branch's first half, or -1
  int64_t slot = 0;     // BatchNorm slot of the branch's last BatchNorm
};

// A validated call. Parameters are contiguous in the op-math type (float, or double for double).
struct ConvCandidates {
  at::Tensor x;  // [N, C, H, W]
  std::vector<ConvBranch> branches;
  std::vector<at::Tensor> dw1, pw1, dw2, pw2;   // [C, k*k], [C, C] (B of dw1/pw1, S of dw2/pw2)
  std::vector<at::Tensor> gamma, beta;          // Z entries, undefined where a BN has no affine
  at::Tensor weights;                           // [B], op-math type
  int64_t B = 0, S = 0, Z = 0, E = 0;
  int64_t N = 0, C = 0, H = 0, W = 0, stride = 1, Ho = 0, Wo = 0;

  int64_t plane_out() const { return Ho * Wo; }
  int64_t count() const { return N * Ho * Wo; }  // values per channel that the statistics see
};

using OptTensors = std::vector<std::optional<at::Tensor>>;

// Statistics [Z, C] in op math: in the forward, freshly allocated buffers for the kernels to fill
// with batch statistics (plus var_u), or in eval copies of the running mean and 1/sqrt(var + eps)
// (var_u empty); in the backward, the forward's saved ones (var_u undefined).
struct ConvStats {
  at::Tensor mean, invstd, var_u;
};

// The forward's front: every argument checked (c10::ValueError / c10::TypeError naming it and what
// was expected), x contiguous NCHW (both backends compute NCHW: channels_last goes through a copy),
// and the statistics.
struct ConvForward {
  ConvCandidates cc;
  ConvStats st;
};
ConvForward conv_forward_front(const at::Tensor& x, c10::IntArrayRef kinds, c10::IntArrayRef edges,
                               const at::Tensor& weights, const std::vector<at::Tensor>& dw1,
                               const std::vector<at::Tensor>& pw1, const std::vector<at::Tensor>& dw2,
                               const std::vector<at::Tensor>& pw2, const OptTensors& bn_weight,
                               const OptTensors& bn_bias, int64_t stride, bool batch_stats,
                               const std::optional<at::Tensor>& running_mean,
                               const std::optional<at::Tensor>& running_var, double eps);

// The forward's saved pointwise outputs, as the backward takes them: z1 (B) then z2 (S).
std::vector<at::Tensor> conv_saved(const std::vector<at::Tensor>& z1, const std::vector<at::Tensor>& z2);

// The backward's front: the checks of the forward's plus grad_out (E tensors of the output shape),
// saved (empty, the lean mode, or the forward's B + S tensors in op math) and save_mean/save_invstd
// [Z, C]; the saved statistics in op math and the saved z1, z2 (contiguous; both empty when saved is).
struct ConvBackward {
  ConvCandidates cc;
  ConvStats st;
  std::vector<at::Tensor> z1, z2;
};
ConvBackward conv_backward_front(const std::vector<at::Tensor>& grad_out, const at::Tensor& x,
                                 c10::IntArrayRef kinds, c10::IntArrayRef edges, const at::Tensor& weights,
                                 const std::vector<at::Tensor>& dw1, const std::vector<at::Tensor>& pw1,
                                 const std::vector<at::Tensor>& dw2, const std::vector<at::Tensor>& pw2,
                                 const OptTensors& bn_weight, const OptTensors& bn_bias, int64_t stride,
                                 const std::vector<at::Tensor>& saved, const at::Tensor& save_mean,
                                 const at::Tensor& save_invstd);

// The gradients the backward kernels write, allocated by their caller: x in x's dtype (NCHW), the
// mixing weights [B] and BatchNorm affine gradients (Z entries) in op math, the convolution weights
// in their own shape and dtype; undefined (or empty) where not asked for.
struct ConvGrads {
  at::Tensor x, weights;
  std::vector<at::Tensor> dw1, pw1, dw2, pw2, gamma, beta;
};

}  // namespace hdas
