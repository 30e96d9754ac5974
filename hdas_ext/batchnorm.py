"""nn.BatchNorm2d's rules, for code that runs a BatchNorm's normalisation without calling it (the
fused modules' pool BNs, the folded BNs, the lean recomputation)."""


def batch_norm_rules(bn, training):
    """nn.BatchNorm2d's rules for one forward of `bn` in mode `training`, for code that runs its
    normalisation without calling it: (normalise with batch statistics, update the buffers).
    Batch statistics in training or without buffers; buffer updates in training when tracked."""
    has_buffers = bn.running_mean is not None
    return training or not has_buffers, training and bn.track_running_stats and has_buffers


def momentum_factor(bn):
    """The running-average factor of a buffer update, num_batches_tracked already counted:
    bn.momentum, or the cumulative average's 1/num_batches_tracked when momentum is None."""
    return bn.momentum if bn.momentum is not None else 1.0 / float(bn.num_batches_tracked)
