// hdas::conv_candidates on the CPU: allocations and the call into the kernel set this CPU supports
// (conv_candidates_kernel.h; bodies in conv_candidates_kernel_impl.h). The checks are the shared
// front's (../conv_candidates.cpp).
#include <torch/library.h>

#include "../mixed_node.h"  // op_math, output_format
#include "conv_candidates_kernel.h"
#include "mixed_node_kernel.h"  // use_avx2

namespace hdas::cpu {
namespace {

std::vector<at::Tensor> planes(int64_t count, const ConvCandidates& cc, at::ScalarType dtype) {
  std::vector<at::Tensor> out;
  for (int64_t i = 0; i < count; ++i) out.push_back(at::empty({cc.N, cc.C, cc.Ho, cc.Wo}, cc.x.options().dtype(dtype)));
  return out;
}

void run_forward(const ConvCandidates& cc, bool batch_stats, double eps, ConvStats& st, std::vector<at::Tensor>& z1,
                 std::vector<at::Tensor>& z2) {
  if (use_avx2())
    isa_avx2::conv_forward(cc, batch_stats, eps, st, z1, z2);
  else
    isa_base::conv_forward(cc, batch_stats, eps, st, z1, z2);
}

std::tuple<std::vector<at::Tensor>, std::vector<at::Tensor>, at::Tensor, at::Tensor, at::Tensor> forward_cpu(
    const at::Tensor& x, c10::IntArrayRef kinds, c10::IntArrayRef edges, const at::Tensor& weights,
    const std::vector<at::Tensor>& dw1, const std::vector<at::Tensor>& pw1, const std::vector<at::Tensor>& dw2,
    const std::vector<at::Tensor>& pw2, const OptTensors& bn_weight, const OptTensors& bn_bias, int64_t stride,
    bool batch_stats, const std::optional<at::Tensor>& running_mean, const std::optional<at::Tensor>& running_var,
    double eps) {
  ConvForward front = conv_forward_front(x, kinds, edges, weights, dw1, pw1, dw2, pw2, bn_weight, bn_bias, stride,
                                         batch_stats, running_mean, running_var, eps);
  const ConvCandidates& cc = front.cc;
  ConvStats& st = front.st;
  const auto acc = op_math(x.scalar_type());
  auto z1 = planes(cc.B, cc, acc), z2 = planes(cc.S, cc, acc);
  run_forward(cc, batch_stats, eps, st, z1, z2);
  auto out = planes(cc.E, cc, x.scalar_type());
  if (use_avx2())
    isa_avx2::conv_output(cc, st, z1, z2, out);
  else
    isa_base::conv_output(cc, st, z1, z2, out);
  const auto f = output_format(x);
  for (auto& t : out) t = t.contiguous(f);
  return {out, conv_saved(z1, z2), st.mean, st.invstd, st.var_u};
}

std::tuple<at::Tensor, at::Tensor, std::vector<at::Tensor>, std::vector<at::Tensor>, std::vector<at::Tensor>,
           std::vector<at::Tensor>, std::vector<at::Tensor>, std::vector<at::Tensor>>
backward_cpu(const std::vector<at::Tensor>& grad_out, const at::Tensor& x, c10::IntArrayRef kinds,
             c10::IntArrayRef edges, const at::Tensor& weights, const std::vector<at::Tensor>& dw1,
             const std::vector<at::Tensor>& pw1, const std::vector<at::Tensor>& dw2, const std::vector<at::Tensor>& pw2,
             const OptTensors& bn_weight, const OptTensors& bn_bias, int64_t stride, bool batch_stats,
             const std::vector<at::Tensor>& saved, const at::Tensor& save_mean, const at::Tensor& save_invstd,
             std::array<bool, 4> needs) {
  ConvBackward front = conv_backward_front(grad_out, x, kinds, edges, weights, dw1, pw1, dw2, pw2, bn_weight,
                                           bn_bias, stride, saved, save_mean, save_invstd);
  const ConvCandidates& cc = front.cc;
  ConvStats& st = front.st;
  std::vector<at::Tensor>&z1 = front.z1, &z2 = front.z2;
  const auto acc = op_math(x.scalar_type());
  if (saved.empty()) {  // the lean mode: the pointwise outputs again, from the forward's statistics
    z1 = planes(cc.B, cc, acc);
    z2 = planes(cc.S, cc, acc);
    run_forward(cc, /*batch_stats=*/false, 0.0, st, z1, z2);
  }
  std::vector<at::Tensor> g;
  for (const auto& t : grad_out) g.push_back(t.contiguous());

  ConvGrads gr;
  const auto opts = x.options();
  if (needs[0]) gr.x = at::empty_like(cc.x);
  if (needs[1]) gr.weights = at::zeros({cc.B}, opts.dtype(acc));
  if (needs[2]) {
    for (const auto* src : {&dw1, &pw1, &dw2, &pw2}) {
      auto& dst = src == &dw1 ? gr.dw1 : src == &pw1 ? gr.pw1 : src == &dw2 ? gr.dw2 : gr.pw2;
      for (const auto& p : *src) dst.push_back(at::empty_like(p, at::MemoryFormat::Contiguous));
    }
  }
  gr.gamma.resize(cc.Z);
  gr.beta.resize(cc.Z);
  for (int64_t z = 0; needs[3] && z < cc.Z; ++z) {
    if (cc.gamma[z].defined()) gr.gamma[z] = at::zeros({cc.C}, opts.dtype(acc));
    if (cc.beta[z].defined()) gr.beta[z] = at::zeros({cc.C}, opts.dtype(acc));
  }
  if (use_avx2())
    isa_avx2::conv_backward(cc, g, batch_stats, st.mean, st.invstd, z1, z2, needs, gr);
  else
    isa_base::conv_backward(cc, g, batch_stats, st.mean, st.invstd, z1, z2, needs, gr);

  // Not asked for: an empty tensor (dense gradients) or an empty list.
  const auto none = at::empty({0}, opts);
  auto affine = [&](const std::vector<at::Tensor>& gs, const OptTensors& ps) {
    std::vector<at::Tensor> out;
    for (size_t z = 0; z < gs.size(); ++z)
      if (gs[z].defined()) out.push_back(gs[z].to(ps[z]->scalar_type()));
    return out;
  };
  return {needs[0] ? gr.x.contiguous(output_format(x)) : none,
          needs[1] ? gr.weights.to(weights.scalar_type()) : none,
          gr.dw1, gr.pw1, gr.dw2, gr.pw2, affine(gr.gamma, bn_weight), affine(gr.beta, bn_bias)};
}

}  // namespace

TORCH_LIBRARY_IMPL(hdas, CPU, m) {
  m.impl("conv_candidates", &forward_cpu);
  m.impl("conv_candidates_backward", &backward_cpu);
}

}  // namespace hdas::cpu
