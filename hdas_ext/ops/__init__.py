"""The fused ops, torch.ops.hdas.*: schemas and kernels in csrc/, fake kernels and autograd here.

    mixed_node   schema, checks, dispatch: csrc/mixed_node.{h,cpp}
                 CPU kernels: csrc/cpu/mixed_node_kernel.cpp (+ _impl.h, one build per ISA)
                 CUDA kernels: csrc/cuda/mixed_node_kernel.cu
                 public function, Python checks, fake kernels, registered autograd: ops/mixed_node.py
                 eager autograd.Function and its double-backward guard: ops/_mixed_node_autograd.py
                 primitive codes (shared with csrc): ops/codes.py
                 the partial-channels check (also the modules' and supernets'): ops/partial_channels.py
                 reference and no-native fallback: ops/reference.py (mixed_node, mixed_node_with_stats)
                 tests: python_tests/test_mixed_node_op.py (the modules on it: test_fused_mixed_op.py,
                 test_stage_node.py)
    pair_concat  schema, checks, dispatch: csrc/pair_concat.{h,cpp}
                 kernels: csrc/cpu/pair_concat_kernel.cpp, csrc/cuda/pair_concat_kernel.cu
                 public function, Python checks, fake kernels, registered autograd: ops/pair_concat.py
                 reference and no-native fallback: ops/reference.py (pair_concat)
                 tests: python_tests/test_pair_concat_op.py
    conv_candidates
                 schema, checks: csrc/conv_candidates.{h,cpp} (branch kinds: conv_candidates_codes.h)
                 CPU kernels: csrc/cpu/conv_candidates_kernel.cpp (+ _impl.h, one build per ISA;
                 depthwise_plane.h, small_gemm.h)
                 public function, Python checks, fake kernels, registered autograd: ops/conv_candidates.py
                 eager autograd.Function: ops/_conv_candidates_autograd.py
                 branch kinds (shared with csrc): ops/codes.py (CONV_KINDS, CONV_SHAPES)
                 reference and no-native fallback: ops/conv_reference.py
                 tests: python_tests/test_conv_candidates_op.py (the modules on it: test_conv_fused.py)
    all          output allocation, the double-backward refusal, engine_needs: ops/_common.py

hdas_ext.reference re-exports the reference formulas beside the eager modules.
"""
from .codes import ADD, CODES, CONV_KINDS, EXTRA
from .conv_candidates import conv_candidates
from .mixed_node import check_inputs, mixed_node
from .pair_concat import pair_concat
