"""Auxiliary architecture losses of Hs-DAS and the distribution search (spec §3).

Two definitions are provided, selected by `mode`:

'paper' (the default; the paper's Eq. 2/4/5 as this project reads them, spec §3.3 [paper?]):
  every window edge e of cell j gets a relaxed connection weight
      w[j,e] = softmax over the cell's edges of (largest non-'none' logit of edge e),
  the same per-edge score the derivation ranks edges by (so the loss moves exactly the quantity
  that decides the derived connections). Depth recursion (Eq. 2):
      d(stage inputs) = 0,   d_j = sum_e w[j,e] * (d(src_e) + 1),
  i.e. the expected number of cells on a path walked back from cell j picking edges with
  probability w (with two equal edges this is the per-cell recursion of genotypes.expected_depth,
  which then averages over the output cells, not over all cells).
  Stage depth D_s = mean_j d_j; L_depth = -sum_s D_s.
  With beta (Eq. 4): the last cell of candidate pair k, j = N_min-1+k, is weighted
      d_j <- d_j * (1 + j * b_k),  b = softmax(beta_s),
  and the weighted value is what later cells read.
  Complexity (Eq. 5): L_comp = sum_s sum_k b_k * (N_min + k), the expected number of cells.
  Used inside the architecture objective L_cls + delta * L_depth + gamma * L_comp.

'released' (the released code, spec §3.1/§3.2): as above but
  - plain Hs-DAS: w are the RAW alpha logits of all ops including 'none' (depth is a vector with
    one component per op) and each cell's sum is divided by its number of edges; D_s = sum over
    op components of (sum_j d_j) / n;
  - with beta: w as in 'paper' but each cell's sum is divided by its number of edges;
  and the loss is stepped separately (see hdas_ext.search.optim), with delta = 1, gamma = 0.4.
"""
import torch
import torch.nn.functional as F

from ..primitives import STAGE_PRIMITIVES
from ..supernets.stage_search import window_sources

MODES = ("paper", "released")


def _check_mode(mode):
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")


def edge_weights(alpha, none_index):
    """Relaxed connection weights of one cell: softmax across its edges of each edge's largest
    non-'none' logit. alpha: [edges, P] raw logits."""
    keep = [p for p in range(alpha.shape[-1]) if p != none_index]
    return F.softmax(alpha[:, keep].max(dim=-1).values, dim=0)


def stage_depth(alphas, window, mode="paper", beta=None, n_min=None, primitives=STAGE_PRIMITIVES):
    """Differentiable depth D_s of one stage from its per-cell alpha logits (list of [edges, P])."""
    _check_mode(mode)
    n = len(alphas)
    none_index = list(primitives).index("none") if "none" in primitives else -1
    if beta is not None:
        if n_min is None:
            raise ValueError("n_min is required when beta is given")
        if beta.numel() != n - n_min + 1:
            raise ValueError(f"beta must have N_max - N_min + 1 = {n - n_min + 1} entries, got {beta.numel()}")
        b = F.softmax(beta.reshape(-1), dim=0)
    raw_vectors = mode == "released" and beta is None
    zero = alphas[0].new_zeros(alphas[0].shape[-1]) if raw_vectors else alphas[0].new_zeros(())
    depth = [zero, zero]
    for j, alpha in enumerate(alphas):
        src = window_sources(j, window)
        if alpha.shape[0] != len(src):
            raise ValueError(f"cell {j}: alpha has {alpha.shape[0]} edges, window {window} gives {len(src)}")
        w = alpha if raw_vectors else edge_weights(alpha, none_index)
        d = sum(w[e] * (depth[s] + 1) for e, s in enumerate(src))
        if mode == "released":
            d = d / len(src)
        if beta is not None and j >= n_min - 1:
            d = d * (1 + j * b[j - (n_min - 1)])
        depth.append(d)
    total = sum(depth[2:]) / n
    return total.sum() if raw_vectors else total


def depth_loss(stage_alphas, window, mode="paper", betas=None, n_min=None, primitives=STAGE_PRIMITIVES):
    """L_depth = -sum over stages of stage_depth (minimising it makes stages deeper)."""
    betas = [None] * len(stage_alphas) if betas is None else betas
    return -sum(stage_depth(a, window, mode, b, n_min, primitives) for a, b in zip(stage_alphas, betas))


def complexity_loss(betas, n_min):
    """L_comp = sum over stages of the expected stage length sum_k softmax(beta)_k (N_min + k)."""
    total = 0
    for beta in betas:
        b = F.softmax(beta.reshape(-1), dim=0)
        total = total + (b * (n_min + torch.arange(b.numel(), dtype=b.dtype, device=b.device))).sum()
    return total


def auxiliary_loss(model, delta, gamma, mode="paper"):
    """delta * L_depth + gamma * L_comp for a stage supernet (None for cell supernets or when both
    coefficients are 0). Returns (loss, parts) with parts = {'depth': ..., 'comp': ...} detached."""
    if not hasattr(model, "stage_alphas") or (delta == 0 and gamma == 0):
        return None, {}
    betas = model.stage_betas()
    n_min = getattr(model, "n_min", None)
    loss, parts = 0, {}
    if delta:
        ld = depth_loss(model.stage_alphas(), model.window, mode, betas, n_min)
        loss, parts["depth"] = loss + delta * ld, ld.item()
    if gamma and betas is not None:
        lc = complexity_loss(betas, n_min)
        loss, parts["comp"] = loss + gamma * lc, lc.item()
    if not torch.is_tensor(loss):
        return None, parts
    return loss, parts
