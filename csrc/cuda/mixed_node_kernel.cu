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

#define HDAS_DISPATCH(TYPE, NAME, ...) \
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, TYPE, NAME, __VA_ARGS__)

// One call's geometry and device tables: the primitives' codes and slots, and the data pointers of
// the inputs, extras and (backward) of their gradients.
struct Call {
  Geo g;
  Meta mt{};
  DeviceTable table;
  Slots slots;
  int64_t codes = 0, xs = 0, ex = 0, gex = 0, gxs = 0;  // offsets in table

  Call(const MixedNode& nd, const std::vector<at::Tensor>* grad_extras = nullptr,
       const std::vector<at::Tensor>* grad_inputs = nullptr)
      : g{nd.N, nd.C, nd.H, nd.W, nd.Ho, nd.Wo, nd.stride, nd.format == at::MemoryFormat::ChannelsLast, nd.Cx, nd.G} {
    codes = table.add(nd.prims);
    table.add(nd.pool_slot);
    table.add(nd.extra_slot);
    xs = table.add_data(nd.inputs);
    ex = table.add_data(nd.extras);
    if (grad_extras) gex = table.add_data(*grad_extras);
    if (grad_inputs) gxs = table.add_data(*grad_inputs);
    slots = table.slots(nd.inputs[0].device());
    const int P = static_cast<int>(nd.P);
    mt = Meta{static_cast<int>(nd.E), P, static_cast<int>(nd.Q), static_cast<int>(nd.K),
              static_cast<int>(codes), static_cast<int>(codes) + P, static_cast<int>(codes) + 2 * P};
  }
  template <typename T>
  Ptrs<T> ptrs(int64_t at) const {
    return Ptrs<T>{static_cast<int>(at)};
  }
};

template <typename A>
const A* data_or_null(const at::Tensor& t) {
  return t.defined() ? t.const_data_ptr<A>() : nullptr;
}

// The reduction kernels' split (Units): lanes along the positions of a plane (NCHW; several planes
// per warp when they are small) or along the channels (channels_last), and chunks of 16 positions per
// lane in NCHW, 64 in channels_last (where a chunk's partial sums are 1/chunk of the data it read:
// larger chunks keep that traffic small).
template <typename I>
Units<I> units_for(const MixedNode& nd) {
  const bool cl = nd.format == at::MemoryFormat::ChannelsLast;
  const int64_t L = nd.plane_out();
  auto pow2_at_least = [](int64_t v) {
    int r = 1;
    while (r < 32 && r < v) r <<= 1;
    return r;
  };
  Units<I> u{};
  u.cl = cl;
  u.cw = cl ? pow2_at_least(nd.C) : 32 / pow2_at_least(L);
  u.streams = 32 / u.cw;
  int64_t chunk = (cl ? 64 : 16) * u.streams;
  if (test_knobs().chunk_positions > 0) chunk = std::min(chunk, test_knobs().chunk_positions);
  u.chunk = static_cast<I>(chunk);
  u.S = static_cast<I>((L + chunk - 1) / chunk);
  u.tiles = static_cast<I>((nd.C + u.cw - 1) / u.cw);
  u.wo = Div<I>(static_cast<I>(nd.Wo));
  return u;
}

template <typename I>
unsigned unit_blocks(const MixedNode& nd, const Units<I>& u, const char* op) {
  return blocks_for(nd.N * int64_t(u.S) * u.tiles, kWarps, op);
}

// Reduction kernels decode a position of one plane only: 32-bit math when a plane's positions, plus
// one chunk (at most 64 * 32) past its end, stay below 2^31.
template <typename F>
void dispatch_plane_index(const MixedNode& nd, F&& f) {
  dispatch_index(nd.plane_out() + 64 * 32, std::forward<F>(f));
}

void batch_stats(const MixedNode& nd, const Call& call, double eps, at::Tensor& mean, at::Tensor& invstd,
                 at::Tensor& var_u) {
  const char* op = "hdas::mixed_node";
  const int64_t EQ = nd.E * nd.Q;
  HDAS_DISPATCH(nd.inputs[0].scalar_type(), "mixed_node_batch_stats_cuda", [&] {
    using A = at::opmath_type<scalar_t>;
    dispatch_plane_index(nd, [&](auto index) {
      using I = decltype(index);
      const auto u = units_for<I>(nd);
      auto partial = at::empty({nd.N, int64_t(u.S), EQ, 2, nd.C}, mean.options());  // per chunk: mean, M2
      launch(pool_stats_kernel<scalar_t, A, I>, unit_blocks(nd, u, op), kThreads, 0, call.slots,
             call.ptrs<const scalar_t>(call.xs), call.g, call.mt, u, partial.data_ptr<A>());
      launch(combine_stats_kernel<A>, blocks_for(EQ * nd.C, 1, op), kThreads, 0, partial.const_data_ptr<A>(), nd.N,
             int64_t(u.S), int64_t(u.chunk), nd.C, EQ, nd.plane_out(), static_cast<A>(eps), mean.data_ptr<A>(),
             invstd.data_ptr<A>(), var_u.data_ptr<A>());
    });
  });
}

// The decoder of positions in an [N, C, Hd, Wd] tensor of the call's layout.
template <typename I>
Decode<I> decode_for(const MixedNode& nd, int64_t Hd, int64_t Wd) {
  return {Div<I>(static_cast<I>(nd.C)), Div<I>(static_cast<I>(Hd)), Div<I>(static_cast<I>(Wd)),
          nd.format == at::MemoryFormat::ChannelsLast};
}

void apply(const MixedNode& nd, const Call& call, const at::Tensor& w, const at::Tensor& mean,
           const at::Tensor& invstd, at::Tensor& out) {
  HDAS_DISPATCH(nd.inputs[0].scalar_type(), "mixed_node_apply_cuda", [&] {
    using A = at::opmath_type<scalar_t>;
    dispatch_index(nd.N * nd.C * nd.plane_out(), [&](auto index) {
      using I = decltype(index);
      launch(apply_kernel<scalar_t, A, I>, grid_for(nd.N * nd.C * nd.plane_out()), kThreads, 0, call.slots,
             call.ptrs<const scalar_t>(call.xs), call.ptrs<const scalar_t>(call.ex), call.g,
             decode_for<I>(nd, nd.Ho, nd.Wo), call.mt, w.const_data_ptr<A>(), data_or_null<A>(mean),
             data_or_null<A>(invstd), out.data_ptr<scalar_t>());
    });
  });
}

// Buffers for Kept: a byte per output of every pool, and with batch statistics a value of the inputs'
// type.
struct KeptBuffers {
  at::Tensor arg, avg;
  KeptBuffers(const MixedNode& nd, const at::TensorOptions& opts, bool batch_stats) {
    const int64_t per = nd.N * nd.C * nd.plane_out();
    arg = at::empty({nd.E * nd.Q, per}, opts.dtype(at::kByte));
    if (batch_stats) avg = at::empty({nd.E * nd.Q, per}, opts);
  }
  template <typename T>
  Kept<T> view() const {
    return {arg.data_ptr<uint8_t>(), avg.defined() ? avg.data_ptr<T>() : nullptr, arg.size(1)};
  }
};

// The plane sums per (n, c) of grad * op_p(x_e) and of grad: [E*P + 1, C]; the pools' Kept values.
at::Tensor backward_reduce(const MixedNode& nd, const Call& call, const at::Tensor& grad, const at::Tensor& w,
                           const KeptBuffers& kept) {
  const char* op = "hdas::mixed_node_backward";
  at::Tensor sums;
  HDAS_DISPATCH(nd.inputs[0].scalar_type(), "mixed_node_backward_reduce_cuda", [&] {
    using A = at::opmath_type<scalar_t>;
    dispatch_plane_index(nd, [&](auto index) {
      using I = decltype(index);
      const auto u = units_for<I>(nd);
      auto partial = at::empty({nd.N * int64_t(u.S), nd.E * nd.P + 1, nd.C}, w.options());
      launch(backward_reduce_kernel<scalar_t, A, I>, unit_blocks(nd, u, op), kThreads, 0, call.slots,
             call.ptrs<const scalar_t>(call.xs), call.ptrs<const scalar_t>(call.ex), call.ptrs<scalar_t>(call.gex),
             grad.const_data_ptr<scalar_t>(), call.g, call.mt, u, w.const_data_ptr<A>(), partial.data_ptr<A>(),
             kept.view<scalar_t>());
      sums = partial.sum(0);
    });
  });
  return sums;
}

void finalize(const MixedNode& nd, const Call& call, const at::Tensor& sums, const at::Tensor& w,
              const at::Tensor& mean, const at::Tensor& invstd, bool batch_stats, at::Tensor& grad_w, at::Tensor& A_,
              at::Tensor& B_, at::Tensor& D_) {
  AT_DISPATCH_FLOATING_TYPES(sums.scalar_type(), "mixed_node_finalize_cuda", [&] {
    using A = scalar_t;
    launch(finalize_kernel<A>, static_cast<unsigned>(nd.E * nd.P), kThreads, 0, call.slots,
           sums.const_data_ptr<A>(), call.g, call.mt, w.const_data_ptr<A>(), data_or_null<A>(mean),
           data_or_null<A>(invstd), batch_stats, grad_w.data_ptr<A>(), A_.data_ptr<A>(), B_.data_ptr<A>(),
           D_.data_ptr<A>());
  });
}

void backward_input(const MixedNode& nd, const Call& call, const at::Tensor& grad, const at::Tensor& A_,
                    const at::Tensor& B_, const at::Tensor& D_, const KeptBuffers& kept) {
  HDAS_DISPATCH(nd.inputs[0].scalar_type(), "mixed_node_backward_input_cuda", [&] {
    using A = at::opmath_type<scalar_t>;
    dispatch_index(nd.N * nd.C * nd.H * nd.W, [&](auto index) {
      using I = decltype(index);
      launch(backward_input_kernel<scalar_t, A, I>, grid_for(nd.N * nd.C * nd.H * nd.W), kThreads, 0, call.slots,
             call.ptrs<const scalar_t>(call.xs), call.ptrs<scalar_t>(call.gxs), grad.const_data_ptr<scalar_t>(),
             call.g, decode_for<I>(nd, nd.H, nd.W), call.mt, A_.const_data_ptr<A>(), B_.const_data_ptr<A>(),
             D_.const_data_ptr<A>(), kept.view<scalar_t>());
    });
  });
}

// The op on the GPU: checks, allocations, and the kernels above in sequence; statistics and weight
// gradients are reduced per plane by the kernels and across planes between them.
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> forward_cuda(
    const std::vector<at::Tensor>& inputs, const at::Tensor& weights, c10::IntArrayRef prims,
    const std::vector<at::Tensor>& extras, int64_t stride, bool pool_bn, bool batch_stats,
    const std::optional<at::Tensor>& running_mean, const std::optional<at::Tensor>& running_var, double eps,
    int64_t groups) {
  const char* op = "hdas::mixed_node";
  MixedNode node = make_mixed_node(inputs, weights, prims, extras, stride, pool_bn, groups, op);
  check_forward_stats(node, batch_stats, running_mean, running_var, op);
  const auto& x0 = inputs[0];
  check_device(x0, op);
  const DeviceGuard guard(x0.device());
  const auto format = output_format(x0);
  const bool bn = pool_bn && node.Q > 0;
  auto [mean, invstd, var_u] = forward_stats(node, batch_stats, running_mean, running_var, eps);
  to_format(node.inputs, format);
  to_format(node.extras, format);
  node.format = format;
  const at::Tensor w = weights.to(op_math(x0.scalar_type())).contiguous();
  const Call call(node);
  if (bn && batch_stats) cuda::batch_stats(node, call, eps, mean, invstd, var_u);
  auto out = at::empty({node.N, node.Cx, node.Ho, node.Wo}, x0.options().memory_format(format));
  apply(node, call, w, bn ? mean : at::Tensor(), bn ? invstd : at::Tensor(), out);
  place_passed(node, out);
  return {out, mean, invstd, var_u};
}

std::tuple<std::vector<at::Tensor>, at::Tensor, std::vector<at::Tensor>> backward_cuda(
    const at::Tensor& grad_out, const std::vector<at::Tensor>& inputs, const at::Tensor& weights,
    c10::IntArrayRef prims, const std::vector<at::Tensor>& extras, int64_t stride, bool pool_bn, bool batch_stats,
    const at::Tensor& save_mean, const at::Tensor& save_invstd, int64_t groups) {
  const char* op = "hdas::mixed_node_backward";
  MixedNode node = make_mixed_node(inputs, weights, prims, extras, stride, pool_bn, groups, op);
  check_backward_args(node, grad_out, save_mean, save_invstd, op);
  const auto& x0 = inputs[0];
  check_device(x0, op);
  const DeviceGuard guard(x0.device());
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
  std::vector<at::Tensor> grad_inputs;
  for (const auto& x : node.inputs) grad_inputs.push_back(at::empty_like(x));
  const Call call(node, &grad_extras, &grad_inputs);
  const bool bn_batch = node.pool_bn && node.Q > 0 && batch_stats;
  const KeptBuffers kept(node, x0.options(), bn_batch);
  const auto sums = backward_reduce(node, call, grad, w, kept);  // [E*P + 1, C]

  auto grad_w = at::empty({node.E, node.P}, stat_opts);
  auto A = at::empty({node.E, node.P, node.C}, stat_opts);
  auto B = at::empty_like(A);
  auto D = at::empty_like(A);
  finalize(node, call, sums, w, mean, invstd, bn_batch, grad_w, A, B, D);
  backward_input(node, call, grad, A, B, D, kept);
  passed_backward(node, grad, grad_inputs[0]);
  return {grad_inputs, grad_w.to(weights.scalar_type()), returned_extra_grads(std::move(grad_extras), format)};
}

}  // namespace

TORCH_LIBRARY_IMPL(HDAS_OPS_NAMESPACE, HDAS_DISPATCH_KEY, m) {
  m.impl("mixed_node", &forward_cuda);
  m.impl("mixed_node_backward", &backward_cuda);
}

}  // namespace hdas::cuda
