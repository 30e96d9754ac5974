// Schema of hdas::conv_candidates and the front both backends share (see conv_candidates.h).
#include "conv_candidates.h"

#include <torch/library.h>

#include <algorithm>

#include "mixed_node.h"  // kernel_dtype, op_math, pooled_size

namespace hdas {

namespace {

void check_param(const at::Tensor& t, const char* name, size_t i, c10::IntArrayRef shape, const at::Tensor& x,
                 const char* op) {
  TORCH_CHECK_VALUE(t.sizes() == shape, op, ": ", name, "[", i, "] must have shape ", shape, ", got ", t.sizes());
  TORCH_CHECK_TYPE(t.scalar_type() == x.scalar_type(), op, ": ", name, "[", i, "] must have dtype ",
                   x.scalar_type(), " like x, got ", t.scalar_type());
  TORCH_CHECK_VALUE(t.device() == x.device(), op, ": ", name, "[", i, "] must be on ", x.device(), " like x, got ",
                    t.device());
}

std::vector<at::Tensor> affine(const std::vector<std::optional<at::Tensor>>& ps, const char* name, int64_t Z,
                               const at::Tensor& x, at::ScalarType acc, const char* op) {
  TORCH_CHECK_VALUE(ps.empty() || static_cast<int64_t>(ps.size()) == Z, op, ": ", name,
                    " must be empty (no affine BatchNorm) or hold one entry per BatchNorm slot (", Z, "), got ",
                    ps.size());
  std::vector<at::Tensor> out(Z);
  for (size_t i = 0; i < ps.size(); ++i) {
    if (!ps[i].has_value() || !ps[i]->defined()) continue;
    const at::Tensor& t = *ps[i];
    TORCH_CHECK_VALUE(t.dim() == 1 && t.size(0) == x.size(1), op, ": ", name, "[", i, "] must have shape [",
                      x.size(1), "], got ", t.sizes());
    TORCH_CHECK_TYPE(kernel_dtype(t.scalar_type()), op, ": ", name, "[", i, "] must be a floating tensor, got ",
                     t.scalar_type());
    TORCH_CHECK_VALUE(t.device() == x.device(), op, ": ", name, "[", i, "] must be on ", x.device(), ", got ",
                      t.device());
    out[i] = t.to(acc).contiguous();
  }
  return out;
}

// Every argument of the call checked; x contiguous NCHW.
ConvCandidates make_conv_candidates(const at::Tensor& x, c10::IntArrayRef kinds, c10::IntArrayRef edges,
                                    const at::Tensor& weights, const std::vector<at::Tensor>& dw1,
                                    const std::vector<at::Tensor>& pw1, const std::vector<at::Tensor>& dw2,
                                    const std::vector<at::Tensor>& pw2,
                                    const OptTensors& bn_weight, const OptTensors& bn_bias, int64_t stride,
                                    const char* op) {
  TORCH_CHECK_VALUE(x.dim() == 4, op, ": x must be a 4-D tensor [N, C, H, W], got shape ", x.sizes());
  TORCH_CHECK_TYPE(kernel_dtype(x.scalar_type()), op, ": x must be float32, float64, float16 or bfloat16, got ",
                   x.scalar_type());
  TORCH_CHECK_VALUE(x.size(0) > 0, op, ": empty batch: x has N = 0");
  TORCH_CHECK_VALUE(x.size(1) > 0 && x.size(2) > 0 && x.size(3) > 0, op, ": x must have C, H, W > 0, got shape ",
                    x.sizes());
  TORCH_CHECK_VALUE(stride == 1 || stride == 2, op, ": stride must be 1 or 2, got ", stride);
  TORCH_CHECK_VALUE(!kinds.empty(), op, ": kinds must name at least one branch");
  TORCH_CHECK_VALUE(edges.size() == kinds.size(), op, ": edges must give one edge per branch (", kinds.size(),
                    "), got ", edges.size());

  ConvCandidates cc;
  cc.B = static_cast<int64_t>(kinds.size());
  cc.N = x.size(0); cc.C = x.size(1); cc.H = x.size(2); cc.W = x.size(3);
  cc.stride = stride;
  cc.Ho = pooled_size(cc.H, stride);
  cc.Wo = pooled_size(cc.W, stride);
  for (int64_t b = 0; b < cc.B; ++b) {
    TORCH_CHECK_VALUE(kinds[b] >= 0 && kinds[b] < kNumConvKinds, op, ": kinds[", b,
                      "] must be a convolution code in 0..", kNumConvKinds - 1,
                      " (sep_conv_3x3, sep_conv_5x5, dil_conv_3x3, dil_conv_5x5, sep_conv_7x7), got ", kinds[b]);
    TORCH_CHECK_VALUE(edges[b] >= 0 && edges[b] < cc.B, op, ": edges[", b, "] must be an edge index in 0..",
                      cc.B - 1, ", got ", edges[b]);
    const ConvShape s = conv_shape(kinds[b]);
    ConvBranch br;
    br.kind = kinds[b]; br.k = s.k; br.dilation = s.dilation; br.pad = s.pad(); br.edge = edges[b];
    if (s.halves == 2) {
      br.sep = cc.S++;
      br.slot1 = cc.Z++;
    }
    br.slot = cc.Z++;
    cc.branches.push_back(br);
    cc.E = std::max(cc.E, edges[b] + 1);
  }
  for (int64_t e = 0; e < cc.E; ++e)
    TORCH_CHECK_VALUE(std::find(edges.begin(), edges.end(), e) != edges.end(), op,
                      ": edges must number the edges 0..E-1, each with at least one branch; edge ", e, " has none");

  TORCH_CHECK_VALUE(weights.dim() == 1 && weights.size(0) == cc.B, op,
                    ": weights must have shape [num_branches] = [", cc.B, "], got ", weights.sizes());
  TORCH_CHECK_TYPE(kernel_dtype(weights.scalar_type()), op, ": weights must be a floating tensor, got ",
                   weights.scalar_type());
  TORCH_CHECK_VALUE(weights.device() == x.device(), op, ": weights must be on ", x.device(), " like x, got ",
                    weights.device());

  TORCH_CHECK_VALUE(static_cast<int64_t>(dw1.size()) == cc.B && static_cast<int64_t>(pw1.size()) == cc.B, op,
                    ": dw1 and pw1 must hold one tensor per branch (", cc.B, "), got ", dw1.size(), " and ",
                    pw1.size());
  TORCH_CHECK_VALUE(static_cast<int64_t>(dw2.size()) == cc.S && static_cast<int64_t>(pw2.size()) == cc.S, op,
                    ": dw2 and pw2 must hold one tensor per separable branch (", cc.S, "), got ", dw2.size(),
                    " and ", pw2.size());
  const auto acc = op_math(x.scalar_type());
  const int64_t C = cc.C;
  auto prep = [&](const at::Tensor& t, int64_t cols) { return t.to(acc).reshape({C, cols}).contiguous(); };
  for (int64_t b = 0; b < cc.B; ++b) {
    const auto& br = cc.branches[b];
    check_param(dw1[b], "dw1", b, {C, 1, br.k, br.k}, x, op);
    check_param(pw1[b], "pw1", b, {C, C, 1, 1}, x, op);
    cc.dw1.push_back(prep(dw1[b], br.k * br.k));
    cc.pw1.push_back(prep(pw1[b], C));
    if (br.sep >= 0) {
      check_param(dw2[br.sep], "dw2", br.sep, {C, 1, br.k, br.k}, x, op);
      check_param(pw2[br.sep], "pw2", br.sep, {C, C, 1, 1}, x, op);
      cc.dw2.push_back(prep(dw2[br.sep], br.k * br.k));
      cc.pw2.push_back(prep(pw2[br.sep], C));
    }
  }
  cc.gamma = affine(bn_weight, "bn_weight", cc.Z, x, acc, op);
  cc.beta = affine(bn_bias, "bn_bias", cc.Z, x, acc, op);
  cc.weights = weights.to(acc).contiguous();
  cc.x = x.contiguous();
  return cc;
}

// Running statistics [Z, C] present in eval; more than one value per channel in training.
ConvStats conv_forward_stats(const ConvCandidates& cc, bool batch_stats, const std::optional<at::Tensor>& running_mean,
                             const std::optional<at::Tensor>& running_var, double eps, const char* op) {
  const auto acc = op_math(cc.x.scalar_type());
  const auto opts = cc.x.options().dtype(acc);
  if (batch_stats) {
    TORCH_CHECK_VALUE(cc.count() > 1, op,
                      ": expected more than 1 value per channel when training, got N*Ho*Wo = ", cc.count());
    auto mean = at::empty({cc.Z, cc.C}, opts);
    return {mean, at::empty_like(mean), at::empty_like(mean)};
  }
  for (const auto* rs : {&running_mean, &running_var}) {
    const char* name = rs == &running_mean ? "running_mean" : "running_var";
    TORCH_CHECK_VALUE(rs->has_value() && (*rs)->defined(), op, ": ", name,
                      " is required when batch statistics are off (eval)");
    TORCH_CHECK_VALUE((*rs)->sizes() == c10::IntArrayRef({cc.Z, cc.C}), op, ": ", name,
                      " must have shape [num_batchnorms, C] = [", cc.Z, ", ", cc.C, "], got ", (*rs)->sizes());
    TORCH_CHECK_VALUE((*rs)->device() == cc.x.device(), op, ": ", name, " must be on ", cc.x.device(), ", got ",
                      (*rs)->device());
  }
  // Copies: outputs must never alias inputs (the running statistics belong to the caller).
  return {running_mean->to(acc, /*non_blocking=*/false, /*copy=*/true).contiguous(),
          (running_var->to(acc) + eps).rsqrt().contiguous(), at::empty({0}, opts)};
}

void check_conv_backward(const ConvCandidates& cc, const std::vector<at::Tensor>& grad_out,
                         const std::vector<at::Tensor>& saved, const at::Tensor& save_mean,
                         const at::Tensor& save_invstd, const char* op) {
  const auto& x = cc.x;
  const std::vector<int64_t> out_shape{cc.N, cc.C, cc.Ho, cc.Wo};
  TORCH_CHECK_VALUE(static_cast<int64_t>(grad_out.size()) == cc.E, op, ": grad_out must hold one tensor per edge (",
                    cc.E, "), got ", grad_out.size());
  for (size_t i = 0; i < grad_out.size(); ++i) {
    TORCH_CHECK_VALUE(grad_out[i].sizes() == c10::IntArrayRef(out_shape), op, ": grad_out[", i,
                      "] must have the output shape ", c10::IntArrayRef(out_shape), ", got ", grad_out[i].sizes());
    TORCH_CHECK_TYPE(grad_out[i].scalar_type() == x.scalar_type(), op, ": grad_out[", i, "] must have dtype ",
                     x.scalar_type(), ", got ", grad_out[i].scalar_type());
    TORCH_CHECK_VALUE(grad_out[i].device() == x.device(), op, ": grad_out[", i, "] must be on ", x.device(),
                      ", got ", grad_out[i].device());
  }
  const auto acc = op_math(x.scalar_type());
  TORCH_CHECK_VALUE(saved.empty() || static_cast<int64_t>(saved.size()) == cc.B + cc.S, op,
                    ": saved must be empty (recompute) or hold the forward's B + S = ", cc.B + cc.S,
                    " pointwise outputs, got ", saved.size());
  for (size_t i = 0; i < saved.size(); ++i) {
    TORCH_CHECK_VALUE(saved[i].sizes() == c10::IntArrayRef(out_shape), op, ": saved[", i, "] must have shape ",
                      c10::IntArrayRef(out_shape), ", got ", saved[i].sizes());
    TORCH_CHECK_TYPE(saved[i].scalar_type() == acc, op, ": saved[", i, "] must have dtype ", acc, ", got ",
                     saved[i].scalar_type());
    TORCH_CHECK_VALUE(saved[i].device() == x.device(), op, ": saved[", i, "] must be on ", x.device(), ", got ",
                      saved[i].device());
  }
  for (const auto* s : {&save_mean, &save_invstd}) {
    const char* name = s == &save_mean ? "save_mean" : "save_invstd";
    TORCH_CHECK_VALUE(s->sizes() == c10::IntArrayRef({cc.Z, cc.C}), op, ": ", name,
                      " must have shape [num_batchnorms, C] = [", cc.Z, ", ", cc.C, "], got ", s->sizes());
    TORCH_CHECK_VALUE(s->device() == x.device(), op, ": ", name, " must be on ", x.device(), ", got ", s->device());
  }
}

}  // namespace

ConvForward conv_forward_front(const at::Tensor& x, c10::IntArrayRef kinds, c10::IntArrayRef edges,
                               const at::Tensor& weights, const std::vector<at::Tensor>& dw1,
                               const std::vector<at::Tensor>& pw1, const std::vector<at::Tensor>& dw2,
                               const std::vector<at::Tensor>& pw2, const OptTensors& bn_weight,
                               const OptTensors& bn_bias, int64_t stride, bool batch_stats,
                               const std::optional<at::Tensor>& running_mean,
                               const std::optional<at::Tensor>& running_var, double eps) {
  const char* op = "hdas::conv_candidates";
  ConvForward f{make_conv_candidates(x, kinds, edges, weights, dw1, pw1, dw2, pw2, bn_weight, bn_bias, stride, op),
                {}};
  f.st = conv_forward_stats(f.cc, batch_stats, running_mean, running_var, eps, op);
  return f;
}

std::vector<at::Tensor> conv_saved(const std::vector<at::Tensor>& z1, const std::vector<at::Tensor>& z2) {
  std::vector<at::Tensor> saved(z1);
  saved.insert(saved.end(), z2.begin(), z2.end());
  return saved;
}

ConvBackward conv_backward_front(const std::vector<at::Tensor>& grad_out, const at::Tensor& x,
                                 c10::IntArrayRef kinds, c10::IntArrayRef edges, const at::Tensor& weights,
                                 const std::vector<at::Tensor>& dw1, const std::vector<at::Tensor>& pw1,
                                 const std::vector<at::Tensor>& dw2, const std::vector<at::Tensor>& pw2,
                                 const OptTensors& bn_weight, const OptTensors& bn_bias, int64_t stride,
                                 const std::vector<at::Tensor>& saved, const at::Tensor& save_mean,
                                 const at::Tensor& save_invstd) {
  const char* op = "hdas::conv_candidates_backward";
  ConvBackward b{make_conv_candidates(x, kinds, edges, weights, dw1, pw1, dw2, pw2, bn_weight, bn_bias, stride, op),
                 {}, {}, {}};
  check_conv_backward(b.cc, grad_out, saved, save_mean, save_invstd, op);
  const auto acc = op_math(x.scalar_type());
  b.st = {save_mean.to(acc).contiguous(), save_invstd.to(acc).contiguous(), at::Tensor()};
  for (size_t i = 0; i < saved.size(); ++i)
    (static_cast<int64_t>(i) < b.cc.B ? b.z1 : b.z2).push_back(saved[i].contiguous());
  return b;
}

TORCH_LIBRARY_FRAGMENT(HDAS_OPS_NAMESPACE, m) {
  m.def(
      "conv_candidates(Tensor x, int[] kinds, int[] edges, Tensor weights, Tensor[] dw1, Tensor[] pw1, "
      "Tensor[] dw2, Tensor[] pw2, Tensor?[] bn_weight, Tensor?[] bn_bias, int stride, bool batch_stats, "
      "Tensor? running_mean, Tensor? running_var, float eps) "
      "-> (Tensor[] out, Tensor[] saved, Tensor save_mean, Tensor save_invstd, Tensor batch_var)");
  m.def(
      "conv_candidates_backward(Tensor[] grad_out, Tensor x, int[] kinds, int[] edges, Tensor weights, "
      "Tensor[] dw1, Tensor[] pw1, Tensor[] dw2, Tensor[] pw2, Tensor?[] bn_weight, Tensor?[] bn_bias, int stride, "
      "bool batch_stats, Tensor[] saved, Tensor save_mean, Tensor save_invstd, bool[4] needs) "
      "-> (Tensor grad_x, Tensor grad_weights, Tensor[] grad_dw1, Tensor[] grad_pw1, Tensor[] grad_dw2, "
      "Tensor[] grad_pw2, Tensor[] grad_bn_weight, Tensor[] grad_bn_bias)");
}

}  // namespace hdas
