"""Auxiliary architecture losses of Hs-DAS and the cell-distribution search: the depth loss (the
paper's Eq. 2, with the stage-length weights of Eq. 4) and the complexity loss (Eq. 5).
docs/algorithms.md has the equations, every reading taken here and what each mode reproduces.

`mode` chooses how Eq. 2 is read:

'literal' (the default): Eq. 2 as written,
      L_depth = -sum_s (1/N) sum_i (1/i) sum_{j<i} a_ij (d_j + 1),
  with our reading of its open symbols:
  - a_ij, the weight of the edge from state j into cell i, is the share of that edge's mixed
    output that is not 'none': 1 - softmax(alpha_edge)['none'] (1 without a 'none' primitive);
  - i is the cell's index in the stage DAG with the two stage inputs as nodes 0 and 1 (cell j of
    the stage is node i = j + 2), so without a window 1/i averages over its i predecessors; under
    a window the sum runs over the window's edges and 1/i stays as written;
  - d_i is the summand: d(stage inputs) = 0, d_i = (1/i) sum_j a_ij (d_j + 1), D_s = mean_i d_i.
'edge-softmax' (this project's earlier reading): a_ij = softmax over the
  cell's edges of each edge's largest non-'none' logit (the score the derivation ranks edges by)
  and no 1/i: d_i = sum_j a_ij (d_j + 1), the expected number of cells on a path walked back from
  cell i picking edges with probability a.
'released' (the released code): the raw alpha logits of every op, 'none' included, so depth is a
  vector with one component per op; each cell's sum is divided by its number of window edges and
  D_s = sum over components of mean_i d_i. With beta, a_ij is the 'edge-softmax' weight divided by
  the edge count. The loss is then stepped on its own (hdas_ext.search.bilevel).

With beta (Eq. 4), in every mode the last cell of candidate length N_min + k (0-based position
j = N_min - 1 + k) is weighted d_j <- d_j (1 + j b_k), b = softmax(beta_s), and later cells read
the weighted value (the released code's form, which we take as our reading of Eq. 4).
Eq. 5: L_comp = sum_s theta_s sum_k b_k (N_min + k), theta_s the cost of one cell of stage s
(1: the expected number of cells, the released code's; or its multiply-adds or parameters).
"""
import enum

import torch
import torch.nn.functional as F

from ..primitives import STAGE_PRIMITIVES
from ..stage_geometry import window_sources


class LossMode(str, enum.Enum):
    """How Eq. 2 is read (above). The one parser of a mode's name: LossMode('literal'); a bad name
    raises ValueError listing the modes."""
    LITERAL = "literal"
    EDGE_SOFTMAX = "edge-softmax"
    RELEASED = "released"

    @classmethod
    def _missing_(cls, value):
        raise ValueError(f"loss_mode must be one of {', '.join(m.value for m in cls)}, got {value!r}")

    @property
    def in_objective(self):
        """Added to the architecture objective L_val + delta L_depth + gamma L_comp; else (the
        released code) stepped by a second Adam step on the auxiliary loss alone."""
        return self is not LossMode.RELEASED


MODES = tuple(m.value for m in LossMode)
DEFAULT_MODE = LossMode.LITERAL


def _none_index(primitives):
    return list(primitives).index("none") if "none" in primitives else -1


def edge_weights(alpha, none_index):
    """'edge-softmax' weights of one cell: softmax across its edges of each edge's largest
    non-'none' logit. alpha: [edges, P] raw logits."""
    keep = [p for p in range(alpha.shape[-1]) if p != none_index]
    return F.softmax(alpha[:, keep].max(dim=-1).values, dim=0)


def not_none_weights(alpha, none_index):
    """'literal' weights of one cell: per edge, 1 - softmax over its ops of the 'none' entry (the
    share of the edge's mixed output that is not 'none'). alpha: [edges, P] raw logits."""
    if none_index < 0:
        return alpha.new_ones(alpha.shape[0])
    return 1 - F.softmax(alpha, dim=-1)[:, none_index]


def _beta_weights(beta, n, n_min):
    if n_min is None:
        raise ValueError("n_min is required when beta is given")
    if beta.numel() != n - n_min + 1:
        raise ValueError(f"beta must have N_max - N_min + 1 = {n - n_min + 1} entries, got {beta.numel()}")
    return F.softmax(beta.reshape(-1), dim=0)


def _recursion(weights, window, scale, beta=None, n_min=None):
    """Mean over the stage's cells of d_j = scale(j, edges) * sum_e weights[j][e] * (d(src_e) + 1),
    d(stage inputs) = 0, the Eq. 4 factor applied where beta is given. weights[j][e] is a scalar
    or a vector (then so is the result)."""
    n = len(weights)
    b = None if beta is None else _beta_weights(beta, n, n_min)
    zero = torch.zeros_like(weights[0][0])
    depth = [zero, zero]
    for j, w in enumerate(weights):
        src = window_sources(j, window)
        if len(w) != len(src):
            raise ValueError(f"cell {j}: {len(w)} edge weights, window {window} gives {len(src)} edges")
        d = scale(j, len(src)) * sum(w[e] * (depth[s] + 1) for e, s in enumerate(src))
        if b is not None and j >= n_min - 1:
            d = d * (1 + j * b[j - (n_min - 1)])
        depth.append(d)
    return sum(depth[2:]) / n


def literal_depth(weights, window, beta=None, n_min=None):
    """Eq. 2's stage term (1/N) sum_i d_i, d_i = (1/i) sum_j a_ij (d_j + 1), from given edge
    weights a (one [edges] tensor per cell, hard 0/1 or relaxed), cell j being node i = j + 2."""
    return _recursion(weights, window, lambda j, edges: 1.0 / (j + 2), beta, n_min)


def stage_depth(alphas, window, mode=DEFAULT_MODE, beta=None, n_min=None, primitives=STAGE_PRIMITIVES):
    """Differentiable depth D_s of one stage from its per-cell alpha logits (list of [edges, P]);
    mode: a LossMode or its name."""
    mode = LossMode(mode)
    none_index = _none_index(primitives)
    for j, alpha in enumerate(alphas):
        if alpha.shape[0] != len(window_sources(j, window)):
            raise ValueError(f"cell {j}: alpha has {alpha.shape[0]} edges, window {window} gives "
                             f"{len(window_sources(j, window))}")
    if mode is LossMode.LITERAL:
        return literal_depth([not_none_weights(a, none_index) for a in alphas], window, beta, n_min)
    if mode is LossMode.EDGE_SOFTMAX:
        return _recursion([edge_weights(a, none_index) for a in alphas], window, lambda j, e: 1.0, beta, n_min)
    per_edge = lambda j, edges: 1.0 / edges
    if beta is not None:
        return _recursion([edge_weights(a, none_index) for a in alphas], window, per_edge, beta, n_min)
    return _recursion(list(alphas), window, per_edge).sum()


def depth_loss(stage_alphas, window, mode=DEFAULT_MODE, betas=None, n_min=None, primitives=STAGE_PRIMITIVES):
    """L_depth = -sum over stages of stage_depth (minimising it makes stages deeper)."""
    betas = [None] * len(stage_alphas) if betas is None else betas
    return -sum(stage_depth(a, window, mode, b, n_min, primitives) for a, b in zip(stage_alphas, betas))


def complexity_loss(betas, n_min, theta=None):
    """L_comp = sum over stages of theta_s * sum_k softmax(beta_s)_k (N_min + k): the expected
    stage length (theta None or 1) or the expected cost of the stage's cells (theta_s = the cost
    of one of them)."""
    theta = [1.0] * len(betas) if theta is None else list(theta)
    if len(theta) != len(betas):
        raise ValueError(f"theta must give one cost per stage ({len(betas)}), got {len(theta)}")
    total = 0
    for beta, t in zip(betas, theta):
        b = F.softmax(beta.reshape(-1), dim=0)
        total = total + t * (b * (n_min + torch.arange(b.numel(), dtype=b.dtype, device=b.device))).sum()
    return total


def auxiliary_loss(model, delta, gamma, mode=DEFAULT_MODE):
    """delta * L_depth + gamma * L_comp of a supernet, read through its stage_architecture() (None
    for cell supernets or when both coefficients are 0). Returns (loss, parts) with parts =
    {'depth': ..., 'comp': ...} detached."""
    arch = model.stage_architecture()
    if arch is None or (delta == 0 and gamma == 0):
        return None, {}
    loss, parts = 0, {}
    if delta:
        ld = depth_loss(arch.alphas, arch.window, mode, arch.betas, arch.n_min, arch.primitives)
        loss, parts["depth"] = loss + delta * ld, ld.item()
    if gamma and arch.betas is not None:
        lc = complexity_loss(arch.betas, arch.n_min, arch.theta)
        loss, parts["comp"] = loss + gamma * lc, lc.item()
    if not torch.is_tensor(loss):
        return None, parts
    return loss, parts
