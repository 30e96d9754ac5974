"""The fused ops, torch.ops.hdas.*: schemas and kernels in csrc/, fake kernels and autograd here.

    mixed_node   csrc/mixed_node.cpp, csrc/cpu/mixed_node_kernel.cpp (+ _impl.h, one build per ISA),
                 csrc/cuda/mixed_node_kernel.cu,
                 hdas_ext/ops/mixed_node.py, reference: hdas_ext.reference.functional.mixed_node,
                 tests: python_tests/test_mixed_node_op.py
    pair_concat  csrc/pair_concat.cpp, csrc/cpu/pair_concat_kernel.cpp, csrc/cuda/pair_concat_kernel.cu,
                 hdas_ext/ops/pair_concat.py, reference: hdas_ext.reference.functional.pair_concat,
                 tests: python_tests/test_stage_node.py
"""
from .mixed_node import ADD, CODES, EXTRA, check_inputs, mixed_node
from .pair_concat import pair_concat
