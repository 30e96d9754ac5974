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
// This header and conv_candidates.cpp hold the schema and the argument checks; each backend
// allocates and runs its kernels in its own file (cpu/conv_candidates_kernel.cpp).
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

// Checks every argument (c10::ValueError / c10::TypeError naming it and what was expected) and fills
// a ConvCandidates, x in `format`.
ConvCandidates make_conv_candidates(const at::Tensor& x, c10::IntArrayRef kinds, c10::IntArrayRef edges,
                                    const at::Tensor& weights, const std::vector<at::Tensor>& dw1,
                                    const std::vector<at::Tensor>& pw1, const std::vector<at::Tensor>& dw2,
                                    const std::vector<at::Tensor>& pw2,
                                    const std::vector<std::optional<at::Tensor>>& bn_weight,
                                    const std::vector<std::optional<at::Tensor>>& bn_bias, int64_t stride,
                                    at::MemoryFormat format, const char* op);

// Statistics of the forward: running statistics [Z, C] present in eval; more than one value per
// channel in training. Returns (mean, invstd) as the kernels read them in eval (copies in op math),
// or freshly allocated [Z, C] buffers for the kernels to fill, plus var_u ([Z, C] or empty).
struct ConvStats {
  at::Tensor mean, invstd, var_u;
};
ConvStats conv_forward_stats(const ConvCandidates& cc, bool batch_stats, const std::optional<at::Tensor>& running_mean,
                             const std::optional<at::Tensor>& running_var, double eps, const char* op);

// grad_out: E tensors of the output shape; saved: empty or B + S tensors [N, C, Ho, Wo] in op math;
// save_mean/save_invstd [Z, C].
void check_conv_backward(const ConvCandidates& cc, const std::vector<at::Tensor>& grad_out,
                         const std::vector<at::Tensor>& saved, const at::Tensor& save_mean,
                         const at::Tensor& save_invstd, const char* op);

// The gradients the backward kernels write, allocated by their caller: x in x's dtype (NCHW), the
// mixing weights [B] and BatchNorm affine gradients (Z entries) in op math, the convolution weights
// in their own shape and dtype; undefined (or empty) where not asked for.
struct ConvGrads {
  at::Tensor x, weights;
  std::vector<at::Tensor> dw1, pw1, dw2, pw2, gamma, beta;
};

}  // namespace hdas
