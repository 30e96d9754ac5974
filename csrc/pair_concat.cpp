// Schema, argument checks and the steps both backends share of hdas::pair_concat.
#include "pair_concat.h"

#include <torch/library.h>

#include "mixed_node.h"

namespace hdas {

PairConcat make_pair_concat(const std::vector<at::Tensor>& states, const at::Tensor& weights,
                            c10::IntArrayRef pairs, const char* op, at::MemoryFormat format) {
  TORCH_CHECK_VALUE(!states.empty(), op, ": states must be a non-empty list of tensors");
  const auto& s0 = states[0];
  TORCH_CHECK_VALUE(s0.dim() == 4, op, ": states[0] must be a 4-D tensor [N, C, H, W], got shape ", s0.sizes());
  // Checked here, before the dispatch macros, which would reject other floating types (float8)
  // with an internal error.
  TORCH_CHECK_TYPE(kernel_dtype(s0.scalar_type()), op, ": states must be float32, float64, float16 or bfloat16, got ",
                   s0.scalar_type());
  for (size_t t = 1; t < states.size(); ++t) {
    TORCH_CHECK_VALUE(states[t].sizes() == s0.sizes(), op, ": states[", t, "] must have the shape of states[0] ",
                      s0.sizes(), ", got ", states[t].sizes());
    TORCH_CHECK_TYPE(states[t].scalar_type() == s0.scalar_type(), op, ": states[", t, "] must have dtype ",
                     s0.scalar_type(), ", got ", states[t].scalar_type());
    TORCH_CHECK_VALUE(states[t].device() == s0.device(), op, ": states[", t, "] must be on ", s0.device(),
                      ", got ", states[t].device());
  }
  TORCH_CHECK_VALUE(s0.numel() > 0, op, ": states must be non-empty, got shape ", s0.sizes());
  TORCH_CHECK_VALUE(pairs.size() % 2 == 0 && !pairs.empty(), op,
                    ": pairs must be a flat, non-empty list [i_0, j_0, i_1, j_1, ...], got ", pairs.size(),
                    " entries");
  PairConcat pc;
  pc.T = static_cast<int64_t>(states.size());
  pc.K = static_cast<int64_t>(pairs.size() / 2);
  for (int64_t k = 0; k < pc.K; ++k)
    for (int64_t m = 0; m < 2; ++m) {
      const int64_t idx = pairs[2 * k + m];
      TORCH_CHECK_VALUE(idx >= 0 && idx < pc.T, op, ": pair ", k, " index ", idx, " is out of range for ", pc.T,
                        " states");
      (m == 0 ? pc.first : pc.second).push_back(idx);
    }
  TORCH_CHECK_VALUE(weights.dim() == 1 && weights.size(0) == pc.K, op,
                    ": weights must have shape [num_pairs] = [", pc.K, "], got ", weights.sizes());
  TORCH_CHECK_VALUE(weights.device() == s0.device(), op, ": weights must be on ", s0.device(), ", got ",
                    weights.device());
  TORCH_CHECK_TYPE(kernel_dtype(weights.scalar_type()), op,
                   ": weights must be float32, float64, float16 or bfloat16, got ", weights.scalar_type());
  pc.N = s0.size(0);
  pc.C = s0.size(1);
  pc.H = s0.size(2);
  pc.W = s0.size(3);
  pc.HW = pc.H * pc.W;
  for (const auto& s : states) pc.states.push_back(s.contiguous(format));
  return pc;
}

void check_pair_concat_grad(const PairConcat& pc, const at::Tensor& grad_out, const char* op) {
  const auto& s0 = pc.states[0];
  TORCH_CHECK_VALUE(grad_out.sizes() == c10::IntArrayRef({pc.N, 2 * pc.C, pc.H, pc.W}), op,
                    ": grad_out must have shape [N, 2C, H, W] = [", pc.N, ", ", 2 * pc.C, ", ", pc.H, ", ", pc.W,
                    "], got ", grad_out.sizes());
  TORCH_CHECK_VALUE(grad_out.device() == s0.device(), op, ": grad_out must be on ", s0.device(), ", got ",
                    grad_out.device());
}

namespace {

// On a GPU the indices travel from pinned memory without blocking: a copy from pageable memory
// would make the host wait for every queued kernel.
at::Tensor on_device(const std::vector<int64_t>& idx, const at::Device& device) {
  auto host = at::tensor(idx, at::TensorOptions().dtype(at::kLong));
  if (device.is_cpu()) return host;
  return host.pin_memory().to(device, /*non_blocking=*/true);
}

}  // namespace

PairMembers PairMembers::of(const PairConcat& pc, const at::Device& device) {
  return {on_device(pc.first, device), on_device(pc.second, device), pc.T};
}

std::pair<at::Tensor, at::Tensor> PairMembers::weights(const at::Tensor& w) const {
  return {at::zeros({T}, w.options()).index_add_(0, first, w), at::zeros({T}, w.options()).index_add_(0, second, w)};
}

at::Tensor PairMembers::weight_grad(const at::Tensor& sums) const {
  return sums.index_select(0, first) + sums.index_select(0, second + T);
}

PairConcat referenced(const PairConcat& pc, std::vector<int64_t>& slot) {
  std::vector<bool> used(pc.T, false);
  for (auto t : pc.first) used[t] = true;
  for (auto t : pc.second) used[t] = true;
  PairConcat sub = pc;
  sub.states.clear();
  slot.assign(pc.T, -1);
  for (int64_t t = 0; t < pc.T; ++t)
    if (used[t]) {
      slot[t] = static_cast<int64_t>(sub.states.size());
      sub.states.push_back(pc.states[t]);
    }
  sub.T = static_cast<int64_t>(sub.states.size());
  for (auto& t : sub.first) t = slot[t];
  for (auto& t : sub.second) t = slot[t];
  return sub;
}

std::vector<at::Tensor> state_grads(const std::vector<at::Tensor>& states, const std::vector<int64_t>& slot,
                                    const std::vector<at::Tensor>& grads, at::MemoryFormat format) {
  std::vector<at::Tensor> out;
  for (size_t t = 0; t < states.size(); ++t)
    out.push_back(slot[t] >= 0 ? grads[slot[t]].contiguous(format) : at::zeros_like(states[t], format));
  return out;
}

TORCH_LIBRARY_FRAGMENT(HDAS_OPS_NAMESPACE, m) {
  m.def("pair_concat(Tensor[] states, Tensor weights, int[] pairs) -> Tensor");
  m.def(
      "pair_concat_backward(Tensor grad_out, Tensor[] states, Tensor weights, int[] pairs) "
      "-> (Tensor[] grad_states, Tensor grad_weights)");
}

}  // namespace hdas
