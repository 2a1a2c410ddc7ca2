"""The reference modulated graph convolution against an independent dense per-joint loop."""
import pytest
import torch

from diffupose.layers import ModulatedGraphConv, modulated_affinity
from diffupose.ops import mgcn, mgcn_ref
from diffupose.skeleton import skeleton_for_joints


def dense_per_joint(x, w, m, a, bias, ss, res, act):
    """out[b, i] = a[i,i] m[i] * (W0^T x[b,i]) + sum_{k != i} a[i,k] m[k] * (W1^T x[b,k]) + bias, then
    the epilogue, written joint by joint."""
    B, J, _ = x.shape
    out = torch.empty(B, J, w.shape[-1], dtype=x.dtype)
    for b in range(B):
        for i in range(J):
            acc = a[i, i] * m[i] * (x[b, i] @ w[0])
            for k in range(J):
                if k != i:
                    acc = acc + a[i, k] * m[k] * (x[b, k] @ w[1])
            acc = acc + bias
            if ss is not None:
                s = ss[b if ss.shape[0] > 1 else 0]
                acc = acc * (1 + s[0]) + s[1]
            acc = {"none": acc, "relu": torch.relu(acc), "silu": acc * torch.sigmoid(acc)}[act]
            out[b, i] = acc + (res[b, i] if res is not None else 0)
    return out


@pytest.mark.parametrize("J", [15, 16, 17])
@pytest.mark.parametrize("act", ["none", "relu", "silu"])
@pytest.mark.parametrize("ss_rows", [None, 1, "B"])
@pytest.mark.parametrize("with_res", [False, True])
def test_reference_matches_dense_loop(J, act, ss_rows, with_res):
    B, cin, cout = 3, 5, 7
    dt = torch.float64
    x, w = torch.randn(B, J, cin, dtype=dt), torch.randn(2, cin, cout, dtype=dt)
    m, a, bias = torch.randn(J, cout, dtype=dt), torch.randn(J, J, dtype=dt), torch.randn(cout, dtype=dt)
    ss = None if ss_rows is None else torch.randn(B if ss_rows == "B" else 1, 2, cout, dtype=dt)
    res = torch.randn(B, J, cout, dtype=dt) if with_res else None
    ref = mgcn_ref(x, w, m, a, bias, ss, res, act)
    dense = dense_per_joint(x, w, m, a, bias, ss, res, act)
    torch.testing.assert_close(ref, dense, rtol=1e-10, atol=1e-10)
    # the public op with the reference backend is the same function, any leading dims
    out = mgcn(x.view(1, B, J, cin), w, m, a, bias, ss, None if res is None else res.view(1, B, J, cout), act,
               backend="reference")
    torch.testing.assert_close(out.view(B, J, cout), dense, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("J", [15, 16, 17])
def test_modulated_affinity(J):
    adj = skeleton_for_joints(J).adjacency()
    p, q = torch.rand(J, J) + 0.5, torch.randn(J, J) * 0.1
    a = modulated_affinity(adj, p, q)
    torch.testing.assert_close(a, a.T)  # symmetric whatever P and Q are
    # at initialisation (P = 1, Q = 0): the symmetric-normalised adjacency
    a0 = modulated_affinity(adj, torch.ones(J, J), torch.zeros(J, J))
    d = adj.sum(1).rsqrt()
    torch.testing.assert_close(a0, d[:, None] * adj * d[None])


def test_layer_gradients_reach_every_parameter():
    layer = ModulatedGraphConv(5, 8, skeleton_for_joints(17).adjacency(), act="silu").double()
    x = torch.randn(4, 17, 5, dtype=torch.float64, requires_grad=True)
    layer(x, backend="reference").square().sum().backward()
    for name, p in layer.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


@pytest.mark.parametrize("bad,match", [
    (dict(w=torch.zeros(2, 4, 7)), "w must be"),
    (dict(m=torch.zeros(16, 7)), "m must be"),
    (dict(a=torch.zeros(17, 16)), "a must be"),
    (dict(bias=torch.zeros(8)), "bias must be"),
    (dict(act="gelu"), "unknown activation"),
])
def test_bad_arguments_raise_clear_errors(bad, match):
    args = dict(x=torch.zeros(2, 17, 5), w=torch.zeros(2, 5, 7), m=torch.zeros(17, 7), a=torch.zeros(17, 17),
                bias=torch.zeros(7), act="none")
    args.update(bad)
    with pytest.raises(ValueError, match=match):
        mgcn(**args, backend="reference")
