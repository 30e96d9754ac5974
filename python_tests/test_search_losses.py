"""Depth and complexity losses against values computed by hand on a 3-cell stage (window 3:
cell 0 reads states 0,1; cell 1 reads 0,1,2; cell 2 reads 1,2,3). Cell j is node i = j + 2 of
the literal Eq. 2 (the stage inputs are nodes 0 and 1)."""
import math

import pytest
import torch

from hdas_ext.genotypes import stage_depth as longest_chain
from hdas_ext.genotypes.derive import derive_stage
from hdas_ext.search.losses import (MODES, LossMode, complexity_loss, depth_loss, edge_weights, literal_depth,
                                    not_none_weights, stage_depth)

pytestmark = pytest.mark.usefixtures("single_thread")

# rows: (max_pool, avg_pool, skip, none)
ALPHAS = [
    torch.tensor([[1., 0., 0., 5.], [0., 2., 0., 0.]]),
    torch.tensor([[0., 0., 0., 0.], [0., 0., 3., 0.], [1., 1., 1., 9.]]),
    torch.zeros(3, 4),
]


def softmax(xs):
    e = [math.exp(x) for x in xs]
    return [v / sum(e) for v in e]


def test_edge_weights_ignore_none_and_normalise_over_edges():
    w = edge_weights(ALPHAS[1], none_index=3)
    assert w.tolist() == pytest.approx(softmax([0, 3, 1]))


def not_none(row):
    return 1 - softmax(row)[3]


def test_not_none_weights():
    assert not_none_weights(ALPHAS[1].double(), none_index=3).tolist() == pytest.approx(
        [not_none(r) for r in ALPHAS[1].tolist()], rel=1e-9)
    assert not_none_weights(ALPHAS[1][:, :3], none_index=-1).tolist() == [1.0, 1.0, 1.0]


def test_literal_depth_soft_weights_by_hand():
    a0 = [not_none([1, 0, 0, 5]), not_none([0, 2, 0, 0])]
    a1 = [not_none([0, 0, 0, 0]), not_none([0, 0, 3, 0]), not_none([1, 1, 1, 9])]
    d0 = (1 / 2) * (a0[0] * 1 + a0[1] * 1)
    d1 = (1 / 3) * (a1[0] * 1 + a1[1] * 1 + a1[2] * (d0 + 1))
    d2 = (1 / 4) * 0.75 * ((0 + 1) + (d0 + 1) + (d1 + 1))     # all-zero logits: 1 - 1/4
    expected = (d0 + d1 + d2) / 3
    got = stage_depth(ALPHAS, window=3, mode="literal")
    assert got.item() == pytest.approx(expected, rel=1e-6)
    assert depth_loss([ALPHAS, ALPHAS], 3).item() == pytest.approx(-2 * expected, rel=1e-6)   # the default


def test_literal_depth_hard_weights_by_hand():
    t = lambda *w: torch.tensor(w, dtype=torch.float64)
    # published format (two inputs per cell): a chain reads the two most recent states ...
    deep = [t(1, 1), t(0, 1, 1), t(0, 1, 1)]
    d0 = (1 / 2) * (1 + 1)                       # both stage inputs: depth 0
    d1 = (1 / 3) * ((0 + 1) + (d0 + 1))          # states 1 and 2
    d2 = (1 / 4) * ((d0 + 1) + (d1 + 1))         # states 2 and 3
    assert (d0, d1, d2) == (1.0, 1.0, 1.0)
    assert literal_depth(deep, 3).item() == pytest.approx(1.0)
    # ... a shallow stage re-reads the stage inputs: smaller
    shallow = [t(1, 1), t(1, 1, 0), t(1, 1, 0)]
    d1 = (1 / 3) * (1 + 1)                       # states 0 and 1
    d2 = (1 / 4) * ((0 + 1) + (d0 + 1))          # states 1 and 2
    assert literal_depth(shallow, 3).item() == pytest.approx((1 + d1 + d2) / 3)
    assert literal_depth(shallow, 3) < literal_depth(deep, 3)
    # one input per cell (a bare chain): 1/i as written shrinks the later cells
    chain = [t(0, 1), t(0, 0, 1), t(0, 0, 1)]
    assert literal_depth(chain, 3).item() == pytest.approx((1 / 2 + 1 / 2 + 1.5 / 4) / 3)
    with pytest.raises(ValueError, match="cell 1: 2 edge weights, window 3 gives 3"):
        literal_depth([t(1, 1), t(1, 1)], 3)


def test_modes_are_parsed_by_one_type():
    assert MODES == ("literal", "edge-softmax", "released")
    assert LossMode("edge-softmax") is LossMode.EDGE_SOFTMAX and LossMode(LossMode.RELEASED) is LossMode.RELEASED
    assert stage_depth(ALPHAS, 3, mode=LossMode.EDGE_SOFTMAX).item() == stage_depth(ALPHAS, 3, "edge-softmax").item()
    with pytest.raises(ValueError, match="loss_mode must be one of literal, edge-softmax, released, got 'paper'"):
        stage_depth(ALPHAS, 3, mode="paper")


def test_edge_softmax_depth_by_hand():
    w0 = softmax([1, 2])          # per-edge best non-none logits 1 and 2 (the 5 is 'none')
    w1 = softmax([0, 3, 1])
    d0 = w0[0] * 1 + w0[1] * 1    # both sources are stage inputs (depth 0)
    d1 = w1[0] * 1 + w1[1] * 1 + w1[2] * (d0 + 1)
    d2 = (1 / 3) * ((0 + 1) + (d0 + 1) + (d1 + 1))
    expected = (d0 + d1 + d2) / 3
    got = stage_depth(ALPHAS, window=3, mode="edge-softmax")
    assert got.item() == pytest.approx(expected, rel=1e-6)
    assert depth_loss([ALPHAS, ALPHAS], 3, "edge-softmax").item() == pytest.approx(-2 * expected, rel=1e-6)


def test_released_plain_depth_by_hand():
    # Raw logits as 4-vectors, each cell divided by its edge count, D = sum of components / n.
    d0 = [(1 + 0) / 2, (0 + 2) / 2, (0 + 0) / 2, (5 + 0) / 2]                 # [0.5, 1, 0, 2.5]
    # cell 1: [0,0,0,0]*(0+1) + [0,0,3,0]*(0+1) + [1,1,1,9]*(d0+1) = [1.5, 2, 4, 31.5], / 3
    d1 = [1.5 / 3, 2 / 3, 4 / 3, 31.5 / 3]
    d2 = [0, 0, 0, 0]                                                        # all-zero logits
    expected = sum(d0[k] + d1[k] + d2[k] for k in range(4)) / 3
    assert expected == pytest.approx(17 / 3)
    got = stage_depth(ALPHAS, window=3, mode="released")
    assert got.item() == pytest.approx(expected, rel=1e-6)


def test_depth_with_beta_by_hand():
    beta = torch.tensor([0.0, math.log(3.0)])   # b = [1/4, 3/4]; N_max = 3, N_min = 2
    b = [0.25, 0.75]
    w0, w1 = softmax([1, 2]), softmax([0, 3, 1])
    # paper: cells j >= N_min-1 = 1 are the last cells of pairs k = j-1, weighted (1 + j b_k)
    d0 = w0[0] + w0[1]
    d1 = (w1[0] + w1[1] + w1[2] * (d0 + 1)) * (1 + 1 * b[0])
    d2 = ((0 + 1) + (d0 + 1) + (d1 + 1)) / 3 * (1 + 2 * b[1])
    got = stage_depth(ALPHAS, 3, "edge-softmax", beta=beta, n_min=2)
    assert got.item() == pytest.approx((d0 + d1 + d2) / 3, rel=1e-6)
    # released: same, every cell divided by its number of edges
    d0 = (w0[0] + w0[1]) / 2
    d1 = (w1[0] + w1[1] + w1[2] * (d0 + 1)) / 3 * (1 + 1 * b[0])
    d2 = ((0 + 1) + (d0 + 1) + (d1 + 1)) / 3 / 3 * (1 + 2 * b[1])
    got = stage_depth(ALPHAS, 3, "released", beta=beta, n_min=2)
    assert got.item() == pytest.approx((d0 + d1 + d2) / 3, rel=1e-6)
    # literal: not-none weights, 1/i with i = j + 2, the same Eq. 4 factor
    a0 = [not_none([1, 0, 0, 5]), not_none([0, 2, 0, 0])]
    a1 = [not_none([0, 0, 0, 0]), not_none([0, 0, 3, 0]), not_none([1, 1, 1, 9])]
    d0 = (a0[0] + a0[1]) / 2
    d1 = (a1[0] + a1[1] + a1[2] * (d0 + 1)) / 3 * (1 + 1 * b[0])
    d2 = 0.75 * ((0 + 1) + (d0 + 1) + (d1 + 1)) / 4 * (1 + 2 * b[1])
    got = stage_depth(ALPHAS, 3, "literal", beta=beta, n_min=2)
    assert got.item() == pytest.approx((d0 + d1 + d2) / 3, rel=1e-6)


def test_complexity_loss_by_hand():
    betas = [torch.tensor([0.0, math.log(3.0)]), torch.tensor([0.0, 0.0])]
    # expected lengths: 1/4*2 + 3/4*3 = 2.75 and 1/2*2 + 1/2*3 = 2.5
    assert complexity_loss(betas, n_min=2).item() == pytest.approx(5.25, rel=1e-6)
    # Eq. 5 with a per-stage cell cost theta_s: sum_s theta_s * expected length
    assert complexity_loss(betas, 2, theta=[2.0, 10.0]).item() == pytest.approx(2 * 2.75 + 10 * 2.5, rel=1e-6)
    with pytest.raises(ValueError, match="theta must give one cost per stage"):
        complexity_loss(betas, 2, theta=[1.0])


def test_bad_inputs_are_named():
    with pytest.raises(ValueError, match="mode"):
        stage_depth(ALPHAS, 3, mode="paperish")
    with pytest.raises(ValueError, match="n_min"):
        stage_depth(ALPHAS, 3, beta=torch.zeros(2))
    with pytest.raises(ValueError, match="beta"):
        stage_depth(ALPHAS, 3, beta=torch.zeros(5), n_min=2)
    with pytest.raises(ValueError, match="window"):
        stage_depth(ALPHAS, 2)
    with pytest.raises(ValueError, match="window"):
        stage_depth(ALPHAS, 2, mode="released")


@pytest.mark.parametrize("mode", ["literal", "edge-softmax", "released"])
def test_minimising_depth_loss_derives_a_chain(mode):
    """Descending L_depth alone must turn a 4-cell stage into a chain (every cell reads the most
    recent state), the deepest stage the window allows. The released raw-logit form ranks every
    edge by its source depth, so there the second input is the next most recent state too."""
    torch.manual_seed(0)
    n, window = 4, 3
    alphas = [torch.nn.Parameter(1e-3 * torch.randn(min(j + 2, window), 4)) for j in range(n)]
    dag0, concat = derive_stage(alphas, window=window)
    opt = torch.optim.Adam(alphas, lr=0.05)
    for _ in range(100):
        opt.zero_grad()
        depth_loss([alphas], window, mode).backward()
        opt.step()
    dag, concat = derive_stage(alphas, window=window)
    assert longest_chain(dag, concat) == n
    assert longest_chain(dag0, concat) < n
    assert all(j + 1 in [s for _, s in cell] for j, cell in enumerate(dag))
    if mode == "released":
        assert all(sorted(s for _, s in cell) == [j, j + 1] for j, cell in enumerate(dag) if j > 0)
