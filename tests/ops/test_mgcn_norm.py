"""The training layer with a batch norm as one op (diffupose::mgcn_norm_fwd/_bwd, CPU) against the
fp64 reference (mgcn_ref, then norm_act_ref): forward, batch statistics and every gradient, on
fresh random inputs, poisoned outputs; and against the two ops it replaces.

Bound as in test_mgcn.py: at most twice PyTorch's own relative error in the kernel's dtype against
fp64 (with a floor per dtype).
"""
from __future__ import annotations

import pytest
import torch

from diffupose.ops import ACTIVATIONS, mgcn, mgcn_norm, mgcn_norm_ref, norm_act
from tests.helpers import (assert_same_on_1_and_2_threads, assert_training_layer_matches_reference, check_norm_op,
                           cpu_isa, rel_err, skip_unless_backend)

FLOOR = {torch.float32: 1e-5, torch.float16: 5e-4, torch.bfloat16: 4e-3, torch.float64: 1e-12}
PARAMS = ("w", "m", "a", "bias", "gamma", "beta")  # kept in fp32 for half activations (as the layer does)


def make_inputs(B, J, Cin, Cout, ss_rows, with_res, seed=None):
    g = torch.Generator().manual_seed(seed if seed is not None else int(torch.randint(0, 2**31, ())))
    r = lambda *s: torch.randn(*s, generator=g, dtype=torch.float64)  # noqa: E731
    a = r(J, J).abs() + torch.eye(J, dtype=torch.float64)
    inp = dict(x=r(B, J, Cin), w=r(2, Cin, Cout) / Cin ** 0.5, m=1 + 0.2 * r(J, Cout), a=a / a.sum(1, keepdim=True),
               bias=0.5 + r(Cout), gamma=1 + 0.3 * r(Cout), beta=0.2 * r(Cout))
    inp["scale_shift"] = None if ss_rows is None else 0.3 * r(B if ss_rows == "B" else 1, 2, Cout)
    inp["residual"] = r(B, J, Cout) if with_res else None
    return inp, r(B, J, Cout)


def run(inp, grad, act, dtype, backend):
    leaves = {k: None if v is None else
              v.to(dtype=torch.float32 if (k in PARAMS and dtype != torch.float64) else dtype,
                   copy=True).requires_grad_(True) for k, v in inp.items()}
    args = [leaves[k] for k in ("x", *PARAMS, "scale_shift", "residual")]
    out, mean, var = (mgcn_norm_ref(*args, act) if backend == "torch" else
                      mgcn_norm(*args, act, backend=backend))
    (out.double() * grad).sum().backward()
    return (out, mean, var), {k: v.grad for k, v in leaves.items() if v is not None}


def check(B, J, Cin, Cout, act, ss_rows, with_res, dtype):
    skip_unless_backend("cpu")
    inp, grad = make_inputs(B, J, Cin, Cout, ss_rows, with_res)
    # the conv bias' gradient is zero before a batch norm (rounding only): compared absolutely
    check_norm_op(run, inp, grad, act, dtype, FLOOR[dtype], (B, J, Cout), zero_grads=("bias",))


@pytest.mark.parametrize("J", [15, 16, 17])
@pytest.mark.parametrize("C", [(3, 5), (64, 64), (40, 131)])
def test_shapes_fp32(J, C):
    for B in (1, 3, 67, 257):  # 257: several of the forward's groups (their statistics summed in order)
        check(B, J, *C, "silu", "B", True, torch.float32)


@pytest.mark.parametrize("act", list(ACTIVATIONS))
@pytest.mark.parametrize("ss_rows", [None, 1, "B"])
@pytest.mark.parametrize("with_res", [False, True])
def test_epilogues(act, ss_rows, with_res):
    check(11, 17, 24, 24, act, ss_rows, with_res, torch.float32)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("J", [15, 17])
def test_half_precision(dtype, J):
    check(133, J, 64, 128, "silu", "B", True, dtype)


def test_float64():
    check(37, 16, 12, 20, "relu", 1, True, torch.float64)


def test_gradcheck_float64():
    skip_unless_backend("cpu")
    for ss_rows, with_res in (("B", True), (1, False), (None, False)):
        inp, _ = make_inputs(3, 15, 4, 5, ss_rows, with_res, seed=1)
        keys = [k for k, v in inp.items() if v is not None]
        ts = [inp[k].clone().requires_grad_(True) for k in keys]

        def f(*t):
            d = dict(zip(keys, t))
            return mgcn_norm(*(d[k] for k in ("x", *PARAMS)), d.get("scale_shift"), d.get("residual"), "silu",
                             backend="cpu")[0]

        assert torch.autograd.gradcheck(f, ts, eps=1e-6, atol=1e-7)


def test_opcheck():
    """Schema, fake kernel and autograd registration agree with the real kernel."""
    skip_unless_backend("cpu")
    inp, _ = make_inputs(5, 16, 6, 7, "B", True, seed=3)
    args = [inp[k].float().requires_grad_() for k in ("x", *PARAMS, "scale_shift")]
    torch.library.opcheck(torch.ops.diffupose.mgcn_norm_fwd,
                          (*args, inp["residual"].float(), ACTIVATIONS["silu"], 1e-5))


def test_matches_the_two_ops_it_replaces():
    """Against mgcn (act none) then norm_act, both on the CPU: the same output, statistics and
    gradients up to fp32 rounding (the statistics come from one pass in double instead of two in fp32)."""
    skip_unless_backend("cpu")
    inp, grad = make_inputs(70, 17, 32, 48, "B", True, seed=7)
    got, grads = run(inp, grad, "silu", torch.float32, "cpu")
    leaves = {k: v.float().clone().requires_grad_(True) for k, v in inp.items()}
    pre = mgcn(leaves["x"], leaves["w"], leaves["m"], leaves["a"], leaves["bias"], backend="cpu")
    two = norm_act(pre, leaves["gamma"], leaves["beta"], leaves["scale_shift"], leaves["residual"], "silu",
                   backend="cpu")
    (two[0].double() * grad).sum().backward()
    for u, v in zip(got, two):
        assert rel_err(u, v) < 1e-5
    for k in ("x", "w", "m", "a", "gamma", "beta", "scale_shift", "residual"):
        assert rel_err(grads[k], leaves[k].grad) < 1e-4, k


def test_result_does_not_depend_on_the_thread_count():
    """Statistics per fixed group of samples, slots per fixed tile, summed in order."""
    skip_unless_backend("cpu")
    inp, grad = make_inputs(67, 17, 40, 40, "B", True, seed=5)

    def step():
        got, grads = run(inp, grad, "silu", torch.float32, "cpu")
        return [*got, *grads.values()]

    assert_same_on_1_and_2_threads(step)


def test_variance_without_cancellation():
    """The convolution's out far from zero (bias 1000, spread ~0.3): the one-pass statistics in
    double against the fp64 variance of the op's own pre (the values they describe; the rounding of
    pre itself to fp32 at 1000 is the convolution's, tested in test_mgcn.py), within twice the error
    of PyTorch's fp32 variance of the same pre (a one-pass sum of squares in fp32 loses ~6 digits
    here: tests/ops/test_norm_act.py)."""
    skip_unless_backend("cpu")
    inp, _ = make_inputs(257, 17, 32, 64, None, False, seed=3)
    inp["bias"] = inp["bias"] + 1000
    args = [inp[k].float() for k in ("x", *PARAMS)]
    _, pre, _, mean, var = torch.ops.diffupose.mgcn_norm_fwd(*args, None, None, 0, 1e-5)
    flat = pre.reshape(-1, pre.shape[-1])
    var64 = flat.double().var(0, unbiased=False)
    torch_err = rel_err(flat.var(0, unbiased=False), var64)
    assert rel_err(mean, flat.double().mean(0)) <= 1e-7
    assert rel_err(var, var64) <= max(2 * torch_err, 1e-6), (rel_err(var, var64), torch_err)


def test_training_layer_runs_it(monkeypatch):
    """The CPU training layer with a batch norm runs this op, and agrees with the reference layer."""
    skip_unless_backend("cpu")
    assert_training_layer_matches_reference(monkeypatch, "mgcn_norm")


def test_bad_inputs_are_clear_errors():
    skip_unless_backend("cpu")
    inp, _ = make_inputs(4, 17, 8, 8, None, False, seed=0)
    x, w, m, a, b, g, be = (inp[k].float() for k in ("x", *PARAMS))
    with pytest.raises(ValueError, match="more than one row"):
        mgcn_norm(x[:1, :1], w, m[:1], a[:1, :1], b, g, be, backend="cpu")
    with pytest.raises(ValueError, match="gamma and beta must be"):
        mgcn_norm(x, w, m, a, b, g[:7], be, backend="cpu")
    with pytest.raises(ValueError, match="scale_shift must be"):
        mgcn_norm(x, w, m, a, b, g, be, torch.zeros(3, 2, 8), backend="cpu")
    with pytest.raises(ValueError, match="residual must be"):
        mgcn_norm(x, w, m, a, b, g, be, None, torch.zeros(4, 17, 7), backend="cpu")
    with pytest.raises(ValueError, match="unknown activation"):
        mgcn_norm(x, w, m, a, b, g, be, act="gelu", backend="cpu")
    with pytest.raises(RuntimeError, match="gamma and beta must be"):  # the kernel's own check
        torch.ops.diffupose.mgcn_norm_fwd(x, w, m, a, b, g[:7], be, None, None, 0, 1e-5)


@pytest.mark.parametrize("isa", ["base", "avx2", "avx512"])
def test_every_instruction_set_this_cpu_runs(isa):
    """The op's rows (cpu/mgcn_rows_impl.h: aggregation, statistics, norm) of each compiled
    instruction set; a set this CPU lacks is refused without running any of its code."""
    with cpu_isa(isa):
        check(13, 17, 40, 64, "silu", "B", True, torch.float32)
        check(6, 15, 33, 20, "relu", 1, False, torch.float32)
        check(9, 16, 64, 40, "silu", "B", True, torch.bfloat16)
