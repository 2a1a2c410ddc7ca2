"""Shared by the tests: error metrics against fp64 references, output poisoning, device lists."""
from __future__ import annotations

import contextlib
import copy
import os

import pytest
import torch

HALF_DTYPES = (torch.float16, torch.bfloat16)


def rel_err(out: torch.Tensor, ref: torch.Tensor) -> float:
    """||out - ref|| / ||ref||, computed in float64; NaN anywhere gives inf (never passes)."""
    out, ref = out.detach().double().cpu(), ref.detach().double().cpu()
    if out.shape != ref.shape:
        raise AssertionError(f"shape {tuple(out.shape)} != reference {tuple(ref.shape)}")
    if not torch.isfinite(out).all():
        return float("inf")
    den = ref.norm().item()
    return (out - ref).norm().item() / max(den, 1e-30)


def assert_matches(kernel: torch.Tensor, ref64: torch.Tensor, torch_same_dtype: torch.Tensor | None = None,
                   factor: float = 2.0, floor: float = 1e-5, name: str = "") -> None:
    """The kernel's error against the fp64 reference is at most `factor` times that of PyTorch
    doing the same math in the kernel's dtype (plus a floor for exact-arithmetic cases)."""
    e_k = rel_err(kernel, ref64)
    bound = floor if torch_same_dtype is None else max(factor * rel_err(torch_same_dtype, ref64), floor)
    assert e_k <= bound, f"{name}: error {e_k:.3e} > bound {bound:.3e}"


@contextlib.contextmanager
def poisoned():
    """torch.empty (also at::empty inside the C++ ops) fills new float tensors with NaN, so an
    element a kernel forgets to write fails the comparison instead of passing as zero."""
    import torch.utils.deterministic as det

    was_on = torch.are_deterministic_algorithms_enabled()
    was_warn = torch.is_deterministic_algorithms_warn_only_enabled()
    was_fill = det.fill_uninitialized_memory
    torch.use_deterministic_algorithms(True, warn_only=True)
    det.fill_uninitialized_memory = True
    try:
        yield
    finally:
        det.fill_uninitialized_memory = was_fill
        torch.use_deterministic_algorithms(was_on, warn_only=was_warn)


def kernel_device(backend: str) -> torch.device:
    """Where a backend's tests run: cuda for 'cuda', cuda or the interpreter's CPU for 'triton'."""
    if backend == "cpu":
        return torch.device("cpu")
    if backend == "cuda":
        return torch.device("cuda")
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


def skip_unless_backend(backend: str) -> None:
    """Skip, with the reason shown, where a backend cannot run here."""
    from diffupose import ops

    if backend == "cuda":
        if not torch.cuda.is_available():
            pytest.skip("cuda backend: no CUDA device on this machine (CI compiles the CUDA sources only)")
        if not ops.has_cuda_kernels():
            pytest.skip("cuda backend: diffupose._C was built without CUDA kernels")
    elif backend == "cpu":
        if not ops.has_extension():
            pytest.skip("cpu backend: diffupose._C is not built")
    elif backend == "triton":
        if not ops.has_triton():
            pytest.skip("triton backend: triton is not installed")
        if not torch.cuda.is_available() and os.environ.get("TRITON_INTERPRET") != "1":
            pytest.skip("triton backend: no GPU and TRITON_INTERPRET is not 1")


@contextlib.contextmanager
def cpu_isa(isa: str):
    """Run the CPU kernels' row loops compiled for `isa` inside the block, back to the best after;
    skips (running none of its code) where this CPU, or the run's cap, lacks that set."""
    skip_unless_backend("cpu")
    from diffupose.ops.backend import extension

    ext = extension()
    best = ext.cpu_isa()
    if not ext.set_cpu_isa(isa):
        pytest.skip(f"this CPU (or the run's cap) cannot run the {isa} version")
    try:
        assert ext.cpu_isa() == isa
        yield
    finally:
        assert ext.set_cpu_isa(best)


def assert_same_on_1_and_2_threads(run) -> None:
    """run() -> a list of tensors: bit for bit the same on 1 and on 2 threads (fixed partial sums,
    summed in order, whoever ran them)."""
    threads = torch.get_num_threads()
    try:
        results = []
        for n in (1, 2):
            torch.set_num_threads(n)
            results.append(list(run()))
    finally:
        torch.set_num_threads(threads)
    for u, v in zip(*results):
        assert torch.equal(u, v)


def assert_training_layer_matches_reference(monkeypatch, counted: str) -> None:
    """The CPU training layer with a batch norm against the reference one (F.batch_norm, then the
    epilogue) on the output, every gradient and the running statistics after two steps, and that it
    ran diffupose.ops.<counted> on the CPU both times (the reference layer never)."""
    from diffupose import ops
    from diffupose.layers import ModulatedGraphConv
    from diffupose.skeleton import get_skeleton

    calls, real = [], getattr(ops, counted)
    monkeypatch.setattr(ops, counted, lambda *a, **k: calls.append(k.get("backend", a[-1])) or real(*a, **k))
    torch.manual_seed(0)
    fused = ModulatedGraphConv(24, 24, get_skeleton("h36m17").adjacency(), "silu", norm="batch").double().train()
    plain = copy.deepcopy(fused)
    for _ in range(2):
        x = torch.randn(9, 17, 24, dtype=torch.float64)
        ss = 0.3 * torch.randn(9, 2, 24, dtype=torch.float64)
        outs = [layer(x, ss, x, backend=be) for layer, be in ((fused, "cpu"), (plain, "reference"))]
        assert rel_err(outs[0], outs[1]) < 1e-12
        for o in outs:
            o.pow(2).sum().backward()
    for (name, p), q in zip(fused.named_parameters(), plain.parameters()):
        # atol: the convolution bias' gradient is zero before a batch norm (rounding only)
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-10, atol=1e-10, msg=name)
    for (name, b), c in zip(fused.named_buffers(), plain.buffers()):
        assert rel_err(b, c) < 1e-12, name
    assert calls == ["cpu", "cpu"]


def check_norm_op(run, inp, grad, act, dtype, floor: float, shape, zero_grads=()) -> None:
    """A training batch-norm op (norm_act, mgcn_norm) against fp64: run(inp, grad, act, dtype,
    backend) -> ((out, mean, var), {name: grad}); the kernel's run poisoned. out in dtype, the
    statistics in opmath, each within twice PyTorch's own error in dtype (floor); every gradient in
    PyTorch's dtype and bound; zero_grads: inputs whose gradient is zero (rounding only, compared
    to dbeta's scale)."""
    ref, ref_grads = run(inp, grad, act, torch.float64, "torch")
    same, same_grads = run(inp, grad, act, dtype, "torch")
    with poisoned():
        got, grads = run(inp, grad, act, dtype, "cpu")
    assert got[0].dtype == dtype and tuple(got[0].shape) == tuple(shape)
    opmath = torch.float64 if dtype == torch.float64 else torch.float32
    assert got[1].dtype == opmath and got[2].dtype == opmath
    for name, u, s, v in zip(("out", "mean", "var"), got, same, ref):
        assert_matches(u, v, s, floor=floor, name=name)
    assert set(grads) == set(ref_grads)
    for k, gref in ref_grads.items():
        assert grads[k].dtype == same_grads[k].dtype, k
        if k in zero_grads:
            assert grads[k].abs().max() <= 1e-3 * grads["beta"].abs().max() + floor, grads[k]
            continue
        assert_matches(grads[k], gref, same_grads[k], floor=floor, name=f"d{k}")
