"""The primitive codes of hdas::mixed_node, shared with csrc (enum Prim in csrc/mixed_node.h)."""

NONE, MAX_POOL, AVG_POOL, SKIP, EXTRA, ADD = 0, 1, 2, 3, 4, 5
# The codes the kernel computes itself, by primitive name; EXTRA and ADD take a module's output.
CODES = {"none": NONE, "max_pool_3x3": MAX_POOL, "avg_pool_3x3": AVG_POOL, "skip_connect": SKIP}
