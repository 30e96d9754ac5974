// hdas::mixed_node on the CPU: argument checks, allocations, and the call into the kernel set this
// CPU supports (mixed_node_kernel.h; bodies in mixed_node_kernel_impl.h).
#include <torch/library.h>

#include "mixed_node_kernel.h"

namespace hdas::cpu {
namespace {

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> forward_cpu(
    const std::vector<at::Tensor>& inputs, const at::Tensor& weights, c10::IntArrayRef prims,
    const std::vector<at::Tensor>& extras, int64_t stride, bool pool_bn, bool batch_stats,
    const std::optional<at::Tensor>& running_mean, const std::optional<at::Tensor>& running_var, double eps,
    int64_t groups) {
  const char* op = "hdas::mixed_node";
  MixedNode node = make_mixed_node(inputs, weights, prims, extras, stride, pool_bn, groups, op);
  check_forward_stats(node, batch_stats, running_mean, running_var, op);
  const auto& x0 = inputs[0];
  const bool bn = pool_bn && node.Q > 0;
  auto [mean, invstd, var_u] = forward_stats(node, batch_stats, running_mean, running_var, eps);
  // The CPU kernels index NCHW planes: channels_last inputs are computed through a copy.
  to_format(node.inputs, at::MemoryFormat::Contiguous);
  to_format(node.extras, at::MemoryFormat::Contiguous);
  const at::Tensor w = weights.to(op_math(x0.scalar_type())).contiguous();
  auto out = at::empty({node.N, node.Cx, node.Ho, node.Wo}, x0.options());
  if (use_avx2())
    isa_avx2::forward(node, w, bn, batch_stats, eps, mean, invstd, var_u, out);
  else
    isa_base::forward(node, w, bn, batch_stats, eps, mean, invstd, var_u, out);
  place_passed(node, out);
  return {out.contiguous(output_format(x0)), mean, invstd, var_u};
}

std::tuple<std::vector<at::Tensor>, at::Tensor, std::vector<at::Tensor>> backward_cpu(
    const at::Tensor& grad_out, const std::vector<at::Tensor>& inputs, const at::Tensor& weights,
    c10::IntArrayRef prims, const std::vector<at::Tensor>& extras, int64_t stride, bool pool_bn, bool batch_stats,
    const at::Tensor& save_mean, const at::Tensor& save_invstd, int64_t groups) {
  const char* op = "hdas::mixed_node_backward";
  MixedNode node = make_mixed_node(inputs, weights, prims, extras, stride, pool_bn, groups, op);
  check_backward_args(node, grad_out, save_mean, save_invstd, op);
  const auto& x0 = inputs[0];
  const auto acc = op_math(x0.scalar_type());
  const bool bn = pool_bn && node.Q > 0;
  to_format(node.inputs, at::MemoryFormat::Contiguous);
  const auto grad = grad_out.contiguous();
  backward_extras(node, grad, at::MemoryFormat::Contiguous);
  const at::Tensor w = weights.to(acc).contiguous();
  const auto [mean, invstd] = saved_stats(node, save_mean, save_invstd);

  std::vector<at::Tensor> grad_inputs;
  for (const auto& x : node.inputs) grad_inputs.push_back(at::empty_like(x));
  auto grad_extras = extra_grads_for(node);
  auto gw_part = at::empty({node.C, node.E * node.P}, x0.options().dtype(acc));
  if (use_avx2())
    isa_avx2::backward(node, grad, w, mean, invstd, bn, batch_stats, grad_inputs, grad_extras, gw_part);
  else
    isa_base::backward(node, grad, w, mean, invstd, bn, batch_stats, grad_inputs, grad_extras, gw_part);
  passed_backward(node, grad, grad_inputs[0]);
  const auto grad_w = gw_part.sum(0).view({node.E, node.P}).to(weights.scalar_type());
  const auto f = output_format(x0);
  for (auto& t : grad_inputs) t = t.contiguous(f);
  return {grad_inputs, grad_w, returned_extra_grads(std::move(grad_extras), f)};
}

}  // namespace

TORCH_LIBRARY_IMPL(hdas, CPU, m) {
  m.impl("mixed_node", &forward_cpu);
  m.impl("mixed_node_backward", &backward_cpu);
}

}  // namespace hdas::cpu
