"""The geometry of an H-DAS network's stages, shared by the stage supernets, the auxiliary losses,
derivation and the random baseline: three stages; in a stage, states 0 and 1 are the stage inputs
and state j+2 is cell j, which reads the min(j+2, m) most recent states under a window m; the
distribution search ends a stage at one of the output pairs of lengths N_min..N_max."""
from .primitives import STAGE_PRIMITIVES

NUM_STAGES = 3


def per_stage(name, value):
    """An int for every stage, or one int per stage (e.g. (6, 6, 4)), as a list of NUM_STAGES ints >= 1."""
    values = [value] * NUM_STAGES if isinstance(value, int) and not isinstance(value, bool) else value
    try:
        values = list(values)
    except TypeError:
        values = None
    if (values is None or len(values) != NUM_STAGES
            or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in values)):
        raise ValueError(f"{name} must be an int >= 1 or {NUM_STAGES} of them (one per stage), got {value!r}")
    return values


def check_window(window, cells):
    """window m in [2, N+1] for stages of at least N = `cells` cells (a cell picks two inputs)."""
    if isinstance(window, bool) or not isinstance(window, int) or not 2 <= window <= cells + 1:
        raise ValueError(f"window must be in [2, N+1] = [2, {cells + 1}] for {cells} cells per stage, got {window!r}")
    return window


def check_stage_primitives(primitives):
    """Distinct names from STAGE_PRIMITIVES (any order: alpha columns follow it), at least one of
    them not 'none'; e.g. ('skip_connect', 'none'), the reduced set of the paper's Table 6."""
    prims = tuple(primitives) if not isinstance(primitives, str) else None
    if (not prims or len(set(prims)) != len(prims) or any(p not in STAGE_PRIMITIVES for p in prims)
            or all(p == "none" for p in prims)):
        raise ValueError(f"stage_primitives must be distinct names from {','.join(STAGE_PRIMITIVES)} with at "
                         f"least one other than 'none', got {primitives!r}")
    return prims


def window_inputs(j, window):
    """Number of window edges of cell j: the min(j+2, window) most recent states."""
    return min(j + 2, window)


def window_sources(j, window):
    """State indices read by cell j (edge e reads state first + e)."""
    first = j + 2 - window_inputs(j, window)
    return list(range(first, j + 2))


def output_pairs(n_min, n_max):
    """Distribution search: pair k = (states k+N_min, k+N_min+1), the last two cells of a stage
    of k+N_min cells, for k = 0..N_max-N_min."""
    return [(k + n_min, k + n_min + 1) for k in range(n_max - n_min + 1)]
