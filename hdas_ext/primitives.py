"""Primitive name lists. Order matters: genotypes and alpha rows index into them."""

# quark0/darts order: 'none' first.
DARTS_PRIMITIVES = (
    "none",
    "max_pool_3x3",
    "avg_pool_3x3",
    "skip_connect",
    "sep_conv_3x3",
    "sep_conv_5x5",
    "dil_conv_3x3",
    "dil_conv_5x5",
)

# H-DAS cell list: same ops, 'none' last.
HDAS_PRIMITIVES = (
    "max_pool_3x3",
    "avg_pool_3x3",
    "skip_connect",
    "sep_conv_3x3",
    "sep_conv_5x5",
    "dil_conv_3x3",
    "dil_conv_5x5",
    "none",
)

# H-DAS stage-level (between cells) list: parameter-free, 'none' last.
STAGE_PRIMITIVES = ("max_pool_3x3", "avg_pool_3x3", "skip_connect", "none")
