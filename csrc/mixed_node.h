// hdas::mixed_node -- the fused weighted sum of parameter-free primitives (and of precomputed
// parametric branch outputs) over one or more input tensors:
//
//   out = sum_e sum_p w[e, p] * op_p(inputs[e])
//
// op_p is none (x*0), max/avg 3x3 pool (padding 1, average excludes padding) optionally followed
// by BatchNorm(affine=False), identity, "extra": the next precomputed tensor of `extras`
// (edge-major), e.g. a sep_conv output, or "add": the next tensor of `extras` added as it is, its
// weight already applied by the caller (folded into the affine of the op's last BatchNorm, so the
// kernel neither reads it in the backward nor writes its gradient, which is grad_out itself: the
// autograd formula passes grad_out on, and mixed_node_backward returns the gradients of the "extra"
// tensors only; an "add" column of the weights is ignored and gets a zero gradient).
// One edge is DARTS' MixedOp, several are an Hs-DAS node.
//
// groups = k > 1 (one input): PC-DARTS' partial-channel MixedOp. The input has C*k channels; the
// weighted sum mixes its first C (extras have C channels), and the output, C*k channels, is the
// channel shuffle in k groups of [mixed, the other C*(k-1) input channels] (those max-pooled 2x2 at
// stride 2): output channel i*k holds mixed channel i, channel i*k + g (g >= 1) input channel
// g*C + i. The kernels write the mixed channels straight into their places and read the input's
// first channels in place; place_passed / passed_backward move the others (no concatenation or
// shuffle tensors).
//
// This header and mixed_node.cpp hold the schema, the argument checks and the small steps both
// backends share (statistics buffers, the layout of extras and of returned gradients). Each backend
// allocates and launches in its own file: the CPU one (cpu/mixed_node_kernel.cpp) runs its
// channel-by-channel kernels, statistics and output in one pass; the CUDA one
// (cuda/mixed_node_kernel.cu) runs a sequence of grid-wide kernels with reductions between them.
#pragma once

#include <ATen/ATen.h>
#include <ATen/OpMathType.h>

#include <vector>

#include "mixed_node_codes.h"
#include "ops_namespace.h"

namespace hdas {

// A validated call: geometry plus, for every primitive p, its pool slot q (or -1) and its extra
// slot k (or -1). Tensors are already in the layout the backend asked for.
struct MixedNode {
  std::vector<at::Tensor> inputs;  // E x [N, Cx, H, W]
  std::vector<at::Tensor> extras;  // E*K x [N, C, Ho, Wo], edge-major
  std::vector<int64_t> prims;      // P codes
  std::vector<int64_t> pool_slot;  // P: index q among the pools, or -1
  std::vector<int64_t> extra_slot; // P: index k among the extras (extra and add) of an edge, or -1
  int64_t E = 0, P = 0, Q = 0, K = 0;

  // The tensors of `extras` whose gradient the backward writes (code extra, not add).
  bool weighted_extra(int64_t i) const;
  int64_t N = 0, C = 0, H = 0, W = 0, Ho = 0, Wo = 0, stride = 1;
  int64_t G = 1, Cx = 0;  // channel groups (partial channels) and the inputs' and output's C*G channels
  bool pool_bn = true;
  at::MemoryFormat format = at::MemoryFormat::Contiguous;

  int64_t plane_out() const { return Ho * Wo; }
  int64_t count() const { return N * Ho * Wo; }  // values per channel that BN statistics see
};

// Checks every argument (raising c10::ValueError / c10::TypeError with the argument's name and
// what was expected) and fills a MixedNode. `format` is the layout the backend computes in.
MixedNode make_mixed_node(const std::vector<at::Tensor>& inputs, const at::Tensor& weights,
                          c10::IntArrayRef prims, const std::vector<at::Tensor>& extras,
                          int64_t stride, bool pool_bn, int64_t groups, const char* op_name);

// groups > 1: out's channels i*G + g (g >= 1) from the inputs' channels g*C + i (max-pooled 2x2 at
// stride 2), written in place into out ([N, Cx, Ho, Wo]); the mixed channels are the kernels'.
void place_passed(const MixedNode& node, at::Tensor& out);
// groups > 1: the gradient of the passed channels, written into grad_input's channels C..Cx.
void passed_backward(const MixedNode& node, const at::Tensor& grad, at::Tensor& grad_input);

// Running-statistics arguments of the forward (eval: present, [E, Q, C], on the inputs' device;
// training: more than one value per channel).
void check_forward_stats(const MixedNode& node, bool batch_stats, const std::optional<at::Tensor>& running_mean,
                         const std::optional<at::Tensor>& running_var, const char* op);
// grad_out of the output's shape and dtype; saved statistics [E, Q, C] when the pools have BN.
void check_backward_args(const MixedNode& node, const at::Tensor& grad_out, const at::Tensor& save_mean,
                         const at::Tensor& save_invstd, const char* op);
// The backward's gradient buffers for node.extras: empty tensors at the "extra" slots, undefined
// at the "add" slots; returned_extra_grads keeps the defined ones, in layout f.
std::vector<at::Tensor> extra_grads_for(const MixedNode& node);
// The backward's view of node.extras: the "extra" tensors in layout f, and grad (already in f) at
// the "add" slots, which the backward never reads: no copy of a tensor it does not need.
void backward_extras(MixedNode& node, const at::Tensor& grad, at::MemoryFormat f);
std::vector<at::Tensor> returned_extra_grads(std::vector<at::Tensor> grads, at::MemoryFormat f);

// The element types the kernels of both ops are built for (float8 types are floating too, but not these).
inline bool kernel_dtype(at::ScalarType t) {
  return t == at::kFloat || t == at::kDouble || t == at::kHalf || t == at::kBFloat16;
}

inline at::ScalarType op_math(at::ScalarType t) { return t == at::kDouble ? at::kDouble : at::kFloat; }

inline void to_format(std::vector<at::Tensor>& ts, at::MemoryFormat f) {
  for (auto& t : ts) t = t.contiguous(f);
}

// The forward's statistics [E, Q, C] in the op-math type: buffers for the batch statistics (mean,
// 1/sqrt(var + eps), unbiased variance) that the kernels fill; in eval copies of the running mean and
// 1/sqrt(running_var + eps) and an empty var_u; without pool BN three empty tensors.
struct ForwardStats {
  at::Tensor mean, invstd, var_u;
};
ForwardStats forward_stats(const MixedNode& node, bool batch_stats, const std::optional<at::Tensor>& running_mean,
                           const std::optional<at::Tensor>& running_var, double eps);
// The backward's saved (mean, invstd) in the op-math type, contiguous; undefined tensors without pool BN.
std::pair<at::Tensor, at::Tensor> saved_stats(const MixedNode& node, const at::Tensor& save_mean,
                                              const at::Tensor& save_invstd);

// The layout the output takes: channels_last when inputs[0] is, else contiguous NCHW.
inline at::MemoryFormat output_format(const at::Tensor& x) {
  return x.suggest_memory_format() == at::MemoryFormat::ChannelsLast ? at::MemoryFormat::ChannelsLast
                                                                     : at::MemoryFormat::Contiguous;
}

inline int64_t pooled_size(int64_t size, int64_t stride) { return (size - 1) / stride + 1; }

}  // namespace hdas
