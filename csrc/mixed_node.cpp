// Schema, argument checks and the steps both backends share of hdas::mixed_node.
#include "mixed_node.h"

#include <torch/library.h>

namespace hdas {

namespace {

std::pair<at::Tensor, at::Tensor> running_stats(const at::Tensor& running_mean, const at::Tensor& running_var,
                                                double eps, at::ScalarType acc) {
  // A copy: outputs must never alias inputs (the running statistics belong to the caller).
  return {running_mean.to(acc, /*non_blocking=*/false, /*copy=*/true).contiguous(),
          (running_var.to(acc) + eps).rsqrt().contiguous()};
}

}  // namespace

MixedNode make_mixed_node(const std::vector<at::Tensor>& inputs, const at::Tensor& weights,
                          c10::IntArrayRef prims, const std::vector<at::Tensor>& extras,
                          int64_t stride, bool pool_bn, int64_t groups, const char* op) {
  TORCH_CHECK_VALUE(!inputs.empty(), op, ": inputs must be a non-empty list of tensors");
  const at::Tensor& x0 = inputs[0];
  TORCH_CHECK_VALUE(x0.dim() == 4, op, ": inputs[0] must be a 4-D tensor [N, C, H, W], got shape ",
                    x0.sizes());
  TORCH_CHECK_TYPE(kernel_dtype(x0.scalar_type()), op,
                   ": inputs must be float32, float64, float16 or bfloat16, got ", x0.scalar_type());
  for (size_t i = 1; i < inputs.size(); ++i) {
    TORCH_CHECK_VALUE(inputs[i].sizes() == x0.sizes(), op, ": inputs[", i,
                      "] must have the shape of inputs[0] ", x0.sizes(), ", got ", inputs[i].sizes());
    TORCH_CHECK_TYPE(inputs[i].scalar_type() == x0.scalar_type(), op, ": inputs[", i,
                     "] must have dtype ", x0.scalar_type(), " like inputs[0], got ",
                     inputs[i].scalar_type());
    TORCH_CHECK_VALUE(inputs[i].device() == x0.device(), op, ": inputs[", i, "] must be on ",
                      x0.device(), " like inputs[0], got ", inputs[i].device());
  }
  TORCH_CHECK_VALUE(x0.size(0) > 0, op, ": empty batch: inputs have N = 0");
  TORCH_CHECK_VALUE(x0.size(1) > 0 && x0.size(2) > 0 && x0.size(3) > 0, op,
                    ": inputs must have C, H, W > 0, got shape ", x0.sizes());
  TORCH_CHECK_VALUE(stride == 1 || stride == 2, op, ": stride must be 1 or 2, got ", stride);
  TORCH_CHECK_VALUE(groups >= 1, op, ": groups must be an int >= 1, got ", groups);
  if (groups > 1) {
    TORCH_CHECK_VALUE(inputs.size() == 1, op, ": groups > 1 (partial channels) takes one input, got ",
                      inputs.size());
    TORCH_CHECK_VALUE(x0.size(1) % groups == 0, op, ": inputs[0]'s channels (", x0.size(1),
                      ") must be divisible by groups = ", groups);
    TORCH_CHECK_VALUE(stride == 1 || (x0.size(2) % 2 == 0 && x0.size(3) % 2 == 0), op,
                      ": groups > 1 at stride 2 needs an even height and width (the passed channels are "
                      "max-pooled 2x2), got ", x0.size(2), "x", x0.size(3));
  }

  MixedNode node;
  node.E = static_cast<int64_t>(inputs.size());
  node.P = static_cast<int64_t>(prims.size());
  TORCH_CHECK_VALUE(node.P > 0, op, ": prims must name at least one primitive");
  for (int64_t p = 0; p < node.P; ++p) {
    const int64_t code = prims[p];
    TORCH_CHECK_VALUE(code >= kNone && code <= kAdd, op, ": prims[", p,
                      "] must be a primitive code in 0..5 (none, max_pool_3x3, avg_pool_3x3, "
                      "skip_connect, extra, add), got ", code);
    TORCH_CHECK_VALUE(!(code == kSkip && stride != 1), op, ": prims[", p,
                      "] is skip_connect at stride 2, which is FactorizedReduce (a parametric op): "
                      "pass its output as an extra");
    node.prims.push_back(code);
    node.pool_slot.push_back(code == kMaxPool || code == kAvgPool ? node.Q++ : -1);
    node.extra_slot.push_back(code == kExtra || code == kAdd ? node.K++ : -1);
  }

  TORCH_CHECK_VALUE(weights.dim() == 2 && weights.size(0) == node.E && weights.size(1) == node.P,
                    op, ": weights must have shape [num_inputs, num_primitives] = [", node.E, ", ",
                    node.P, "], got ", weights.sizes());
  TORCH_CHECK_TYPE(kernel_dtype(weights.scalar_type()), op,
                   ": weights must be a floating tensor, got ", weights.scalar_type());
  TORCH_CHECK_VALUE(weights.device() == x0.device(), op, ": weights must be on ", x0.device(),
                    " like inputs, got ", weights.device());

  node.N = x0.size(0); node.Cx = x0.size(1); node.H = x0.size(2); node.W = x0.size(3);
  node.G = groups;
  node.C = node.Cx / groups;
  node.stride = stride;
  node.Ho = pooled_size(node.H, stride);
  node.Wo = pooled_size(node.W, stride);
  node.pool_bn = pool_bn;

  const int64_t want = node.E * node.K;
  TORCH_CHECK_VALUE(static_cast<int64_t>(extras.size()) == want, op, ": expected ", want,
                    " extras (num_inputs x number of 'extra' and 'add' primitives = ", node.E, " x ", node.K,
                    "), got ", extras.size());
  const std::vector<int64_t> out_shape{node.N, node.C, node.Ho, node.Wo};
  for (size_t i = 0; i < extras.size(); ++i) {
    TORCH_CHECK_VALUE(extras[i].sizes() == c10::IntArrayRef(out_shape), op, ": extras[", i, "] must have the ",
                      groups > 1 ? "mixed channels' shape " : "output shape ", c10::IntArrayRef(out_shape),
                      ", got ", extras[i].sizes());
    TORCH_CHECK_TYPE(extras[i].scalar_type() == x0.scalar_type(), op, ": extras[", i,
                     "] must have dtype ", x0.scalar_type(), " like inputs, got ",
                     extras[i].scalar_type());
    TORCH_CHECK_VALUE(extras[i].device() == x0.device(), op, ": extras[", i, "] must be on ",
                      x0.device(), " like inputs, got ", extras[i].device());
  }
  node.inputs = inputs;
  node.extras = extras;
  return node;
}

bool MixedNode::weighted_extra(int64_t i) const {
  const int64_t k = i % K;
  for (int64_t p = 0; p < P; ++p)
    if (extra_slot[p] == k) return prims[p] == kExtra;
  return false;
}

std::vector<at::Tensor> extra_grads_for(const MixedNode& node) {
  std::vector<at::Tensor> out;
  for (size_t i = 0; i < node.extras.size(); ++i)
    out.push_back(node.weighted_extra(static_cast<int64_t>(i)) ? at::empty_like(node.extras[i]) : at::Tensor());
  return out;
}

void backward_extras(MixedNode& node, const at::Tensor& grad, at::MemoryFormat f) {
  for (size_t i = 0; i < node.extras.size(); ++i)
    node.extras[i] = node.weighted_extra(static_cast<int64_t>(i)) ? node.extras[i].contiguous(f) : grad;
}

std::vector<at::Tensor> returned_extra_grads(std::vector<at::Tensor> grads, at::MemoryFormat f) {
  std::vector<at::Tensor> out;
  for (auto& g : grads)
    if (g.defined()) out.push_back(g.contiguous(f));
  return out;
}

void check_forward_stats(const MixedNode& node, bool batch_stats, const std::optional<at::Tensor>& running_mean,
                         const std::optional<at::Tensor>& running_var, const char* op) {
  if (!node.pool_bn || node.Q == 0) return;
  const auto& x0 = node.inputs[0];
  if (!batch_stats) {
    for (const auto* rs : {&running_mean, &running_var}) {
      const char* name = rs == &running_mean ? "running_mean" : "running_var";
      TORCH_CHECK_VALUE(rs->has_value() && (*rs)->defined(), op, ": ", name,
                        " is required when pool_bn is set and batch statistics are off (eval)");
      TORCH_CHECK_VALUE((*rs)->sizes() == c10::IntArrayRef({node.E, node.Q, node.C}), op, ": ",
                        name, " must have shape [num_inputs, num_pools, C] = [", node.E, ", ",
                        node.Q, ", ", node.C, "], got ", (*rs)->sizes());
      TORCH_CHECK_VALUE((*rs)->device() == x0.device(), op, ": ", name, " must be on ",
                        x0.device(), ", got ", (*rs)->device());
    }
  } else {
    TORCH_CHECK_VALUE(node.count() > 1, op,
                      ": expected more than 1 value per channel when training (pool BN), got N*Ho*Wo = ",
                      node.count());
  }
}

void check_backward_args(const MixedNode& node, const at::Tensor& grad_out, const at::Tensor& save_mean,
                         const at::Tensor& save_invstd, const char* op) {
  const auto& x0 = node.inputs[0];
  TORCH_CHECK_VALUE(grad_out.sizes() == c10::IntArrayRef({node.N, node.Cx, node.Ho, node.Wo}), op,
                    ": grad_out must have the output shape [", node.N, ", ", node.Cx, ", ", node.Ho,
                    ", ", node.Wo, "], got ", grad_out.sizes());
  TORCH_CHECK_TYPE(grad_out.scalar_type() == x0.scalar_type(), op, ": grad_out must have dtype ",
                   x0.scalar_type(), ", got ", grad_out.scalar_type());
  // A tensor on another device would reach the kernels as a foreign pointer.
  TORCH_CHECK_VALUE(grad_out.device() == x0.device(), op, ": grad_out must be on ", x0.device(), ", got ",
                    grad_out.device());
  if (node.pool_bn && node.Q > 0) {
    for (const auto* s : {&save_mean, &save_invstd}) {
      const char* name = s == &save_mean ? "save_mean" : "save_invstd";
      TORCH_CHECK_VALUE(s->sizes() == c10::IntArrayRef({node.E, node.Q, node.C}), op, ": ", name,
                        " must have shape [num_inputs, num_pools, C] = [", node.E, ", ", node.Q,
                        ", ", node.C, "], got ", s->sizes());
      TORCH_CHECK_VALUE(s->device() == x0.device(), op, ": ", name, " must be on ", x0.device(), ", got ",
                        s->device());
    }
  }
}

ForwardStats forward_stats(const MixedNode& node, bool batch_stats, const std::optional<at::Tensor>& running_mean,
                           const std::optional<at::Tensor>& running_var, double eps) {
  const auto acc = op_math(node.inputs[0].scalar_type());
  const auto opts = node.inputs[0].options().dtype(acc);
  ForwardStats st{at::empty({0}, opts), at::empty({0}, opts), at::empty({0}, opts)};
  if (!node.pool_bn || node.Q == 0) return st;
  if (batch_stats) {
    st.mean = at::empty({node.E, node.Q, node.C}, opts);
    st.invstd = at::empty_like(st.mean);
    st.var_u = at::empty_like(st.mean);
  } else {
    std::tie(st.mean, st.invstd) = running_stats(*running_mean, *running_var, eps, acc);
  }
  return st;
}

std::pair<at::Tensor, at::Tensor> saved_stats(const MixedNode& node, const at::Tensor& save_mean,
                                              const at::Tensor& save_invstd) {
  if (!node.pool_bn || node.Q == 0) return {};
  const auto acc = op_math(node.inputs[0].scalar_type());
  return {save_mean.to(acc).contiguous(), save_invstd.to(acc).contiguous()};
}

namespace {

// The passed channels g*C + i (g >= 1) of x as [N, G-1, C, H, W]; out's channels i*G + g as the
// same shape (a view: out is split into [N, C, G, Ho, Wo]).
at::Tensor passed_channels(const MixedNode& nd, const at::Tensor& x) {
  return x.narrow(1, nd.C, nd.Cx - nd.C);
}

at::Tensor passed_places(const MixedNode& nd, const at::Tensor& t) {
  return t.unflatten(1, {nd.C, nd.G}).narrow(2, 1, nd.G - 1).transpose(1, 2);
}

}  // namespace

void place_passed(const MixedNode& nd, at::Tensor& out) {
  if (nd.G == 1) return;
  at::Tensor passed = passed_channels(nd, nd.inputs[0]);
  if (nd.stride == 2) passed = at::max_pool2d(passed, {2, 2}, {2, 2});  // PC-DARTS' MaxPool2d(2, 2)
  passed_places(nd, out).copy_(passed.unflatten(1, {nd.G - 1, nd.C}));
}

void passed_backward(const MixedNode& nd, const at::Tensor& grad, at::Tensor& grad_input) {
  if (nd.G == 1) return;
  at::Tensor dst = passed_channels(nd, grad_input);
  const at::Tensor g = passed_places(nd, grad);  // [N, G-1, C, Ho, Wo], strided
  if (nd.stride == 1) {
    dst.unflatten(1, {nd.G - 1, nd.C}).copy_(g);
    return;
  }
  // max_pool2d's own backward, so that ties and NaN route the gradient as PyTorch's pool does.
  const at::Tensor x = passed_channels(nd, nd.inputs[0]);
  const auto indices = std::get<1>(at::max_pool2d_with_indices(x, {2, 2}, {2, 2}));
  const auto g_flat = g.flatten(1, 2).contiguous(x.suggest_memory_format());
  dst.copy_(at::max_pool2d_with_indices_backward(g_flat, x, {2, 2}, {2, 2}, {0, 0}, {1, 1}, false, indices));
}

TORCH_LIBRARY_FRAGMENT(HDAS_OPS_NAMESPACE, m) {
  m.def(
      "mixed_node(Tensor[] inputs, Tensor weights, int[] prims, Tensor[] extras, int stride, "
      "bool pool_bn, bool batch_stats, Tensor? running_mean, Tensor? running_var, float eps, int groups=1) "
      "-> (Tensor out, Tensor save_mean, Tensor save_invstd, Tensor batch_var)");
  m.def(
      "mixed_node_backward(Tensor grad_out, Tensor[] inputs, Tensor weights, int[] prims, "
      "Tensor[] extras, int stride, bool pool_bn, bool batch_stats, Tensor save_mean, "
      "Tensor save_invstd, int groups=1) -> (Tensor[] grad_inputs, Tensor grad_weights, Tensor[] grad_extras)");
}

}  // namespace hdas
