"""A small CUDA run of both fused ops, forward and backward, for compute-sanitizer (memcheck,
racecheck) in benchmarks/gpu_check.sh: every kernel of the CUDA backend runs at least once, in
NCHW and channels_last, at stride 1 and 2, with batch and running statistics, in float32 and float16."""
import torch

from hdas_ext import native_available

NONE, MAX, AVG, SKIP, EXTRA, ADD = 0, 1, 2, 3, 4, 5


def mixed_node(stride, channels_last, batch_stats, dtype):
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    prims = [NONE, MAX, AVG, EXTRA, ADD] + ([SKIP] if stride == 1 else [])
    E, N, C, H, W = 2, 2, 3, 7, 6
    Ho, Wo = (H - 1) // stride + 1, (W - 1) // stride + 1
    new = lambda *s: torch.randn(*s, device="cuda", dtype=dtype).contiguous(memory_format=fmt)  # noqa: E731
    xs = [new(N, C, H, W) for _ in range(E)]
    extras = [new(N, C, Ho, Wo) for _ in range(2 * E)]
    w = torch.rand(E, len(prims), device="cuda", dtype=dtype)
    rm = None if batch_stats else torch.zeros(E, 2, C, device="cuda", dtype=dtype)
    rv = None if batch_stats else torch.ones(E, 2, C, device="cuda", dtype=dtype)
    out, mean, invstd, _ = torch.ops.hdas.mixed_node(xs, w, prims, extras, stride, True, batch_stats, rm, rv, 1e-5)
    torch.ops.hdas.mixed_node_backward(torch.randn_like(out), xs, w, prims, extras, stride, True, batch_stats, mean,
                                       invstd)


def pair_concat(dtype):
    states = [torch.randn(2, 3, 4, 5, device="cuda", dtype=dtype) for _ in range(5)]
    w = torch.rand(3, device="cuda", dtype=dtype)
    pairs = [1, 2, 2, 3, 0, 4]
    out = torch.ops.hdas.pair_concat(states, w, pairs)
    torch.ops.hdas.pair_concat_backward(torch.randn_like(out), states, w, pairs)


def main():
    assert native_available() and torch.cuda.is_available(), "needs the native ops and a GPU"
    for dtype in (torch.float32, torch.float16):
        for stride in (1, 2):
            for channels_last in (False, True):
                for batch_stats in (True, False):
                    mixed_node(stride, channels_last, batch_stats, dtype)
        pair_concat(dtype)
    torch.cuda.synchronize()
    print("cuda_sanitizer_case: done")


if __name__ == "__main__":
    main()
