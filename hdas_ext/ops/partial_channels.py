"""The one check of the partial-channels setting (PC-DARTS: an edge mixes C/k of its channels and
passes the rest), shared by the op's Python half, the modules and the supernets. The op's C++ half
(csrc/mixed_node.cpp) raises the same words for its `groups`."""


def check_partial_channels(k, channels, name="k", channels_name="C", plane=None, stride=1, who=None):
    """k: an int >= 1 dividing `channels`; with plane = (H, W) at stride 2 and k > 1, H and W even
    (the passed channels are max-pooled 2x2 to the mixed ones' size). Errors name the argument
    (`name`), the channel count (`channels_name`) and, when given, the caller (`who`)."""
    at = f"{who}: " if who else ""
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"{at}{name} must be an int >= 1, got {k!r}")
    if channels % k:
        raise ValueError(f"{at}{channels_name} ({channels}) must be divisible by {name} = {k}")
    if k > 1 and stride == 2 and plane is not None and (plane[0] % 2 or plane[1] % 2):
        raise ValueError(f"{at}{name} > 1 at stride 2 needs an even height and width (the passed channels are "
                         f"max-pooled 2x2), got {plane[0]}x{plane[1]}")
    return k
