"""The primitive codes of hdas::mixed_node, shared with csrc (enum Prim in csrc/mixed_node.h)."""

NONE, MAX_POOL, AVG_POOL, SKIP, EXTRA, ADD = 0, 1, 2, 3, 4, 5
# The codes the kernel computes itself, by primitive name; EXTRA and ADD take a module's output.
CODES = {"none": NONE, "max_pool_3x3": MAX_POOL, "avg_pool_3x3": AVG_POOL, "skip_connect": SKIP}

# The branch kinds of hdas::conv_candidates, shared with csrc (enum ConvKind in
# csrc/conv_candidates_codes.h), and each kind's (kernel size, dilation, halves).
CONV_KINDS = {"sep_conv_3x3": 0, "sep_conv_5x5": 1, "dil_conv_3x3": 2, "dil_conv_5x5": 3, "sep_conv_7x7": 4}
CONV_SHAPES = {0: (3, 1, 2), 1: (5, 1, 2), 2: (3, 2, 1), 3: (5, 2, 1), 4: (7, 1, 2)}
