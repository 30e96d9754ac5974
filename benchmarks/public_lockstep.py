"""The per-network half of benchmarks/public_dropin.py: one search network of a public codebase, as
written, beside deep copies fused by hdas_ext.fuse_mixed_ops (default and lean mode), driven in
lockstep through training steps and the codebase's own state changes.

Networks: 'unfused' float64 (the truth), 'eager' float32 (the network as written), and for each mode
a fused float64 and a fused float32 copy. Every step: the same seed before the forward, the loss,
backward, then the outputs, every gradient (parameters and architecture tensors, registered or not)
and every buffer compared with the truth, then a plain SGD update of all of them. The float64
copies follow their own trajectory (they must stay equal to the truth for the whole search); the
float32 networks are set to the truth's state after every step, so that each step's float32 error is
that step's rounding alone, not training dynamics amplifying earlier rounding. Relative error of a
tensor: max |a - truth| / max |truth|; a network's error is the largest over its tensors and steps.
A fused float32 network is also set beside eager float32 tensor by tensor, on the error relative to
the tensor's norm (|a - truth| / |truth|): float32 rounding can flip a discrete choice (a ReLU at
an input within rounding of 0, a max-pool tie) in one network and not the other, which moves one
element of a gradient by one term of its sum; against the largest element of a gradient that is a
small sum of large terms, that looks like a defect in whichever network happened to flip."""
import contextlib
import copy
import io
import time
import warnings

import torch

import hdas_ext

LR, ARCH_LR = 0.025, 3e-4  # DARTS' learning rates for the weights and the architecture
STEPS = 2  # training steps per phase
MODES = {"default": False, "lean": True}  # mode: recompute


def cast(model, dtype=None, device=None):
    """model.to(dtype/device), and the same for the tensors its modules keep outside their
    parameters and buffers (unregistered alphas in lists and dicts), in place so that every
    reference to them sees the change."""
    model.to(device=device, dtype=dtype)
    seen = set()

    def visit(v, depth):
        if isinstance(v, torch.Tensor):
            if id(v) not in seen:
                seen.add(id(v))
                v.data = v.data.to(device=device, dtype=dtype if v.is_floating_point() else None)
        elif depth < 3 and isinstance(v, (list, tuple)):
            for item in v:
                visit(item, depth + 1)
        elif depth < 3 and isinstance(v, dict):
            for item in v.values():
                visit(item, depth + 1)
    for module in model.modules():
        for name, value in vars(module).items():
            if name not in ("_parameters", "_buffers", "_modules"):
                visit(value, 0)
    return model


def one_line(e):
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0][:200] if text else ''}"


def trained(variant, model):
    """name -> tensor for every tensor that takes a gradient step: parameters, then architecture
    tensors that are not parameters (as arch[i])."""
    named = dict(model.named_parameters())
    ids = {id(p) for p in named.values()}
    for i, a in enumerate(variant.arch(model)):
        if id(a) not in ids:
            named[f"arch[{i}]"] = a
    return named


@contextlib.contextmanager
def default_dtype(dtype):
    """What their code creates on the fly (torch.tensor(0.5), zeros) follows the network's dtype."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(old)


def train_step(variant, model, x, y, seed, forward=None):
    """Forward (seeded), the codebase's loss, backward; returns name -> tensor to compare."""
    tensors = trained(variant, model)
    for t in tensors.values():
        t.grad = None
    with default_dtype(x.dtype):
        torch.manual_seed(seed)
        out = (forward or variant.logits)(model, x)
        variant.loss(model, out, y).backward()
    record = {"output": out.detach()}
    record.update((f"grad {n}", t.grad) for n, t in tensors.items())
    record.update((f"buffer {n}", b.detach().clone()) for n, b in model.named_buffers())
    return record


def forward_only(variant, model, x, seed, forward=None):
    """A forward without gradients (in the mode the model is in); returns output and buffers."""
    with torch.no_grad(), default_dtype(x.dtype):
        torch.manual_seed(seed)
        out = (forward or variant.logits)(model, x)
    record = {"output": out}
    record.update((f"buffer {n}", b.detach().clone()) for n, b in model.named_buffers())
    return record


def sgd(variant, model):
    arch = {id(a) for a in variant.arch(model)}
    with torch.no_grad():
        for t in trained(variant, model).values():
            if t.grad is not None:
                t.sub_((ARCH_LR if id(t) in arch else LR) * t.grad.to(t.dtype))


ZERO = 1e-10  # a gradient below this fraction of the largest one is zero in exact arithmetic


def sync(variant, net, truth):
    """net's parameters, architecture tensors and buffers set to truth's values (cast)."""
    mine, theirs = trained(variant, net), trained(variant, truth)
    with torch.no_grad():
        for name, t in mine.items():
            t.copy_(theirs[name])
        buffers = dict(truth.named_buffers())
        for name, b in net.named_buffers():
            b.copy_(buffers[name])


def relative_error(a, ref, scale=None, norm=False):
    """max |a - ref| / max |ref| (norm: |a - ref| / |ref|, Euclidean), or / scale when given."""
    if a.shape != ref.shape:
        return float("inf")
    if not ref.numel():
        return 0.0
    a, ref = a.double(), ref.double()
    size = (lambda t: t.norm().item()) if norm else (lambda t: t.abs().max().item())
    scale = scale or size(ref)
    diff = size(a - ref)
    return diff / scale if scale > 0 else diff


def tensor_errors(record, truth):
    """name -> (relative error, note, norm-relative error) of every tensor of record against truth.
    A gradient that is zero in the float64 truth to rounding (below ZERO times the largest
    gradient, as a convolution bias before a BatchNorm has) is measured against the largest
    gradient instead: rounding noise there is no error, a value there is."""
    grads = {n: t for n, t in truth.items() if n.startswith("grad") and t is not None and t.numel()}
    big = max((t.abs().max().item() for t in grads.values()), default=0.0)
    big_norm = max((t.norm().item() for t in grads.values()), default=0.0)
    out = {}
    for name in truth.keys() | record.keys():
        a, ref = record.get(name), truth.get(name)
        if a is None or ref is None:
            out[name] = (0.0, "", 0.0) if a is None and ref is None else (float("inf"), ", present in one network only",
                                                                           float("inf"))
        else:
            tiny = name.startswith("grad") and ref.numel() and ref.abs().max().item() <= ZERO * big
            out[name] = (relative_error(a, ref, big if tiny else None), "",
                         relative_error(a, ref, big_norm if tiny else None, norm=True))
    return out


FLOOR32 = 1e-5  # float32 errors below this are rounding, whatever eager's error on that tensor is


class Tracker:
    """The largest relative error of one network against the truth, and where; for a fused
    float32 network also the largest ratio of its norm-relative error on a tensor to eager's on the
    same tensor in the same step (eager's below FLOOR32 counted as FLOOR32)."""

    def __init__(self):
        self.error, self.where = 0.0, None
        self.by_kind = {}  # 'output', 'grad', 'buffer' -> largest error of that kind
        self.ratio, self.ratio_where = None, None

    def update(self, errors, when, eager=None):
        for name, (e, what, e_norm) in errors.items():
            kind = name.split()[0]
            if not e <= self.by_kind.get(kind, 0.0):  # NaN and inf count
                self.by_kind[kind] = e
            if not e <= self.error:
                self.error, self.where = e, f"{name}{what} ({when})"
            if eager is not None:
                base = max(eager.get(name, (0.0, "", 0.0))[2], FLOOR32)
                if self.ratio is None or not e_norm / base <= self.ratio:
                    self.ratio = e_norm / base
                    self.ratio_where = f"{name} ({when}): {e_norm:.1e} against eager's {base:.1e} (norm-relative)"


class Lockstep:
    def __init__(self, variant, cfg):
        self.v, self.cfg = variant, cfg
        self.nets, self.dead, self.reports, self.fuse_s = {}, {}, {}, {}
        self.trackers = {}

    def build(self, bits=(64, 32)):
        """Builds the network, makes the first phase's change, copies and fuses it (float64 and
        float32 copies, or those of `bits`)."""
        torch.manual_seed(0)
        eager = cast(self.v.build(), torch.float32, self.cfg.device)
        self.sites = self.v.sites(eager)
        self.v.phases[0][1](eager)
        self.nets = {"unfused64": cast(copy.deepcopy(eager), torch.float64)} if 64 in bits else {}
        self.nets["eager32"] = eager
        for mode, recompute in MODES.items():
            for b in bits:
                net = copy.deepcopy(self.nets["unfused64" if b == 64 else "eager32"])
                t0 = time.perf_counter()
                try:
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore")
                        self.reports[mode + str(b)] = hdas_ext.fuse_mixed_ops(net, report=True, recompute=recompute)
                except Exception as e:
                    self.dead[mode + str(b)] = "fuse_mixed_ops raised " + one_line(e)
                    continue
                self.fuse_s[mode + str(b)] = time.perf_counter() - t0
                self.nets[mode + str(b)] = net
        self.trackers = {k: Tracker() for k in self.nets if k != "unfused64"}

    def alive(self):
        return {k: n for k, n in self.nets.items() if k not in self.dead}

    def inputs(self, bits):
        g = torch.Generator().manual_seed(1)
        c = self.cfg
        x = torch.randn(c.batch, 3, c.size, c.size, generator=g, dtype=torch.float64)
        y = torch.randint(0, 10, (c.batch,), generator=g)
        return x.to(c.device, torch.float64 if bits == 64 else torch.float32), y.to(c.device)

    def run(self, after_first_phase=None):
        """All phases in lockstep; after_first_phase(self) runs once the first phase's steps are done."""
        xs = {64: self.inputs(64), 32: self.inputs(32)}
        for p, (what, change, *_) in enumerate(self.v.phases):
            forwards = {}
            for key, net in self.alive().items():
                try:
                    forwards[key] = change(net) if p else None
                except Exception as e:
                    self._fail(key, f"{what}: the change raised {one_line(e)}")
            train = self.v.phases[p][2] if len(self.v.phases[p]) > 2 else True
            for step in range(STEPS if train else 1):
                self._step(what, step, xs, forwards, seed=100 * p + step, train=train)
            if p == 0 and after_first_phase:
                after_first_phase(self)
        self._eval(xs)

    def _fail(self, key, why):
        if key == "unfused64":
            raise RuntimeError(f"the network as written failed: {why}")
        self.dead[key] = why

    def _step(self, what, step, xs, forwards, seed, train=True):
        """One step of every live network, compared with the truth: (records, errors) by network."""
        records = {}
        for key, net in self.alive().items():
            x, y = xs[64 if key.endswith("64") else 32]
            try:
                if train:
                    records[key] = train_step(self.v, net, x, y, seed, forwards.get(key))
                    sgd(self.v, net)
                else:
                    records[key] = forward_only(self.v, net, x, seed, forwards.get(key))
            except Exception as e:
                self._fail(key, f"{what}, step {step + 1}: {one_line(e)}")
        errors = {k: tensor_errors(r, records["unfused64"]) for k, r in records.items() if k != "unfused64"}
        for key, errs in errors.items():
            if key not in self.dead:
                eager = errors.get("eager32") if key.endswith("32") and key != "eager32" else None
                self.trackers[key].update(errs, f"{what}, step {step + 1}", eager)
                if key.endswith("32"):
                    sync(self.v, self.nets[key], self.nets["unfused64"])
        return records, errors

    def _eval(self, xs):
        """One forward in eval mode (running statistics) after all phases."""
        outs = {}
        for key, net in self.alive().items():
            net.eval()
            try:
                torch.manual_seed(7)
                with torch.no_grad():
                    outs[key] = self.v.logits(net, xs[64 if key.endswith("64") else 32][0])
            except Exception as e:
                self._fail(key, f"eval forward: {one_line(e)}")
            net.train()
        errors = {k: tensor_errors({"output": o}, {"output": outs["unfused64"]}) for k, o in outs.items() if k != "unfused64"}
        for key, errs in errors.items():
            if key not in self.dead:
                eager = errors.get("eager32") if key.endswith("32") and key != "eager32" else None
                self.trackers[key].update(errs, "eval forward", eager)

    def check_methods(self, key):
        """The codebase's own methods on a fused float64 copy against the unfused one, then the
        state-dict round trip both ways and a pickle round trip: ('ok' or what differs, what fails
        on the unfused network too or None)."""
        net, truth, problems, theirs_too = self.nets[key], self.nets["unfused64"], [], []
        for name, fn in self.v.methods.items():
            try:
                want = str(fn(truth))
            except Exception as e:
                theirs_too.append(f"{name} raises on the unfused network too ({one_line(e)})")
                continue
            try:
                if str(fn(net)) != want:
                    problems.append(f"{name} differs")
            except Exception as e:
                problems.append(f"{name} raises {one_line(e)}")
        try:
            mine, theirs = net.state_dict(), truth.state_dict()
            if [(k, tuple(v.shape)) for k, v in mine.items()] != [(k, tuple(v.shape)) for k, v in theirs.items()]:
                problems.append("state_dict keys or shapes differ")
            copy.deepcopy(truth).load_state_dict(mine)
            copy.deepcopy(net).load_state_dict(theirs)
        except Exception as e:
            problems.append(f"state_dict round trip: {one_line(e)}")
        try:
            buf = io.BytesIO()
            torch.save(net, buf)
            buf.seek(0)
            torch.load(buf, weights_only=False)
        except Exception as e:
            problems.append(f"pickle: {one_line(e)}")
        return "ok" if not problems else "; ".join(problems), "; ".join(theirs_too) or None


def time_steps(variant, nets, x, y, reps):
    """ms per training step (forward, loss, backward) of deep copies of nets: min of `reps`
    interleaved steps after one warm-up each."""
    copies = {k: copy.deepcopy(n) for k, n in nets.items()}
    times = {k: [] for k in copies}
    for r in range(reps + 1):
        for k, net in copies.items():
            t0 = time.perf_counter()
            train_step(variant, net, x, y, seed=0)
            if x.is_cuda:
                torch.cuda.synchronize()
            if r:
                times[k].append((time.perf_counter() - t0) * 1e3)
    return {k: min(t) for k, t in times.items()}


def peak_mb(fn, device):
    """Peak memory allocated during fn() above what was allocated before it: the CUDA caching
    allocator's counters, or on CPU the running total of the allocator's events that torch's
    profiler records (exact at any size, unlike resident-memory counters)."""
    if str(device).startswith("cuda"):
        from common import peak_extra_mb
        return peak_extra_mb(fn, device)
    from torch.profiler import ProfilerActivity, profile
    from torch._C._profiler import _EventType
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    events, todo = [], list(prof.profiler.kineto_results.experimental_event_tree())
    while todo:
        e = todo.pop()
        if e.tag == _EventType.Allocation:
            events.append((e.start_time_ns, e.extra_fields.alloc_size, e.extra_fields.total_allocated))
        todo.extend(e.children)
    if not events:
        return 0.0
    events.sort()
    before = events[0][2] - events[0][1]  # the profiler's running total carries over from earlier runs
    return max(0, max(total for _, _, total in events) - before) / 2**20
