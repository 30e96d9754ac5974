"""Stand-ins of DARTS-family search code as its authors structured it, written here from the
published descriptions (DARTS, PC-DARTS, P-DARTS, FairDARTS papers and the layouts their public
code is known for), so that fuse_mixed_ops can be tried on modules hdas_ext has never seen: other
class names, other attribute names, other nesting. Nothing here imports hdas_ext."""
import torch
import torch.nn.functional as F
from torch import nn

PRIMITIVES_NONE_FIRST = ("none", "max_pool_3x3", "avg_pool_3x3", "skip_connect",
                         "sep_conv_3x3", "sep_conv_5x5", "dil_conv_3x3", "dil_conv_5x5")
PRIMITIVES_NONE_LAST = PRIMITIVES_NONE_FIRST[1:] + ("none",)


# --- style A: one Sequential per conv op (the DARTS paper's own layout) -------------------------

class Zero(nn.Module):
    def __init__(self, stride):
        super().__init__()
        self.stride = stride

    def forward(self, x):
        return x[:, :, ::self.stride, ::self.stride] * 0.0


class Identity(nn.Module):
    def forward(self, x):
        return x


class ReLUConvBN(nn.Module):
    def __init__(self, C_in, C_out, kernel, stride, padding, affine=False):
        super().__init__()
        self.op = nn.Sequential(nn.ReLU(), nn.Conv2d(C_in, C_out, kernel, stride, padding, bias=False),
                                nn.BatchNorm2d(C_out, affine=affine))

    def forward(self, x):
        return self.op(x)


class SepConv(nn.Module):
    """Depthwise-separable conv applied twice, the second at stride 1: eight modules in one list."""

    def __init__(self, C, kernel, stride, affine=False):
        super().__init__()
        pad = kernel // 2
        self.op = nn.Sequential(
            nn.ReLU(), nn.Conv2d(C, C, kernel, stride, pad, groups=C, bias=False),
            nn.Conv2d(C, C, 1, bias=False), nn.BatchNorm2d(C, affine=affine),
            nn.ReLU(), nn.Conv2d(C, C, kernel, 1, pad, groups=C, bias=False),
            nn.Conv2d(C, C, 1, bias=False), nn.BatchNorm2d(C, affine=affine))

    def forward(self, x):
        return self.op(x)


class DilConv(nn.Module):
    def __init__(self, C, kernel, stride, dilation=2, affine=False):
        super().__init__()
        self.op = nn.Sequential(
            nn.ReLU(), nn.Conv2d(C, C, kernel, stride, dilation * (kernel // 2), dilation=dilation, groups=C, bias=False),
            nn.Conv2d(C, C, 1, bias=False), nn.BatchNorm2d(C, affine=affine))

    def forward(self, x):
        return self.op(x)


class FactorizedReduce(nn.Module):
    """Identity at stride 2: two 1x1 stride-2 convs, one shifted by a pixel, concatenated, then BN."""

    def __init__(self, C_in, C_out, affine=False):
        super().__init__()
        self.relu = nn.ReLU()
        self.conv_1 = nn.Conv2d(C_in, C_out // 2, 1, 2, bias=False)
        self.conv_2 = nn.Conv2d(C_in, C_out // 2, 1, 2, bias=False)
        self.bn = nn.BatchNorm2d(C_out, affine=affine)

    def forward(self, x):
        x = self.relu(x)
        return self.bn(torch.cat([self.conv_1(x), self.conv_2(x[:, :, 1:, 1:])], dim=1))


def pool(kind, stride):
    if kind == "max":
        return nn.MaxPool2d(3, stride, 1)
    return nn.AvgPool2d(3, stride, 1, count_include_pad=False)


def darts_op(name, C, stride, pool_bn=True):
    if name == "none":
        return Zero(stride)
    if name.endswith("pool_3x3"):
        p = pool(name[:3], stride)
        return nn.Sequential(p, nn.BatchNorm2d(C, affine=False)) if pool_bn else p
    if name == "skip_connect":
        return Identity() if stride == 1 else FactorizedReduce(C, C)
    kernel = int(name[-1])
    return SepConv(C, kernel, stride) if name.startswith("sep") else DilConv(C, kernel, stride)


class MixedOp(nn.Module):
    def __init__(self, C, stride, primitives=PRIMITIVES_NONE_FIRST, pool_bn=True):
        super().__init__()
        self._ops = nn.ModuleList(darts_op(p, C, stride, pool_bn) for p in primitives)

    def forward(self, x, weights):
        return sum(w * op(x) for w, op in zip(weights, self._ops))


class BarePoolMixedOp(MixedOp):
    """Pools without a BatchNorm (as in evaluation cells and NAS-Bench-201-style spaces)."""

    def __init__(self, C, stride, primitives=PRIMITIVES_NONE_FIRST):
        super().__init__(C, stride, primitives, pool_bn=False)


# --- style B: SepConv as two DilConv halves, pools in a .pool/.bn module, 'none' last ------------

class HalfConv(nn.Module):
    """ReLU, (dilated) depthwise conv, pointwise conv, BN, kept in `.net`."""

    def __init__(self, C_in, C_out, kernel, stride, dilation, affine=False):
        super().__init__()
        self.net = nn.Sequential(
            nn.ReLU(), nn.Conv2d(C_in, C_in, kernel, stride, dilation * (kernel // 2), dilation=dilation,
                                 groups=C_in, bias=False),
            nn.Conv2d(C_in, C_out, 1, bias=False), nn.BatchNorm2d(C_out, affine=affine))

    def forward(self, x):
        return self.net(x)


class TwoHalvesSepConv(nn.Module):
    def __init__(self, C, kernel, stride):
        super().__init__()
        self.net = nn.Sequential(HalfConv(C, C, kernel, stride, 1), HalfConv(C, C, kernel, 1, 1))

    def forward(self, x):
        return self.net(x)


class PoolThenBN(nn.Module):
    def __init__(self, kind, C, stride):
        super().__init__()
        self.pool = pool(kind, stride)
        self.bn = nn.BatchNorm2d(C, affine=False)

    def forward(self, x):
        out = self.pool(x)
        return self.bn(out)


class ShiftedReduce(nn.Module):
    """Identity at stride 2, written another way: the two 1x1 stride-2 convs in a list, each on its
    own pixel shift."""

    def __init__(self, C):
        super().__init__()
        self.act = nn.ReLU()
        self.convs = nn.ModuleList(nn.Conv2d(C, C // 2, 1, 2, bias=False) for _ in range(2))
        self.norm = nn.BatchNorm2d(C, affine=False)

    def forward(self, x):
        x = self.act(x)
        return self.norm(torch.cat([conv(x[:, :, s:, s:]) for s, conv in enumerate(self.convs)], dim=1))


def halves_op(name, C, stride):
    if name == "none":
        return Zero(stride)
    if name.endswith("pool_3x3"):
        return PoolThenBN(name[:3], C, stride)
    if name == "skip_connect":
        return Identity() if stride == 1 else ShiftedReduce(C)
    kernel = int(name[-1])
    if name.startswith("sep"):
        return TwoHalvesSepConv(C, kernel, stride)
    return HalfConv(C, C, kernel, stride, 2)


class HalvesMixedOp(nn.Module):
    def __init__(self, C, stride, primitives=PRIMITIVES_NONE_LAST):
        super().__init__()
        self._ops = nn.ModuleList(halves_op(p, C, stride) for p in primitives)

    def forward(self, x, weights):
        return sum(w * op(x) for w, op in zip(weights, self._ops))


# --- style C: progressive search, op subsets under another name, dropout after skip ----------------

class SubsetMixedOp(nn.Module):
    """Keeps only the primitives switched on; a skip connection is followed by dropout of rate p
    (changed between epochs through update_p)."""

    def __init__(self, C, stride, switches=None, p=0.0, primitives=PRIMITIVES_NONE_FIRST):
        super().__init__()
        switches = [True] * len(primitives) if switches is None else switches
        self.p = p
        self.m_ops = nn.ModuleList()
        for on, name in zip(switches, primitives):
            if not on:
                continue
            op = darts_op(name, C, stride)
            if isinstance(op, Identity) and p > 0:
                op = nn.Sequential(op, nn.Dropout(p))
            self.m_ops.append(op)

    def update_p(self):
        for op in self.m_ops:
            if isinstance(op, nn.Sequential) and isinstance(op[0], Identity):
                op[1].p = self.p

    def forward(self, x, weights):
        return sum(w * op(x) for w, op in zip(weights, self.m_ops))


# --- style D: partial channels (PC-DARTS) ---------------------------------------------------------

def channel_shuffle(x, groups):
    n, c, h, w = x.shape
    return x.view(n, groups, c // groups, h, w).transpose(1, 2).contiguous().view(n, c, h, w)


class PartialMixedOp(nn.Module):
    """Mixes the first C/k channels only; the other channels pass (max-pooled 2x2 when the edge
    reduces), are concatenated after the mixed ones, and the result is shuffled in k groups."""

    def __init__(self, C, stride, k=4, primitives=PRIMITIVES_NONE_FIRST):
        super().__init__()
        self.k = k
        self.mp = nn.MaxPool2d(2, 2)
        self._ops = nn.ModuleList(darts_op(p, C // k, stride) for p in primitives)

    def forward(self, x, weights):
        part = x.shape[1] // self.k
        mixed = sum(w * op(x[:, :part]) for w, op in zip(weights, self._ops))
        rest = x[:, part:]
        if mixed.shape[2] != x.shape[2]:
            rest = self.mp(rest)
        return channel_shuffle(torch.cat([mixed, rest], dim=1), self.k)


class SkipsZeroWeights(MixedOp):
    """Runs only the ops with a positive weight (a hard-sampling trick): the skipped ops' BatchNorm
    statistics do not move, and the fused op must not run them either."""

    def forward(self, x, weights):
        return sum(w * op(x) for w, op in zip(weights, self._ops) if w > 0)


# --- modules that look like MixedOps and compute something else (must be left alone) -----------

class MeanMixedOp(MixedOp):
    def forward(self, x, weights):
        return sum(w * op(x) for w, op in zip(weights, self._ops)) / len(self._ops)


# --- a DARTS-style search network around any of the MixedOps above --------------------------------

class Cell(nn.Module):
    def __init__(self, mixed, steps, multiplier, C_pp, C_p, C, reduction, reduction_prev, edge_kwargs):
        super().__init__()
        self.reduction, self.steps, self.multiplier = reduction, steps, multiplier
        self.preprocess0 = FactorizedReduce(C_pp, C) if reduction_prev else ReLUConvBN(C_pp, C, 1, 1, 0)
        self.preprocess1 = ReLUConvBN(C_p, C, 1, 1, 0)
        self._ops = nn.ModuleList(mixed(C, 2 if reduction and j < 2 else 1, **edge_kwargs(i, j))
                                  for i in range(steps) for j in range(2 + i))

    def forward(self, s0, s1, weights, edge_weights=None):
        states = [self.preprocess0(s0), self.preprocess1(s1)]
        offset = 0
        for _ in range(self.steps):
            terms = [self._ops[offset + j](h, weights[offset + j]) for j, h in enumerate(states)]
            if edge_weights is not None:
                terms = [edge_weights[offset + j] * t for j, t in enumerate(terms)]
            offset += len(states)
            states.append(sum(terms))
        return torch.cat(states[-self.multiplier:], dim=1)


def node_softmax(betas, steps):
    """PC-DARTS' edge normalisation: a softmax over each node's incoming edges."""
    out, start = [], 0
    for i in range(steps):
        out.append(F.softmax(betas[start:start + 2 + i], dim=-1))
        start += 2 + i
    return torch.cat(out)


class SearchNetwork(nn.Module):
    """stem -> `layers` cells (reductions at L//3 and 2L//3) -> GAP -> linear, with its own
    alphas (and PC-DARTS' betas when edge_norm). weight_fn: softmax (DARTS) or sigmoid (FairDARTS)."""

    def __init__(self, mixed, C=8, layers=3, num_classes=10, steps=4, multiplier=4, num_ops=8,
                 edge_norm=False, weight_fn="softmax", edge_kwargs=None):
        super().__init__()
        edge_kwargs = edge_kwargs or (lambda i, j: {})
        self.steps, self.edge_norm, self.weight_fn = steps, edge_norm, weight_fn
        self.stem = nn.Sequential(nn.Conv2d(3, 3 * C, 3, padding=1, bias=False), nn.BatchNorm2d(3 * C))
        C_pp, C_p, C_cur = 3 * C, 3 * C, C
        self.cells = nn.ModuleList()
        reduction_prev = False
        for i in range(layers):
            reduction = i in (layers // 3, 2 * layers // 3)
            C_cur *= 2 if reduction else 1
            self.cells.append(Cell(mixed, steps, multiplier, C_pp, C_p, C_cur, reduction, reduction_prev, edge_kwargs))
            reduction_prev = reduction
            C_pp, C_p = C_p, multiplier * C_cur
        self.gap = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(C_p, num_classes)
        edges = sum(2 + i for i in range(steps))
        self.alphas_normal = nn.Parameter(1e-3 * torch.randn(edges, num_ops))
        self.alphas_reduce = nn.Parameter(1e-3 * torch.randn(edges, num_ops))
        if edge_norm:
            self.betas_normal = nn.Parameter(1e-3 * torch.randn(edges))
            self.betas_reduce = nn.Parameter(1e-3 * torch.randn(edges))

    def weights(self, kind):
        alpha = getattr(self, "alphas_" + kind)
        return torch.sigmoid(alpha) if self.weight_fn == "sigmoid" else F.softmax(alpha, dim=-1)

    def forward(self, x, weights=None):
        s0 = s1 = self.stem(x)
        for cell in self.cells:
            kind = "reduce" if cell.reduction else "normal"
            w = self.weights(kind) if weights is None else weights[kind]
            betas = node_softmax(getattr(self, "betas_" + kind), self.steps) if self.edge_norm else None
            s0, s1 = s1, cell(s0, s1, w, betas)
        return self.classifier(self.gap(s1).flatten(1))
