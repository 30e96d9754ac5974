"""The paper's stage-search variants: Hs-DAS* (one stage DAG shared by the three stages), per-stage
cell counts, a selectable stage primitive set, and the per-stage costs theta of Eq. 5."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from hdas_ext.genotypes import StageGenotype, validate
from hdas_ext.networks import count_multiply_adds, count_params
from hdas_ext.search.bilevel import BilevelOptimizer
from hdas_ext.search.losses import auxiliary_loss
from hdas_ext.supernets import DistributionSearch, HsDasSearch, stage_cell_costs

pytestmark = pytest.mark.usefixtures("single_thread")


def batch(n=4, size=8):
    return torch.randn(n, 3, size, size), torch.randint(0, 10, (n,))


def search_steps(model, steps=2, delta=1.0, gamma=0.0):
    w_opt = torch.optim.SGD(model.weights(), 0.05, momentum=0.9)
    a_opt = torch.optim.Adam(model.alphas(), 0.05)
    opt = BilevelOptimizer(model, w_opt, a_opt, delta=delta, gamma=gamma)
    for _ in range(steps):
        opt.step([batch()], [batch()], lr=0.05)


def test_shared_dag_has_one_alpha_set_and_gradients_from_every_stage_land_in_it():
    torch.manual_seed(0)
    shared = HsDasSearch(C=4, cells_per_stage=2, fused=False, shared_dag=True)
    assert {n.split(".")[0] for n, _ in shared.named_alphas()} == {"alpha_shared"}
    assert len(shared.alphas()) == 2
    sets = shared.stage_alphas()
    assert all(s[j] is sets[0][j] for s in sets for j in range(2))
    # the same network with three independent copies of the shared set: the shared gradient is
    # the sum of the three stages' gradients
    torch.manual_seed(0)
    split = HsDasSearch(C=4, cells_per_stage=2, fused=False)
    split.net.load_state_dict(shared.net.state_dict())
    with torch.no_grad():
        for stage in split.stage_alphas():
            for a, s in zip(stage, shared.alpha_shared):
                a.copy_(s)
    x, y = batch()
    g_shared = torch.autograd.grad(F.cross_entropy(shared(x), y), shared.alphas())
    g_split = torch.autograd.grad(F.cross_entropy(split(x), y), [a for s in split.stage_alphas() for a in s])
    per_stage = [g_split[0:2], g_split[2:4], g_split[4:6]]
    assert all(sum(g.abs().sum() for g in gs) > 0 for gs in per_stage)   # every stage contributes
    for j in range(2):
        torch.testing.assert_close(g_shared[j], sum(gs[j] for gs in per_stage), rtol=1e-4, atol=1e-7)


def test_shared_dag_is_derived_once_and_built_three_times():
    m = HsDasSearch(C=4, cells_per_stage=3, fused=False, shared_dag=True)
    with torch.no_grad():
        for a in m.alpha_shared:
            a.zero_()
        m.alpha_shared[2][2, 1] = 3.0      # cell 2: avg_pool from state 3, then max_pool from state 1
        m.alpha_shared[2][0, 0] = 2.0
    g = m.genotype()
    assert isinstance(g, StageGenotype) and validate(g)
    assert g.DAG1 == g.DAG2 == g.DAG3 and g.DAG1[2] == [("avg_pool_3x3", 3), ("max_pool_3x3", 1)]
    assert g.DAG1_concat == g.DAG3_concat == [3, 4]
    assert [len(s.nodes) for s in m.net.stages] == [3, 3, 3]
    search_steps(m)
    assert validate(m.genotype())
    with pytest.raises(ValueError, match="same number of cells in every stage"):
        HsDasSearch(C=4, cells_per_stage=(3, 3, 2), fused=False, shared_dag=True)


def test_cells_per_stage_per_stage_builds_and_searches():
    torch.manual_seed(0)
    m = HsDasSearch(C=4, cells_per_stage=(3, 3, 2), fused=False)
    assert [len(s.cells) for s in m.net.stages] == [3, 3, 2]
    assert [len(a) for a in m.stage_alphas()] == [3, 3, 2]
    before = [a.detach().clone() for a in m.alphas()]
    search_steps(m)
    assert all(not torch.equal(a, b) for a, b in zip(m.alphas(), before))
    g = m.genotype()
    assert validate(g) and [len(g.DAG1), len(g.DAG2), len(g.DAG3)] == [3, 3, 2]
    assert (g.DAG1_concat, g.DAG2_concat, g.DAG3_concat) == ([3, 4], [3, 4], [2, 3])
    with pytest.raises(ValueError, match="window"):
        HsDasSearch(C=4, cells_per_stage=(3, 3, 2), window=4, fused=False)     # > min(N) + 1
    with pytest.raises(ValueError, match="cells_per_stage must be an int >= 1 or 3 of them"):
        HsDasSearch(C=4, cells_per_stage=(3, 3), fused=False)
    with pytest.raises(ValueError, match="cells_per_stage must be an int >= 1 or 3 of them"):
        HsDasSearch(C=4, cells_per_stage=(3, 0, 3), fused=False)


def test_stage_primitives_are_selectable():
    torch.manual_seed(0)
    m = HsDasSearch(C=4, cells_per_stage=2, fused=False, stage_primitives=("skip_connect", "none"))
    assert all(a.shape[-1] == 2 for s in m.stage_alphas() for a in s)
    assert [type(op).__name__ for op in m.net.stages[0].nodes[0].edges[0]._ops] == ["Identity", "Zero"]
    search_steps(m)      # the depth loss finds 'none' by name
    g = m.genotype()
    assert {op for dag in (g.DAG1, g.DAG2, g.DAG3) for cell in dag for op, _ in cell} == {"skip_connect"}
    fused = HsDasSearch(C=4, cells_per_stage=2, fused=True, stage_primitives=("skip_connect", "none"))
    fused.load_state_dict(m.state_dict())
    x, _ = batch()
    m.eval(), fused.eval()
    torch.testing.assert_close(fused(x), m(x), rtol=1e-4, atol=1e-5)
    for bad in [(), ("none",), ("skip_connect", "skip_connect"), ("sep_conv_3x3", "none"), "skip_connect"]:
        with pytest.raises(ValueError, match="stage_primitives"):
            HsDasSearch(C=4, cells_per_stage=2, fused=False, stage_primitives=bad)


class _CellOnItsInput(nn.Module):
    """A stage cell as the stage runs it: both inputs are the node's sum."""

    def __init__(self, cell):
        super().__init__()
        self.cell = cell

    def forward(self, x):
        return self.cell(x, x)


@pytest.mark.parametrize("genotype", ["DARTS_V2", "HC_DAS"])
def test_theta_is_one_cell_of_each_stage(genotype):
    C, size = 4, 16
    m = DistributionSearch(genotype, C=C, n_max=3, n_min=2, fused=False, theta="params", image_size=size)
    madds = stage_cell_costs(genotype, C, "flops", size)
    for s, stage in enumerate(m.net.stages):
        cell = stage.cells[0]
        W = stage.preprocess0.op[1].out_channels
        assert m.theta[s] * 1e6 == pytest.approx(count_params(cell), abs=1e-3)
        res = -(-size // 2 ** s)
        assert madds[s] * 1e6 == pytest.approx(count_multiply_adds(_CellOnItsInput(cell), (W, res, res)), abs=1e-3)
    assert m.theta[1] > m.theta[0]                       # twice as wide: about four times the parameters
    assert stage_cell_costs(genotype, C, 1) == [1.0, 1.0, 1.0]
    with pytest.raises(ValueError, match="theta must be one of"):
        stage_cell_costs(genotype, C, "latency")


def test_theta_weights_the_complexity_loss():
    torch.manual_seed(0)
    m = DistributionSearch(C=4, n_max=3, n_min=2, fused=False, theta="flops", image_size=8)
    _, parts = auxiliary_loss(m, delta=0.0, gamma=1.0)
    b = [F.softmax(beta, 0) for beta in m.stage_betas()]
    expected = sum(t * (bs * torch.tensor([2.0, 3.0])).sum().item() for t, bs in zip(m.theta, b))
    assert parts["comp"] == pytest.approx(expected, rel=1e-5)


def test_eval_network_builds_one_shared_dag_into_every_stage():
    from hdas_ext.genotypes import HS_DAS_IMAGENET
    from hdas_ext.networks import build_eval_network, shared_stages
    dag, concat = HS_DAS_IMAGENET.DAG2, list(HS_DAS_IMAGENET.DAG2_concat)
    g = shared_stages(dag, concat)
    assert g.DAG1 == g.DAG2 == g.DAG3 == dag and g.DAG3_concat == concat
    net = build_eval_network("DARTS_V2", stages=(dag, concat), dataset="digits", init_channels=4, auxiliary=False)
    ref = build_eval_network("DARTS_V2", stages=g, dataset="digits", init_channels=4, auxiliary=False)
    assert net.cells_per_stage == [4, 4, 4]
    assert [s.sources for s in net.stages] == [[[s for _, s in cell] for cell in dag]] * 3
    assert {k: v.shape for k, v in net.state_dict().items()} == {k: v.shape for k, v in ref.state_dict().items()}
    net.eval()
    assert net(torch.randn(2, 3, 16, 16))[0].shape == (2, 10)
    with pytest.raises(ValueError, match="DAG1"):
        shared_stages([[("skip_connect", 5), ("skip_connect", 1)]], [2, 3])
