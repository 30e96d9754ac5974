"""Which ops a MixedOp's own forward runs, as a function of the weights, found on a probe (the ops
it calls, seen by hooks) and used at every fused call. A forward that takes no Python value from
its weights runs a fixed set of ops (usually all). One that does (`if w != 0`, `if w > 0`, a count
of the non-zero weights) is run on weight patterns (soft, with zeros and a negative, several zeros,
all but one zero, a tiny weight), each also with its non-zero magnitudes rescaled: the ops it runs
must depend on which weights are zero, negative or positive only. Then they are those with a
non-zero weight, those with a positive weight, or, per sign pattern, those seen on the probe
(other patterns run the module's own forward)."""
from collections import namedtuple

import torch

ALL, NONZERO, POSITIVE, TABLE = "all", "nonzero", "positive", "table"
# rule: one of the above; subset: the ops run at all (None: every op); table: for TABLE, sign
# pattern -> ops run (None: every op).
Selection = namedtuple("Selection", "rule subset table")


def admit_weights(selection, w):
    """The ops to run for weights w: None for all, a tuple of indices, or False (the module's own
    forward runs). A rule on the weights' values takes one device-to-host copy."""
    rule = selection.rule
    if rule == ALL:
        return selection.subset
    if rule == TABLE:
        return selection.table.get(tuple(torch.sign(w).tolist()), False)
    chosen = (w != 0 if rule == NONZERO else w > 0).tolist()
    active = tuple(k for k in (selection.subset or range(len(chosen))) if chosen[k])
    return False if not active else None if len(active) == len(chosen) else active


def _predicted(rule, subset, w):
    keep = [True] * len(w) if rule == ALL else (w != 0 if rule == NONZERO else w > 0).tolist()
    return tuple(k for k in (subset or range(len(w))) if keep[k])


def patterns(P, device, soft):
    """(name, weights) of the probe's weight patterns: first those that tell the rules apart, then
    the remaining one-hot patterns (for a table)."""
    found = [("soft weights", soft)]
    sparse = soft.clone()
    sparse[-1], sparse[0] = 0.0, -0.25
    found.append(("a zero and a negative weight", sparse))
    if P > 2:
        several = soft.clone()
        several[::2] = 0.0
        found.append(("several zero weights", several))
    if P > 1:
        tiny = soft.clone()
        tiny[1] = 1e-30
        found.append(("a tiny weight", tiny))
    for k in [P - 1, 0] + list(range(1, P - 1)):
        one = torch.zeros_like(soft)
        one[k] = 0.7
        found.append((f"all weights zero but #{k}", one))
    return [(name, w.to(device)) for name, w in found[:P + 4]]


def _rescaled(w, seed):
    g = torch.Generator().manual_seed(seed)
    return w * torch.pow(10.0, torch.rand(w.shape, generator=g, dtype=w.dtype) * 4 - 3).to(w.device)


RULE_PATTERNS = 6  # the patterns observed before a rule is chosen; the other one-hot ones only for a table


def choose(run, P, soft, device):
    """(Selection, [(name, weights)] to check the fused op on beyond soft and sparse weights, None),
    or (None, None, why not). run(weights) -> Observation of the module's forward on them (training
    mode). A forward that takes no Python value from the weights runs the ops it ran on soft weights,
    whatever the weights."""
    first = run(soft)
    subset = None if sorted(first.called) == list(range(P)) else tuple(sorted(first.called))
    if len(set(first.called)) != len(first.called):
        return None, None, "its forward runs an op more than once"
    if not first.weight_values:
        return Selection(ALL, subset, None), [], None
    seen, by_sign, all_patterns = [], {}, patterns(P, device, soft)
    for i, (name, w) in enumerate(all_patterns):
        if i == RULE_PATTERNS:
            for rule in (NONZERO, POSITIVE, ALL):
                if _mismatch(rule, subset, seen) is None:
                    return Selection(rule, subset, None), _checked(seen[1:]), None
        obs = first if i == 0 else run(w)
        key = tuple(torch.sign(w).tolist())
        again = run(_rescaled(w, i)) if i < RULE_PATTERNS else obs
        if again.called != obs.called or again.weight_values != obs.weight_values or \
                by_sign.setdefault(key, sorted(obs.called)) != sorted(obs.called):
            return None, None, (f"its forward chooses its ops by the weights' values, not only by which are zero "
                                f"or negative (on {name}: ops {obs.called}, with other magnitudes {again.called})")
        if len(set(obs.called)) != len(obs.called):
            return None, None, "its forward runs an op more than once"
        seen.append((name, w, obs))
    for rule in (NONZERO, POSITIVE, ALL):
        if _mismatch(rule, subset, seen) is None:
            return Selection(rule, subset, None), _checked(seen[1:]), None
    table = {key: None if len(called) == P else tuple(called) for key, called in by_sign.items() if called}
    return Selection(TABLE, None, table), _checked(seen[1:]), None


def _checked(seen):
    """The patterns on which the fused op runs (some op runs)."""
    return [(name, w) for name, w, obs in seen if obs.called]


def _mismatch(rule, subset, seen):
    """None if every observation ran the ops the rule says, else why not."""
    for name, w, obs in seen:
        if tuple(sorted(obs.called)) != _predicted(rule, subset, w):
            return f"on {name} its forward runs ops {sorted(obs.called)}"
    return None
