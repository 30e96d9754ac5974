"""benchmarks/gpu_model_runs.py's traffic model of the ATen ops an op runs between its own kernels
(conv_candidates' GEMMs and element-wise steps): each reads its tensor inputs once and writes its
output once, views and allocations move nothing, and only the ops under the named op count."""
import sys
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile, record_function

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
import gpu_model_runs  # noqa: E402


def modelled(fn):
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        fn()  # outside the named op: not counted
        with record_function("outer"):
            fn()
    return {row["kernel"]: (row["ld"]["bytes"], row["st"]["bytes"], row["launches"])
            for row in gpu_model_runs.aten_launches(prof.events(), "outer")}


def test_element_wise_gemm_copy_and_views():
    a, b = torch.randn(10, 100), torch.randn(100)
    A, B = torch.randn(2, 3, 4, dtype=torch.float64), torch.randn(2, 4, 5, dtype=torch.float64)
    dst = torch.empty(10, 100)

    def fn():
        y = a.relu() + b  # clamp_min: 4000 read, 4000 written; add: 4000 + 400 read (b broadcast), 4000 written
        y.view(100, 10).t()  # views: nothing
        torch.bmm(A, B)  # (24 + 40) doubles read, 30 written
        dst.copy_(y)  # 4000 read, 4000 written
        a > 0  # gt: 4000 read, 1000 bools written
        a.sum(0)  # sum: 4000 read, its per-channel result not counted
    got = modelled(fn)
    assert got == {"aten::clamp_min x1": (4000, 4000, 1), "aten::add x1": (4400, 4000, 1),
                   "aten::bmm x1": (64 * 8, 30 * 8, 1), "aten::copy_ x1": (4000, 4000, 1),
                   "aten::gt x1": (4000, 1000, 1), "aten::sum x1": (4000, 0, 1)}, got


def test_repeated_ops_add_up_under_one_name():
    x = torch.randn(256)
    got = modelled(lambda: [x * 2.0 for _ in range(3)])  # the scalar: a kernel argument, no traffic
    assert got == {"aten::mul x3": (3 * 1024, 3 * 1024, 3)}, got
