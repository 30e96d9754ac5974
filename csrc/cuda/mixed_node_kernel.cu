// The CUDA backend of hdas::mixed_node: checks, allocations and launches of the kernels of
// mixed_node_device.cuh on the current stream. Compiled by nvcc for the shipped ops, and as C++ by the
// emulated build (csrc/emu/mixed_node_emu.cpp, with runtime.cuh's emulated launch).
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <torch/library.h>

#include "../mixed_node.h"
#include "mixed_node_device.cuh"
#include "runtime.cuh"

namespace hdas::cuda {
namespace {

Geo geo_of(const MixedNode& nd) {
  return Geo{nd.N, nd.C, nd.H, nd.W, nd.Ho, nd.Wo, nd.stride, nd.format == at::MemoryFormat::ChannelsLast};
}

Meta meta_of(const MixedNode& nd) {
  TORCH_CHECK_VALUE(nd.E <= kMaxInputs, "hdas::mixed_node (CUDA): at most ", kMaxInputs, " inputs, got ", nd.E);
  TORCH_CHECK_VALUE(nd.P <= kMaxPrims, "hdas::mixed_node (CUDA): at most ", kMaxPrims, " primitives, got ", nd.P);
  TORCH_CHECK_VALUE(nd.E * nd.K <= kMaxExtras, "hdas::mixed_node (CUDA): at most ", kMaxExtras, " extras, got ",
                    nd.E * nd.K);
  Meta m{static_cast<int>(nd.E), static_cast<int>(nd.P), static_cast<int>(nd.Q), static_cast<int>(nd.K), {}, {}, {}};
  for (int p = 0; p < nd.P; ++p) {
    m.prim[p] = static_cast<int8_t>(nd.prims[p]);
    m.pool_slot[p] = static_cast<int8_t>(nd.pool_slot[p]);
    m.extra_slot[p] = static_cast<int8_t>(nd.extra_slot[p]);
  }
  return m;
}

template <typename T>
Ptrs<const T> const_ptrs(const std::vector<at::Tensor>& ts) {
  Ptrs<const T> r{};
  for (size_t i = 0; i < ts.size(); ++i) r.p[i] = ts[i].const_data_ptr<T>();
  return r;
}

template <typename T>
Ptrs<T> mut_ptrs(std::vector<at::Tensor>& ts) {
  Ptrs<T> r{};
  for (size_t i = 0; i < ts.size(); ++i) r.p[i] = ts[i].defined() ? ts[i].data_ptr<T>() : nullptr;  // "add" slots
  return r;
}

#define HDAS_DISPATCH(TYPE, NAME, ...) \
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, TYPE, NAME, __VA_ARGS__)

void batch_stats(const MixedNode& nd, double eps, at::Tensor& mean, at::Tensor& invstd, at::Tensor& var_u) {
  const Geo g = geo_of(nd);
  const Meta mt = meta_of(nd);
  const int64_t EQ = nd.E * nd.Q;
  auto partial = at::empty({nd.N, nd.C, EQ, 2}, mean.options());  // per plane: mean, M2
  HDAS_DISPATCH(nd.inputs[0].scalar_type(), "mixed_node_batch_stats_cuda", [&] {
    using A = at::opmath_type<scalar_t>;
    launch(pool_stats_kernel<scalar_t, A>, plane_blocks(nd.N * nd.C, "hdas::mixed_node"), kThreads, 0,
           const_ptrs<scalar_t>(nd.inputs), g, mt, partial.data_ptr<A>());
    launch(combine_stats_kernel<A>, grid_for(EQ * nd.C), kThreads, 0, partial.const_data_ptr<A>(), nd.N, nd.C, EQ,
           nd.plane_out(), static_cast<A>(eps), mean.data_ptr<A>(), invstd.data_ptr<A>(), var_u.data_ptr<A>());
  });
}

void apply(const MixedNode& nd, const at::Tensor& w, const at::Tensor& mean, const at::Tensor& invstd,
           at::Tensor& out) {
  const Geo g = geo_of(nd);
  const Meta mt = meta_of(nd);
  HDAS_DISPATCH(nd.inputs[0].scalar_type(), "mixed_node_apply_cuda", [&] {
    using A = at::opmath_type<scalar_t>;
    launch(apply_kernel<scalar_t, A>, grid_for(out.numel()), kThreads, 0, const_ptrs<scalar_t>(nd.inputs),
           const_ptrs<scalar_t>(nd.extras), g, mt, w.const_data_ptr<A>(),
           mean.defined() ? mean.const_data_ptr<A>() : nullptr,
           invstd.defined() ? invstd.const_data_ptr<A>() : nullptr, out.data_ptr<scalar_t>());
  });
}

void backward_reduce(const MixedNode& nd, const at::Tensor& grad, const at::Tensor& w, at::Tensor& partial,
                     std::vector<at::Tensor>& grad_extras) {
  const Geo g = geo_of(nd);
  const Meta mt = meta_of(nd);
  HDAS_DISPATCH(nd.inputs[0].scalar_type(), "mixed_node_backward_reduce_cuda", [&] {
    using A = at::opmath_type<scalar_t>;
    launch(backward_reduce_kernel<scalar_t, A>, plane_blocks(nd.N * nd.C, "hdas::mixed_node_backward"), kThreads, 0,
           const_ptrs<scalar_t>(nd.inputs), const_ptrs<scalar_t>(nd.extras), mut_ptrs<scalar_t>(grad_extras),
           grad.const_data_ptr<scalar_t>(), g, mt, w.const_data_ptr<A>(), partial.data_ptr<A>());
  });
}

void finalize(const MixedNode& nd, const at::Tensor& sums, const at::Tensor& w, const at::Tensor& mean,
              const at::Tensor& invstd, bool batch_stats, at::Tensor& grad_w, at::Tensor& A_, at::Tensor& B_,
              at::Tensor& D_) {
  const Geo g = geo_of(nd);
  const Meta mt = meta_of(nd);
  AT_DISPATCH_FLOATING_TYPES(sums.scalar_type(), "mixed_node_finalize_cuda", [&] {
    using A = scalar_t;
    launch(finalize_kernel<A>, static_cast<unsigned>(nd.E * nd.P), kThreads, 0, sums.const_data_ptr<A>(), g, mt,
           w.const_data_ptr<A>(), mean.defined() ? mean.const_data_ptr<A>() : nullptr,
           invstd.defined() ? invstd.const_data_ptr<A>() : nullptr, batch_stats, grad_w.data_ptr<A>(),
           A_.data_ptr<A>(), B_.data_ptr<A>(), D_.data_ptr<A>());
  });
}

void backward_input(const MixedNode& nd, const at::Tensor& grad, const at::Tensor& w, const at::Tensor& A_,
                    const at::Tensor& B_, const at::Tensor& D_, std::vector<at::Tensor>& grad_inputs) {
  const Geo g = geo_of(nd);
  const Meta mt = meta_of(nd);
  HDAS_DISPATCH(nd.inputs[0].scalar_type(), "mixed_node_backward_input_cuda", [&] {
    using A = at::opmath_type<scalar_t>;
    launch(backward_input_kernel<scalar_t, A>, grid_for(nd.N * nd.C * nd.H * nd.W), kThreads, 0,
           const_ptrs<scalar_t>(nd.inputs), mut_ptrs<scalar_t>(grad_inputs), grad.const_data_ptr<scalar_t>(), g, mt,
           A_.const_data_ptr<A>(), B_.const_data_ptr<A>(), D_.const_data_ptr<A>());
  });
}

// The op on the GPU: checks, allocations, and the kernels above in sequence; statistics and weight
// gradients are reduced per plane by the kernels and across planes between them.
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> forward_cuda(
    const std::vector<at::Tensor>& inputs, const at::Tensor& weights, c10::IntArrayRef prims,
    const std::vector<at::Tensor>& extras, int64_t stride, bool pool_bn, bool batch_stats,
    const std::optional<at::Tensor>& running_mean, const std::optional<at::Tensor>& running_var, double eps) {
  const char* op = "hdas::mixed_node";
  TORCH_CHECK_VALUE(!inputs.empty(), op, ": inputs must be a non-empty list of tensors");
  const DeviceGuard guard(inputs[0].device());
  MixedNode node = make_mixed_node(inputs, weights, prims, extras, stride, pool_bn, op);
  check_forward_stats(node, batch_stats, running_mean, running_var, op);
  const auto& x0 = inputs[0];
  const auto format = output_format(x0);
  const bool bn = pool_bn && node.Q > 0;
  auto [mean, invstd, var_u] = forward_stats(node, batch_stats, running_mean, running_var, eps);
  to_format(node.inputs, format);
  to_format(node.extras, format);
  node.format = format;
  const at::Tensor w = weights.to(op_math(x0.scalar_type())).contiguous();
  if (bn && batch_stats) cuda::batch_stats(node, eps, mean, invstd, var_u);
  auto out = at::empty({node.N, node.C, node.Ho, node.Wo}, x0.options().memory_format(format));
  apply(node, w, bn ? mean : at::Tensor(), bn ? invstd : at::Tensor(), out);
  return {out, mean, invstd, var_u};
}

std::tuple<std::vector<at::Tensor>, at::Tensor, std::vector<at::Tensor>> backward_cuda(
    const at::Tensor& grad_out, const std::vector<at::Tensor>& inputs, const at::Tensor& weights,
    c10::IntArrayRef prims, const std::vector<at::Tensor>& extras, int64_t stride, bool pool_bn, bool batch_stats,
    const at::Tensor& save_mean, const at::Tensor& save_invstd) {
  const char* op = "hdas::mixed_node_backward";
  TORCH_CHECK_VALUE(!inputs.empty(), op, ": inputs must be a non-empty list of tensors");
  const DeviceGuard guard(inputs[0].device());
  MixedNode node = make_mixed_node(inputs, weights, prims, extras, stride, pool_bn, op);
  check_backward_args(node, grad_out, save_mean, save_invstd, op);
  const auto& x0 = inputs[0];
  const auto format = output_format(x0);
  const auto acc = op_math(x0.scalar_type());
  const auto stat_opts = x0.options().dtype(acc);
  to_format(node.inputs, format);
  node.format = format;
  const auto grad = grad_out.contiguous(format);
  backward_extras(node, grad, format);
  const at::Tensor w = weights.to(acc).contiguous();
  const auto [mean, invstd] = saved_stats(node, save_mean, save_invstd);

  auto grad_extras = extra_grads_for(node);
  auto partial = at::empty({node.N, node.C, node.E * node.P + 1}, stat_opts);
  backward_reduce(node, grad, w, partial, grad_extras);
  const auto sums = partial.sum(0).contiguous();  // [C, E*P + 1]

  auto grad_w = at::empty({node.E, node.P}, stat_opts);
  auto A = at::empty({node.E, node.P, node.C}, stat_opts);
  auto B = at::empty_like(A);
  auto D = at::empty_like(A);
  finalize(node, sums, w, mean, invstd, node.pool_bn && node.Q > 0 && batch_stats, grad_w, A, B, D);

  std::vector<at::Tensor> grad_inputs;
  for (const auto& x : node.inputs) grad_inputs.push_back(at::empty_like(x));
  backward_input(node, grad, w, A, B, D, grad_inputs);
  return {grad_inputs, grad_w.to(weights.scalar_type()), returned_extra_grads(std::move(grad_extras), format)};
}

}  // namespace

TORCH_LIBRARY_IMPL(HDAS_OPS_NAMESPACE, HDAS_DISPATCH_KEY, m) {
  m.impl("mixed_node", &forward_cuda);
  m.impl("mixed_node_backward", &backward_cuda);
}

}  // namespace hdas::cuda
