"""The nodes of a fused DARTS search cell with the convolution candidates shared per state: every
edge that reads a state (up to `steps` of them) gets its fused convolution candidates from one
hdas::conv_candidates call on that state, made as soon as the state exists; each node is then one
hdas::mixed_node call per stride group (full channels) or one per edge (partial channels)."""
from .conv_fused import conv_sums
from .fused import _edge_sum


def edge_offsets(steps):
    """Index of node i's first edge (node i has i + 2 edges, edge-major)."""
    out, n = [], 0
    for i in range(steps):
        out.append(n)
        n += i + 2
    return out


def fused_cell_nodes(ops, states, weights, steps, edge_weights=None):
    """The cell's states (its two inputs, then one per node). ops: the cell's FusedMixedOps
    (FusedPartialMixedOps) edge-major; weights [num_edges, P]; edge_weights: one per edge or None.
    Full channels: node i = sum_j ops[j](states[j], w_j * ew_j); partial channels: sum_j ew_j *
    ops[j](states[j], w_j) (the passed channels are not weighted by w)."""
    states, off = list(states), edge_offsets(steps)
    partial = ops[0]._partial
    mixed = weights if edge_weights is None or partial else weights * edge_weights[:, None]
    convs = [None] * len(ops)

    def read(t):  # the convolution candidates of the edges reading state t
        groups = {}
        for i in range(max(0, t - 1), steps):
            j = off[i] + t
            if ops[j]._conv:
                groups.setdefault(ops[j].recompute, []).append(j)
        for lean, idx in groups.items():
            x = states[t]
            if partial:
                x = x[:, :x.shape[1] // ops[idx[0]].k]
            for j, y in zip(idx, conv_sums([ops[j] for j in idx], x, mixed, idx, lean)):
                convs[j] = y

    read(0)
    read(1)
    for i in range(steps):
        js = range(off[i], off[i] + i + 2)
        if partial:
            terms = [ops[j]._mix(states[t], mixed[j], ops[j].k, conv=convs[j]) for t, j in enumerate(js)]
            s = sum(terms if edge_weights is None else [edge_weights[j] * y for j, y in zip(js, terms)])
        else:
            s = _edge_sum([ops[j] for j in js], states, mixed[off[i]:off[i] + i + 2], [convs[j] for j in js])
        states.append(s)
        if i + 1 < steps:
            read(len(states) - 1)
    return states
