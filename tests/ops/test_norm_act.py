"""The training batch norm + epilogue op (diffupose::norm_act_fwd/_bwd, CPU) against the fp64
reference: forward, batch statistics and every gradient, on fresh random inputs, poisoned outputs.

Bound as in test_mgcn.py: at most twice PyTorch's own relative error in the kernel's dtype against
fp64 (with a floor per dtype).
"""
from __future__ import annotations

import pytest
import torch

from diffupose.ops import ACTIVATIONS, norm_act, norm_act_ref
from tests.helpers import (assert_same_on_1_and_2_threads, assert_training_layer_matches_reference, check_norm_op,
                           cpu_isa, rel_err, skip_unless_backend)

FLOOR = {torch.float32: 1e-5, torch.float16: 5e-4, torch.bfloat16: 4e-3, torch.float64: 1e-12}


def make_inputs(B, J, C, ss_rows, with_res, seed=None):
    """pre with an offset and a per-channel scale (as a convolution's output), gamma near 1."""
    g = torch.Generator().manual_seed(seed if seed is not None else int(torch.randint(0, 2**31, ())))
    r = lambda *s: torch.randn(*s, generator=g, dtype=torch.float64)  # noqa: E731
    inp = dict(pre=0.5 + r(B, J, C) * (1 + r(C).abs()), gamma=1 + 0.3 * r(C), beta=0.2 * r(C))
    inp["scale_shift"] = None if ss_rows is None else 0.3 * r(B if ss_rows == "B" else 1, 2, C)
    inp["residual"] = r(B, J, C) if with_res else None
    return inp, r(B, J, C)


def run(inp, grad, act, dtype, backend):
    leaves = {k: None if v is None else
              v.to(dtype=torch.float32 if (k in ("gamma", "beta") and dtype != torch.float64) else dtype,
                   copy=True).requires_grad_(True) for k, v in inp.items()}
    args = (leaves["pre"], leaves["gamma"], leaves["beta"], leaves["scale_shift"], leaves["residual"], act)
    out, mean, var = norm_act_ref(*args) if backend == "torch" else norm_act(*args, backend=backend)
    (out.double() * grad).sum().backward()
    return (out, mean, var), {k: v.grad for k, v in leaves.items() if v is not None}


def check(B, J, C, act, ss_rows, with_res, dtype):
    skip_unless_backend("cpu")
    inp, grad = make_inputs(B, J, C, ss_rows, with_res)
    check_norm_op(run, inp, grad, act, dtype, FLOOR[dtype], (B, J, C))


@pytest.mark.parametrize("J", [15, 16, 17])
@pytest.mark.parametrize("C", [5, 64, 131])
def test_shapes_fp32(J, C):
    for B in (1, 3, 257):
        check(B, J, C, "silu", "B", True, torch.float32)


@pytest.mark.parametrize("act", list(ACTIVATIONS))
@pytest.mark.parametrize("ss_rows", [None, 1, "B"])
@pytest.mark.parametrize("with_res", [False, True])
def test_epilogues(act, ss_rows, with_res):
    check(11, 17, 24, act, ss_rows, with_res, torch.float32)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("J", [15, 17])
def test_half_precision(dtype, J):
    check(301, J, 128, "silu", "B", True, dtype)


def test_gradcheck_float64():
    skip_unless_backend("cpu")
    for ss_rows, with_res in (("B", True), (1, False), (None, False)):
        inp, _ = make_inputs(3, 15, 4, ss_rows, with_res, seed=1)
        keys = [k for k, v in inp.items() if v is not None]
        ts = [inp[k].clone().requires_grad_(True) for k in keys]

        def f(*t):
            d = dict(zip(keys, t))
            return norm_act(d["pre"], d["gamma"], d["beta"], d.get("scale_shift"), d.get("residual"), "silu",
                            backend="cpu")[0]

        assert torch.autograd.gradcheck(f, ts, eps=1e-6, atol=1e-7)


def test_opcheck():
    """Schema, fake kernel and autograd registration agree with the real kernel."""
    skip_unless_backend("cpu")
    inp, _ = make_inputs(5, 16, 6, "B", True, seed=3)
    args = [inp[k].float().requires_grad_() for k in ("pre", "gamma", "beta", "scale_shift")]
    torch.library.opcheck(torch.ops.diffupose.norm_act_fwd,
                          (*args, inp["residual"].float(), ACTIVATIONS["silu"], 1e-5))


def test_result_does_not_depend_on_the_thread_count():
    """The batch reductions go per fixed tile of samples, summed in order."""
    skip_unless_backend("cpu")
    inp, grad = make_inputs(67, 17, 40, "B", True, seed=5)

    def step():
        got, grads = run(inp, grad, "silu", torch.float32, "cpu")
        return [*got, *grads.values()]

    assert_same_on_1_and_2_threads(step)


def test_training_layer_matches_the_unfused_batch_norm(monkeypatch):
    """The training layer as two ops (mgcn, then this op; CPU: ModulatedGraphConv.train_norm_two_ops,
    the CPU layer itself runs ops.mgcn_norm, tests/ops/test_mgcn_norm.py) against the reference layer."""
    skip_unless_backend("cpu")
    from diffupose.layers import ModulatedGraphConv

    monkeypatch.setattr(ModulatedGraphConv, "train_norm_cpu", ModulatedGraphConv.train_norm_two_ops)
    assert_training_layer_matches_reference(monkeypatch, "norm_act")


def test_bad_inputs_are_clear_errors():
    skip_unless_backend("cpu")
    pre, g, b = torch.randn(4, 17, 8), torch.ones(8), torch.zeros(8)
    with pytest.raises(ValueError, match="more than one row"):
        norm_act(torch.randn(1, 1, 8), g, b, backend="cpu")
    with pytest.raises(ValueError, match="gamma and beta must be"):
        norm_act(pre, torch.ones(7), b, backend="cpu")
    with pytest.raises(ValueError, match="scale_shift must be"):
        norm_act(pre, g, b, torch.zeros(3, 2, 8), backend="cpu")
    with pytest.raises(ValueError, match="residual must be"):
        norm_act(pre, g, b, None, torch.zeros(4, 17, 7), backend="cpu")
    with pytest.raises(ValueError, match="unknown activation"):
        norm_act(pre, g, b, act="gelu", backend="cpu")
    with pytest.raises(RuntimeError, match="more than one row"):  # the kernel's own check
        torch.ops.diffupose.norm_act_fwd(torch.randn(1, 1, 8), g, b, None, None, 0, 1e-5)


@pytest.mark.parametrize("isa", ["base", "avx2", "avx512"])
def test_every_instruction_set_this_cpu_runs(isa):
    """The op's rows (cpu/mgcn_rows_impl.h) of each compiled instruction set; a set this CPU lacks
    is refused without running any of its code (tests/ops/test_cpu_isa.py)."""
    with cpu_isa(isa):
        check(13, 17, 40, "silu", "B", True, torch.float32)
        check(6, 15, 33, "relu", 1, False, torch.float32)
        check(9, 16, 64, "silu", "B", True, torch.bfloat16)


def test_variance_without_cancellation():
    """pre far from zero (offset 1000, spread 1): the batch variance (two passes: the mean, then
    squares about it) within twice PyTorch's own fp32 error against fp64 (5e-7 both here). A one-pass
    sum of squares loses ~6 of fp32's 7 digits here (0.13); per-tile fp32 means combined pairwise
    (Chan et al.), tried to save a pass, 9x PyTorch's error (4.6e-6): both fail."""
    skip_unless_backend("cpu")
    g = torch.Generator().manual_seed(3)
    pre64 = 1000 + torch.randn(257, 17, 64, generator=g, dtype=torch.float64)
    gamma, beta = torch.ones(64), torch.zeros(64)
    _, _, var_ref = norm_act_ref(pre64, gamma.double(), beta.double())
    _, _, var_same = norm_act_ref(pre64.float(), gamma, beta)
    _, _, var = norm_act(pre64.float(), gamma, beta, backend="cpu")
    assert rel_err(var, var_ref) <= max(2 * rel_err(var_same, var_ref), 1e-6), (rel_err(var, var_ref), rel_err(var_same, var_ref))
