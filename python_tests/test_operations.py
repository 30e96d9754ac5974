"""The parametric ops' fused-call forms: op(x, scale=w) == w * op(x) with w folded into the last
BatchNorm, and op(relu(x), activated=True) == op(x), with the same gradients and the same BN
running statistics as the plain call."""
import copy

import pytest
import torch
import torch.nn.functional as F

from hdas_ext.nn import FactorizedReduce
from hdas_ext.nn.operations import OPS, leading_relu, takes_scale

# (primitive, stride) of every parametric op; skip_connect is one only at stride 2 (FactorizedReduce).
PARAMETRIC = [(n, s) for n in ("sep_conv_3x3", "sep_conv_5x5", "dil_conv_3x3", "dil_conv_5x5") for s in (1, 2)]
PARAMETRIC.append(("skip_connect", 2))


@pytest.mark.parametrize("name,stride", PARAMETRIC)
@pytest.mark.parametrize("affine", [False, True])
def test_scaled_and_activated_calls(name, stride, affine):
    torch.manual_seed(0)
    plain = OPS[name](4, stride, affine).double()
    assert takes_scale(plain)
    assert isinstance(leading_relu(plain), torch.nn.ReLU)
    x = torch.randn(3, 4, 8, 8, dtype=torch.float64)
    w = torch.tensor(0.37, dtype=torch.float64)
    g = torch.randn_like(plain(x.detach()))  # one plain call first: both copies below start from its stats
    for call in ("scale", "activated", "both"):
        a, b = copy.deepcopy(plain), copy.deepcopy(plain)
        xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
        wb = w.clone().requires_grad_()
        want = a(xa) * (w if call != "activated" else 1)
        relu_calls = []
        leading_relu(b).register_forward_hook(lambda *_: relu_calls.append(1))
        if call == "activated":
            got = b(F.relu(xb), activated=True)
        else:
            got = b(F.relu(xb) if call == "both" else xb, scale=wb, activated=call == "both")
        # relu(relu(x)) == relu(x): only the call count shows that an activated input skips the ReLU
        assert len(relu_calls) == (0 if call in ("activated", "both") else 1)
        torch.testing.assert_close(got, want)
        want.backward(g)
        got.backward(g)
        torch.testing.assert_close(xb.grad, xa.grad)
        for (n, pa), pb in zip(a.named_parameters(), b.parameters()):
            torch.testing.assert_close(pb.grad, pa.grad, msg=n)
        if call != "activated":
            torch.testing.assert_close(wb.grad, (want.detach() / w * g).sum())
        for (n, sa), sb in zip(a.state_dict().items(), b.state_dict().values()):
            torch.testing.assert_close(sb, sa, msg=n)


def test_factorized_reduce_relu_is_its_own():
    op = FactorizedReduce(4, 4)
    assert leading_relu(op) is op.relu
