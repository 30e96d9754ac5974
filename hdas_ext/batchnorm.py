"""nn.BatchNorm2d's rules, for code that runs a BatchNorm's normalisation without calling it (the
fused modules' pool BNs, the folded BNs, the lean recomputation)."""
import torch


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


def update_running_stats(bns, mean, var_u):
    """The buffer update of one training forward of each of `bns`, as nn.BatchNorm2d makes it, from
    batch statistics computed elsewhere: mean and unbiased variance [len(bns), C] (any dtype)."""
    with torch.no_grad():
        torch._foreach_add_([b.num_batches_tracked for b in bns], 1)
        dtype = bns[0].running_mean.dtype
        means, vars_ = mean.to(dtype).unbind(0), var_u.to(dtype).unbind(0)
        factors = [momentum_factor(b) for b in bns]
        if all(f == factors[0] for f in factors):
            torch._foreach_lerp_([b.running_mean for b in bns], list(means), factors[0])
            torch._foreach_lerp_([b.running_var for b in bns], list(vars_), factors[0])
            return
        for b, m, v, f in zip(bns, means, vars_, factors):
            b.running_mean.lerp_(m, f)
            b.running_var.lerp_(v, f)
