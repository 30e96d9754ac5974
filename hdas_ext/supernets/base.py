"""pt.darts-style controller shared by every supernet: the architecture parameters (alphas and
betas) are attributes of the controller, the network weights live in `self.net`, and
forward(x) = self.net(x, *self.arch_weights()). Keeping them apart lets the optimiser give each
its own optimiser, lets DDP wrap `net` alone (architecture gradients are averaged by hand), and
lets the second-order step call `net` functionally with substituted weights."""
from typing import NamedTuple, Optional, Sequence

import torch
from torch import nn

ALPHA_INIT_STD = 1e-3  # DARTS / H-DAS: alpha = 1e-3 * N(0, 1)


def new_alpha(*shape):
    return nn.Parameter(ALPHA_INIT_STD * torch.randn(*shape))


class StageArchitecture(NamedTuple):
    """What the auxiliary losses read from a stage supernet (hdas_ext.search.losses)."""
    alphas: list                 # per stage, per cell: [window edges, len(primitives)] raw logits
    betas: Optional[list]        # per stage: the output-pair logits (distribution search), else None
    window: int
    n_min: Optional[int]         # the shortest stage when betas are given
    primitives: Sequence[str]    # the ops of a stage edge, in alpha column order
    theta: Optional[list]        # per stage: the cost of one cell (Eq. 5), None for 1


class Supernet(nn.Module):
    """Subclasses set self.net and architecture parameters, and implement arch_weights()
    (the tuple of extra positional arguments net.forward takes) and genotype()."""

    def named_alphas(self):
        """Architecture parameters (alphas, and betas where present) with their names."""
        return [(n, p) for n, p in self.named_parameters() if not n.startswith("net.")]

    def alphas(self):
        return [p for _, p in self.named_alphas()]

    def named_weights(self):
        return list(self.net.named_parameters(prefix="net"))

    def weights(self):
        return list(self.net.parameters())

    def arch_weights(self):
        raise NotImplementedError

    def forward(self, x, arch_weights=None):
        return self.net(x, *(self.arch_weights() if arch_weights is None else arch_weights))

    def genotype(self):
        raise NotImplementedError

    def stage_architecture(self):
        """The stage-level architecture the auxiliary losses read (a StageArchitecture); None for
        supernets without one (the cell searches)."""
        return None

    def stage_lengths(self):
        """The derived number of cells per stage where the search chooses it, else None."""
        return None

    def arch_state(self):
        """Softmaxed architecture weights as nested Python lists (for logs)."""
        def tolist(t):
            if isinstance(t, (list, tuple)):
                return [tolist(x) for x in t]
            return None if t is None else t.detach().cpu().tolist()
        with torch.no_grad():
            return tolist(list(self.arch_weights()))


def check_int(name, value, lo, hi=None):
    if isinstance(value, bool) or not isinstance(value, int) or value < lo or (hi is not None and value > hi):
        rng = f">= {lo}" if hi is None else f"in [{lo}, {hi}]"
        raise ValueError(f"{name} must be an int {rng}, got {value!r}")
    return value
