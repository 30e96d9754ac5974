// The CUDA backend of hdas::conv_candidates (formula in ../conv_candidates.h): allocations and the
// passes on the current stream; the checks are the shared front's (../conv_candidates.cpp).
// Compiled by nvcc for the shipped ops, and as C++ by the emulated build
// (csrc/emu/conv_candidates_emu.cpp, with runtime.cuh's emulated launch).
//
// Forward, each half of a branch is one kernel (conv_candidates_device.cuh): the depthwise
// convolution, read through the ReLU (and, for a separable convolution's second half, BN1) before
// it, into shared memory, the pointwise convolution from there, and the BatchNorm statistics of its
// output per tile (combined by a small kernel after it); so relu(x), relu(BN1(z1)) and the depthwise
// outputs are never written. An edge's output is one pass over its branches' pointwise outputs,
// each branch's last BatchNorm applied with its mixing weight folded in. Backward, each pointwise
// weight's gradient is one kernel that recomputes the depthwise output on chip; the gradients
// through the pointwise convolutions are batched GEMMs over the images (at::matmul: cuBLAS), those
// through the depthwise ones a gather kernel (input) and a reduction (weights); each BatchNorm
// backward is one reduction and one element-wise pass. Everything runs NCHW in the op-math type
// (float, or double for double): channels_last and half inputs go through a copy. The lean mode
// recomputes the saved pointwise outputs first. benchmarks/gpu_model.py counts what each pass moves.
#include <ATen/Dispatch.h>
#include <torch/library.h>

#include "../conv_candidates.h"
#include "../mixed_node.h"  // op_math, output_format
#include "conv_candidates_device.cuh"
#include "runtime.cuh"

namespace hdas::cuda {
namespace {

conv::DwGeo dw_geo(const ConvCandidates& cc, const ConvBranch& br, bool first) {
  const int H = static_cast<int>(first ? cc.H : cc.Ho), W = static_cast<int>(first ? cc.W : cc.Wo);
  const int k = static_cast<int>(br.k);
  return first ? conv::DwGeo{cc.N * cc.C, cc.C, H, W, static_cast<int>(cc.Ho), static_cast<int>(cc.Wo), k,
                             static_cast<int>(br.dilation), static_cast<int>(br.pad), static_cast<int>(cc.stride)}
               : conv::DwGeo{cc.N * cc.C, cc.C, H, W, H, W, k, 1, (k - 1) / 2, 1};
}

// How a kernel reads its input (conv::ChannelMap): by default through the candidates' leading ReLU;
// bn_map gives a BatchNorm's normalisation (and the ReLU after it). It holds the tensors it points
// into.
struct InputMap {
  bool relu = true;
  at::Tensor mean, scale, shift;  // undefined: that step absent
  template <typename A>
  conv::ChannelMap<A> get() const {
    conv::ChannelMap<A> m;
    m.relu = relu;
    if (mean.defined()) m.mean = mean.const_data_ptr<A>(), m.scale = scale.const_data_ptr<A>();
    if (shift.defined()) m.shift = shift.const_data_ptr<A>();
    return m;
  }
};

// The pointwise weight's gradient [C, C] from its output's gradient dz and the depthwise
// convolution's input (conv::dw_pointwise_weight_kernel): the blocks' sums over their position
// tiles, then summed here.
at::Tensor pointwise_weight_grad(const at::Tensor& in, const InputMap& m, const at::Tensor& dw, const at::Tensor& dz,
                                 const conv::DwGeo& g) {
  const char* op = "hdas::conv_candidates_backward";
  const int64_t L = int64_t(g.Ho) * g.Wo, tiles = g.NC / g.C * ((L + conv::kTileQ - 1) / conv::kTileQ);
  const int64_t T = (g.C + conv::kTileCo - 1) / conv::kTileCo;
  TORCH_CHECK_VALUE(T * T <= 65535, op, " (", kBackend, "): ", g.C, " channels need more than 65535 blocks of ",
                    conv::kTileCo, " x ", conv::kTileCo, " weights");
  // Each block sums at least 4 tiles (fewer partial sums to add), and 1024 blocks fill a large GPU.
  const int64_t blocks = std::min<int64_t>((tiles + 3) / 4, 1024);
  auto partial = at::empty({blocks, g.C, g.C}, dz.options());
  AT_DISPATCH_FLOATING_TYPES(dz.scalar_type(), "conv_candidates_pointwise_weight_grad", [&] {
    const dim3 grid(static_cast<unsigned>(blocks), static_cast<unsigned>(T * T));
    launch(conv::dw_pointwise_weight_kernel<scalar_t>, grid, kThreads, 0, g, in.const_data_ptr<scalar_t>(),
           m.get<scalar_t>(), dw.const_data_ptr<scalar_t>(), dz.const_data_ptr<scalar_t>(),
           partial.data_ptr<scalar_t>());
  });
  return partial.sum(0);
}

// The gradient of a depthwise convolution's input, written to gin (accumulate: added to it).
void dw_backward_input(const at::Tensor& gout, const at::Tensor& w, const conv::DwGeo& g, at::Tensor& gin,
                       bool accumulate) {
  AT_DISPATCH_FLOATING_TYPES(gout.scalar_type(), "conv_candidates_dw_backward_input", [&] {
    launch(accumulate ? conv::dw_backward_input_kernel<scalar_t, true> : conv::dw_backward_input_kernel<scalar_t, false>,
           grid_for(gin.numel()), kThreads, 0, g, gout.const_data_ptr<scalar_t>(), w.const_data_ptr<scalar_t>(),
           gin.data_ptr<scalar_t>());
  });
}

at::Tensor dw_backward_weight(const at::Tensor& gout, const at::Tensor& in, const InputMap& m, const conv::DwGeo& g) {
  auto gw = at::empty({g.C, int64_t(g.k) * g.k}, gout.options());
  AT_DISPATCH_FLOATING_TYPES(gout.scalar_type(), "conv_candidates_dw_backward_weight", [&] {
    launch(conv::dw_backward_weight_kernel<scalar_t>, static_cast<unsigned>(gw.numel()), kThreads, 0, g,
           gout.const_data_ptr<scalar_t>(), in.const_data_ptr<scalar_t>(), m.get<scalar_t>(), gw.data_ptr<scalar_t>());
  });
  return gw;
}

// The pointwise convolution pw [C, C] of a [N, C, Ho, Wo]: one GEMM per image, batched.
at::Tensor pointwise(const at::Tensor& pw, const at::Tensor& a) {
  const auto s = a.sizes();
  return at::matmul(pw, a.view({s[0], s[1], s[2] * s[3]})).view(s);
}

// BatchNorm slot's normalisation, times w when defined: (z - mean) * (w * invstd * gamma) + w * beta.
InputMap bn_map(const ConvCandidates& cc, const ConvStats& st, int64_t slot, bool relu,
                const at::Tensor& w = at::Tensor()) {
  InputMap m;
  m.relu = relu;
  m.mean = st.mean[slot];
  m.scale = cc.gamma[slot].defined() ? st.invstd[slot] * cc.gamma[slot] : st.invstd[slot];
  if (w.defined()) m.scale = m.scale * w;
  if (cc.beta[slot].defined()) m.shift = w.defined() ? cc.beta[slot] * w : cc.beta[slot];
  m.scale = m.scale.contiguous();
  return m;
}

// The element-wise kernels' grid over z [N, C, H, W]: a block per chunk of a plane (conv::plane_chunk).
unsigned plane_blocks(const at::Tensor& z) {
  const int64_t L = z.size(2) * z.size(3);
  return blocks_for(z.size(0) * z.size(1) * ((L + conv::kPlaneChunk - 1) / conv::kPlaneChunk), 1,
                    "hdas::conv_candidates");
}

// One edge's output, the sum of its branches' last BatchNorms (their mixing weights folded in): one
// pass per kMixMax branches.
at::Tensor mix_edge(const std::vector<std::pair<at::Tensor, InputMap>>& parts) {
  const auto& z0 = parts.front().first;
  auto out = at::empty_like(z0);
  AT_DISPATCH_FLOATING_TYPES(z0.scalar_type(), "conv_candidates_mix", [&] {
    for (size_t first = 0; first < parts.size(); first += conv::kMixMax) {
      conv::Mix<scalar_t> mix;
      for (size_t b = first; b < parts.size() && mix.count < conv::kMixMax; ++b, ++mix.count) {
        mix.z[mix.count] = parts[b].first.const_data_ptr<scalar_t>();
        mix.m[mix.count] = parts[b].second.get<scalar_t>();
      }
      launch(conv::mix_kernel<scalar_t>, plane_blocks(z0), kThreads, 0, mix, z0.size(1), z0.size(2) * z0.size(3),
             out.data_ptr<scalar_t>(), first > 0);
    }
  });
  return out;
}

// The pointwise output z = pw . dw(m(in)) of one half, its depthwise output kept on chip
// (conv::dw_pointwise_kernel); with batch statistics, those of z into st's slot from the kernel's
// per-tile ones.
at::Tensor dw_pointwise(const at::Tensor& in, const InputMap& m, const at::Tensor& dw, const at::Tensor& pw,
                        const conv::DwGeo& g, ConvStats* st, int64_t slot, double eps) {
  const char* op = "hdas::conv_candidates";
  const int64_t N = g.NC / g.C, L = int64_t(g.Ho) * g.Wo, S = (L + conv::kTileP - 1) / conv::kTileP;
  const int64_t T = (g.C + conv::kTileCo - 1) / conv::kTileCo;
  auto z = at::empty({N, g.C, g.Ho, g.Wo}, in.options());
  at::Tensor partial = st != nullptr ? at::empty({N * S, 2, g.C}, in.options()) : at::Tensor();
  AT_DISPATCH_FLOATING_TYPES(in.scalar_type(), "conv_candidates_dw_pointwise", [&] {
    launch(conv::dw_pointwise_kernel<scalar_t>, blocks_for(N * S * T, 1, op), kThreads, 0, g,
           in.const_data_ptr<scalar_t>(), m.get<scalar_t>(), dw.const_data_ptr<scalar_t>(),
           pw.const_data_ptr<scalar_t>(), z.data_ptr<scalar_t>(),
           st != nullptr ? partial.data_ptr<scalar_t>() : nullptr);
    if (st == nullptr) return;
    launch(combine_stats_kernel<scalar_t>, blocks_for(g.C, 1, op), kThreads, 0, partial.const_data_ptr<scalar_t>(),
           N, S, int64_t(conv::kTileP), g.C, int64_t(1), L, static_cast<scalar_t>(eps),
           st->mean.data_ptr<scalar_t>() + slot * g.C, st->invstd.data_ptr<scalar_t>() + slot * g.C,
           st->var_u.data_ptr<scalar_t>() + slot * g.C);
  });
  return z;
}

// The pointwise outputs z1 (every branch) and z2 (separable ones) from x (read through its ReLU);
// batch statistics into st when batch_stats, else st normalises the first halves.
void run_forward(const ConvCandidates& cc, const at::Tensor& x, bool batch_stats, double eps, ConvStats& st,
                 std::vector<at::Tensor>& z1, std::vector<at::Tensor>& z2) {
  ConvStats* stats = batch_stats ? &st : nullptr;
  for (const auto& br : cc.branches) {
    const int64_t b = &br - cc.branches.data();
    z1.push_back(dw_pointwise(x, InputMap{}, cc.dw1[b], cc.pw1[b], dw_geo(cc, br, true), stats,
                              br.sep >= 0 ? br.slot1 : br.slot, eps));
  }
  for (const auto& br : cc.branches) {
    if (br.sep < 0) continue;
    const int64_t b = &br - cc.branches.data();
    z2.push_back(dw_pointwise(z1[b], bn_map(cc, st, br.slot1, /*relu=*/true), cc.dw2[br.sep], cc.pw2[br.sep],
                              dw_geo(cc, br, false), stats, br.slot, eps));
  }
}

std::tuple<std::vector<at::Tensor>, std::vector<at::Tensor>, at::Tensor, at::Tensor, at::Tensor> forward_cuda(
    const at::Tensor& x, c10::IntArrayRef kinds, c10::IntArrayRef edges, const at::Tensor& weights,
    const std::vector<at::Tensor>& dw1, const std::vector<at::Tensor>& pw1, const std::vector<at::Tensor>& dw2,
    const std::vector<at::Tensor>& pw2, const OptTensors& bn_weight, const OptTensors& bn_bias, int64_t stride,
    bool batch_stats, const std::optional<at::Tensor>& running_mean, const std::optional<at::Tensor>& running_var,
    double eps) {
  ConvForward front = conv_forward_front(x, kinds, edges, weights, dw1, pw1, dw2, pw2, bn_weight, bn_bias, stride,
                                         batch_stats, running_mean, running_var, eps);
  const ConvCandidates& cc = front.cc;
  ConvStats& st = front.st;
  check_device(cc.x, "hdas::conv_candidates");
  const DeviceGuard guard(cc.x.device());
  const auto acc = op_math(x.scalar_type());
  std::vector<at::Tensor> z1, z2;
  run_forward(cc, cc.x.to(acc).contiguous(), batch_stats, eps, st, z1, z2);
  std::vector<std::vector<std::pair<at::Tensor, InputMap>>> parts(cc.E);  // per edge, its branches in order
  for (const auto& br : cc.branches) {
    const int64_t b = &br - cc.branches.data();
    parts[br.edge].emplace_back(br.sep >= 0 ? z2[br.sep] : z1[b],
                                bn_map(cc, st, br.slot, /*relu=*/false, cc.weights[b]));
  }
  std::vector<at::Tensor> out;
  for (const auto& p : parts) out.push_back(mix_edge(p).to(x.scalar_type()).contiguous(output_format(x)));
  return {out, conv_saved(z1, z2), st.mean, st.invstd, st.var_u};
}

// A BatchNorm's backward (a branch's last, its weight w folded in; or a separable convolution's
// first, w undefined, its gradient g taken through the ReLU after it): the gradient of its input z
// from the gradient g of its output, and S1 = sum g, S2 = sum g * zhat per channel.
struct BnBack {
  at::Tensor dz, s1, s2;
};
BnBack bn_backward(const ConvCandidates& cc, const ConvStats& st, int64_t slot, const at::Tensor& z,
                   const at::Tensor& g, const at::Tensor& w, bool batch_stats, bool relu_mask) {
  const int64_t C = z.size(1), L = z.size(2) * z.size(3);
  TORCH_INTERNAL_ASSERT(!(relu_mask && w.defined()), "the ReLU mask reads a as the forward's BN1 scale");
  const auto a = bn_map(cc, st, slot, /*relu=*/false, w).scale;  // the scale the forward applied
  BnBack out{at::empty_like(z), at::empty({C}, z.options()), at::empty({C}, z.options())};
  const auto mean = st.mean[slot], invstd = st.invstd[slot];
  AT_DISPATCH_FLOATING_TYPES(z.scalar_type(), "conv_candidates_bn_backward", [&] {
    conv::BnGrad<scalar_t> b{mean.const_data_ptr<scalar_t>(), invstd.const_data_ptr<scalar_t>()};
    if (cc.beta[slot].defined()) b.beta = cc.beta[slot].const_data_ptr<scalar_t>();
    b.a = a.const_data_ptr<scalar_t>();
    b.relu_mask = relu_mask;
    launch(conv::bn_backward_reduce_kernel<scalar_t>, static_cast<unsigned>(C), kThreads, 0,
           g.const_data_ptr<scalar_t>(), z.const_data_ptr<scalar_t>(), z.size(0), C, L, b,
           out.s1.data_ptr<scalar_t>(), out.s2.data_ptr<scalar_t>());
    launch(conv::bn_backward_apply_kernel<scalar_t>, plane_blocks(z), kThreads, 0, g.const_data_ptr<scalar_t>(),
           z.const_data_ptr<scalar_t>(), C, L, b, out.s1.const_data_ptr<scalar_t>(),
           out.s2.const_data_ptr<scalar_t>(), static_cast<scalar_t>(1.0 / static_cast<double>(cc.count())),
           batch_stats, out.dz.data_ptr<scalar_t>());
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor, std::vector<at::Tensor>, std::vector<at::Tensor>, std::vector<at::Tensor>,
           std::vector<at::Tensor>, std::vector<at::Tensor>, std::vector<at::Tensor>>
backward_cuda(const std::vector<at::Tensor>& grad_out, const at::Tensor& x, c10::IntArrayRef kinds,
              c10::IntArrayRef edges, const at::Tensor& weights, const std::vector<at::Tensor>& dw1,
              const std::vector<at::Tensor>& pw1, const std::vector<at::Tensor>& dw2,
              const std::vector<at::Tensor>& pw2, const OptTensors& bn_weight, const OptTensors& bn_bias,
              int64_t stride, bool batch_stats, const std::vector<at::Tensor>& saved, const at::Tensor& save_mean,
              const at::Tensor& save_invstd, std::array<bool, 4> needs) {
  // Named references, not a structured binding: the lambdas below capture cc, which C++17
  // (older torch's standard) allows for references only.
  ConvBackward front = conv_backward_front(grad_out, x, kinds, edges, weights, dw1, pw1, dw2, pw2, bn_weight,
                                           bn_bias, stride, saved, save_mean, save_invstd);
  const ConvCandidates& cc = front.cc;
  ConvStats& st = front.st;
  std::vector<at::Tensor>&z1 = front.z1, &z2 = front.z2;
  check_device(cc.x, "hdas::conv_candidates_backward");
  const DeviceGuard guard(cc.x.device());
  const auto acc = op_math(x.scalar_type());
  const auto x_acc = cc.x.to(acc).contiguous();
  // the lean mode: the pointwise outputs again, from the forward's statistics
  if (saved.empty()) run_forward(cc, x_acc, /*batch_stats=*/false, 0.0, st, z1, z2);
  const bool need_x = needs[0], need_conv = needs[2], need_affine = needs[3];
  const bool deeper = need_x || need_conv || (need_affine && cc.S > 0);
  const auto opts = cc.x.options().dtype(acc);
  at::Tensor gx = need_x ? at::empty_like(x_acc) : at::Tensor();
  bool gx_written = false;
  at::Tensor gw = needs[1] ? at::zeros({cc.B}, opts) : at::Tensor();
  std::vector<at::Tensor> gdw1(cc.B), gpw1(cc.B), gdw2(cc.S), gpw2(cc.S), gg(cc.Z), gb(cc.Z);
  for (const auto& br : cc.branches) {
    const int64_t b = &br - cc.branches.data();
    const auto g = grad_out[br.edge].to(acc).contiguous();
    const auto w = cc.weights[b];
    const auto last = bn_backward(cc, st, br.slot, br.sep >= 0 ? z2[br.sep] : z1[b], g, w, batch_stats, false);
    if (needs[1]) {
      auto v = cc.gamma[br.slot].defined() ? cc.gamma[br.slot] * last.s2 : last.s2;
      if (cc.beta[br.slot].defined()) v = v + cc.beta[br.slot] * last.s1;
      gw[b] = v.sum();
    }
    if (need_affine) {
      if (cc.gamma[br.slot].defined()) gg[br.slot] = w * last.s2;
      if (cc.beta[br.slot].defined()) gb[br.slot] = w * last.s1;
    }
    if (!deeper) continue;
    at::Tensor dz1 = last.dz;
    if (br.sep >= 0) {
      const auto geo = dw_geo(cc, br, false);
      const auto d = bn_map(cc, st, br.slot1, /*relu=*/true);  // the second half's input, read through BN1
      const auto dE = pointwise(cc.pw2[br.sep].t(), last.dz);
      if (need_conv) {
        gpw2[br.sep] = pointwise_weight_grad(z1[b], d, cc.dw2[br.sep], last.dz, geo);
        gdw2[br.sep] = dw_backward_weight(dE, z1[b], d, geo);
      }
      at::Tensor dy = at::empty_like(z1[b]);
      dw_backward_input(dE, cc.dw2[br.sep], geo, dy, false);
      const auto first = bn_backward(cc, st, br.slot1, z1[b], dy, at::Tensor(), batch_stats, /*relu_mask=*/true);
      if (need_affine) {
        if (cc.gamma[br.slot1].defined()) gg[br.slot1] = first.s2;
        if (cc.beta[br.slot1].defined()) gb[br.slot1] = first.s1;
      }
      dz1 = first.dz;
    }
    if (!need_x && !need_conv) continue;
    const auto geo = dw_geo(cc, br, true);
    const auto dA = pointwise(cc.pw1[b].t(), dz1);
    if (need_conv) {
      gpw1[b] = pointwise_weight_grad(x_acc, InputMap{}, cc.dw1[b], dz1, geo);
      gdw1[b] = dw_backward_weight(dA, x_acc, InputMap{}, geo);
    }
    if (need_x) {
      dw_backward_input(dA, cc.dw1[b], geo, gx, gx_written);
      gx_written = true;
    }
  }
  if (need_x && !gx_written) gx.zero_();
  const auto none = at::empty({0}, x.options());
  auto like = [&](std::vector<at::Tensor>& gs, const std::vector<at::Tensor>& ps) {
    std::vector<at::Tensor> out;
    for (size_t i = 0; need_conv && i < gs.size(); ++i) out.push_back(gs[i].to(ps[i].scalar_type()).view(ps[i].sizes()));
    return out;
  };
  auto affine = [&](const std::vector<at::Tensor>& gs, const OptTensors& ps) {
    std::vector<at::Tensor> out;
    for (size_t z = 0; need_affine && z < gs.size(); ++z)
      if (z < ps.size() && ps[z].has_value() && ps[z]->defined()) out.push_back(gs[z].to(ps[z]->scalar_type()));
    return out;
  };
  return {need_x ? at::threshold_backward(gx, x_acc, 0).to(x.scalar_type()).contiguous(output_format(x)) : none,
          needs[1] ? gw.to(weights.scalar_type()) : none,
          like(gdw1, dw1), like(gpw1, pw1), like(gdw2, dw2), like(gpw2, pw2), affine(gg, bn_weight),
          affine(gb, bn_bias)};
}

}  // namespace

TORCH_LIBRARY_IMPL(HDAS_OPS_NAMESPACE, HDAS_DISPATCH_KEY, m) {
  m.impl("conv_candidates", &forward_cuda);
  m.impl("conv_candidates_backward", &backward_cuda);
}

}  // namespace hdas::cuda
